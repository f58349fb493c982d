#include "collectives/nccl/nccl_communicator.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <string>

#include "collectives/work_impl.h"
#include "runtime/core/logging.h"

namespace archi {

namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;

constexpr uint16_t kMagic = 0xA7C4;
constexpr uint8_t kKindSend = 1;
constexpr uint8_t kKindRecv = 2;
constexpr uint32_t kMaxTag = 1u << 20;
constexpr const char* kUniqueIdKey = "nccl_unique_id";
// Polling periods: short while work is outstanding, long when idle (only async errors to watch).
constexpr microseconds kBusyPoll(100);
constexpr milliseconds kIdlePoll(20);
// After a break, how long the watchdog waits for NCCL to quiesce before failing the ops anyway.
constexpr milliseconds kQuiesceTimeout(2000);
constexpr milliseconds kFinalizeTimeout(5000);

// The point-to-point header, exchanged in both directions before every payload.
struct WireHeader {
  uint16_t magic = 0;
  uint8_t kind = 0;
  uint8_t dtype = 0;
  uint32_t tag = 0;
  uint64_t nbytes = 0;
};
static_assert(sizeof(WireHeader) == 16);

ncclDataType_t ToNccl(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kF16:
      return ncclFloat16;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kI32:
      return ncclInt32;
    case DType::kI64:
      return ncclInt64;
    case DType::kU8:
      return ncclUint8;
  }
  return ncclUint8;
}


ncclRedOp_t ToNccl(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kProd:
      return ncclProd;
    case ReduceOp::kMin:
      return ncclMin;
    case ReduceOp::kMax:
      return ncclMax;
  }
  return ncclSum;
}

std::string ToHex(const void* data, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(kDigits[p[i] >> 4]);
    out.push_back(kDigits[p[i] & 15]);
  }
  return out;
}

bool FromHex(const std::string& hex, void* data, size_t n) {
  if (hex.size() != 2 * n) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  auto* p = static_cast<uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) {
    const int hi = nibble(hex[2 * i]);
    const int lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    p[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

// Polls a non-blocking communicator until it leaves ncclInProgress or `deadline` passes.
ncclResult_t PollComm(ncclComm_t comm, Deadline deadline, bool* timed_out) {
  *timed_out = false;
  while (true) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(comm, &state);
    if (r != ncclSuccess) return r;
    if (state != ncclInProgress) return state;
    if (deadline.Expired()) {
      *timed_out = true;
      return ncclInProgress;
    }
    std::this_thread::sleep_for(kBusyPoll);
  }
}

}  // namespace

// ---- op records ---------------------------------------------------------------------------------

struct NcclCommunicator::Op {
  enum class Kind : uint8_t { kSend, kRecv, kCollective };
  Kind kind = Kind::kCollective;
  uint64_t id = 0;
  std::string what;
  Deadline deadline = Deadline::Infinite();
  int64_t timeout_ms = 0;
  std::shared_ptr<PendingWork> work = std::make_shared<PendingWork>();
  bool deadline_hit = false;  // guarded by mu_
  // Point to point.
  int peer = -1;
  uint32_t tag = 0;
  void* data = nullptr;
  size_t nbytes = 0;
  DType dtype = DType::kU8;
  // Collectives: issues the NCCL call(s) on (comm, stream).
  std::function<ncclResult_t(ncclComm_t, cudaStream_t)> issue;
  // Outcome once the event completes (OK, or kInvalidArgument after a header mismatch).
  Status result;
  CudaEvent event;  // recorded after the op's work on the stream
};

// ---- construction -------------------------------------------------------------------------------

NcclCommunicator::NcclCommunicator(int rank, int size, int device, CommOptions options)
    : rank_(rank), size_(size), device_(device), options_(std::move(options)) {}

