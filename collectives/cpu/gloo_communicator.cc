#include "collectives/cpu/gloo_communicator.h"

#include "runtime/core/half.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <type_traits>

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/context.h>
#include <gloo/rendezvous/context.h>
#include <gloo/transport/tcp/attr.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>

#include "collectives/cpu/gloo_store_adapter.h"
#include "collectives/work_impl.h"
#include "runtime/core/logging.h"

namespace archi {

struct GlooCommunicator::WireHeader {
  uint32_t magic = 0;
  uint8_t kind = 0;
  uint8_t dtype = 0;
  uint8_t status = 0;
  uint8_t recv_dtype = 0;
  uint32_t tag = 0;
  uint32_t reserved = 0;
  uint64_t seq = 0;
  uint64_t nbytes = 0;       // DATA: payload bytes
  uint64_t recv_nbytes = 0;  // ACK: the receiver's tensor bytes
};

namespace {

using std::chrono::milliseconds;

constexpr uint32_t kMagic = 0x48435241;  // "ARCH"
constexpr uint8_t kKindData = 1;
constexpr uint8_t kKindAck = 2;
constexpr uint8_t kAckOk = 0;
constexpr uint8_t kAckMismatch = 1;
constexpr uint32_t kMaxTag = 1u << 20;
// Gloo collectives use slot prefixes 0x01..0x08 in the top byte; point to point uses 0xA1/0xA2.
constexpr uint64_t kCtrlSlot = 0xA1ull << 56;
constexpr uint64_t kDataSlotBase = 0xA2ull << 56;
constexpr uint64_t kSlotMask = (1ull << 56) - 1;
constexpr uint64_t kMaxDrainBytes = 1ull << 30;
// Waits on Gloo buffers never use Gloo's timeout (expiry poisons the whole context): they are
// woken by completion, by abortWait*(), or by the context being torn down.
constexpr milliseconds kForever = std::chrono::hours(100);
// Gloo collectives get the op deadline plus this slack: the watchdog breaks first.
constexpr milliseconds kGlooSlack = std::chrono::seconds(2);

static_assert(sizeof(GlooCommunicator::WireHeader) == 40);

uint64_t DataSlot(uint64_t seq) { return kDataSlotBase | (seq & kSlotMask); }

Status CheckTensor(const Tensor& t, std::string_view what) {
  if (!t.defined()) return InvalidArgumentError(std::string(what) + ": undefined tensor");
  if (!t.device().is_cpu()) {
    return InvalidArgumentError(std::string(what) + ": tensor on " + t.device().ToString() +
                                ", the gloo backend needs CPU tensors");
  }
  return Status();
}

// ---- reductions -------------------------------------------------------------------------------

template <typename T>
T Apply(ReduceOp op, T a, T b) {
  switch (op) {
    case ReduceOp::kSum:
      return static_cast<T>(a + b);
    case ReduceOp::kProd:
      return static_cast<T>(a * b);
    case ReduceOp::kMin:
      return std::min(a, b);
    case ReduceOp::kMax:
      return std::max(a, b);
  }
  return a;
}

template <typename T>
gloo::AllreduceOptions::Func NativeReducer(ReduceOp op) {
  return [op](void* out, const void* a, const void* b, size_t n) {
    T* o = static_cast<T*>(out);
    const T* x = static_cast<const T*>(a);
    const T* y = static_cast<const T*>(b);
    for (size_t i = 0; i < n; ++i) o[i] = Apply<T>(op, x[i], y[i]);
  };
}

template <float (*ToF)(uint16_t), uint16_t (*FromF)(float)>
gloo::AllreduceOptions::Func Half16Reducer(ReduceOp op) {
  return [op](void* out, const void* a, const void* b, size_t n) {
    uint16_t* o = static_cast<uint16_t*>(out);
    const uint16_t* x = static_cast<const uint16_t*>(a);
    const uint16_t* y = static_cast<const uint16_t*>(b);
    for (size_t i = 0; i < n; ++i) o[i] = FromF(Apply<float>(op, ToF(x[i]), ToF(y[i])));
  };
}

template <typename T>
void RunAllreduce(const std::shared_ptr<gloo::Context>& ctx, void* data, size_t n,
                  gloo::AllreduceOptions::Func fn, milliseconds timeout) {
  gloo::AllreduceOptions o(ctx);
  o.setOutput<T>(static_cast<T*>(data), n);
  o.setReduceFunction(std::move(fn));
  o.setTag(0);
  o.setTimeout(timeout);
  gloo::allreduce(o);
}

// In-place allreduce of `numel` elements of `dtype` at `data`.
void AllreduceAny(const std::shared_ptr<gloo::Context>& ctx, void* data, size_t numel,
                  DType dtype, ReduceOp op, milliseconds timeout) {
  switch (dtype) {
    case DType::kF32:
      return RunAllreduce<float>(ctx, data, numel, NativeReducer<float>(op), timeout);
    case DType::kI32:
      return RunAllreduce<int32_t>(ctx, data, numel, NativeReducer<int32_t>(op), timeout);
    case DType::kI64:
      return RunAllreduce<int64_t>(ctx, data, numel, NativeReducer<int64_t>(op), timeout);
    case DType::kU8:
      return RunAllreduce<uint8_t>(ctx, data, numel, NativeReducer<uint8_t>(op), timeout);
    case DType::kF16:
      return RunAllreduce<uint16_t>(ctx, data, numel,
                                    Half16Reducer<HalfToFloat, FloatToHalf>(op), timeout);
    case DType::kBF16:
      return RunAllreduce<uint16_t>(ctx, data, numel,
                                    Half16Reducer<Bf16ToFloat, FloatToBf16>(op), timeout);
  }
  throw gloo::InvalidOperationException("unsupported dtype");
}


}  // namespace

// ---- op records ---------------------------------------------------------------------------------

struct GlooCommunicator::OpBase {
  virtual ~OpBase() = default;
  uint64_t id = 0;
  Deadline deadline = Deadline::Infinite();
  int64_t timeout_ms = 0;
  std::string what;
  std::shared_ptr<PendingWork> work = std::make_shared<PendingWork>();
  bool deadline_hit = false;  // guarded by mu_
  bool in_transport = false;  // guarded by mu_: completed by the thread running it, not by Break
};

struct GlooCommunicator::SendOp final : OpBase {
  int peer = -1;
  WireHeader hdr;
  std::shared_ptr<Buffer> hdr_buf;
  std::shared_ptr<Buffer> payload_buf;
};

struct GlooCommunicator::RecvOp final : OpBase {
  int peer = -1;
  uint32_t tag = 0;
  void* data = nullptr;
  size_t nbytes = 0;
  DType dtype = DType::kF32;
  Status result;                    // kInvalidArgument on a mismatch
  std::unique_ptr<char[]> scratch;  // drain target on a mismatch
  std::shared_ptr<Buffer> payload_buf;
  uint8_t ack_status = kAckOk;
  WireHeader hdr;
};

struct GlooCommunicator::CollOp final : OpBase {
  CollBody body;
};

struct GlooCommunicator::AckBuf {
  int peer = -1;
  WireHeader hdr;
  std::shared_ptr<Buffer> buf;
};

struct GlooCommunicator::Peer {
  std::mutex send_mu;  // orders sequence numbers and posting of this peer's sends
  uint64_t next_send_seq = 0;                                             // send_mu
  std::map<uint64_t, std::shared_ptr<SendOp>> pending_sends;              // mu_
  std::unordered_map<uint32_t, std::deque<std::shared_ptr<RecvOp>>> posted_recvs;  // mu_
  std::unordered_map<uint32_t, std::deque<WireHeader>> unexpected;        // mu_
  std::deque<std::shared_ptr<RecvOp>> matched;  // payload posted, in posting order (mu_)
  WireHeader hdr_in;
  std::shared_ptr<Buffer> hdr_buf;  // set once under mu_, lives until destruction
  bool hdr_posted = false;          // mu_
  std::jthread reader;
};

// ---- construction -------------------------------------------------------------------------------

GlooCommunicator::GlooCommunicator(int rank, int size, CommOptions options)
    : rank_(rank), size_(size), options_(std::move(options)) {
  peers_.reserve(size);
  for (int i = 0; i < size; ++i) peers_.push_back(std::make_unique<Peer>());
}

Result<std::unique_ptr<Communicator>> GlooCommunicator::Create(int rank, int size,
                                                               std::shared_ptr<Store> store,
                                                               CommOptions options) {
  if (size < 1) return InvalidArgumentError("gloo: size must be >= 1, got " + std::to_string(size));
  if (rank < 0 || rank >= size) {
    return InvalidArgumentError("gloo: rank " + std::to_string(rank) + " out of range for size " +
                                std::to_string(size));
  }
  if (!store) return InvalidArgumentError("gloo: null store");
  if (options.connect_timeout_ms <= 0) return InvalidArgumentError("gloo: connect_timeout_ms <= 0");
  const Deadline deadline = Deadline::AfterMs(options.connect_timeout_ms);
  const int64_t connect_ms = options.connect_timeout_ms;
  std::unique_ptr<GlooCommunicator> comm(new GlooCommunicator(rank, size, std::move(options)));
  GlooStoreAdapter adapter(store, deadline);
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = comm->options_.hostname.empty() ? "127.0.0.1" : comm->options_.hostname;
    comm->device_ = gloo::transport::tcp::CreateDevice(attr);
    auto ctx = std::make_shared<gloo::rendezvous::Context>(rank, size);
    // Pairs wait up to 5x this for an incoming connection; the store wait is bounded by the
    // adapter's deadline.
    ctx->setTimeout(std::max<milliseconds>(milliseconds(1), deadline.RemainingMs()));
    ctx->connectFullMesh(adapter, comm->device_);
    comm->context_ = std::move(ctx);
  } catch (const std::exception& e) {
    const std::string msg = "gloo connect (rank " + std::to_string(rank) + "/" +
                            std::to_string(size) + "): " + e.what();
    comm->device_.reset();
    if (adapter.first_error().code() == StatusCode::kDeadlineExceeded || deadline.Expired()) {
      return DeadlineExceededError(msg + " (connect timeout " + std::to_string(connect_ms) +
                                   " ms)");
    }
    if (!adapter.first_error().ok()) return adapter.first_error().WithContext(msg);
    return UnavailableError(msg);
  }
  comm->watchdog_thread_ = std::jthread([c = comm.get()](std::stop_token st) { c->WatchdogLoop(st); });
  return std::unique_ptr<Communicator>(std::move(comm));
}

