// CPU GEMM on oneDNN (decision and measurements in docs/kernels.md):
//  - f32, M <= kSmallM: dnnl_sgemm (row-major), which has a GEMV-like path for a few rows;
//  - f32 otherwise and bf16: the matmul primitive (bias fused when alpha == 1, beta as a sum
//    post-op, alpha as an output scale), primitives cached per shape/threads;
//  - f16 (no f16 matmul on CPUs without AVX512-FP16): converted to f32 in scratch buffers;
//  - bf16 falls back to the f16 route if the CPU has no bf16 matmul implementation.
// A bias that cannot be fused is folded into c first (c = beta*c + bias, then beta = 1).
#include <omp.h>

#include <dnnl.hpp>

#include <cstring>
#include <list>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/cpu_ops.h"

namespace archi::kernels::cpu {
namespace {

constexpr int64_t kSmallM = 8;

// Sets the OpenMP thread count of the calling thread for oneDNN (which reads it at creation and
// execution) and restores it.
class ScopedOmpThreads {
 public:
  explicit ScopedOmpThreads(int n) : prev_(omp_get_max_threads()) {
    if (n > 0) omp_set_num_threads(n);
  }
  ~ScopedOmpThreads() { omp_set_num_threads(prev_); }
  ScopedOmpThreads(const ScopedOmpThreads&) = delete;
  ScopedOmpThreads& operator=(const ScopedOmpThreads&) = delete;

 private:
  int prev_;
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

struct MatmulKey {
  int64_t m, n, k;
  bool trans_b, bias;
  int dt;  // dnnl data type
  float alpha, beta;
  int threads;
  bool operator==(const MatmulKey& o) const {
    return std::tie(m, n, k, trans_b, bias, dt, alpha, beta, threads) ==
           std::tie(o.m, o.n, o.k, o.trans_b, o.bias, o.dt, o.alpha, o.beta, o.threads);
  }
};
struct MatmulKeyHash {
  size_t operator()(const MatmulKey& k) const {
    size_t h = std::hash<int64_t>()(k.m);
    auto mix = [&h](size_t v) { h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2); };
    mix(std::hash<int64_t>()(k.n));
    mix(std::hash<int64_t>()(k.k));
    mix(static_cast<size_t>(k.trans_b) | (static_cast<size_t>(k.bias) << 1) |
        (static_cast<size_t>(k.dt) << 2));
    mix(std::hash<float>()(k.alpha));
    mix(std::hash<float>()(k.beta));
    mix(static_cast<size_t>(k.threads));
    return h;
  }
};

// Process-wide cache of matmul primitives (oneDNN primitives are immutable and may be executed
// concurrently from several threads). Bounded: cleared when it reaches kMaxEntries.
class MatmulCache {
 public:
  static constexpr size_t kMaxEntries = 512;
  Result<dnnl::matmul> Get(const MatmulKey& key) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = map_.find(key);
      if (it != map_.end()) return it->second;
    }
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    const auto type = static_cast<dt>(key.dt);
    dnnl::memory::desc a_md({key.m, key.k}, type, tag::ab);
    dnnl::memory::desc b_md({key.k, key.n}, type, key.trans_b ? tag::ba : tag::ab);
    dnnl::memory::desc c_md({key.m, key.n}, type, tag::ab);
    dnnl::primitive_attr attr;
    if (key.alpha != 1.0f) attr.set_output_scales(0, {key.alpha});
    if (key.beta != 0.0f) {
      dnnl::post_ops po;
      po.append_sum(key.beta);
      attr.set_post_ops(po);
    }
    dnnl::matmul::desc desc = key.bias
        ? dnnl::matmul::desc(a_md, b_md, dnnl::memory::desc({1, key.n}, type, tag::ab), c_md)
        : dnnl::matmul::desc(a_md, b_md, c_md);
    dnnl::matmul::primitive_desc pd(desc, attr, Engine());
    dnnl::matmul prim(pd);
    std::lock_guard<std::mutex> lock(mu_);
    if (map_.size() >= kMaxEntries) map_.clear();
    map_.emplace(key, prim);
    return prim;
  }

 private:
  std::mutex mu_;
  std::unordered_map<MatmulKey, dnnl::matmul, MatmulKeyHash> map_;
};

