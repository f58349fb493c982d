// Embedding kernel: blocks walk the output rows (grid-stride), threads copy the row's elements
// (a plain copy of the storage type: no conversion, bit-exact with the CPU).
#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/embedding.cuh"

namespace archi::kernels::cuda {
namespace {

// bad[0] = 1 + the first bad position seen (0: none), bad[1] = its id.
template <typename T, typename Id>
__global__ void EmbeddingKernel(const Id* ids, const typename T::Storage* table,
                                typename T::Storage* out, int64_t count, int64_t vocab,
                                int64_t hidden, unsigned long long* bad) {
  for (int64_t n = blockIdx.x; n < count; n += gridDim.x) {
    const int64_t id = static_cast<int64_t>(ids[n]);
    typename T::Storage* dst = out + n * hidden;
    if (id < 0 || id >= vocab) {
      if (threadIdx.x == 0 &&
          atomicCAS(&bad[0], 0ull, static_cast<unsigned long long>(n) + 1) == 0ull) {
        bad[1] = static_cast<unsigned long long>(id);
      }
      for (int64_t h = threadIdx.x; h < hidden; h += blockDim.x) dst[h] = typename T::Storage{};
      continue;
    }
    const typename T::Storage* src = table + id * hidden;
    for (int64_t h = threadIdx.x; h < hidden; h += blockDim.x) dst[h] = src[h];
  }
}

// Stream-ordered scratch for the out-of-range report, freed on every path.
class DeviceFlag {
 public:
  explicit DeviceFlag(cudaStream_t stream) : stream_(stream) {}
  ~DeviceFlag() {
    if (ptr_ != nullptr) (void)cudaFreeAsync(ptr_, stream_);
  }
  DeviceFlag(const DeviceFlag&) = delete;
  DeviceFlag& operator=(const DeviceFlag&) = delete;
  LaunchResult Allocate() {
    ARCHI_CU_RETURN_IF_ERROR(cudaMallocAsync(reinterpret_cast<void**>(&ptr_), kBytes, stream_));
    ARCHI_CU_RETURN_IF_ERROR(cudaMemsetAsync(ptr_, 0, kBytes, stream_));
    return LaunchResult::Ok();
  }
  unsigned long long* get() const { return ptr_; }
  static constexpr size_t kBytes = 2 * sizeof(unsigned long long);

 private:
  cudaStream_t stream_;
  unsigned long long* ptr_ = nullptr;
};

template <typename T>
LaunchResult LaunchEmbedding(const void* ids, bool ids_i64, const void* table, void* out,
                             int64_t count, int64_t vocab, int64_t hidden, cudaStream_t stream) {
  using S = typename T::Storage;
  DeviceFlag bad(stream);
  ARCHI_LAUNCH_RETURN_IF_ERROR(bad.Allocate());
  const int threads = hidden >= 256 ? 256 : 128;
  const auto blocks = static_cast<unsigned>(std::min<int64_t>(count, kMaxElementwiseBlocks));
  if (ids_i64) {
    EmbeddingKernel<T, int64_t><<<blocks, threads, 0, stream>>>(
        static_cast<const int64_t*>(ids), static_cast<const S*>(table), static_cast<S*>(out), count,
        vocab, hidden, bad.get());
  } else {
    EmbeddingKernel<T, int32_t><<<blocks, threads, 0, stream>>>(
        static_cast<const int32_t*>(ids), static_cast<const S*>(table), static_cast<S*>(out), count,
        vocab, hidden, bad.get());
  }
  ARCHI_CU_RETURN_IF_LAUNCH_FAILED();
  unsigned long long host[2] = {0, 0};
  ARCHI_CU_RETURN_IF_ERROR(
      cudaMemcpyAsync(host, bad.get(), DeviceFlag::kBytes, cudaMemcpyDeviceToHost, stream));
  ARCHI_CU_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  if (host[0] != 0) {
    return MakeLaunchError(LaunchCode::kOutOfRange,
                           "Embedding: ids[" + std::to_string(host[0] - 1) +
                               "] = " + std::to_string(static_cast<long long>(host[1])) +
                               " is outside [0, " + std::to_string(vocab) + ")",
                           __FILE__, __LINE__);
  }
  return LaunchResult::Ok();
}

}  // namespace

LaunchResult InvokeEmbedding(cudaDataType_t dtype, const void* ids, bool ids_i64, const void* table,
                             void* out, int64_t count, int64_t vocab, int64_t hidden,
                             cudaStream_t stream) {
  if (count == 0 || hidden == 0) return LaunchResult::Ok();
  ARCHI_CUDA_DISPATCH_FLOAT(dtype, LaunchEmbedding, ids, ids_i64, table, out, count, vocab, hidden,
                            stream);
}

}  // namespace archi::kernels::cuda