GlooCommunicator::~GlooCommunicator() {
  Break(AbortedError("communicator destroyed"), /*from_destructor=*/true);
  std::vector<std::jthread*> threads = {&coll_thread_, &reaper_thread_};
  for (auto& p : peers_) threads.push_back(&p->reader);
  threads.push_back(&watchdog_thread_);
  for (auto* t : threads) t->request_stop();
  {
    std::lock_guard lock(mu_);  // pairs with the waiters' predicate checks
  }
  watchdog_cv_.notify_all();
  coll_cv_.notify_all();
  acks_cv_.notify_all();
  for (auto& p : peers_) {
    if (p->hdr_buf) p->hdr_buf->abortWaitRecv();
  }
  for (auto* t : threads) {
    if (t->joinable()) t->join();
  }
  // Ops and buffers go before the context, the context before the device (its loop thread).
  pending_.clear();
  coll_queue_.clear();
  acks_.clear();
  reaping_.reset();
  peers_.clear();
  try {
    context_.reset();
    device_.reset();
  } catch (const std::exception& e) {
    ARCHI_LOG_ERROR("gloo communicator teardown: {}", e.what());
  } catch (...) {
  }
}

// ---- helpers ------------------------------------------------------------------------------------

Deadline GlooCommunicator::OpDeadline(const OpOptions& opts, int64_t* timeout_ms) const {
  const int64_t ms = opts.timeout_ms >= 0 ? opts.timeout_ms : options_.op_timeout_ms;
  *timeout_ms = ms;
  if (ms < 0) return Deadline::Infinite();
  return Deadline::AfterMs(ms);
}