Result<std::unique_ptr<Communicator>> NcclCommunicator::Create(int rank, int size,
                                                               std::shared_ptr<Store> store,
                                                               CommOptions options) {
  if (size < 1) return InvalidArgumentError("nccl: size must be >= 1, got " + std::to_string(size));
  if (rank < 0 || rank >= size) {
    return InvalidArgumentError("nccl: rank " + std::to_string(rank) + " out of range for size " +
                                std::to_string(size));
  }
  if (!store) return InvalidArgumentError("nccl: null store");
  if (options.connect_timeout_ms <= 0) return InvalidArgumentError("nccl: connect_timeout_ms <= 0");
  const Deadline deadline = Deadline::AfterMs(options.connect_timeout_ms);
  const std::string who = "nccl connect (rank " + std::to_string(rank) + "/" +
                          std::to_string(size) + ")";

  int count = 0;
  if (cudaError_t e = cudaGetDeviceCount(&count); e != cudaSuccess || count == 0) {
    if (e != cudaSuccess) (void)cudaGetLastError();
    return UnavailableError(who + ": no usable CUDA device (" +
                            (e != cudaSuccess ? std::string(cudaGetErrorName(e)) + ": " +
                                                    cudaGetErrorString(e)
                                              : std::string("0 devices")) +
                            ")");
  }
  const int device = options.device_index >= 0 ? options.device_index : rank % count;
  if (device >= count) {
    return InvalidArgumentError(who + ": device_index " + std::to_string(device) + " but only " +
                                std::to_string(count) + " CUDA devices");
  }
  ARCHI_CUDA_CHECK(cudaSetDevice(device));

  // Exchange the unique id through the (world- and epoch-scoped) store.
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (rank == 0) {
    ARCHI_NCCL_CHECK(ncclGetUniqueId(&id));
    if (Status s = store->Set(kUniqueIdKey, ToHex(&id, sizeof(id)), deadline); !s.ok()) {
      return s.WithContext(who + ": publishing the NCCL unique id");
    }
  } else {
    if (Status s = store->Wait({kUniqueIdKey}, deadline); !s.ok()) {
      if (s.code() == StatusCode::kDeadlineExceeded) {
        return DeadlineExceededError(who + ": rank 0 never published the NCCL unique id (connect "
                                     "timeout " + std::to_string(options.connect_timeout_ms) +
                                     " ms)");
      }
      return s.WithContext(who);
    }
    auto hex = store->Get(kUniqueIdKey, deadline);
    if (!hex.ok()) return hex.status().WithContext(who);
    if (!FromHex(*hex, &id, sizeof(id))) return InternalError(who + ": malformed NCCL unique id");
  }

  std::unique_ptr<NcclCommunicator> comm(
      new NcclCommunicator(rank, size, device, std::move(options)));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  if (!comm->options_.label.empty()) config.commName = comm->options_.label.c_str();
  ncclComm_t raw = nullptr;
  const ncclResult_t r = ncclCommInitRankConfig(&raw, size, id, rank, &config);
  NcclComm owner(raw);  // aborts on every early return below
  if (r != ncclSuccess && r != ncclInProgress) {
    return NcclStatus(r, who + ": ncclCommInitRankConfig");
  }
  if (raw == nullptr) return InternalError(who + ": ncclCommInitRankConfig returned no comm");
  bool timed_out = false;
  const ncclResult_t state = PollComm(raw, deadline, &timed_out);
  if (timed_out) {
    return DeadlineExceededError(who + ": not every rank joined within the connect timeout of " +
                                 std::to_string(comm->options_.connect_timeout_ms) + " ms");
  }
  if (state != ncclSuccess) return NcclStatus(state, who + ": ncclCommInitRankConfig");
  comm->comm_ = std::move(owner);
  ARCHI_RETURN_IF_ERROR(comm->Start());
  return std::unique_ptr<Communicator>(std::move(comm));
}

Status NcclCommunicator::Start() {
  ARCHI_CUDA_CHECK(cudaSetDevice(device_));
  ARCHI_ASSIGN_OR_RETURN(stream_, CudaStream::Create(device_));
  ARCHI_ASSIGN_OR_RETURN(hdr_host_, PinnedHost::Allocate(2 * sizeof(WireHeader)));
  ARCHI_ASSIGN_OR_RETURN(hdr_dev_,
                         DeviceBuffer::Allocate(2 * sizeof(WireHeader), Device::Cuda(device_)));
  ARCHI_ASSIGN_OR_RETURN(barrier_dev_, DeviceBuffer::Allocate(sizeof(int32_t), Device::Cuda(device_)));
  ARCHI_ASSIGN_OR_RETURN(hdr_event_, CudaEvent::Create(device_));
  issuer_thread_ = std::jthread([this](std::stop_token st) { IssuerLoop(st); });
  watchdog_thread_ = std::jthread([this](std::stop_token st) { WatchdogLoop(st); });
  return Status();
}

