// Tiled attention kernel (flash-attention style, CUDA cores, f32 math).
//
// Block (row_block, kv_head, batch) owns `warps` query rows of one kv head's group; row r of the
// group is query head kv_head * G + r / q_len at position r % q_len (G = q_heads / kv_heads), so
// for GQA the K/V tiles are loaded once for all query heads sharing them. Per tile of 32 keys:
//   1. the block loads K and V (f32, rows padded to an odd pitch) into shared memory;
//   2. lane j of each warp computes the score of key j against the warp's query row (q pre-scaled
//      in shared memory), masked to -inf for padding (>= key length) and causal positions;
//   3. the warp's running max m and sum l are updated with numeric.h OnlineSoftmaxRescale, and
//      each lane accumulates its D/32 output elements: acc = acc * factor + sum_j p_j v_j.
// Output = acc / l (zeros when no key was visible). Causal blocks stop at the last key any of
// their rows can see.
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/device_common.cuh"

namespace archi::kernels::cuda {
namespace {

template <typename T, int kChunks>
__global__ void AttentionKernel(AttentionArgs a) {
  using S = typename T::Storage;
  extern __shared__ float smem[];
  const int d_total = static_cast<int>(a.head_dim);
  // Odd row pitch: lane j reading k_tile[j * pitch + d] hits bank (j * pitch + d) % 32, all
  // distinct. (launch_config.h sizes the tiles for D + 1, an upper bound.)
  const int pitch = d_total | 1;
  float* k_tile = smem;
  float* v_tile = k_tile + kAttnKeyTile * pitch;
  const int warps = static_cast<int>(blockDim.x / kWarpSize);
  const int warp = static_cast<int>(threadIdx.x / kWarpSize);
  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  float* q_row = v_tile + kAttnKeyTile * pitch + warp * d_total;

  const int64_t b = blockIdx.z;
  const int64_t kv_head = blockIdx.y;
  const int64_t group = a.q_heads / a.kv_heads;
  const int64_t rows = group * a.q_len;
  const int64_t first_row = static_cast<int64_t>(blockIdx.x) * warps;
  const int64_t row = first_row + warp;
  const bool row_valid = row < rows;
  const int64_t q_pos = row_valid ? row % a.q_len : 0;
  const int64_t q_head = kv_head * group + (row_valid ? row / a.q_len : 0);
  const int64_t offset = a.kv_len - a.q_len;

  int64_t key_len = a.kv_len;
  if (a.key_lengths != nullptr) {
    key_len = min(max(static_cast<int64_t>(a.key_lengths[b]), int64_t{0}), a.kv_len);
  }
  // Keys this block needs: up to the largest visible position among its rows.
  int64_t key_end = key_len;
  if (a.causal) {
    const int64_t last_row = min(first_row + warps, rows) - 1;
    const int64_t max_pos =
        (first_row / a.q_len != last_row / a.q_len) ? a.q_len - 1 : last_row % a.q_len;
    key_end = min(key_end, max(max_pos + offset + 1, int64_t{0}));
  }
  const int64_t row_key_end =
      a.causal ? min(key_len, max(q_pos + offset + 1, int64_t{0})) : key_len;

  const S* q = static_cast<const S*>(a.q) + ((b * a.q_heads + q_head) * a.q_len + q_pos) * d_total;
  const int64_t kv_base = (b * a.kv_heads + kv_head) * a.kv_capacity * d_total;
  const S* k = static_cast<const S*>(a.k) + kv_base;
  const S* v = static_cast<const S*>(a.v) + kv_base;
  if (row_valid) {
    for (int d = lane; d < d_total; d += kWarpSize) q_row[d] = T::Load(q[d]) * a.scale;
  }

  float m = -INFINITY;
  float l = 0.0f;
  float acc[kChunks];
#pragma unroll
  for (int c = 0; c < kChunks; ++c) acc[c] = 0.0f;

  for (int64_t t0 = 0; t0 < key_end; t0 += kAttnKeyTile) {
    __syncthreads();  // the previous tile is consumed (and q_row written, on the first pass)
    const int64_t tile_keys = min(static_cast<int64_t>(kAttnKeyTile), key_end - t0);
    for (int i = threadIdx.x; i < kAttnKeyTile * d_total; i += blockDim.x) {
      const int j = i / d_total;
      const int d = i % d_total;
      float kv = 0.0f, vv = 0.0f;
      if (j < tile_keys) {
        kv = T::Load(k[(t0 + j) * d_total + d]);
        vv = T::Load(v[(t0 + j) * d_total + d]);
      }
      k_tile[j * pitch + d] = kv;
      v_tile[j * pitch + d] = vv;
    }
    __syncthreads();
    if (!row_valid) continue;  // warp-uniform; the warp still joins the block barriers

    const int64_t key = t0 + lane;
    const bool visible = key < row_key_end;
    float s = -INFINITY;
    if (visible) {
      const float* kr = k_tile + lane * pitch;
      float dot = 0.0f;
      for (int d = 0; d < d_total; ++d) dot += q_row[d] * kr[d];
      s = dot;
    }
    const float tile_max = WarpReduce<MaxOp>(s);
    const float factor = OnlineSoftmaxRescale(m, tile_max);
    if (m == -INFINITY) continue;  // nothing visible yet (warp-uniform)
    const float p = visible ? expf(s - m) : 0.0f;
    l = l * factor + WarpReduce<SumOp>(p);
#pragma unroll
    for (int c = 0; c < kChunks; ++c) acc[c] *= factor;
    for (int j = 0; j < kAttnKeyTile; ++j) {
      const float pj = __shfl_sync(0xffffffffu, p, j);
      const float* vr = v_tile + j * pitch;
#pragma unroll
      for (int c = 0; c < kChunks; ++c) {
        const int d = lane + c * kWarpSize;
        if (d < d_total) acc[c] += pj * vr[d];
      }
    }
  }

  if (!row_valid) return;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  S* o = static_cast<S*>(a.out) + ((b * a.q_heads + q_head) * a.q_len + q_pos) * d_total;
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int d = lane + c * kWarpSize;
    if (d < d_total) o[d] = T::Store(acc[c] * inv);
  }
}

template <typename T, int kChunks>
LaunchResult LaunchAttentionChunks(const AttentionArgs& a, const AttentionLaunchConfig& cfg,
                                   cudaStream_t stream) {
  auto* kernel = &AttentionKernel<T, kChunks>;
  if (cfg.smem_bytes > 48 * 1024) {
    ARCHI_CU_RETURN_IF_ERROR(cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(cfg.smem_bytes)));
  }
  const dim3 grid(static_cast<unsigned>(cfg.row_blocks), static_cast<unsigned>(a.kv_heads),
                  static_cast<unsigned>(a.batch));
  kernel<<<grid, cfg.warps * kWarpSize, cfg.smem_bytes, stream>>>(a);
  ARCHI_CU_RETURN_IF_LAUNCH_FAILED();
  return LaunchResult::Ok();
}

