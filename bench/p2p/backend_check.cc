#include "bench/p2p/backend_check.h"

#include <algorithm>
#include <cstdio>

#include "runtime/core/device_buffer.h"

namespace archi::bench {

std::string BackendUnavailableReason(BackendKind kind, int device) {
  if (kind != BackendKind::kNccl) return {};
  if (!BackendCompiledIn(kind)) {
    return "the NCCL backend is not compiled into this build (no CUDA toolkit/NCCL found)";
  }
  const int count = CudaDeviceCount();
  if (count == 0) {
    // CudaDeviceCount() hides the CUDA error; a one-byte allocation reports it (e.g.
    // "cudaErrorInsufficientDriver" with the toolkit but no driver, "cudaErrorNoDevice").
    auto probe = DeviceBuffer::Allocate(1, Device::Cuda(0));
    if (probe.ok()) return "cudaGetDeviceCount reports 0 devices";
    return "no usable CUDA device: " + std::string(probe.status().message());
  }
  if (device >= count) {
    return "local rank " + std::to_string(device) + " needs CUDA device " +
           std::to_string(device) + " but only " + std::to_string(count) + " are visible";
  }
  return {};
}

std::string AgreeOnSkip(MpiJob& job, const std::string& reason) {
  // The lowest failing rank wins: Max over (size - rank) of the failing ranks.
  const double mine = reason.empty() ? 0 : static_cast<double>(job.size() - job.rank());
  const int top = static_cast<int>(job.Max(mine));
  if (top == 0) return {};
  const int root = job.size() - top;
  char buf[512] = {0};
  if (job.rank() == root) std::snprintf(buf, sizeof(buf), "%s", reason.c_str());
  job.Broadcast(buf, sizeof(buf), root);
  return root == 0 ? std::string(buf) : "rank " + std::to_string(root) + ": " + buf;
}

std::string SkipLine(const std::string& bench, const std::string& reason) {
  return "archi-bench " + bench + " --backend nccl: no GPU on this machine (" + reason +
         "); skipped";
}

}  // namespace archi::bench