NcclCommunicator::~NcclCommunicator() {
  bool healthy = false;
  {
    std::lock_guard lock(mu_);
    healthy = !broken_ && pending_.empty();
  }
  if (!healthy) Break(AbortedError("communicator destroyed"), /*from_destructor=*/true);
  issuer_thread_.request_stop();
  watchdog_thread_.request_stop();
  {
    std::lock_guard lock(mu_);  // pairs with the waiters' predicate checks
  }
  issue_cv_.notify_all();
  watch_cv_.notify_all();
  // The watchdog quiesces NCCL and completes every pending op before it exits; after a break it
  // joins the issuer itself, so the issuer is joined here only once the watchdog is gone.
  if (watchdog_thread_.joinable()) watchdog_thread_.join();
  if (issuer_thread_.joinable()) issuer_thread_.join();
  bool finalize = false;
  {
    std::lock_guard lock(mu_);
    finalize = !broken_ && pending_.empty();
  }
  if (finalize && comm_) {
    (void)cudaSetDevice(device_);
    Status s = comm_.Finalize(Deadline::After(kFinalizeTimeout));
    if (!s.ok()) ARCHI_LOG_WARN("{}: {}", options_.label.empty() ? "nccl" : options_.label,
                                s.ToString());
  }
  // A broken (revoked) communicator is aborted by NcclComm's destructor: never finalized.
}

// ---- helpers ------------------------------------------------------------------------------------

Deadline NcclCommunicator::OpDeadline(const OpOptions& opts, int64_t* timeout_ms) const {
  const int64_t ms = opts.timeout_ms >= 0 ? opts.timeout_ms : options_.op_timeout_ms;
  *timeout_ms = ms;
  if (ms < 0) return Deadline::Infinite();
  return Deadline::AfterMs(ms);
}

Status NcclCommunicator::CheckTensor(const Tensor& t, std::string_view what) const {
  if (!t.defined()) return InvalidArgumentError(std::string(what) + ": undefined tensor");
  if (t.device().type != DeviceType::kCuda || t.device().index != device_) {
    return InvalidArgumentError(std::string(what) + ": tensor on " + t.device().ToString() +
                                ", this nccl communicator needs tensors on " +
                                Device::Cuda(device_).ToString());
  }
  return Status();
}

std::shared_ptr<Work> NcclCommunicator::Enqueue(std::shared_ptr<Op> op) {
  {
    std::lock_guard lock(mu_);
    if (broken_) return CompletedWork(AbortedError(std::string(error_.message())));
    op->id = next_op_id_++;
    pending_.emplace(op->id, op);
    if (!op->deadline.infinite()) deadlines_.emplace(op->deadline.time_point(), op->id);
    queue_.push_back(op);
  }
  issue_cv_.notify_one();
  watch_cv_.notify_all();
  return op->work;
}

Status NcclCommunicator::WaitNcclIdle(const char* what) {
  while (true) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(comm_.get(), &state);
    if (r != ncclSuccess) return NcclStatus(r, std::string(what) + ": ncclCommGetAsyncError");
    if (state == ncclSuccess) return Status();
    if (state != ncclInProgress) return NcclStatus(state, what);
    if (broken_flag_.load()) return AbortedError(std::string(what) + ": communicator broken");
    std::this_thread::sleep_for(kBusyPoll);
  }
}

Status NcclCommunicator::WaitEvent(cudaEvent_t event, const char* what) {
  while (true) {
    const cudaError_t e = cudaEventQuery(event);
    if (e == cudaSuccess) return Status();
    if (e != cudaErrorNotReady) return CudaStatus(e, what);
    if (broken_flag_.load()) return AbortedError(std::string(what) + ": communicator broken");
    std::this_thread::sleep_for(kBusyPoll);
  }
}

// ---- issuer -------------------------------------------------------------------------------------