void GlooCommunicator::RegisterOpLocked(const std::shared_ptr<OpBase>& op) {
  op->id = next_op_id_++;
  const bool earliest =
      deadlines_.empty() || op->deadline.time_point() < deadlines_.begin()->first;
  pending_.emplace(op->id, op);
  if (!op->deadline.infinite()) {
    deadlines_.emplace(op->deadline.time_point(), op->id);
    if (earliest) watchdog_cv_.notify_all();
  }
}

bool GlooCommunicator::EraseOpLocked(const OpBase& op) {
  auto it = pending_.find(op.id);
  if (it == pending_.end()) return false;
  deadlines_.erase({op.deadline.time_point(), op.id});
  pending_.erase(it);
  return true;
}

Status GlooCommunicator::EnsureReaderLocked(int peer) {
  Peer& p = *peers_[peer];
  if (p.reader.joinable()) return Status();
  try {
    if (!p.hdr_buf) {
      p.hdr_buf = std::shared_ptr<Buffer>(
          context_->createUnboundBuffer(&p.hdr_in, sizeof(WireHeader)).release());
    }
    p.reader = std::jthread([this, peer](std::stop_token st) { ReaderLoop(peer, st); });
    if (!reaper_thread_.joinable()) {
      reaper_thread_ = std::jthread([this](std::stop_token st) { ReaperLoop(st); });
    }
  } catch (const std::exception& e) {
    return InternalError(std::string("gloo: cannot start reader: ") + e.what());
  }
  return Status();
}

Status GlooCommunicator::MatchLocked(int peer, const std::shared_ptr<RecvOp>& op,
                                     const WireHeader& h) {
  op->hdr = h;
  void* dst = op->data;
  if (h.dtype != static_cast<uint8_t>(op->dtype) || h.nbytes != op->nbytes) {
    op->ack_status = kAckMismatch;
    op->result = InvalidArgumentError(
        "recv from rank " + std::to_string(peer) + " tag " + std::to_string(h.tag) +
        ": sender sent " + std::to_string(h.nbytes) + " bytes of " + WireDTypeName(h.dtype) +
        ", receiver expects " + std::to_string(op->nbytes) + " bytes of " +
        WireDTypeName(static_cast<uint8_t>(op->dtype)));
    if (h.nbytes > kMaxDrainBytes) {
      return AbortedError("peer rank " + std::to_string(peer) + ": mismatched message of " +
                          std::to_string(h.nbytes) + " bytes is too large to drain (" +
                          std::string(op->result.message()) + ")");
    }
    if (h.nbytes > 0) {
      op->scratch.reset(new (std::nothrow) char[h.nbytes]);
      if (!op->scratch) return AbortedError("cannot allocate drain buffer");
      dst = op->scratch.get();
    }
  }
  try {
    if (h.nbytes > 0) {
      op->payload_buf =
          std::shared_ptr<Buffer>(context_->createUnboundBuffer(dst, h.nbytes).release());
      op->payload_buf->recv(peer, DataSlot(h.seq), 0, h.nbytes);
    }
  } catch (const std::exception& e) {
    return AbortedError("peer rank " + std::to_string(peer) + ": " + e.what());
  }
  peers_[peer]->matched.push_back(op);
  return Status();
}