MatmulCache& Cache() {
  static MatmulCache* cache = new MatmulCache();  // never destroyed: used until exit
  return *cache;
}

// One GEMM on raw pointers. dt: the storage type of a, b, bias and c (f32 or bf16 only).
// Throws dnnl::error.
void MatmulRaw(dnnl::memory::data_type dt, const void* a, const void* b, const void* bias, void* c,
               int64_t m, int64_t n, int64_t k, const GemmOptions& opts, int threads) {
  using tag = dnnl::memory::format_tag;
  ScopedOmpThreads scoped(threads);
  if (dt == dnnl::memory::data_type::f32 && m <= kSmallM && bias == nullptr) {
    const dnnl_status_t st =
        dnnl_sgemm('N', opts.trans_b ? 'T' : 'N', m, n, k, opts.alpha,
                   static_cast<const float*>(a), k, static_cast<const float*>(b),
                   opts.trans_b ? k : n, opts.beta, static_cast<float*>(c), n);
    if (st != dnnl_success) throw dnnl::error(st, "dnnl_sgemm");
    return;
  }
  const MatmulKey key{m, n, k, opts.trans_b, bias != nullptr, static_cast<int>(dt),
                      opts.alpha, opts.beta, threads};
  Result<dnnl::matmul> prim = Cache().Get(key);
  dnnl::stream stream(Engine());
  dnnl::memory a_m({{m, k}, dt, tag::ab}, Engine(), const_cast<void*>(a));
  dnnl::memory b_m({{k, n}, dt, opts.trans_b ? tag::ba : tag::ab}, Engine(),
                   const_cast<void*>(b));
  dnnl::memory c_m({{m, n}, dt, tag::ab}, Engine(), c);
  std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC, a_m}, {DNNL_ARG_WEIGHTS, b_m}, {DNNL_ARG_DST, c_m}};
  if (bias != nullptr) {
    args.emplace(DNNL_ARG_BIAS, dnnl::memory({{1, n}, dt, tag::ab}, Engine(),
                                             const_cast<void*>(bias)));
  }
  prim->execute(stream, args);
  stream.wait();
}

// c = beta*c + bias (broadcast over rows), f32.
void FoldBias(float* c, const float* bias, int64_t m, int64_t n, float beta, int threads) {
  const int nt = Threads(threads, m, m * n);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < m; ++i) {
    float* row = c + i * n;
    if (beta == 0.0f) {
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) row[j] = bias[j];
    } else {
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) row[j] = beta * row[j] + bias[j];
    }
  }
}

template <typename S>
void ToF32(const void* src, int64_t n, std::vector<float>& dst, int threads) {
  dst.resize(static_cast<size_t>(n));
  const auto* s = static_cast<const typename S::T*>(src);
  float* d = dst.data();
  const int nt = Threads(threads, n, n);
#pragma omp parallel for simd num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) d[i] = S::Load(s[i]);
}
template <typename S>
void FromF32(const std::vector<float>& src, void* dst, int threads) {
  const int64_t n = static_cast<int64_t>(src.size());
  auto* d = static_cast<typename S::T*>(dst);
  const float* s = src.data();
  const int nt = Threads(threads, n, n);
#pragma omp parallel for simd num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) d[i] = S::Store(s[i]);
}

// f32 GEMM with any bias handling.
void GemmF32(const float* a, const float* b, const float* bias, float* c, int64_t m, int64_t n,
             int64_t k, GemmOptions opts, int threads) {
  if (k == 0) {  // no products: c = beta*c (+ bias)
    if (bias == nullptr) {
      std::vector<float> zeros(static_cast<size_t>(n), 0.0f);
      FoldBias(c, zeros.data(), m, n, opts.beta, threads);
    } else {
      FoldBias(c, bias, m, n, opts.beta, threads);
    }
    return;
  }
  const bool fuse_bias = bias != nullptr && opts.alpha == 1.0f && m > kSmallM;
  if (bias != nullptr && !fuse_bias) {
    FoldBias(c, bias, m, n, opts.beta, threads);
    opts.beta = 1.0f;
    bias = nullptr;
  }
  MatmulRaw(dnnl::memory::data_type::f32, a, b, bias, c, m, n, k, opts, threads);
}

