// CPU element-wise, row-wise and pooling ops: OpenMP over rows or chunks, contiguous inner loops
// the compiler vectorises; per-element math from kernels/common/numeric.h; f32 accumulation.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/cpu_ops.h"

namespace archi::kernels::cpu {
namespace {

constexpr int64_t kChunk = 4096;  // elements per parallel work item of flat element-wise ops

// y[i] = f(x[i]) over n elements, chunked across threads.
template <typename S, typename F>
void Map1(const void* xv, void* yv, int64_t n, int threads, F f) {
  const auto* x = static_cast<const typename S::T*>(xv);
  auto* y = static_cast<typename S::T*>(yv);
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const int nt = Threads(threads, chunks, n * 8);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t end = std::min(n, (c + 1) * kChunk);
#pragma omp simd
    for (int64_t i = c * kChunk; i < end; ++i) y[i] = S::Store(f(S::Load(x[i])));
  }
}

template <typename S, typename F>
void Map2(const void* av, const void* bv, void* yv, int64_t n, int threads, F f) {
  const auto* a = static_cast<const typename S::T*>(av);
  const auto* b = static_cast<const typename S::T*>(bv);
  auto* y = static_cast<typename S::T*>(yv);
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const int nt = Threads(threads, chunks, n * 4);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t end = std::min(n, (c + 1) * kChunk);
#pragma omp simd
    for (int64_t i = c * kChunk; i < end; ++i) {
      y[i] = S::Store(f(S::Load(a[i]), S::Load(b[i])));
    }
  }
}

int64_t LastDim(const Tensor& t) { return t.shape().empty() ? 1 : t.shape().back(); }

// ---- f32 hot loops, multiversioned ----
// The library is built for baseline x86-64 (SSE2, 4 lanes), which leaves the transcendental ops
// (GELU, SiLU, SwiGLU, softmax) and LayerNorm compute-bound at 0.2-0.6 of memcpy. These inner
// chunk/row functions are cloned for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and the
// baseline; an ifunc picks the clone once at load time, and each clone calls the libmvec variant
// of its ISA (_ZGVeN16v_expf, _ZGVdN8v_expf, _ZGVbN4v_expf). Same formulas (numeric.h); results
// differ from the baseline only by FMA contraction and libmvec's per-ISA rounding (<= 4 ulp).
// f16/bf16 keep the generic templates (their conversions dominate).
// (-DARCHI_CLONES= builds the baseline only, e.g. to test that path on an AVX-512 machine.)
// Sanitizer builds keep the baseline: the ifunc resolvers run during relocation, before the
// sanitizer runtime is initialised, and crash an instrumented binary at start-up.
#if !defined(ARCHI_CLONES) && defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    defined(__ELF__) && !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)
#define ARCHI_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#elif !defined(ARCHI_CLONES)
#define ARCHI_CLONES
#endif

ARCHI_CLONES void GeluErfF32(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = GeluErf(x[i]);
}
ARCHI_CLONES void GeluTanhF32(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = GeluTanh(x[i]);
}
ARCHI_CLONES void SiluF32(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = kernels::Silu(x[i]);
}
ARCHI_CLONES void SwiGluF32(const float* g, const float* u, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = kernels::SwiGlu(g[i], u[i]);
}

// One LayerNorm row (x may be y: every read of x[i] precedes the write of y[i]).
ARCHI_CLONES void LayerNormRowF32(const float* x, const float* g, const float* b, float eps,
                                  float* y, int64_t h) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < h; ++i) sum += x[i];
  const float mean = sum / static_cast<float>(h);
  float var = 0.0f;
#pragma omp simd reduction(+ : var)
  for (int64_t i = 0; i < h; ++i) var += (x[i] - mean) * (x[i] - mean);
  const float rstd = NormRstd(var / static_cast<float>(h), eps);
#pragma omp simd
  for (int64_t i = 0; i < h; ++i) y[i] = LayerNormApply(x[i], mean, rstd, g[i], b[i]);
}