template <typename T>
LaunchResult LaunchAttention(const AttentionArgs& a, cudaStream_t stream) {
  const AttentionLaunchConfig cfg =
      ChooseAttentionConfig(a.head_dim, (a.q_heads / a.kv_heads) * a.q_len);
  switch (cfg.head_dim_chunks) {
    case 2:
      return LaunchAttentionChunks<T, 2>(a, cfg, stream);
    case 4:
      return LaunchAttentionChunks<T, 4>(a, cfg, stream);
    default:
      return LaunchAttentionChunks<T, 8>(a, cfg, stream);
  }
}

}  // namespace

LaunchResult InvokeAttention(cudaDataType_t dtype, const AttentionArgs& a, cudaStream_t stream) {
  if (a.batch == 0 || a.q_heads == 0 || a.q_len == 0 || a.head_dim == 0) return LaunchResult::Ok();
  if (a.head_dim > kAttnMaxHeadDim || a.kv_heads <= 0 || a.q_heads % a.kv_heads != 0 ||
      a.kv_len > a.kv_capacity || a.batch > 65535 || a.kv_heads > 65535) {
    return MakeLaunchError(LaunchCode::kInvalidArgument,
                           "Attention: unsupported shape (head_dim " + std::to_string(a.head_dim) +
                               " must be <= " + std::to_string(kAttnMaxHeadDim) +
                               ", batch and kv heads <= 65535, q heads a multiple of kv heads)",
                           __FILE__, __LINE__);
  }
  ARCHI_CUDA_DISPATCH_FLOAT(dtype, LaunchAttention, a, stream);
}

LaunchResult InvokeKvAppend(const void* src, void* dst, int64_t rows, int64_t src_len,
                            int64_t dst_capacity, int64_t start, int64_t head_dim, size_t elem_size,
                            cudaStream_t stream) {
  if (rows == 0 || src_len == 0 || head_dim == 0) return LaunchResult::Ok();
  const size_t row_bytes = static_cast<size_t>(head_dim) * elem_size;
  ARCHI_CU_RETURN_IF_ERROR(cudaMemcpy2DAsync(
      static_cast<char*>(dst) + static_cast<size_t>(start) * row_bytes,
      static_cast<size_t>(dst_capacity) * row_bytes, src, static_cast<size_t>(src_len) * row_bytes,
      static_cast<size_t>(src_len) * row_bytes, static_cast<size_t>(rows), cudaMemcpyDeviceToDevice,
      stream));
  return LaunchResult::Ok();
}

}  // namespace archi::kernels::cuda