void NcclCommunicator::IssuerLoop(std::stop_token stop) {
  (void)cudaSetDevice(device_);
  while (true) {
    std::shared_ptr<Op> op;
    {
      std::unique_lock lock(mu_);
      issue_cv_.wait(lock, stop, [&] { return broken_ || !queue_.empty(); });
      if (broken_ || stop.stop_requested()) return;
      op = queue_.front();
      queue_.pop_front();
      if (!pending_.count(op->id)) continue;
    }
    Status s;
    try {
      if (op->kind == Op::Kind::kCollective) {
        const ncclResult_t r = op->issue(comm_.get(), stream_.get());
        if (r != ncclSuccess && r != ncclInProgress) {
          s = NcclStatus(r, op->what);
        } else {
          s = WaitNcclIdle(op->what.c_str());
        }
      } else {
        s = IssueP2P(*op);
      }
      if (s.ok() || s.code() == StatusCode::kInvalidArgument) {
        op->result = s;
        auto ev = CudaEvent::Create(device_);
        if (!ev.ok()) {
          s = ev.status();
        } else {
          op->event = std::move(ev).value();
          s = CudaStatus(cudaEventRecord(op->event.get(), stream_.get()), "cudaEventRecord");
        }
      }
    } catch (const std::exception& e) {
      s = InternalError(op->what + ": unexpected exception: " + e.what());
    }
    if (!s.ok()) {
      Break(AbortedError(op->what + " failed: " + std::string(s.message())));
      return;
    }
    {
      std::lock_guard lock(mu_);
      if (pending_.count(op->id)) inflight_.push_back(op);
    }
    watch_cv_.notify_all();
  }
}

Status NcclCommunicator::IssueP2P(Op& op) {
  auto* host = static_cast<WireHeader*>(hdr_host_.get());
  auto* dev = static_cast<char*>(hdr_dev_.data());
  WireHeader mine;
  mine.magic = kMagic;
  mine.kind = op.kind == Op::Kind::kSend ? kKindSend : kKindRecv;
  mine.dtype = static_cast<uint8_t>(op.dtype);
  mine.tag = op.tag;
  mine.nbytes = op.nbytes;
  host[0] = mine;
  host[1] = WireHeader{};
  cudaStream_t stream = stream_.get();
  ncclComm_t comm = comm_.get();
  ARCHI_CUDA_CHECK(cudaMemcpyAsync(dev, &host[0], sizeof(WireHeader), cudaMemcpyHostToDevice,
                                   stream));
  // Phase 1: both directions in one group, so the pair cannot deadlock on the header.
  ARCHI_NCCL_CHECK(ncclGroupStart());
  ARCHI_NCCL_CHECK(ncclSend(dev, sizeof(WireHeader), ncclUint8, op.peer, comm, stream));
  ARCHI_NCCL_CHECK(ncclRecv(dev + sizeof(WireHeader), sizeof(WireHeader), ncclUint8, op.peer, comm,
                            stream));
  ARCHI_NCCL_CHECK(ncclGroupEnd());
  ARCHI_RETURN_IF_ERROR(WaitNcclIdle("header exchange"));
  ARCHI_CUDA_CHECK(cudaMemcpyAsync(&host[1], dev + sizeof(WireHeader), sizeof(WireHeader),
                                   cudaMemcpyDeviceToHost, stream));
  ARCHI_CUDA_CHECK(cudaEventRecord(hdr_event_.get(), stream));
  ARCHI_RETURN_IF_ERROR(WaitEvent(hdr_event_.get(), "header exchange"));
  const WireHeader peer = host[1];

  // Both sides evaluate the same pair of headers, so they reach the same verdict.
  const std::string where = op.what;
  if (peer.magic != kMagic) {
    return InternalError(where + ": corrupt header from peer rank " + std::to_string(op.peer));
  }
  if (peer.kind == mine.kind) {
    return InvalidArgumentError(where + ": peer rank " + std::to_string(op.peer) + " also issued a " +
                                (mine.kind == kKindSend ? "send" : "recv") +
                                " (NCCL pairs point-to-point ops per peer in issue order)");
  }
  const WireHeader& s = mine.kind == kKindSend ? mine : peer;
  const WireHeader& r = mine.kind == kKindSend ? peer : mine;
  if (s.tag != r.tag) {
    return InvalidArgumentError(where + ": tag mismatch: sender tag " + std::to_string(s.tag) +
                                ", receiver tag " + std::to_string(r.tag) +
                                " (NCCL pairs point-to-point ops per peer in issue order)");
  }
  if (s.dtype != r.dtype || s.nbytes != r.nbytes) {
    return InvalidArgumentError(where + ": mismatch: sender has " + WireDTypeName(s.dtype) + " x " +
                                std::to_string(s.nbytes) + " bytes, receiver expects " +
                                WireDTypeName(r.dtype) + " x " + std::to_string(r.nbytes) + " bytes");
  }
  if (op.nbytes == 0) return Status();
  // Phase 2: the payload.
  ARCHI_NCCL_CHECK(ncclGroupStart());
  if (op.kind == Op::Kind::kSend) {
    ARCHI_NCCL_CHECK(ncclSend(op.data, op.nbytes, ncclUint8, op.peer, comm, stream));
  } else {
    ARCHI_NCCL_CHECK(ncclRecv(op.data, op.nbytes, ncclUint8, op.peer, comm, stream));
  }
  ARCHI_NCCL_CHECK(ncclGroupEnd());
  return WaitNcclIdle("payload");
}