// One softmax row (x may be y); exp values are staged in y, which stays in L1.
ARCHI_CLONES void SoftmaxRowF32(const float* x, float* y, int64_t h) {
  float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
  for (int64_t i = 0; i < h; ++i) mx = mx < x[i] ? x[i] : mx;  // std::max: NaN is skipped
  if (mx == -INFINITY) mx = 0.0f;  // all -inf: exp gives 0, the row becomes NaN like torch
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < h; ++i) {
    const float e = expf(x[i] - mx);
    y[i] = e;
    sum += e;
  }
  const float inv = 1.0f / sum;
#pragma omp simd
  for (int64_t i = 0; i < h; ++i) y[i] *= inv;
}

// Runs f(begin, end) over [0, n) in kChunk pieces across threads (work: the Threads() estimate).
template <typename F>
void ForChunks(int64_t n, int threads, int64_t work, F f) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const int nt = Threads(threads, chunks, work);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t c = 0; c < chunks; ++c) f(c * kChunk, std::min(n, (c + 1) * kChunk));
}

}  // namespace

Status Gelu(const Tensor& x, Tensor& y, GeluKind kind, const KernelContext& ctx) {
  if (x.dtype() == DType::kF32) {
    const float* xp = x.data_as<const float>();
    float* yp = y.data_as<float>();
    ForChunks(x.numel(), ctx.num_threads, x.numel() * 8, [&](int64_t lo, int64_t hi) {
      if (kind == GeluKind::kErf) {
        GeluErfF32(xp + lo, yp + lo, hi - lo);
      } else {
        GeluTanhF32(xp + lo, yp + lo, hi - lo);
      }
    });
    return Status::Ok();
  }
  DispatchFloat(x.dtype(), [&]<typename S>() {
    if (kind == GeluKind::kErf) {
      Map1<S>(x.data(), y.data(), x.numel(), ctx.num_threads, [](float v) { return GeluErf(v); });
    } else {
      Map1<S>(x.data(), y.data(), x.numel(), ctx.num_threads, [](float v) { return GeluTanh(v); });
    }
  });
  return Status::Ok();
}

Status Silu(const Tensor& x, Tensor& y, const KernelContext& ctx) {
  if (x.dtype() == DType::kF32) {
    const float* xp = x.data_as<const float>();
    float* yp = y.data_as<float>();
    ForChunks(x.numel(), ctx.num_threads, x.numel() * 8,
              [&](int64_t lo, int64_t hi) { SiluF32(xp + lo, yp + lo, hi - lo); });
    return Status::Ok();
  }
  DispatchFloat(x.dtype(), [&]<typename S>() {
    Map1<S>(x.data(), y.data(), x.numel(), ctx.num_threads,
            [](float v) { return kernels::Silu(v); });
  });
  return Status::Ok();
}

Status SwiGlu(const Tensor& gate, const Tensor& up, Tensor& y, const KernelContext& ctx) {
  if (gate.dtype() == DType::kF32) {
    const float* gp = gate.data_as<const float>();
    const float* up_p = up.data_as<const float>();
    float* yp = y.data_as<float>();
    ForChunks(gate.numel(), ctx.num_threads, gate.numel() * 4,
              [&](int64_t lo, int64_t hi) { SwiGluF32(gp + lo, up_p + lo, yp + lo, hi - lo); });
    return Status::Ok();
  }
  DispatchFloat(gate.dtype(), [&]<typename S>() {
    Map2<S>(gate.data(), up.data(), y.data(), gate.numel(), ctx.num_threads,
            [](float g, float u) { return kernels::SwiGlu(g, u); });
  });
  return Status::Ok();
}

Status Add(const Tensor& a, const Tensor& b, Tensor& out, const KernelContext& ctx) {
  DispatchFloat(a.dtype(), [&]<typename S>() {
    Map2<S>(a.data(), b.data(), out.data(), a.numel(), ctx.num_threads,
            [](float p, float q) { return p + q; });
  });
  return Status::Ok();
}

