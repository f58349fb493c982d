#include "collectives/communicator.h"

#include <signal.h>

#include <mutex>

#include <exception>
#include <string>
#include <utility>

#include "archi/config.h"
#include "collectives/cpu/gloo_communicator.h"
#include "collectives/cpu/shm_communicator.h"
#include "collectives/work_impl.h"
#if ARCHI_HAVE_NCCL
#include "collectives/nccl/nccl_communicator.h"
#endif

namespace archi {

std::shared_ptr<Work> CompletedWork(Status status) {
  auto work = std::make_shared<PendingWork>();
  work->Complete(std::move(status));
  return work;
}

std::string_view BackendName(BackendKind kind) {
  switch (kind) {
    case BackendKind::kGloo:
      return "gloo";
    case BackendKind::kNccl:
      return "nccl";
  }
  return "unknown";
}

Result<BackendKind> ParseBackend(std::string_view name) {
  if (name == "gloo") return BackendKind::kGloo;
  if (name == "nccl") return BackendKind::kNccl;
  return InvalidArgumentError("unknown backend '" + std::string(name) +
                              "' (expected 'gloo' or 'nccl')");
}

bool BackendCompiledIn(BackendKind kind) {
  switch (kind) {
    case BackendKind::kGloo:
      return true;
    case BackendKind::kNccl:
      return ARCHI_HAVE_NCCL != 0;
  }
  return false;
}

namespace {
// A peer that dies mid-transfer must fail an op, not kill this process: socket transports (Gloo)
// write with plain write(2), which raises SIGPIPE on a closed connection. Ignore SIGPIPE unless
// the application installed a handler of its own.
void IgnoreSigpipeOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction old {};
    if (sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) {
      signal(SIGPIPE, SIG_IGN);
    }
  });
}
}  // namespace

std::string_view ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kProd: return "prod";
    case ReduceOp::kMin: return "min";
    case ReduceOp::kMax: return "max";
  }
  return "?";
}

bool IsValidReduceOp(ReduceOp op) { return static_cast<uint8_t>(op) <= static_cast<uint8_t>(ReduceOp::kMax); }

std::string WireDTypeName(uint8_t dtype) {
  if (dtype > static_cast<uint8_t>(DType::kU8)) return "dtype#" + std::to_string(dtype);
  return std::string(DTypeName(static_cast<DType>(dtype)));
}

Result<std::unique_ptr<Communicator>> CreateCommunicator(BackendKind kind, int rank, int size,
                                                         std::shared_ptr<Store> store,
                                                         CommOptions options) {
  IgnoreSigpipeOnce();
  try {
    switch (kind) {
      case BackendKind::kGloo:
        return CreateCpuCommunicator(rank, size, std::move(store), std::move(options));
      case BackendKind::kNccl:
#if ARCHI_HAVE_NCCL
        return NcclCommunicator::Create(rank, size, std::move(store), std::move(options));
#else
        return UnimplementedError("NCCL backend not built (NCCL or the CUDA toolkit not found)");
#endif
    }
    return InvalidArgumentError("unknown backend kind " + std::to_string(static_cast<int>(kind)));
  } catch (const std::exception& e) {
    return InternalError(std::string("CreateCommunicator: unexpected exception: ") + e.what());
  } catch (...) {
    return InternalError("CreateCommunicator: unexpected non-standard exception");
  }
}

}  // namespace archi