// ---- point to point -----------------------------------------------------------------------------

std::shared_ptr<Work> NcclCommunicator::Send(const Tensor& tensor, int dst, uint32_t tag,
                                             OpOptions opts) {
  if (dst < 0 || dst >= size_ || dst == rank_) {
    return CompletedWork(InvalidArgumentError("send: bad destination rank " + std::to_string(dst)));
  }
  if (tag >= kMaxTag) return CompletedWork(InvalidArgumentError("send: tag out of range"));
  if (Status s = CheckTensor(tensor, "send"); !s.ok()) return CompletedWork(s);
  auto op = std::make_shared<Op>();
  op->kind = Op::Kind::kSend;
  op->what = "send to rank " + std::to_string(dst) + " tag " + std::to_string(tag);
  op->deadline = OpDeadline(opts, &op->timeout_ms);
  op->peer = dst;
  op->tag = tag;
  op->data = tensor.data();
  op->nbytes = tensor.nbytes();
  op->dtype = tensor.dtype();
  return Enqueue(std::move(op));
}

std::shared_ptr<Work> NcclCommunicator::Recv(Tensor& tensor, int src, uint32_t tag,
                                             OpOptions opts) {
  if (src < 0 || src >= size_ || src == rank_) {
    return CompletedWork(InvalidArgumentError("recv: bad source rank " + std::to_string(src)));
  }
  if (tag >= kMaxTag) return CompletedWork(InvalidArgumentError("recv: tag out of range"));
  if (Status s = CheckTensor(tensor, "recv"); !s.ok()) return CompletedWork(s);
  auto op = std::make_shared<Op>();
  op->kind = Op::Kind::kRecv;
  op->what = "recv from rank " + std::to_string(src) + " tag " + std::to_string(tag);
  op->deadline = OpDeadline(opts, &op->timeout_ms);
  op->peer = src;
  op->tag = tag;
  op->data = tensor.data();
  op->nbytes = tensor.nbytes();
  op->dtype = tensor.dtype();
  return Enqueue(std::move(op));
}

// ---- collectives --------------------------------------------------------------------------------

std::shared_ptr<Work> NcclCommunicator::Broadcast(Tensor& tensor, int root, OpOptions opts) {
  if (root < 0 || root >= size_) {
    return CompletedWork(InvalidArgumentError("broadcast: root " + std::to_string(root) +
                                              " out of range"));
  }
  if (Status s = CheckTensor(tensor, "broadcast"); !s.ok()) return CompletedWork(s);
  auto op = std::make_shared<Op>();
  op->what = "broadcast from root " + std::to_string(root);
  op->deadline = OpDeadline(opts, &op->timeout_ms);
  void* data = tensor.data();
  const size_t nbytes = tensor.nbytes();
  op->issue = [data, nbytes, root](ncclComm_t comm, cudaStream_t stream) {
    if (nbytes == 0) return ncclSuccess;
    return ncclBroadcast(data, data, nbytes, ncclUint8, root, comm, stream);
  };
  return Enqueue(std::move(op));
}

std::shared_ptr<Work> NcclCommunicator::AllReduce(Tensor& tensor, ReduceOp op_kind,
                                                  OpOptions opts) {
  if (Status s = CheckTensor(tensor, "all_reduce"); !s.ok()) return CompletedWork(s);
  if (!IsValidReduceOp(op_kind)) return CompletedWork(InvalidArgumentError("all_reduce: bad op"));
  auto op = std::make_shared<Op>();
  op->what = std::string("all_reduce(") + std::string(ReduceOpName(op_kind)) + ")";
  op->deadline = OpDeadline(opts, &op->timeout_ms);
  void* data = tensor.data();
  const size_t numel = static_cast<size_t>(tensor.numel());
  const ncclDataType_t dt = ToNccl(tensor.dtype());
  const ncclRedOp_t red = ToNccl(op_kind);
  op->issue = [data, numel, dt, red](ncclComm_t comm, cudaStream_t stream) {
    if (numel == 0) return ncclSuccess;
    return ncclAllReduce(data, data, numel, dt, red, comm, stream);
  };
  return Enqueue(std::move(op));
}

