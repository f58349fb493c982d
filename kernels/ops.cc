// The one dispatch of the inference ops: validate every argument (kInvalidArgument naming the op
// and the argument), then run the implementation for the tensors' device: kernels/cpu/ for host
// tensors, kernels/cuda/ (archi_kernels_cuda, when built) for CUDA tensors.
#include "kernels/ops.h"

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "archi/config.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/cuda_ops.h"

#if ARCHI_HAVE_CUDA && defined(ARCHI_KERNELS_HAVE_CUDA)
#define ARCHI_KERNELS_DISPATCH_CUDA 1
#else
#define ARCHI_KERNELS_DISPATCH_CUDA 0
#endif

namespace archi::kernels {
namespace {

// ---- validation helpers; each returns kInvalidArgument "<Op>: <arg> ..." ----------------------

Status Bad(const char* op, const std::string& msg) {
  return InvalidArgumentError(std::string(op) + ": " + msg);
}

std::string ShapeStr(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

bool IsFloat(DType d) { return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16; }

Status Defined(const char* op, const char* name, const Tensor& t) {
  if (!t.defined()) return Bad(op, std::string(name) + " is undefined");
  return Status::Ok();
}

Status FloatTensor(const char* op, const char* name, const Tensor& t) {
  if (!t.defined()) return Bad(op, std::string(name) + " is undefined");
  if (!IsFloat(t.dtype())) {
    return Bad(op, std::string(name) + " has dtype " + std::string(DTypeName(t.dtype())) +
                       ", expected f32, f16 or bf16");
  }
  return Status::Ok();
}

Status SameDtype(const char* op, const char* name, const Tensor& t, const Tensor& ref,
                 const char* ref_name) {
  if (t.dtype() != ref.dtype()) {
    return Bad(op, std::string(name) + " has dtype " + std::string(DTypeName(t.dtype())) +
                       " but " + ref_name + " has " + std::string(DTypeName(ref.dtype())));
  }
  return Status::Ok();
}

Status Rank(const char* op, const char* name, const Tensor& t, size_t rank) {
  if (t.shape().size() != rank) {
    return Bad(op, std::string(name) + " must have rank " + std::to_string(rank) + ", got " +
                       ShapeStr(t.shape()));
  }
  return Status::Ok();
}

Status Shape(const char* op, const char* name, const Tensor& t,
             const std::vector<int64_t>& expected) {
  if (t.shape() != expected) {
    return Bad(op, std::string(name) + " has shape " + ShapeStr(t.shape()) + ", expected " +
                       ShapeStr(expected));
  }
  return Status::Ok();
}

// All tensors on one device. `first` is the reference.
Status SameDevice(const char* op, std::initializer_list<std::pair<const char*, const Tensor*>> ts) {
  const auto& [ref_name, ref] = *ts.begin();
  for (const auto& [name, t] : ts) {
    if (t != nullptr && !(t->device() == ref->device())) {
      return Bad(op, std::string(name) + " is on " + t->device().ToString() + " but " + ref_name +
                         " is on " + ref->device().ToString());
    }
  }
  return Status::Ok();
}

// Byte ranges of a and b overlap (same device assumed by the caller).
bool Overlaps(const Tensor& a, const Tensor& b) {
  if (a.nbytes() == 0 || b.nbytes() == 0) return false;
  const auto a0 = reinterpret_cast<uintptr_t>(a.data()), b0 = reinterpret_cast<uintptr_t>(b.data());
  return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}
// Output `out` must not overlap input `in` at all.
Status NoAlias(const char* op, const char* out_name, const Tensor& out, const char* in_name,
               const Tensor& in) {
  if (Overlaps(out, in)) {
    return Bad(op, std::string(out_name) + " overlaps " + in_name + " (not allowed for this op)");
  }
  return Status::Ok();
}
// Output may be exactly `in` (in place) but must not partially overlap it.
Status AliasOk(const char* op, const char* out_name, const Tensor& out, const char* in_name,
               const Tensor& in) {
  if (Overlaps(out, in) && !(out.data() == in.data() && out.nbytes() == in.nbytes())) {
    return Bad(op, std::string(out_name) + " partially overlaps " + in_name +
                       " (only exact aliasing is allowed)");
  }
  return Status::Ok();
}

bool OnCuda(const Tensor& t) { return t.device().type == DeviceType::kCuda; }

[[maybe_unused]] Status CudaUnavailable(const char* op) {
  return UnavailableError(std::string(op) + ": CUDA kernels not built");
}

// Dispatches to cpu::Fn or cuda::Fn with the same arguments.
#if ARCHI_KERNELS_DISPATCH_CUDA
#define ARCHI_OPS_DISPATCH(op, ref, ...) \
  return OnCuda(ref) ? cuda::op(__VA_ARGS__) : cpu::op(__VA_ARGS__)
#else
#define ARCHI_OPS_DISPATCH(op, ref, ...) \
  return OnCuda(ref) ? CudaUnavailable(#op) : cpu::op(__VA_ARGS__)
#endif

// Element-wise unary op: y like x (may alias).
Status CheckUnary(const char* op, const Tensor& x, const Tensor& y) {
  ARCHI_RETURN_IF_ERROR(FloatTensor(op, "x", x));
  ARCHI_RETURN_IF_ERROR(Defined(op, "y", y));
  ARCHI_RETURN_IF_ERROR(SameDtype(op, "y", y, x, "x"));
  ARCHI_RETURN_IF_ERROR(Shape(op, "y", y, x.shape()));
  ARCHI_RETURN_IF_ERROR(SameDevice(op, {{"x", &x}, {"y", &y}}));
  return AliasOk(op, "y", y, "x", x);
}

// Row op over the last dimension: x rank >= 1.
Status CheckRowOp(const char* op, const Tensor& x, const Tensor& y) {
  ARCHI_RETURN_IF_ERROR(CheckUnary(op, x, y));
  if (x.shape().empty()) return Bad(op, "x must have rank >= 1");
  return Status::Ok();
}

Status CheckParam(const char* op, const char* name, const Tensor& p, const Tensor& x) {
  ARCHI_RETURN_IF_ERROR(Defined(op, name, p));
  ARCHI_RETURN_IF_ERROR(SameDtype(op, name, p, x, "x"));
  ARCHI_RETURN_IF_ERROR(Shape(op, name, p, {x.shape().back()}));
  return SameDevice(op, {{"x", &x}, {name, &p}});
}

Status CheckLengths(const char* op, const char* name, const Tensor* lengths, int64_t batch,
                    const Tensor& ref) {
  if (lengths == nullptr) return Status::Ok();
  ARCHI_RETURN_IF_ERROR(Defined(op, name, *lengths));
  if (lengths->dtype() != DType::kI32) {
    return Bad(op, std::string(name) + " must be i32, got " +
                       std::string(DTypeName(lengths->dtype())));
  }
  ARCHI_RETURN_IF_ERROR(Shape(op, name, *lengths, {batch}));
  return SameDevice(op, {{"x", &ref}, {name, lengths}});
}

}  // namespace

// ---- GEMM --------------------------------------------------------------------------------------

Status Gemm(const Tensor& a, const Tensor& b, const Tensor* bias, Tensor& c,
            const GemmOptions& opts, const KernelContext& ctx) {
  constexpr const char* op = "Gemm";
  ARCHI_RETURN_IF_ERROR(FloatTensor(op, "a", a));
  ARCHI_RETURN_IF_ERROR(Defined(op, "b", b));
  ARCHI_RETURN_IF_ERROR(Defined(op, "c", c));
  if (a.shape().size() < 2) return Bad(op, "a must have rank >= 2, got " + ShapeStr(a.shape()));
  ARCHI_RETURN_IF_ERROR(Rank(op, "b", b, 2));
  ARCHI_RETURN_IF_ERROR(SameDtype(op, "b", b, a, "a"));
  ARCHI_RETURN_IF_ERROR(SameDtype(op, "c", c, a, "a"));
  const int64_t k = a.shape().back();
  const int64_t n = opts.trans_b ? b.shape()[0] : b.shape()[1];
  const int64_t kb = opts.trans_b ? b.shape()[1] : b.shape()[0];
  if (kb != k) {
    return Bad(op, "b has shape " + ShapeStr(b.shape()) + " (trans_b=" +
                       (opts.trans_b ? "true" : "false") + "), inner dimension " +
                       std::to_string(kb) + " does not match a's " + std::to_string(k));
  }
  std::vector<int64_t> c_shape(a.shape().begin(), a.shape().end() - 1);
  c_shape.push_back(n);
  ARCHI_RETURN_IF_ERROR(Shape(op, "c", c, c_shape));
  ARCHI_RETURN_IF_ERROR(SameDevice(op, {{"a", &a}, {"b", &b}, {"c", &c}, {"bias", bias}}));
  if (bias != nullptr) {
    ARCHI_RETURN_IF_ERROR(Defined(op, "bias", *bias));
    ARCHI_RETURN_IF_ERROR(SameDtype(op, "bias", *bias, a, "a"));
    ARCHI_RETURN_IF_ERROR(Shape(op, "bias", *bias, {n}));
    ARCHI_RETURN_IF_ERROR(NoAlias(op, "c", c, "bias", *bias));
  }
  ARCHI_RETURN_IF_ERROR(NoAlias(op, "c", c, "a", a));
  ARCHI_RETURN_IF_ERROR(NoAlias(op, "c", c, "b", b));
  ARCHI_OPS_DISPATCH(Gemm, a, a, b, bias, c, opts, ctx);
}

Status BatchedGemm(const Tensor& a, const Tensor& b, Tensor& c, const GemmOptions& opts,
                   const KernelContext& ctx) {
  constexpr const char* op = "BatchedGemm";
  ARCHI_RETURN_IF_ERROR(FloatTensor(op, "a", a));
  ARCHI_RETURN_IF_ERROR(Defined(op, "b", b));
  ARCHI_RETURN_IF_ERROR(Defined(op, "c", c));
  ARCHI_RETURN_IF_ERROR(Rank(op, "a", a, 3));
  ARCHI_RETURN_IF_ERROR(Rank(op, "b", b, 3));
  ARCHI_RETURN_IF_ERROR(SameDtype(op, "b", b, a, "a"));
  ARCHI_RETURN_IF_ERROR(SameDtype(op, "c", c, a, "a"));
  const int64_t batch = a.shape()[0], m = a.shape()[1], k = a.shape()[2];
  if (b.shape()[0] != batch) {
    return Bad(op, "b has batch " + std::to_string(b.shape()[0]) + ", a has " +
                       std::to_string(batch));
  }
  const int64_t n = opts.trans_b ? b.shape()[1] : b.shape()[2];
  const int64_t kb = opts.trans_b ? b.shape()[2] : b.shape()[1];
  if (kb != k) {
    return Bad(op, "b has shape " + ShapeStr(b.shape()) + ", inner dimension " +
                       std::to_string(kb) + " does not match a's " + std::to_string(k));
  }
  ARCHI_RETURN_IF_ERROR(Shape(op, "c", c, {batch, m, n}));
  ARCHI_RETURN_IF_ERROR(SameDevice(op, {{"a", &a}, {"b", &b}, {"c", &c}}));
  ARCHI_RETURN_IF_ERROR(NoAlias(op, "c", c, "a", a));
  ARCHI_RETURN_IF_ERROR(NoAlias(op, "c", c, "b", b));
  ARCHI_OPS_DISPATCH(BatchedGemm, a, a, b, c, opts, ctx);
}

// ---- lookup, norms, activations -----------------------------------------------------------------

Status Embedding(const Tensor& ids, const Tensor& table, Tensor& out, const KernelContext& ctx) {
  constexpr const char* op = "Embedding";
  ARCHI_RETURN_IF_ERROR(Defined(op, "ids", ids));
  if (ids.dtype() != DType::kI32 && ids.dtype() != DType::kI64) {
    return Bad(op, "ids must be i32 or i64, got " + std::string(DTypeName(ids.dtype())));
  }
  ARCHI_RETURN_IF_ERROR(FloatTensor(op, "table", table));
  ARCHI_RETURN_IF_ERROR(Rank(op, "table", table, 2));
  ARCHI_RETURN_IF_ERROR(Defined(op, "out", out));
  ARCHI_RETURN_IF_ERROR(SameDtype(op, "out", out, table, "table"));
  std::vector<int64_t> out_shape = ids.shape();
  out_shape.push_back(table.shape()[1]);
  ARCHI_RETURN_IF_ERROR(Shape(op, "out", out, out_shape));
  ARCHI_RETURN_IF_ERROR(SameDevice(op, {{"ids", &ids}, {"table", &table}, {"out", &out}}));
  ARCHI_RETURN_IF_ERROR(NoAlias(op, "out", out, "table", table));
  ARCHI_RETURN_IF_ERROR(NoAlias(op, "out", out, "ids", ids));
  ARCHI_OPS_DISPATCH(Embedding, ids, ids, table, out, ctx);
}

Status LayerNorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps, Tensor& y,
                 const KernelContext& ctx) {
  constexpr const char* op = "LayerNorm";
  ARCHI_RETURN_IF_ERROR(CheckRowOp(op, x, y));
  ARCHI_RETURN_IF_ERROR(CheckParam(op, "gamma", gamma, x));
  ARCHI_RETURN_IF_ERROR(CheckParam(op, "beta", beta, x));
  if (!(eps >= 0.0f)) return Bad(op, "eps must be >= 0");
  ARCHI_OPS_DISPATCH(LayerNorm, x, x, gamma, beta, eps, y, ctx);
}

Status RmsNorm(const Tensor& x, const Tensor& gamma, float eps, Tensor& y,
               const KernelContext& ctx) {
  constexpr const char* op = "RmsNorm";
  ARCHI_RETURN_IF_ERROR(CheckRowOp(op, x, y));
  ARCHI_RETURN_IF_ERROR(CheckParam(op, "gamma", gamma, x));
  if (!(eps >= 0.0f)) return Bad(op, "eps must be >= 0");
  ARCHI_OPS_DISPATCH(RmsNorm, x, x, gamma, eps, y, ctx);
}

Status Gelu(const Tensor& x, Tensor& y, GeluKind kind, const KernelContext& ctx) {
  ARCHI_RETURN_IF_ERROR(CheckUnary("Gelu", x, y));
  if (kind != GeluKind::kErf && kind != GeluKind::kTanh) return Bad("Gelu", "unknown kind");
  ARCHI_OPS_DISPATCH(Gelu, x, x, y, kind, ctx);
}

Status Silu(const Tensor& x, Tensor& y, const KernelContext& ctx) {
  ARCHI_RETURN_IF_ERROR(CheckUnary("Silu", x, y));
  ARCHI_OPS_DISPATCH(Silu, x, x, y, ctx);
}

Status SwiGlu(const Tensor& gate, const Tensor& up, Tensor& y, const KernelContext& ctx) {
  constexpr const char* op = "SwiGlu";
  ARCHI_RETURN_IF_ERROR(FloatTensor(op, "gate", gate));
  ARCHI_RETURN_IF_ERROR(Defined(op, "up", up));
  ARCHI_RETURN_IF_ERROR(Defined(op, "y", y));
  ARCHI_RETURN_IF_ERROR(SameDtype(op, "up", up, gate, "gate"));
  ARCHI_RETURN_IF_ERROR(SameDtype(op, "y", y, gate, "gate"));
  ARCHI_RETURN_IF_ERROR(Shape(op, "up", up, gate.shape()));
  ARCHI_RETURN_IF_ERROR(Shape(op, "y", y, gate.shape()));
  ARCHI_RETURN_IF_ERROR(SameDevice(op, {{"gate", &gate}, {"up", &up}, {"y", &y}}));
  ARCHI_RETURN_IF_ERROR(AliasOk(op, "y", y, "gate", gate));
  ARCHI_RETURN_IF_ERROR(AliasOk(op, "y", y, "up", up));
  ARCHI_OPS_DISPATCH(SwiGlu, gate, gate, up, y, ctx);
}

Status Add(const Tensor& a, const Tensor& b, Tensor& out, const KernelContext& ctx) {
  constexpr const char* op = "Add";
  ARCHI_RETURN_IF_ERROR(FloatTensor(op, "a", a));
  ARCHI_RETURN_IF_ERROR(Defined(op, "b", b));
  ARCHI_RETURN_IF_ERROR(Defined(op, "out", out));
  ARCHI_RETURN_IF_ERROR(SameDtype(op, "b", b, a, "a"));
  ARCHI_RETURN_IF_ERROR(SameDtype(op, "out", out, a, "a"));
  ARCHI_RETURN_IF_ERROR(Shape(op, "b", b, a.shape()));
  ARCHI_RETURN_IF_ERROR(Shape(op, "out", out, a.shape()));
  ARCHI_RETURN_IF_ERROR(SameDevice(op, {{"a", &a}, {"b", &b}, {"out", &out}}));
  ARCHI_RETURN_IF_ERROR(AliasOk(op, "out", out, "a", a));
  ARCHI_RETURN_IF_ERROR(AliasOk(op, "out", out, "b", b));
  ARCHI_OPS_DISPATCH(Add, a, a, b, out, ctx);
}

Status Softmax(const Tensor& x, Tensor& y, const KernelContext& ctx) {
  ARCHI_RETURN_IF_ERROR(CheckRowOp("Softmax", x, y));
  ARCHI_OPS_DISPATCH(Softmax, x, x, y, ctx);
}

// ---- attention ---------------------------------------------------------------------------------

namespace {
Status CheckQ(const char* op, const Tensor& q, const Tensor& out) {
  ARCHI_RETURN_IF_ERROR(FloatTensor(op, "q", q));
  ARCHI_RETURN_IF_ERROR(Rank(op, "q", q, 4));
  ARCHI_RETURN_IF_ERROR(Defined(op, "out", out));
  ARCHI_RETURN_IF_ERROR(SameDtype(op, "out", out, q, "q"));
  ARCHI_RETURN_IF_ERROR(Shape(op, "out", out, q.shape()));
  ARCHI_RETURN_IF_ERROR(SameDevice(op, {{"q", &q}, {"out", &out}}));
  ARCHI_RETURN_IF_ERROR(NoAlias(op, "out", out, "q", q));
  if (q.shape()[3] == 0) return Bad(op, "q has head dimension 0");
  return Status::Ok();
}

// k, v [B, Hkv, S, D] against q [B, Hq, Sq, D].
Status CheckKv(const char* op, const Tensor& q, const char* kname, const Tensor& k,
               const char* vname, const Tensor& v, const Tensor& out) {
  ARCHI_RETURN_IF_ERROR(Defined(op, kname, k));
  ARCHI_RETURN_IF_ERROR(Defined(op, vname, v));
  ARCHI_RETURN_IF_ERROR(Rank(op, kname, k, 4));
  ARCHI_RETURN_IF_ERROR(SameDtype(op, kname, k, q, "q"));
  ARCHI_RETURN_IF_ERROR(SameDtype(op, vname, v, q, "q"));
  ARCHI_RETURN_IF_ERROR(Shape(op, vname, v, k.shape()));
  const auto& qs = q.shape();
  const auto& ks = k.shape();
  if (ks[0] != qs[0]) return Bad(op, std::string(kname) + " batch differs from q's");
  if (ks[3] != qs[3]) return Bad(op, std::string(kname) + " head dimension differs from q's");
  if (ks[1] == 0 || qs[1] % ks[1] != 0) {
    return Bad(op, "q heads (" + std::to_string(qs[1]) + ") must be a multiple of " + kname +
                       " heads (" + std::to_string(ks[1]) + ")");
  }
  ARCHI_RETURN_IF_ERROR(SameDevice(op, {{"q", &q}, {kname, &k}, {vname, &v}}));
  ARCHI_RETURN_IF_ERROR(NoAlias(op, "out", out, kname, k));
  return NoAlias(op, "out", out, vname, v);
}
}  // namespace

Status Attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* key_lengths,
                 Tensor& out, const AttentionOptions& opts, const KernelContext& ctx) {
  constexpr const char* op = "Attention";
  ARCHI_RETURN_IF_ERROR(CheckQ(op, q, out));
  ARCHI_RETURN_IF_ERROR(CheckKv(op, q, "k", k, "v", v, out));
  if (opts.causal && k.shape()[2] < q.shape()[2]) {
    return Bad(op, "causal attention needs Skv >= Sq");
  }
  ARCHI_RETURN_IF_ERROR(CheckLengths(op, "key_lengths", key_lengths, q.shape()[0], q));
  ARCHI_OPS_DISPATCH(Attention, q, q, k, v, key_lengths, out, opts, ctx);
}

Status KvAppend(KvCache& cache, const Tensor& k_new, const Tensor& v_new,
                const KernelContext& ctx) {
  constexpr const char* op = "KvAppend";
  ARCHI_RETURN_IF_ERROR(FloatTensor(op, "cache.k", cache.k));
  ARCHI_RETURN_IF_ERROR(Rank(op, "cache.k", cache.k, 4));
  ARCHI_RETURN_IF_ERROR(Defined(op, "cache.v", cache.v));
  ARCHI_RETURN_IF_ERROR(SameDtype(op, "cache.v", cache.v, cache.k, "cache.k"));
  ARCHI_RETURN_IF_ERROR(Shape(op, "cache.v", cache.v, cache.k.shape()));
  ARCHI_RETURN_IF_ERROR(Defined(op, "k_new", k_new));
  ARCHI_RETURN_IF_ERROR(Defined(op, "v_new", v_new));
  ARCHI_RETURN_IF_ERROR(SameDtype(op, "k_new", k_new, cache.k, "cache.k"));
  ARCHI_RETURN_IF_ERROR(SameDtype(op, "v_new", v_new, cache.k, "cache.k"));
  ARCHI_RETURN_IF_ERROR(Rank(op, "k_new", k_new, 4));
  ARCHI_RETURN_IF_ERROR(Shape(op, "v_new", v_new, k_new.shape()));
  const auto& cs = cache.k.shape();
  const auto& ns = k_new.shape();
  if (ns[0] != cs[0] || ns[1] != cs[1] || ns[3] != cs[3]) {
    return Bad(op, "k_new has shape " + ShapeStr(ns) + ", incompatible with cache.k " +
                       ShapeStr(cs) + " (B, H and D must match)");
  }
  ARCHI_RETURN_IF_ERROR(SameDevice(op, {{"cache.k", &cache.k},
                                  {"cache.v", &cache.v},
                                  {"k_new", &k_new},
                                  {"v_new", &v_new}}));
  if (Overlaps(cache.k, cache.v)) return Bad(op, "cache.k overlaps cache.v");
  for (const auto* t : {&k_new, &v_new}) {
    ARCHI_RETURN_IF_ERROR(NoAlias(op, "cache.k", cache.k, t == &k_new ? "k_new" : "v_new", *t));
    ARCHI_RETURN_IF_ERROR(NoAlias(op, "cache.v", cache.v, t == &k_new ? "k_new" : "v_new", *t));
  }
  if (cache.length < 0 || cache.length > cs[2]) {
    return Bad(op, "cache.length " + std::to_string(cache.length) + " is outside [0, " +
                       std::to_string(cs[2]) + "]");
  }
  if (cache.length + ns[2] > cs[2]) {
    return OutOfRangeError(std::string(op) + ": appending " + std::to_string(ns[2]) +
                           " positions at " + std::to_string(cache.length) +
                           " exceeds max_seq " + std::to_string(cs[2]));
  }
  ARCHI_OPS_DISPATCH(KvAppend, cache.k, cache, k_new, v_new, ctx);
}

Status AttentionKv(const Tensor& q, const KvCache& cache, Tensor& out,
                   const AttentionOptions& opts, const KernelContext& ctx) {
  constexpr const char* op = "AttentionKv";
  ARCHI_RETURN_IF_ERROR(CheckQ(op, q, out));
  ARCHI_RETURN_IF_ERROR(CheckKv(op, q, "cache.k", cache.k, "cache.v", cache.v, out));
  if (cache.length < 0 || cache.length > cache.k.shape()[2]) {
    return Bad(op, "cache.length " + std::to_string(cache.length) + " is outside [0, " +
                       std::to_string(cache.k.shape()[2]) + "]");
  }
  if (cache.length < q.shape()[2]) {
    return Bad(op, "q has " + std::to_string(q.shape()[2]) + " positions but the cache holds " +
                       std::to_string(cache.length) + " (append them first)");
  }
  ARCHI_OPS_DISPATCH(AttentionKv, q, q, cache, out, opts, ctx);
}

Status Rotary(Tensor& x, int64_t position_offset, float theta, const KernelContext& ctx) {
  constexpr const char* op = "Rotary";
  ARCHI_RETURN_IF_ERROR(FloatTensor(op, "x", x));
  ARCHI_RETURN_IF_ERROR(Rank(op, "x", x, 4));
  if (x.shape()[3] % 2 != 0) return Bad(op, "x head dimension must be even");
  if (position_offset < 0) return Bad(op, "position_offset must be >= 0");
  // Positions are position_offset + s for s < S; keep them exactly representable in the f32 angle
  // math (and far from int64 overflow).
  constexpr int64_t kMaxPosition = int64_t{1} << 24;
  if (position_offset > kMaxPosition - x.shape()[2]) {
    return Bad(op, "position_offset + sequence length exceeds 2^24 positions");
  }
  if (!(theta > 0.0f)) return Bad(op, "theta must be > 0");
  ARCHI_OPS_DISPATCH(Rotary, x, x, position_offset, theta, ctx);
}

// ---- pooling -------------------------------------------------------------------------------------

Status MeanPool(const Tensor& x, const Tensor* lengths, Tensor& out, const KernelContext& ctx) {
  constexpr const char* op = "MeanPool";
  ARCHI_RETURN_IF_ERROR(FloatTensor(op, "x", x));
  ARCHI_RETURN_IF_ERROR(Rank(op, "x", x, 3));
  ARCHI_RETURN_IF_ERROR(Defined(op, "out", out));
  ARCHI_RETURN_IF_ERROR(SameDtype(op, "out", out, x, "x"));
  ARCHI_RETURN_IF_ERROR(Shape(op, "out", out, {x.shape()[0], x.shape()[2]}));
  ARCHI_RETURN_IF_ERROR(SameDevice(op, {{"x", &x}, {"out", &out}}));
  ARCHI_RETURN_IF_ERROR(NoAlias(op, "out", out, "x", x));
  ARCHI_RETURN_IF_ERROR(CheckLengths(op, "lengths", lengths, x.shape()[0], x));
  ARCHI_OPS_DISPATCH(MeanPool, x, x, lengths, out, ctx);
}

Status L2Normalize(const Tensor& x, Tensor& y, float eps, const KernelContext& ctx) {
  ARCHI_RETURN_IF_ERROR(CheckRowOp("L2Normalize", x, y));
  if (!(eps >= 0.0f)) return Bad("L2Normalize", "eps must be >= 0");
  ARCHI_OPS_DISPATCH(L2Normalize, x, x, y, eps, ctx);
}

}  // namespace archi::kernels