// ---- point to point -----------------------------------------------------------------------------

std::shared_ptr<Work> GlooCommunicator::Send(const Tensor& tensor, int dst, uint32_t tag,
                                             OpOptions opts) {
  try {
    if (dst < 0 || dst >= size_) {
      return CompletedWork(InvalidArgumentError("send: dst rank " + std::to_string(dst) +
                                                " out of range [0, " + std::to_string(size_) + ")"));
    }
    if (dst == rank_) return CompletedWork(InvalidArgumentError("send: dst is this rank"));
    if (tag > kMaxTag) {
      return CompletedWork(InvalidArgumentError("send: tag " + std::to_string(tag) +
                                                " above 2^20"));
    }
    if (Status s = CheckTensor(tensor, "send"); !s.ok()) return CompletedWork(s);

    auto op = std::make_shared<SendOp>();
    op->peer = dst;
    op->deadline = OpDeadline(opts, &op->timeout_ms);
    op->what = "send to rank " + std::to_string(dst) + " tag " + std::to_string(tag);
    op->hdr.magic = kMagic;
    op->hdr.kind = kKindData;
    op->hdr.dtype = static_cast<uint8_t>(tensor.dtype());
    op->hdr.tag = tag;
    op->hdr.nbytes = tensor.nbytes();
    op->hdr_buf = std::shared_ptr<Buffer>(
        context_->createUnboundBuffer(&op->hdr, sizeof(WireHeader)).release());
    if (tensor.nbytes() > 0) {
      op->payload_buf = std::shared_ptr<Buffer>(
          context_->createUnboundBuffer(tensor.data(), tensor.nbytes()).release());
    }
    Peer& p = *peers_[dst];
    Status failure;
    {
      std::lock_guard send_lock(p.send_mu);
      {
        std::lock_guard lock(mu_);
        if (broken_) return CompletedWork(AbortedError(std::string(error_.message())));
        if (Status s = EnsureReaderLocked(dst); !s.ok()) return CompletedWork(s);
        op->hdr.seq = p.next_send_seq++;
        p.pending_sends.emplace(op->hdr.seq, op);
        RegisterOpLocked(op);
      }
      try {
        op->hdr_buf->send(dst, kCtrlSlot, 0, sizeof(WireHeader));
        if (op->payload_buf) op->payload_buf->send(dst, DataSlot(op->hdr.seq), 0, tensor.nbytes());
      } catch (const std::exception& e) {
        failure = AbortedError("peer rank " + std::to_string(dst) + ": " + e.what());
      }
    }
    if (!failure.ok()) Break(failure);
    return op->work;
  } catch (const std::exception& e) {
    return CompletedWork(InternalError(std::string("send: unexpected exception: ") + e.what()));
  }
}

std::shared_ptr<Work> GlooCommunicator::Recv(Tensor& tensor, int src, uint32_t tag,
                                             OpOptions opts) {
  try {
    if (src < 0 || src >= size_) {
      return CompletedWork(InvalidArgumentError("recv: src rank " + std::to_string(src) +
                                                " out of range [0, " + std::to_string(size_) + ")"));
    }
    if (src == rank_) return CompletedWork(InvalidArgumentError("recv: src is this rank"));
    if (tag > kMaxTag) {
      return CompletedWork(InvalidArgumentError("recv: tag " + std::to_string(tag) +
                                                " above 2^20"));
    }
    if (Status s = CheckTensor(tensor, "recv"); !s.ok()) return CompletedWork(s);

    auto op = std::make_shared<RecvOp>();
    op->peer = src;
    op->tag = tag;
    op->data = tensor.data();
    op->nbytes = tensor.nbytes();
    op->dtype = tensor.dtype();
    op->deadline = OpDeadline(opts, &op->timeout_ms);
    op->what = "recv from rank " + std::to_string(src) + " tag " + std::to_string(tag);
    Peer& p = *peers_[src];
    Status failure;
    bool wake = false;
    {
      std::lock_guard lock(mu_);
      if (broken_) return CompletedWork(AbortedError(std::string(error_.message())));
      if (Status s = EnsureReaderLocked(src); !s.ok()) return CompletedWork(s);
      RegisterOpLocked(op);
      auto it = p.unexpected.find(tag);
      if (it != p.unexpected.end() && !it->second.empty()) {
        WireHeader h = it->second.front();
        it->second.pop_front();
        if (it->second.empty()) p.unexpected.erase(it);
        failure = MatchLocked(src, op, h);
        wake = true;
      } else {
        p.posted_recvs[tag].push_back(op);
      }
    }
    if (!failure.ok()) {
      Break(failure);
    } else if (wake) {
      p.hdr_buf->abortWaitRecv();  // let the reader wait for the payload now
    }
    return op->work;
  } catch (const std::exception& e) {
    return CompletedWork(InternalError(std::string("recv: unexpected exception: ") + e.what()));
  }
}

