// Launch-parameter selection for the CUDA kernels: plain C++ (no CUDA types), so that it is
// shared by the launchers and unit-tested on machines without a GPU (tests/kernels/
// kernels_gpu_test.cc, LaunchConfig* tests).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace archi::kernels::cuda {

inline constexpr int kWarpSize = 32;

// Element-wise kernels: a grid-stride loop over n elements with `threads` per block; the grid is
// capped (each thread then handles several elements) and never empty.
inline constexpr int kElementwiseThreads = 256;
inline constexpr int64_t kMaxElementwiseBlocks = 65536;
inline int64_t ElementwiseBlocks(int64_t n, int threads = kElementwiseThreads) {
  return std::clamp<int64_t>((n + threads - 1) / threads, 1, kMaxElementwiseBlocks);
}

// Row kernels (LayerNorm, RmsNorm, softmax, L2 normalisation): rows of up to kWarpRowMaxCols
// columns get one warp each (kRowWarpsPerBlock rows per block, reductions by warp shuffles only);
// longer rows get a whole block each (reduction through shared memory), 512 threads, or 1024 for
// rows of 8192+ columns, so each thread keeps a handful of elements.
inline constexpr int64_t kWarpRowMaxCols = 1024;
inline constexpr int kRowWarpsPerBlock = 8;
struct RowLaunchConfig {
  bool warp_per_row = true;
  int threads = 0;     // per block, a multiple of kWarpSize
  int64_t blocks = 0;  // >= 1
};
inline RowLaunchConfig ChooseRowConfig(int64_t rows, int64_t cols) {
  if (cols <= kWarpRowMaxCols) {
    const int64_t blocks = (rows + kRowWarpsPerBlock - 1) / kRowWarpsPerBlock;
    return {true, kRowWarpsPerBlock * kWarpSize, std::max<int64_t>(blocks, 1)};
  }
  return {false, cols >= 8192 ? 1024 : 512, std::max<int64_t>(rows, 1)};
}

// Attention: a block owns one (batch, kv head) and `warps` query rows of that kv head's group
// (GQA: the Hq/Hkv query heads sharing it, times Sq positions), one row per warp. It streams the
// keys in tiles of kAttnKeyTile (one key per lane) through shared memory as f32 with an odd row
// pitch (D | 1 <= D + 1 floats: no bank conflicts when each lane reads its own key), and keeps an
// online softmax: no [Sq, Skv] score matrix exists anywhere. Head dims up to kAttnMaxHeadDim; each
// lane owns head_dim_chunks output elements (d = lane + 32 * c) in registers.
inline constexpr int kAttnKeyTile = kWarpSize;
inline constexpr int64_t kAttnMaxHeadDim = 256;
struct AttentionLaunchConfig {
  int warps = 0;            // rows (and warps) per block: 4 or 8
  int head_dim_chunks = 0;  // 2 (D <= 64), 4 (D <= 128) or 8 (D <= 256)
  int64_t row_blocks = 0;   // blocks along the rows of one kv head
  size_t smem_bytes = 0;    // dynamic shared memory: K and V tiles (pitch D + 1, an upper
                            // bound) + one query row per warp
};
// rows_per_kv_head = (Hq / Hkv) * Sq. head_dim must be in [1, kAttnMaxHeadDim].
inline AttentionLaunchConfig ChooseAttentionConfig(int64_t head_dim, int64_t rows_per_kv_head) {
  AttentionLaunchConfig c;
  // At least 4 warps even for a single decode row: they all help loading the K/V tiles.
  c.warps = rows_per_kv_head <= 4 ? 4 : 8;
  c.head_dim_chunks = head_dim <= 64 ? 2 : (head_dim <= 128 ? 4 : 8);
  c.row_blocks = std::max<int64_t>((rows_per_kv_head + c.warps - 1) / c.warps, 1);
  c.smem_bytes =
      sizeof(float) * static_cast<size_t>(2 * kAttnKeyTile * (head_dim + 1) + c.warps * head_dim);
  return c;
}

}  // namespace archi::kernels::cuda