// f16 (and bf16 fallback): convert to f32 scratch, run f32, convert back.
template <typename S>
void GemmViaF32(const void* a, const void* b, const void* bias, void* c, int64_t m, int64_t n,
                int64_t k, const GemmOptions& opts, int threads) {
  thread_local std::vector<float> sa, sb, sbias, sc;
  ToF32<S>(a, m * k, sa, threads);
  ToF32<S>(b, n * k, sb, threads);
  if (bias != nullptr) ToF32<S>(bias, n, sbias, threads);
  if (opts.beta != 0.0f) {
    ToF32<S>(c, m * n, sc, threads);
  } else {
    sc.assign(static_cast<size_t>(m * n), 0.0f);
  }
  GemmF32(sa.data(), sb.data(), bias ? sbias.data() : nullptr, sc.data(), m, n, k, opts,
          threads);
  FromF32<S>(sc, c, threads);
  // Keep small scratch for the next call, give large (weight-sized) buffers back.
  constexpr size_t kKeepFloats = size_t{16} << 20;  // 64 MiB per buffer
  for (auto* buf : {&sa, &sb, &sbias, &sc}) {
    if (buf->capacity() > kKeepFloats) std::vector<float>().swap(*buf);
  }
}

bool Bf16MatmulWorks() {
  static const bool works = [] {
    try {
      const MatmulKey key{16, 16, 16, true, true, static_cast<int>(dnnl::memory::data_type::bf16),
                          1.0f, 0.0f, 1};
      return Cache().Get(key).ok();
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return works;
}

Status GemmOne(DType dtype, const void* a, const void* b, const void* bias, void* c, int64_t m,
               int64_t n, int64_t k, const GemmOptions& opts, int threads) {
  if (m == 0 || n == 0) return Status::Ok();
  try {
    switch (dtype) {
      case DType::kF32:
        GemmF32(static_cast<const float*>(a), static_cast<const float*>(b),
                static_cast<const float*>(bias), static_cast<float*>(c), m, n, k, opts, threads);
        break;
      case DType::kBF16:
        if (k > 0 && Bf16MatmulWorks() && (bias == nullptr || opts.alpha == 1.0f)) {
          MatmulRaw(dnnl::memory::data_type::bf16, a, b, bias, c, m, n, k, opts, threads);
        } else {
          GemmViaF32<BF16>(a, b, bias, c, m, n, k, opts, threads);
        }
        break;
      case DType::kF16:
        GemmViaF32<F16>(a, b, bias, c, m, n, k, opts, threads);
        break;
      default:
        return InternalError("Gemm: unsupported dtype reached the CPU kernel");
    }
  } catch (const dnnl::error& e) {
    return InternalError(std::string("Gemm: oneDNN error: ") + e.what());
  }
  return Status::Ok();
}

}  // namespace

Status Gemm(const Tensor& a, const Tensor& b, const Tensor* bias, Tensor& c,
            const GemmOptions& opts, const KernelContext& ctx) {
  const int64_t k = a.shape().back();
  const int64_t n = c.shape().back();
  const int64_t m = n == 0 ? 0 : c.numel() / n;
  return GemmOne(a.dtype(), a.data(), b.data(), bias ? bias->data() : nullptr, c.data(), m, n, k,
                 opts, ctx.num_threads);
}

// A loop of GEMMs, each using all threads: per-batch matrices in attention-sized problems are
// large enough for oneDNN to split internally, and the loop keeps one threading model.
Status BatchedGemm(const Tensor& a, const Tensor& b, Tensor& c, const GemmOptions& opts,
                   const KernelContext& ctx) {
  const int64_t batch = a.shape()[0], m = a.shape()[1], k = a.shape()[2];
  const int64_t n = c.shape()[2];
  const size_t es = DTypeSize(a.dtype());
  for (int64_t i = 0; i < batch; ++i) {
    const auto* ap = static_cast<const char*>(a.data()) + i * m * k * es;
    const auto* bp = static_cast<const char*>(b.data()) + i * n * k * es;
    auto* cp = static_cast<char*>(c.data()) + i * m * n * es;
    Status s = GemmOne(a.dtype(), ap, bp, nullptr, cp, m, n, k, opts, ctx.num_threads);
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

}  // namespace archi::kernels::cpu
