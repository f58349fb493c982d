// Transformer inference operators. One function per op; each checks shapes, dtypes and devices
// (kInvalidArgument with a message naming the op and the offending argument), then dispatches on
// the tensors' device: CPU implementations in kernels/cpu/, CUDA implementations in kernels/cuda/
// (compiled when ARCHI_HAVE_CUDA; without it, or without a usable GPU, CUDA tensors give
// kUnavailable). All tensors of one call must be on the same device. No op allocates its outputs:
// the caller passes them with the right shape and dtype.
//
// Layout: row-major, contiguous. Storage dtypes f32, f16, bf16 for activations and weights (all
// floating tensors of one call share a dtype unless stated); accumulation is always f32.
// Thread safety: ops are reentrant; the CPU path uses up to KernelContext::num_threads threads.
#pragma once

#include <cstdint>

#include "runtime/core/status.h"
#include "runtime/core/tensor.h"

namespace archi::kernels {

struct KernelContext {
  // CPU: threads to use; 0 = all available (OpenMP default), 1 = single-threaded (tests).
  int num_threads = 0;
  // CUDA: the stream every launch goes to (a cudaStream_t; nullptr = the legacy default stream).
  void* cuda_stream = nullptr;
};

// ---- GEMM --------------------------------------------------------------------------------------
struct GemmOptions {
  bool trans_b = true;   // b is [N, K] (PyTorch Linear weight layout) when true, [K, N] when false
  float alpha = 1.0f;
  float beta = 0.0f;     // c = alpha * a @ op(b) + beta * c (+ bias)
};
// a [M, K], b [N, K] or [K, N], bias [N] or nullptr, c [M, N]. Leading dims of `a` may be more
// than one (e.g. [B, S, K] is treated as [B*S, K]).
Status Gemm(const Tensor& a, const Tensor& b, const Tensor* bias, Tensor& c,
            const GemmOptions& opts = {}, const KernelContext& ctx = {});
// Batched: a [B, M, K], b [B, N, K] or [B, K, N], c [B, M, N].
Status BatchedGemm(const Tensor& a, const Tensor& b, Tensor& c, const GemmOptions& opts = {},
                   const KernelContext& ctx = {});

// ---- lookup, norms, activations -----------------------------------------------------------------
// ids i32 or i64 [N...], table [V, H], out [N..., H]. An id outside [0, V) is kOutOfRange.
Status Embedding(const Tensor& ids, const Tensor& table, Tensor& out, const KernelContext& ctx = {});
// x [R..., H]; gamma, beta [H]; y like x (may alias x).
Status LayerNorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps, Tensor& y,
                 const KernelContext& ctx = {});
Status RmsNorm(const Tensor& x, const Tensor& gamma, float eps, Tensor& y,
               const KernelContext& ctx = {});

enum class GeluKind : uint8_t { kErf, kTanh };
// Element-wise; y like x (may alias x).
Status Gelu(const Tensor& x, Tensor& y, GeluKind kind = GeluKind::kErf, const KernelContext& ctx = {});
Status Silu(const Tensor& x, Tensor& y, const KernelContext& ctx = {});
// y = silu(gate) * up; all the same shape.
Status SwiGlu(const Tensor& gate, const Tensor& up, Tensor& y, const KernelContext& ctx = {});
// out = a + b (residual add), same shapes; out may alias a or b.
Status Add(const Tensor& a, const Tensor& b, Tensor& out, const KernelContext& ctx = {});
// Row softmax over the last dimension; y may alias x.
Status Softmax(const Tensor& x, Tensor& y, const KernelContext& ctx = {});

// ---- attention ---------------------------------------------------------------------------------
struct AttentionOptions {
  bool causal = false;      // decoder: query i attends keys <= i + (Skv - Sq) (prefill and decode)
  float scale = 0.0f;       // 0: 1/sqrt(D)
};
// q [B, Hq, Sq, D]; k, v [B, Hkv, Skv, D] with Hq % Hkv == 0 (grouped-query attention);
// out [B, Hq, Sq, D]. key_lengths: i32 [B] number of valid keys per batch row (padding mask for
// encoders; keys at positions >= length are ignored), or nullptr for all Skv keys.
// Must not materialise a full [Sq, Skv] score matrix per head for long sequences (tile over keys
// with an online softmax).
Status Attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* key_lengths,
                 Tensor& out, const AttentionOptions& opts = {}, const KernelContext& ctx = {});

// KV cache for decoders: k, v [B, H, max_seq, D]; `length` positions are filled.
struct KvCache {
  Tensor k;
  Tensor v;
  int64_t length = 0;
};
// Appends k_new, v_new [B, H, S_new, D] at position cache.length (kOutOfRange past max_seq) and
// advances length. Then Attention(q, view of the first `length` positions...) via AttentionKv.
Status KvAppend(KvCache& cache, const Tensor& k_new, const Tensor& v_new,
                const KernelContext& ctx = {});
// Causal attention of q [B, Hq, Sq, D] (the newest Sq positions) over the cache's first `length`
// positions.
Status AttentionKv(const Tensor& q, const KvCache& cache, Tensor& out,
                   const AttentionOptions& opts = {}, const KernelContext& ctx = {});

// Rotary position embeddings (GPT-NeoX / LLaMA "rotate half" form) in place on x [B, H, S, D]:
// position of row s is position_offset + s; frequencies theta^(-2i/D).
Status Rotary(Tensor& x, int64_t position_offset, float theta = 10000.0f,
              const KernelContext& ctx = {});

// ---- pooling -------------------------------------------------------------------------------------
// x [B, S, H], lengths i32 [B] (valid tokens) or nullptr, out [B, H] = mean over valid tokens.
Status MeanPool(const Tensor& x, const Tensor* lengths, Tensor& out, const KernelContext& ctx = {});
// Row-wise L2 normalisation over the last dimension (eps guards zero rows); y may alias x.
Status L2Normalize(const Tensor& x, Tensor& y, float eps = 1e-12f, const KernelContext& ctx = {});

}  // namespace archi::kernels