Status LayerNorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps, Tensor& y,
                 const KernelContext& ctx) {
  const int64_t h = LastDim(x);
  const int64_t rows = h == 0 ? 0 : x.numel() / h;
  if (x.dtype() == DType::kF32) {
    const float* xp = x.data_as<const float>();
    const float* g = gamma.data_as<const float>();
    const float* bt = beta.data_as<const float>();
    float* yp = y.data_as<float>();
    const int nt = Threads(ctx.num_threads, rows, x.numel() * 4);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < rows; ++r) LayerNormRowF32(xp + r * h, g, bt, eps, yp + r * h, h);
    return Status::Ok();
  }
  DispatchFloat(x.dtype(), [&]<typename S>() {
    using T = typename S::T;
    const T* xp = x.data_as<const T>();
    const T* g = gamma.data_as<const T>();
    const T* bt = beta.data_as<const T>();
    T* yp = y.data_as<T>();
    const int nt = Threads(ctx.num_threads, rows, x.numel() * 4);
#pragma omp parallel num_threads(nt)
    {
      std::vector<float> row(static_cast<size_t>(h));
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const T* xr = xp + r * h;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t i = 0; i < h; ++i) {
          row[i] = S::Load(xr[i]);
          sum += row[i];
        }
        const float mean = sum / static_cast<float>(h);
        float var = 0.0f;
#pragma omp simd reduction(+ : var)
        for (int64_t i = 0; i < h; ++i) var += (row[i] - mean) * (row[i] - mean);
        const float rstd = NormRstd(var / static_cast<float>(h), eps);
        T* yr = yp + r * h;
#pragma omp simd
        for (int64_t i = 0; i < h; ++i) {
          yr[i] = S::Store(LayerNormApply(row[i], mean, rstd, S::Load(g[i]), S::Load(bt[i])));
        }
      }
    }
  });
  return Status::Ok();
}

Status RmsNorm(const Tensor& x, const Tensor& gamma, float eps, Tensor& y,
               const KernelContext& ctx) {
  const int64_t h = LastDim(x);
  const int64_t rows = h == 0 ? 0 : x.numel() / h;
  DispatchFloat(x.dtype(), [&]<typename S>() {
    using T = typename S::T;
    const T* xp = x.data_as<const T>();
    const T* g = gamma.data_as<const T>();
    T* yp = y.data_as<T>();
    const int nt = Threads(ctx.num_threads, rows, x.numel() * 4);
#pragma omp parallel num_threads(nt)
    {
      std::vector<float> row(static_cast<size_t>(h));
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const T* xr = xp + r * h;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int64_t i = 0; i < h; ++i) {
          row[i] = S::Load(xr[i]);
          ss += row[i] * row[i];
        }
        const float rstd = NormRstd(ss / static_cast<float>(h), eps);
        T* yr = yp + r * h;
#pragma omp simd
        for (int64_t i = 0; i < h; ++i) yr[i] = S::Store(row[i] * rstd * S::Load(g[i]));
      }
    }
  });
  return Status::Ok();
}

Status Softmax(const Tensor& x, Tensor& y, const KernelContext& ctx) {
  const int64_t h = LastDim(x);
  const int64_t rows = h == 0 ? 0 : x.numel() / h;
  if (x.dtype() == DType::kF32) {
    const float* xp = x.data_as<const float>();
    float* yp = y.data_as<float>();
    const int nt = Threads(ctx.num_threads, rows, x.numel() * 8);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < rows; ++r) SoftmaxRowF32(xp + r * h, yp + r * h, h);
    return Status::Ok();
  }
  DispatchFloat(x.dtype(), [&]<typename S>() {
    using T = typename S::T;
    const T* xp = x.data_as<const T>();
    T* yp = y.data_as<T>();
    const int nt = Threads(ctx.num_threads, rows, x.numel() * 8);
#pragma omp parallel num_threads(nt)
    {
      std::vector<float> row(static_cast<size_t>(h));
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const T* xr = xp + r * h;
        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int64_t i = 0; i < h; ++i) {
          row[i] = S::Load(xr[i]);
          mx = std::max(mx, row[i]);
        }
        if (mx == -INFINITY) mx = 0.0f;  // all -inf: exp gives 0, the row becomes NaN like torch
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t i = 0; i < h; ++i) {
          row[i] = expf(row[i] - mx);
          sum += row[i];
        }
        const float inv = 1.0f / sum;
        T* yr = yp + r * h;
#pragma omp simd
        for (int64_t i = 0; i < h; ++i) yr[i] = S::Store(row[i] * inv);
      }
    }
  });
  return Status::Ok();
}

