// Scaled-dot-product attention on CUDA: a tiled kernel that streams keys through shared memory
// with an online softmax (never a [Sq, Skv] score matrix), padding lengths, causal masking with
// an offset (prefill and decode over a KV cache), grouped-query attention. Tiling in
// launch_config.h (ChooseAttentionConfig). Host launchers only; kernels in attention.cu.
#pragma once

#include <cuda_runtime.h>
#include <library_types.h>

#include <cstdint>

#include "kernels/cuda/launch_result.cuh"

namespace archi::kernels::cuda {

struct AttentionArgs {
  const void* q = nullptr;  // [batch, q_heads, q_len, head_dim]
  const void* k = nullptr;  // [batch, kv_heads, kv_capacity, head_dim]: the first kv_len are used
  const void* v = nullptr;  // same layout as k
  void* out = nullptr;      // [batch, q_heads, q_len, head_dim]
  // i32 [batch] valid keys per batch row (clamped to [0, kv_len]) or nullptr (all kv_len).
  const int32_t* key_lengths = nullptr;
  int64_t batch = 0, q_heads = 0, kv_heads = 0, q_len = 0, kv_len = 0, kv_capacity = 0;
  int64_t head_dim = 0;  // <= kAttnMaxHeadDim (256)
  float scale = 0.0f;    // already resolved (1/sqrt(D) when the op's option is 0)
  // Query i attends keys j <= i + (kv_len - q_len). A query with no key to attend gets zeros.
  bool causal = false;
};

LaunchResult InvokeAttention(cudaDataType_t dtype, const AttentionArgs& args, cudaStream_t stream);

// Copies src [rows, src_len, head_dim] into dst [rows, dst_capacity, head_dim] at position
// `start` of each row (rows = batch * heads): one 2D memcpy on the stream. elem_size in bytes.
LaunchResult InvokeKvAppend(const void* src, void* dst, int64_t rows, int64_t src_len,
                            int64_t dst_capacity, int64_t start, int64_t head_dim, size_t elem_size,
                            cudaStream_t stream);

}  // namespace archi::kernels::cuda