void GlooCommunicator::ReaderLoop(int peer, std::stop_token stop) {
  Peer& p = *peers_[peer];
  const std::string who = "peer rank " + std::to_string(peer) + ": ";
  while (true) {
    std::shared_ptr<RecvOp> op;
    Status failure;
    {
      std::lock_guard lock(mu_);
      if (broken_ || stop.stop_requested()) return;
      if (!p.matched.empty()) {
        op = p.matched.front();
      } else if (!p.hdr_posted) {
        try {
          p.hdr_buf->recv(peer, kCtrlSlot, 0, sizeof(WireHeader));
          p.hdr_posted = true;
        } catch (const std::exception& e) {
          failure = AbortedError(who + e.what());
        }
      }
    }
    if (!failure.ok()) return Break(failure);
    bool ok = true;
    try {
      if (op) {
        if (op->payload_buf) ok = op->payload_buf->waitRecv(nullptr, kForever);
      } else {
        ok = p.hdr_buf->waitRecv(nullptr, kForever);
      }
    } catch (const std::exception& e) {
      return Break(AbortedError(who + e.what()));
    }
    if (!ok) continue;  // woken by abortWaitRecv: re-check state
    if (op) {
      FinishRecv(peer, op);
    } else {
      WireHeader h = p.hdr_in;
      {
        std::lock_guard lock(mu_);
        p.hdr_posted = false;
      }
      HandleHeader(peer, h);
    }
  }
}

void GlooCommunicator::HandleHeader(int peer, const WireHeader& h) {
  const std::string who = "peer rank " + std::to_string(peer) + ": ";
  if (h.magic != kMagic || (h.kind != kKindData && h.kind != kKindAck)) {
    return Break(AbortedError(who + "protocol error (bad message header)"));
  }
  Peer& p = *peers_[peer];
  if (h.kind == kKindAck) {
    std::shared_ptr<SendOp> op;
    {
      std::lock_guard lock(mu_);
      auto it = p.pending_sends.find(h.seq);
      if (it == p.pending_sends.end()) {
        if (broken_) return;
        // fallthrough to protocol error below (outside the lock)
      } else {
        op = it->second;
        p.pending_sends.erase(it);
        if (!EraseOpLocked(*op)) return;  // completed by Break
      }
    }
    if (!op) return Break(AbortedError(who + "protocol error (unknown acknowledgement)"));
    try {
      // The acknowledgement is sent after the payload arrived, so Gloo finished these sends.
      op->hdr_buf->waitSend(nullptr, kForever);
      if (op->payload_buf) op->payload_buf->waitSend(nullptr, kForever);
    } catch (const std::exception& e) {
      Break(AbortedError(who + e.what()));  // first: the owner learns before the op fails
      op->work->Complete(AbortedError(std::string(error().message())));
      return;
    }
    if (h.status == kAckOk) {
      op->work->Complete(Status());
    } else {
      op->work->Complete(InvalidArgumentError(
          "send to rank " + std::to_string(peer) + " tag " + std::to_string(h.tag) + ": sent " +
          std::to_string(op->hdr.nbytes) + " bytes of " + WireDTypeName(op->hdr.dtype) +
          ", receiver expects " + std::to_string(h.recv_nbytes) + " bytes of " +
          WireDTypeName(h.recv_dtype)));
    }
    return;
  }
  Status failure;
  {
    std::lock_guard lock(mu_);
    if (broken_) return;
    auto it = p.posted_recvs.find(h.tag);
    if (it != p.posted_recvs.end() && !it->second.empty()) {
      auto op = it->second.front();
      it->second.pop_front();
      if (it->second.empty()) p.posted_recvs.erase(it);
      failure = MatchLocked(peer, op, h);
    } else {
      p.unexpected[h.tag].push_back(h);
    }
  }
  if (!failure.ok()) Break(failure);
}