std::shared_ptr<Work> NcclCommunicator::AllGather(const Tensor& input, Tensor& output,
                                                  OpOptions opts) {
  if (Status s = CheckTensor(input, "all_gather input"); !s.ok()) return CompletedWork(s);
  if (Status s = CheckTensor(output, "all_gather output"); !s.ok()) return CompletedWork(s);
  if (input.dtype() != output.dtype()) {
    return CompletedWork(InvalidArgumentError(
        "all_gather: input dtype " + std::string(DTypeName(input.dtype())) + " != output dtype " +
        std::string(DTypeName(output.dtype()))));
  }
  if (output.numel() != input.numel() * size_) {
    return CompletedWork(InvalidArgumentError(
        "all_gather: output has " + std::to_string(output.numel()) + " elements, expected " +
        std::to_string(input.numel() * size_) + " (size x input)"));
  }
  auto op = std::make_shared<Op>();
  op->what = "all_gather";
  op->deadline = OpDeadline(opts, &op->timeout_ms);
  const void* in = input.data();
  void* out = output.data();
  const size_t nbytes = input.nbytes();
  op->issue = [in, out, nbytes](ncclComm_t comm, cudaStream_t stream) {
    if (nbytes == 0) return ncclSuccess;
    return ncclAllGather(in, out, nbytes, ncclUint8, comm, stream);
  };
  return Enqueue(std::move(op));
}

std::shared_ptr<Work> NcclCommunicator::ReduceScatter(const Tensor& input, Tensor& output,
                                                      ReduceOp op_kind, OpOptions opts) {
  if (Status s = CheckTensor(input, "reduce_scatter input"); !s.ok()) return CompletedWork(s);
  if (Status s = CheckTensor(output, "reduce_scatter output"); !s.ok()) return CompletedWork(s);
  if (!IsValidReduceOp(op_kind)) {
    return CompletedWork(InvalidArgumentError("reduce_scatter: bad op"));
  }
  if (input.dtype() != output.dtype()) {
    return CompletedWork(InvalidArgumentError(
        "reduce_scatter: input dtype " + std::string(DTypeName(input.dtype())) +
        " != output dtype " + std::string(DTypeName(output.dtype()))));
  }
  if (input.numel() != output.numel() * size_) {
    return CompletedWork(InvalidArgumentError(
        "reduce_scatter: input has " + std::to_string(input.numel()) + " elements, expected " +
        std::to_string(output.numel() * size_) + " (size x output)"));
  }
  auto op = std::make_shared<Op>();
  op->what = std::string("reduce_scatter(") + std::string(ReduceOpName(op_kind)) + ")";
  op->deadline = OpDeadline(opts, &op->timeout_ms);
  const void* in = input.data();
  void* out = output.data();
  const size_t count = static_cast<size_t>(output.numel());
  const ncclDataType_t dt = ToNccl(input.dtype());
  const ncclRedOp_t red = ToNccl(op_kind);
  op->issue = [in, out, count, dt, red](ncclComm_t comm, cudaStream_t stream) {
    if (count == 0) return ncclSuccess;
    return ncclReduceScatter(in, out, count, dt, red, comm, stream);
  };
  return Enqueue(std::move(op));
}

std::shared_ptr<Work> NcclCommunicator::Barrier(OpOptions opts) {
  auto op = std::make_shared<Op>();
  op->what = "barrier";
  op->deadline = OpDeadline(opts, &op->timeout_ms);
  void* scratch = barrier_dev_.data();
  // A 1-element all-reduce: it completes on a rank only once every rank has issued it.
  op->issue = [scratch](ncclComm_t comm, cudaStream_t stream) {
    return ncclAllReduce(scratch, scratch, 1, ncclInt32, ncclSum, comm, stream);
  };
  return Enqueue(std::move(op));
}

// ---- shrink -------------------------------------------------------------------------------------