Status L2Normalize(const Tensor& x, Tensor& y, float eps, const KernelContext& ctx) {
  const int64_t h = LastDim(x);
  const int64_t rows = h == 0 ? 0 : x.numel() / h;
  DispatchFloat(x.dtype(), [&]<typename S>() {
    using T = typename S::T;
    const T* xp = x.data_as<const T>();
    T* yp = y.data_as<T>();
    const int nt = Threads(ctx.num_threads, rows, x.numel() * 4);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = xp + r * h;
      float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
      for (int64_t i = 0; i < h; ++i) ss += S::Load(xr[i]) * S::Load(xr[i]);
      const float scale = L2Scale(ss, eps);
      T* yr = yp + r * h;
#pragma omp simd
      for (int64_t i = 0; i < h; ++i) yr[i] = S::Store(S::Load(xr[i]) * scale);
    }
  });
  return Status::Ok();
}

Status MeanPool(const Tensor& x, const Tensor* lengths, Tensor& out, const KernelContext& ctx) {
  const int64_t b = x.shape()[0], s = x.shape()[1], h = x.shape()[2];
  const int32_t* len = lengths ? lengths->data_as<const int32_t>() : nullptr;
  DispatchFloat(x.dtype(), [&]<typename S>() {
    using T = typename S::T;
    const T* xp = x.data_as<const T>();
    T* op = out.data_as<T>();
    const int nt = Threads(ctx.num_threads, b, x.numel());
#pragma omp parallel num_threads(nt)
    {
      std::vector<float> acc(static_cast<size_t>(h));
#pragma omp for schedule(static)
      for (int64_t bi = 0; bi < b; ++bi) {
        // Lengths are clamped to [0, S] (the CUDA kernel cannot report them); 0 gives zeros.
        const int64_t n = len ? std::clamp<int64_t>(len[bi], 0, s) : s;
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t t = 0; t < n; ++t) {
          const T* xr = xp + (bi * s + t) * h;
#pragma omp simd
          for (int64_t i = 0; i < h; ++i) acc[i] += S::Load(xr[i]);
        }
        const float inv = n > 0 ? 1.0f / static_cast<float>(n) : 0.0f;
        T* orow = op + bi * h;
#pragma omp simd
        for (int64_t i = 0; i < h; ++i) orow[i] = S::Store(acc[i] * inv);
      }
    }
  });
  return Status::Ok();
}

Status Embedding(const Tensor& ids, const Tensor& table, Tensor& out, const KernelContext& ctx) {
  const int64_t v = table.shape()[0], h = table.shape()[1];
  const int64_t n = ids.numel();
  auto id_at = [&](int64_t i) -> int64_t {
    return ids.dtype() == DType::kI32 ? ids.data_as<const int32_t>()[i]
                                      : ids.data_as<const int64_t>()[i];
  };
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = id_at(i);
    if (id < 0 || id >= v) {
      return OutOfRangeError("Embedding: ids[" + std::to_string(i) + "] = " + std::to_string(id) +
                             " is outside [0, " + std::to_string(v) + ")");
    }
  }
  const size_t row_bytes = static_cast<size_t>(h) * DTypeSize(table.dtype());
  const auto* src = static_cast<const char*>(table.data());
  auto* dst = static_cast<char*>(out.data());
  const int nt = Threads(ctx.num_threads, n, n * h);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(dst + i * row_bytes, src + id_at(i) * row_bytes, row_bytes);
  }
  return Status::Ok();
}

}  // namespace archi::kernels::cpu