void GlooCommunicator::FinishRecv(int peer, const std::shared_ptr<RecvOp>& op) {
  Peer& p = *peers_[peer];
  auto ack = std::make_shared<AckBuf>();
  ack->peer = peer;
  ack->hdr.magic = kMagic;
  ack->hdr.kind = kKindAck;
  ack->hdr.dtype = op->hdr.dtype;
  ack->hdr.status = op->ack_status;
  ack->hdr.recv_dtype = static_cast<uint8_t>(op->dtype);
  ack->hdr.tag = op->hdr.tag;
  ack->hdr.seq = op->hdr.seq;
  ack->hdr.nbytes = op->hdr.nbytes;
  ack->hdr.recv_nbytes = op->nbytes;
  Status failure;
  bool owned;
  {
    std::lock_guard lock(mu_);
    if (!p.matched.empty() && p.matched.front() == op) p.matched.pop_front();
    owned = EraseOpLocked(*op);
    if (broken_) return;
    try {
      ack->buf = std::shared_ptr<Buffer>(
          context_->createUnboundBuffer(&ack->hdr, sizeof(WireHeader)).release());
      ack->buf->send(peer, kCtrlSlot, 0, sizeof(WireHeader));
      acks_.push_back(ack);
    } catch (const std::exception& e) {
      failure = AbortedError("peer rank " + std::to_string(peer) + ": " + e.what());
    }
  }
  acks_cv_.notify_one();
  // The payload is in place (or drained): the receive's outcome stands even if sending the
  // acknowledgement failed.
  if (owned) op->work->Complete(op->result);
  op->scratch.reset();
  if (!failure.ok()) Break(failure);
}

void GlooCommunicator::ReaperLoop(std::stop_token stop) {
  while (true) {
    std::shared_ptr<AckBuf> ack;
    {
      std::unique_lock lock(mu_);
      reaping_.reset();
      acks_cv_.wait(lock, stop, [&] { return broken_ || !acks_.empty(); });
      if (broken_ || stop.stop_requested()) return;
      ack = acks_.front();
      acks_.pop_front();
      reaping_ = ack;
    }
    try {
      ack->buf->waitSend(nullptr, kForever);
    } catch (const std::exception& e) {
      Break(AbortedError("peer rank " + std::to_string(ack->peer) + ": " + e.what()));
      return;
    }
  }
}

// ---- collectives --------------------------------------------------------------------------------

std::shared_ptr<Work> GlooCommunicator::EnqueueCollective(std::string what, const OpOptions& opts,
                                                          CollBody body) {
  auto op = std::make_shared<CollOp>();
  op->what = std::move(what);
  op->deadline = OpDeadline(opts, &op->timeout_ms);
  op->body = std::move(body);
  {
    std::lock_guard lock(mu_);
    if (broken_) return CompletedWork(AbortedError(std::string(error_.message())));
    if (!coll_thread_.joinable()) {
      coll_thread_ = std::jthread([this](std::stop_token st) { CollectiveLoop(st); });
    }
    RegisterOpLocked(op);
    coll_queue_.push_back(op);
  }
  coll_cv_.notify_one();
  return op->work;
}

void GlooCommunicator::CollectiveLoop(std::stop_token stop) {
  while (true) {
    std::shared_ptr<CollOp> op;
    {
      std::unique_lock lock(mu_);
      coll_cv_.wait(lock, stop, [&] { return broken_ || !coll_queue_.empty(); });
      if (broken_ || stop.stop_requested()) return;
      op = coll_queue_.front();
      coll_queue_.pop_front();
      if (!pending_.count(op->id)) continue;
      op->in_transport = true;
    }
    std::string failure;
    try {
      const milliseconds timeout =
          op->deadline.infinite() ? kForever : op->deadline.RemainingMs() + kGlooSlack;
      op->body(timeout);
    } catch (const std::exception& e) {
      failure = e.what();
      if (failure.empty()) failure = "unknown gloo error";
    } catch (...) {
      failure = "non-standard exception";
    }
    if (!failure.empty()) Break(AbortedError(op->what + " failed: " + failure));
    Status result;
    {
      std::lock_guard lock(mu_);
      op->in_transport = false;
      EraseOpLocked(*op);
      if (!failure.empty()) {
        if (op->deadline_hit) {
          result = DeadlineExceededError(op->what + " exceeded its op deadline of " +
                                         std::to_string(op->timeout_ms) + " ms");
        } else {
          result = AbortedError(std::string(error_.message()));
        }
      }
    }
    op->work->Complete(std::move(result));
  }
}

std::shared_ptr<Work> GlooCommunicator::Broadcast(Tensor& tensor, int root, OpOptions opts) {
  try {
    if (root < 0 || root >= size_) {
      return CompletedWork(InvalidArgumentError("broadcast: root " + std::to_string(root) +
                                                " out of range"));
    }
    if (Status s = CheckTensor(tensor, "broadcast"); !s.ok()) return CompletedWork(s);
    void* data = tensor.data();
    const size_t nbytes = tensor.nbytes();
    auto ctx = context_;
    const int size = size_;
    return EnqueueCollective("broadcast from root " + std::to_string(root), opts,
                             [ctx, data, nbytes, root, size](milliseconds timeout) {
                               if (nbytes == 0 || size == 1) return;
                               gloo::BroadcastOptions o(ctx);
                               o.setOutput<uint8_t>(static_cast<uint8_t*>(data), nbytes);
                               o.setRoot(root);
                               o.setTag(0);
                               o.setTimeout(timeout);
                               gloo::broadcast(o);
                             });
  } catch (const std::exception& e) {
    return CompletedWork(InternalError(std::string("broadcast: ") + e.what()));
  }
}