Result<std::unique_ptr<Communicator>> NcclCommunicator::Shrink(
    const std::vector<int>& exclude_ranks, CommOptions options) {
#if ARCHI_NCCL_HAS_SHRINK
  std::vector<int> excl = exclude_ranks;
  std::sort(excl.begin(), excl.end());
  excl.erase(std::unique(excl.begin(), excl.end()), excl.end());
  for (int r : excl) {
    if (r < 0 || r >= size_) {
      return InvalidArgumentError("shrink: rank " + std::to_string(r) + " out of range");
    }
    if (r == rank_) return InvalidArgumentError("shrink: this rank is in the exclude list");
  }
  {
    std::lock_guard lock(mu_);
    if (!broken_ && !pending_.empty()) {
      return FailedPreconditionError("shrink: ops still pending on a healthy communicator");
    }
    if (broken_ && !quiesced_) {
      return UnavailableError("shrink: the communicator is still quiescing after a break; retry");
    }
    // After ncclCommAbort (NCCL without revoke) nothing is left to shrink.
    if (!comm_ || (broken_ && !revoked_)) {
      return FailedPreconditionError(
          "shrink: the NCCL communicator was aborted; create a fresh communicator");
    }
  }
  if (options.connect_timeout_ms <= 0) return InvalidArgumentError("shrink: connect_timeout_ms <= 0");
  const Deadline deadline = Deadline::AfterMs(options.connect_timeout_ms);
  const int new_size = size_ - static_cast<int>(excl.size());
  const int new_rank =
      rank_ - static_cast<int>(std::lower_bound(excl.begin(), excl.end(), rank_) - excl.begin());
  ARCHI_CUDA_CHECK(cudaSetDevice(device_));
  std::unique_ptr<NcclCommunicator> child(
      new NcclCommunicator(new_rank, new_size, device_, std::move(options)));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  if (!child->options_.label.empty()) config.commName = child->options_.label.c_str();
  ncclComm_t raw = nullptr;
  const ncclResult_t r = ncclCommShrink(comm_.get(), excl.data(), static_cast<int>(excl.size()),
                                        &raw, &config, NCCL_SHRINK_DEFAULT);
  NcclComm owner(raw);
  if (r != ncclSuccess && r != ncclInProgress) return NcclStatus(r, "ncclCommShrink");
  if (raw == nullptr) return InternalError("ncclCommShrink returned no communicator");
  bool timed_out = false;
  const ncclResult_t state = PollComm(raw, deadline, &timed_out);
  if (timed_out) return DeadlineExceededError("ncclCommShrink: survivors did not all join in time");
  if (state != ncclSuccess) return NcclStatus(state, "ncclCommShrink");
  child->comm_ = std::move(owner);
  ARCHI_RETURN_IF_ERROR(child->Start());
  return std::unique_ptr<Communicator>(std::move(child));
#else
  (void)exclude_ranks;
  (void)options;
  return UnimplementedError("ncclCommShrink needs NCCL >= 2.27");
#endif
}

// ---- breaking -----------------------------------------------------------------------------------

void NcclCommunicator::Abort(const Status& reason) {
  Break(reason.ok() ? AbortedError("aborted") : reason);
}

bool NcclCommunicator::broken() const {
  std::lock_guard lock(mu_);
  return broken_;
}

Status NcclCommunicator::error() const {
  std::lock_guard lock(mu_);
  return error_;
}

void NcclCommunicator::Break(Status reason, bool from_destructor) {
  {
    std::lock_guard lock(mu_);
    if (broken_) return;
    broken_ = true;
    broken_flag_.store(true);
    if (!options_.label.empty() && !reason.message().starts_with(options_.label)) {
      reason = reason.WithContext(options_.label);
    }
    error_ = std::move(reason);
    from_destructor_ = from_destructor;
    queue_.clear();
  }
  issue_cv_.notify_all();
  watch_cv_.notify_all();
}

void NcclCommunicator::Quiesce() {
  const Deadline deadline = Deadline::After(kQuiesceTimeout);
  if (comm_) {
#if ARCHI_NCCL_HAS_REVOKE
    const ncclResult_t r = ncclCommRevoke(comm_.get(), NCCL_REVOKE_DEFAULT);
    if (r == ncclSuccess || r == ncclInProgress) {
      revoked_ = true;
      bool timed_out = false;
      (void)PollComm(comm_.get(), deadline, &timed_out);
      if (timed_out) ARCHI_LOG_WARN("nccl: revoke did not quiesce within {} ms", kQuiesceTimeout.count());
    } else {
      ARCHI_LOG_WARN("nccl: ncclCommRevoke failed ({}), aborting", NcclErrorText(r));
      comm_.Abort();
    }
#else
    comm_.Abort();
#endif
  }
  // Work on the stream ends once NCCL's kernels have exited; only then is user memory free. Waiting
  // for the whole stream (not only the recorded events) also covers a payload that was enqueued
  // but whose event the issuer never recorded because the break came first.
  while (stream_.get() != nullptr && cudaStreamQuery(stream_.get()) == cudaErrorNotReady &&
         !deadline.Expired()) {
    std::this_thread::sleep_for(kBusyPoll);
  }
  if (deadline.Expired()) {
    ARCHI_LOG_ERROR("nccl: in-flight work did not stop within {} ms after the break; failing the "
                    "ops anyway", kQuiesceTimeout.count());
  }
  (void)cudaGetLastError();
}

void NcclCommunicator::WatchdogLoop(std::stop_token stop) {
  (void)cudaSetDevice(device_);
  std::unique_lock lock(mu_);
  while (true) {
    if (broken_ && !quiesced_) {
      const Status reason = error_;
      const bool notify = !from_destructor_ && static_cast<bool>(options_.on_broken);
      lock.unlock();
      // The owner hears first, so whoever sees an op fail also sees the owner marked broken.
      if (notify) {
        try {
          options_.on_broken(reason);
        } catch (...) {
          ARCHI_LOG_ERROR("nccl communicator: on_broken callback threw");
        }
      }
      // Wait for the issuer to leave NCCL before revoking (it polls broken_flag_ every 100 us).
      if (issuer_thread_.joinable()) {
        issuer_thread_.request_stop();
        issue_cv_.notify_all();
        issuer_thread_.join();
      }
      Quiesce();
      lock.lock();
      quiesced_ = true;
      std::vector<std::shared_ptr<Op>> ops;
      for (auto& [id, op] : pending_) ops.push_back(op);
      pending_.clear();
      deadlines_.clear();
      inflight_.clear();
      lock.unlock();
      const std::string msg(reason.message());
      for (auto& op : ops) {
        if (op->deadline_hit) {
          op->work->Complete(DeadlineExceededError(op->what + " exceeded its op deadline of " +
                                                   std::to_string(op->timeout_ms) + " ms"));
        } else {
          op->work->Complete(AbortedError(msg.empty() ? std::string("communicator broken") : msg));
        }
      }
      lock.lock();
      continue;
    }
    if (stop.stop_requested()) return;
    if (broken_) {
      watch_cv_.wait(lock, stop, [&] { return false; });
      continue;
    }
    // Healthy: async errors, completions in stream order, op deadlines.
    lock.unlock();
    ncclResult_t state = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(comm_.get(), &state);
    lock.lock();
    if (r != ncclSuccess || (state != ncclSuccess && state != ncclInProgress)) {
      lock.unlock();
      Break(AbortedError("nccl async error: " + NcclErrorText(r != ncclSuccess ? r : state) +
                         ": " + ncclGetLastError(comm_.get())));
      lock.lock();
      continue;
    }
    std::vector<std::shared_ptr<Op>> done;
    Status cuda_error;
    while (!inflight_.empty()) {
      auto& op = inflight_.front();
      const cudaError_t e = cudaEventQuery(op->event.get());
      if (e == cudaErrorNotReady) break;
      if (e != cudaSuccess) {
        cuda_error = CudaStatus(e, op->what);
        break;
      }
      deadlines_.erase({op->deadline.time_point(), op->id});
      pending_.erase(op->id);
      done.push_back(op);
      inflight_.pop_front();
    }
    if (!done.empty()) {
      lock.unlock();
      for (auto& op : done) op->work->Complete(op->result);
      lock.lock();
    }
    if (!cuda_error.ok()) {
      lock.unlock();
      Break(AbortedError(std::string(cuda_error.message())));
      lock.lock();
      continue;
    }
    if (!deadlines_.empty() && Clock::now() >= deadlines_.begin()->first) {
      auto it = pending_.find(deadlines_.begin()->second);
      if (it == pending_.end()) {
        deadlines_.erase(deadlines_.begin());
        continue;
      }
      it->second->deadline_hit = true;
      const std::string what = it->second->what;
      const int64_t ms = it->second->timeout_ms;
      lock.unlock();
      Break(DeadlineExceededError(what + " exceeded its op deadline of " + std::to_string(ms) +
                                  " ms"));
      lock.lock();
      continue;
    }
    if (stop.stop_requested()) return;
    auto wake = Clock::now() + (pending_.empty() ? Clock::duration(kIdlePoll)
                                                 : Clock::duration(kBusyPoll));
    if (!deadlines_.empty()) wake = std::min(wake, deadlines_.begin()->first);
    const size_t npending = pending_.size();
    watch_cv_.wait_until(lock, stop, wake, [&] { return broken_ || pending_.size() != npending; });
  }
}

}  // namespace archi