std::shared_ptr<Work> GlooCommunicator::AllReduce(Tensor& tensor, ReduceOp op, OpOptions opts) {
  try {
    if (Status s = CheckTensor(tensor, "all_reduce"); !s.ok()) return CompletedWork(s);
    if (!IsValidReduceOp(op)) return CompletedWork(InvalidArgumentError("all_reduce: bad op"));
    void* data = tensor.data();
    const size_t numel = static_cast<size_t>(tensor.numel());
    const DType dtype = tensor.dtype();
    auto ctx = context_;
    const int size = size_;
    return EnqueueCollective(
        std::string("all_reduce(") + std::string(ReduceOpName(op)) + ")", opts,
        [ctx, data, numel, dtype, op, size](milliseconds timeout) {
          if (numel == 0 || size == 1) return;
          AllreduceAny(ctx, data, numel, dtype, op, timeout);
        });
  } catch (const std::exception& e) {
    return CompletedWork(InternalError(std::string("all_reduce: ") + e.what()));
  }
}

std::shared_ptr<Work> GlooCommunicator::AllGather(const Tensor& input, Tensor& output,
                                                  OpOptions opts) {
  try {
    if (Status s = CheckTensor(input, "all_gather input"); !s.ok()) return CompletedWork(s);
    if (Status s = CheckTensor(output, "all_gather output"); !s.ok()) return CompletedWork(s);
    if (input.dtype() != output.dtype()) {
      return CompletedWork(InvalidArgumentError(
          "all_gather: input dtype " + std::string(DTypeName(input.dtype())) +
          " != output dtype " + std::string(DTypeName(output.dtype()))));
    }
    if (output.numel() != input.numel() * size_) {
      return CompletedWork(InvalidArgumentError(
          "all_gather: output has " + std::to_string(output.numel()) + " elements, expected " +
          std::to_string(input.numel() * size_) + " (size x input)"));
    }
    void* in = input.data();
    void* out = output.data();
    const size_t nbytes = input.nbytes();
    auto ctx = context_;
    const int size = size_;
    const int rank = rank_;
    return EnqueueCollective("all_gather", opts,
                             [ctx, in, out, nbytes, size, rank](milliseconds timeout) {
                               if (nbytes == 0) return;
                               if (size == 1) {
                                 std::memmove(out, in, nbytes);
                                 return;
                               }
                               (void)rank;
                               gloo::AllgatherOptions o(ctx);
                               o.setInput<uint8_t>(static_cast<uint8_t*>(in), nbytes);
                               o.setOutput<uint8_t>(static_cast<uint8_t*>(out), nbytes * size);
                               o.setTag(0);
                               o.setTimeout(timeout);
                               gloo::allgather(o);
                             });
  } catch (const std::exception& e) {
    return CompletedWork(InternalError(std::string("all_gather: ") + e.what()));
  }
}

std::shared_ptr<Work> GlooCommunicator::ReduceScatter(const Tensor& input, Tensor& output,
                                                      ReduceOp op, OpOptions opts) {
  try {
    if (Status s = CheckTensor(input, "reduce_scatter input"); !s.ok()) return CompletedWork(s);
    if (Status s = CheckTensor(output, "reduce_scatter output"); !s.ok()) return CompletedWork(s);
    if (!IsValidReduceOp(op)) return CompletedWork(InvalidArgumentError("reduce_scatter: bad op"));
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
    const void* in = input.data();
    void* out = output.data();
    const size_t block_numel = static_cast<size_t>(output.numel());
    const size_t block_bytes = output.nbytes();
    const DType dtype = input.dtype();
    auto ctx = context_;
    const int size = size_;
    const int rank = rank_;
    return EnqueueCollective(
        std::string("reduce_scatter(") + std::string(ReduceOpName(op)) + ")", opts,
        [ctx, in, out, block_numel, block_bytes, dtype, op, size, rank](milliseconds timeout) {
          if (block_bytes == 0) return;
          if (size == 1) {
            std::memmove(out, in, block_bytes);
            return;
          }
          // Gloo 2022 has no unbound-buffer reduce-scatter: all-reduce a copy, keep our block.
          std::unique_ptr<char[]> tmp(new char[block_bytes * size]);
          std::memcpy(tmp.get(), in, block_bytes * size);
          AllreduceAny(ctx, tmp.get(), block_numel * size, dtype, op, timeout);
          std::memcpy(out, tmp.get() + block_bytes * rank, block_bytes);
        });
  } catch (const std::exception& e) {
    return CompletedWork(InternalError(std::string("reduce_scatter: ") + e.what()));
  }
}

std::shared_ptr<Work> GlooCommunicator::Barrier(OpOptions opts) {
  try {
    auto ctx = context_;
    const int size = size_;
    return EnqueueCollective("barrier", opts, [ctx, size](milliseconds timeout) {
      if (size == 1) return;
      gloo::BarrierOptions o(ctx);
      o.setTag(0);
      o.setTimeout(timeout);
      gloo::barrier(o);
    });
  } catch (const std::exception& e) {
    return CompletedWork(InternalError(std::string("barrier: ") + e.what()));
  }
}

// ---- breaking -----------------------------------------------------------------------------------

void GlooCommunicator::Abort(const Status& reason) {
  Break(reason.ok() ? AbortedError("aborted") : reason);
}

bool GlooCommunicator::broken() const {
  std::lock_guard lock(mu_);
  return broken_;
}

Status GlooCommunicator::error() const {
  std::lock_guard lock(mu_);
  return error_;
}

void GlooCommunicator::KillTransport() {
  if (!context_) return;
  // Gloo has no public "abort" for a context. A wait that times out on an unbound buffer makes
  // Gloo signal an exception on every pair of the context (closing its sockets): every pending
  // Gloo wait, including one inside a running collective, then throws at once, and Gloo no longer
  // reads into or writes from user buffers. We trigger exactly that with a 1 ms wait on a private
  // buffer that has no operation posted.
  try {
    char dummy = 0;
    auto buf = context_->createUnboundBuffer(&dummy, 1);
    buf->waitRecv(nullptr, milliseconds(1));
  } catch (...) {
  }
  try {
    context_->closeConnections();
  } catch (...) {
  }
}

void GlooCommunicator::Break(Status reason, bool from_destructor) {
  std::vector<std::shared_ptr<OpBase>> to_complete;
  std::vector<std::shared_ptr<Buffer>> recv_waits;
  std::shared_ptr<AckBuf> reaping;
  {
    std::lock_guard lock(mu_);
    if (broken_) return;
    broken_ = true;
    // Errors name the communicator (the world manager sets the label to the world's name).
    if (!options_.label.empty() && !reason.message().starts_with(options_.label)) {
      reason = reason.WithContext(options_.label);
    }
    error_ = reason;
    on_broken_pending_ = !from_destructor && static_cast<bool>(options_.on_broken);
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second->in_transport) {
        ++it;
        continue;
      }
      to_complete.push_back(it->second);
      deadlines_.erase({it->second->deadline.time_point(), it->second->id});
      it = pending_.erase(it);
    }
    for (auto& p : peers_) {
      if (p->hdr_buf) recv_waits.push_back(p->hdr_buf);
      for (auto& op : p->matched) {
        if (op->payload_buf) recv_waits.push_back(op->payload_buf);
      }
      p->matched.clear();
      p->posted_recvs.clear();
      p->pending_sends.clear();
      p->unexpected.clear();
    }
    coll_queue_.clear();
    reaping = reaping_;
  }
  ARCHI_LOG_DEBUG("gloo communicator rank {}/{} broken: {}", rank_, size_, reason.ToString());
  // Tell the owner before any pending op completes, so that whoever sees an op fail with
  // kAborted also sees the communicator's owner (e.g. the world) already marked broken.
  bool notify = false;
  {
    std::lock_guard lock(mu_);
    notify = std::exchange(on_broken_pending_, false);
  }
  if (notify) {
    try {
      options_.on_broken(reason);
    } catch (...) {
      ARCHI_LOG_ERROR("gloo communicator: on_broken callback threw");
    }
  }
  KillTransport();  // from here on Gloo touches no user memory
  for (auto& b : recv_waits) b->abortWaitRecv();
  if (reaping && reaping->buf) reaping->buf->abortWaitSend();
  const std::string msg(reason.message());
  for (auto& op : to_complete) {
    if (op->deadline_hit) {
      op->work->Complete(DeadlineExceededError(op->what + " exceeded its op deadline of " +
                                               std::to_string(op->timeout_ms) + " ms"));
    } else {
      op->work->Complete(AbortedError(msg.empty() ? std::string("communicator broken") : msg));
    }
  }
  watchdog_cv_.notify_all();
  coll_cv_.notify_all();
  acks_cv_.notify_all();
}

void GlooCommunicator::WatchdogLoop(std::stop_token stop) {
  std::unique_lock lock(mu_);
  while (true) {
    if (on_broken_pending_) {
      on_broken_pending_ = false;
      Status reason = error_;
      lock.unlock();
      try {
        options_.on_broken(reason);
      } catch (...) {
        ARCHI_LOG_ERROR("gloo communicator: on_broken callback threw");
      }
      lock.lock();
      continue;
    }
    if (stop.stop_requested()) return;
    if (broken_ || deadlines_.empty()) {
      watchdog_cv_.wait(lock, stop, [&] {
        return on_broken_pending_ || (!broken_ && !deadlines_.empty());
      });
      continue;
    }
    const auto [when, id] = *deadlines_.begin();
    if (Clock::now() >= when) {
      auto it = pending_.find(id);
      if (it == pending_.end()) {  // defensive: stale entry
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
    watchdog_cv_.wait_until(lock, stop, when, [&] {
      return on_broken_pending_ || broken_ || deadlines_.empty() ||
             deadlines_.begin()->first < when;
    });
  }
}

}  // namespace archi
