// Backend conformance suite: the Communicator contract (collectives/communicator.h) checked once,
// instantiated for every backend (Gloo always; NCCL, which skips with the reason when it is not
// compiled in or there are fewer CUDA devices than ranks). Ranks are threads over an InMemoryStore;
// for NCCL rank r uses CUDA device r and its tensors live in device memory.
//
// Only patterns valid on every backend are used: point-to-point pairs are issued in the same order
// on both sides (NCCL matches them per pair in issue order).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "collectives/communicator.h"
#include "collectives/cpu/shm_communicator.h"
#include "runtime/core/device_buffer.h"
#include "runtime/core/memory_store.h"
#include "tests/collectives/comm_test_util.h"
#include "tests/collectives/conformance_util.h"

namespace archi {
namespace {

using testing::BackendTensor;
using testing::EncodeInts;
using testing::kConformanceRanks;
using testing::RandomBytes;
using testing::RunRanks;

constexpr int kN = kConformanceRanks;

// The ranks' communicators, destroyed concurrently: a healthy NCCL communicator finalizes on
// destruction, which may wait for its peers to finalize too.
class CommGroup {
 public:
  explicit CommGroup(std::vector<std::unique_ptr<Communicator>> comms) : comms_(std::move(comms)) {}
  ~CommGroup() {
    RunRanks(static_cast<int>(comms_.size()), [this](int r) { comms_[r].reset(); });
  }
  CommGroup(CommGroup&&) = default;
  std::unique_ptr<Communicator>& operator[](size_t i) { return comms_[i]; }
  const std::vector<std::unique_ptr<Communicator>>& all() const { return comms_; }

 private:
  std::vector<std::unique_ptr<Communicator>> comms_;
};

class ConformanceTest : public ::testing::TestWithParam<testing::BackendCase> {
 protected:
  void SetUp() override {
    const int devices = kind() == BackendKind::kNccl ? CudaDeviceCount() : 0;
    const std::string why = testing::BackendSkipReason(kind(), kN, devices);
    if (!why.empty()) GTEST_SKIP() << why;
    store_ = std::make_shared<InMemoryStore>();
  }

  BackendKind kind() const { return GetParam().kind; }
  bool shm() const { return GetParam().shm == ShmMode::kOn; }

  // Connects kN ranks concurrently (rank r's options from `per_rank(r)`).
  CommGroup Connect(CommOptions base = {}, std::vector<CommOptions> per_rank = {}) {
    const std::string prefix = testing::UniquePrefix();
    std::vector<std::unique_ptr<Communicator>> comms(kN);
    std::vector<Status> errors(kN);
    RunRanks(kN, [&](int r) {
      CommOptions o = testing::OptionsFor(GetParam(), r, per_rank.empty() ? base : per_rank[r]);
      auto c = CreateCommunicator(kind(), r, kN, std::make_shared<PrefixStore>(store_, prefix), o);
      if (c.ok()) {
        comms[r] = std::move(c).value();
      } else {
        errors[r] = c.status();
      }
    });
    for (int r = 0; r < kN; ++r) EXPECT_TRUE(errors[r].ok()) << "rank " << r << ": " << errors[r];
    return CommGroup(std::move(comms));
  }

  std::unique_ptr<BackendTensor> Make(int rank, std::vector<int64_t> shape, DType dtype) {
    std::string error;
    auto t = BackendTensor::Make(kind(), rank, std::move(shape), dtype, &error);
    EXPECT_TRUE(t) << error;
    return t;
  }

  std::shared_ptr<Store> store_;
};

bool AllConnected(const CommGroup& comms) {
  for (auto& c : comms.all()) {
    if (!c) return false;
  }
  return true;
}

TEST_P(ConformanceTest, SendRecvBitExactSeveralSizes) {
  auto comms = Connect();
  ASSERT_TRUE(AllConnected(comms));
  EXPECT_EQ(UsesShmFastPath(*comms[0], 1), shm());
  EXPECT_EQ(UsesShmFastPath(*comms[1], 0), shm());
  const std::vector<std::pair<int64_t, DType>> cases = {
      {0, DType::kF32}, {1, DType::kU8}, {1025, DType::kF16}, {4097, DType::kF32},
      {1 << 18, DType::kI64}};
  for (auto [numel, dt] : cases) {
    auto src = Make(0, {numel}, dt);
    auto dst = Make(1, {numel}, dt);
    ASSERT_TRUE(src && dst);
    const auto bytes = RandomBytes(src->nbytes(), static_cast<uint32_t>(numel) + 7);
    ASSERT_TRUE(src->Upload(bytes));
    ASSERT_TRUE(dst->Upload(std::vector<uint8_t>(dst->nbytes(), 0)));
    auto s = comms[0]->Send(src->tensor(), 1, 3);
    auto r = comms[1]->Recv(dst->tensor(), 0, 3);
    EXPECT_TRUE(testing::WaitFor(s).ok()) << numel;
    EXPECT_TRUE(testing::WaitFor(r).ok()) << numel;
    EXPECT_EQ(dst->Download(), bytes) << numel << " x " << DTypeName(dt);
  }
}

TEST_P(ConformanceTest, DtypeMismatchFailsBothSidesAndCommStaysUsable) {
  auto comms = Connect();
  ASSERT_TRUE(AllConnected(comms));
  auto src = Make(0, {64}, DType::kF32);
  auto dst = Make(1, {64}, DType::kI32);
  ASSERT_TRUE(src && dst);
  auto s = comms[0]->Send(src->tensor(), 1, 0);
  auto r = comms[1]->Recv(dst->tensor(), 0, 0);
  EXPECT_EQ(testing::WaitFor(s).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(testing::WaitFor(r).code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(comms[0]->broken());
  EXPECT_FALSE(comms[1]->broken());
  // A matching pair still works afterwards.
  auto ok_dst = Make(1, {64}, DType::kF32);
  const auto bytes = RandomBytes(256, 1);
  ASSERT_TRUE(src->Upload(bytes));
  auto s2 = comms[0]->Send(src->tensor(), 1, 0);
  auto r2 = comms[1]->Recv(ok_dst->tensor(), 0, 0);
  EXPECT_TRUE(testing::WaitFor(s2).ok());
  EXPECT_TRUE(testing::WaitFor(r2).ok());
  EXPECT_EQ(ok_dst->Download(), bytes);
}

TEST_P(ConformanceTest, SizeMismatchFailsBothSides) {
  auto comms = Connect();
  ASSERT_TRUE(AllConnected(comms));
  auto src = Make(0, {100}, DType::kF32);
  auto dst = Make(1, {99}, DType::kF32);
  ASSERT_TRUE(src && dst);
  auto s = comms[0]->Send(src->tensor(), 1, 0);
  auto r = comms[1]->Recv(dst->tensor(), 0, 0);
  Status ss = testing::WaitFor(s);
  Status rs = testing::WaitFor(r);
  EXPECT_EQ(ss.code(), StatusCode::kInvalidArgument) << ss;
  EXPECT_EQ(rs.code(), StatusCode::kInvalidArgument) << rs;
}

// Matching per (peer, tag) in issue order with several messages in flight, across the fast path's
// protocol boundaries (inline <= 64 KiB, larger announced; larger than its 2 MiB ring). The
// receives are posted after the sends and in another tag order. Not NCCL (it pairs ops by order).
TEST_P(ConformanceTest, ManyInFlightMatchedPerTagInIssueOrder) {
  if (kind() == BackendKind::kNccl) GTEST_SKIP() << "NCCL pairs p2p ops in issue order";
  auto comms = Connect();
  ASSERT_TRUE(AllConnected(comms));
  const std::vector<int64_t> sizes = {4, 65536, 65537, 3 << 20, 5 << 20 | 3};
  std::vector<std::unique_ptr<BackendTensor>> src, dst;
  std::vector<std::vector<uint8_t>> want;
  std::vector<std::shared_ptr<Work>> sends, recvs;
  for (uint32_t tag : {7u, 9u}) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      src.push_back(Make(0, {sizes[i]}, DType::kU8));
      ASSERT_TRUE(src.back());
      want.push_back(RandomBytes(sizes[i], static_cast<uint32_t>(tag * 100 + i)));
      ASSERT_TRUE(src.back()->Upload(want.back()));
      sends.push_back(comms[0]->Send(src.back()->tensor(), 1, tag));
    }
  }
  for (uint32_t tag : {9u, 7u}) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      dst.push_back(Make(1, {sizes[i]}, DType::kU8));
      ASSERT_TRUE(dst.back());
      recvs.push_back(comms[1]->Recv(dst.back()->tensor(), 0, tag));
    }
  }
  for (auto& w : recvs) EXPECT_TRUE(testing::WaitFor(w).ok());
  for (auto& w : sends) EXPECT_TRUE(testing::WaitFor(w).ok());
  const size_t n = sizes.size();
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(dst[i]->Download(), want[n + i]) << "tag 9 #" << i;      // received first
    EXPECT_EQ(dst[n + i]->Download(), want[i]) << "tag 7 #" << i;
  }
}

// Both ranks send large messages to each other at once (the fast path with single copy turned off
// streams both directions through the rings: no deadlock, bit-exact), then a mismatch on a large
// message fails both sides without moving it.
TEST_P(ConformanceTest, BidirectionalLargeAndLargeMismatch) {
  if (kind() == BackendKind::kNccl) GTEST_SKIP() << "NCCL pairs p2p ops in issue order";
  for (const char* cma : {"1", "0"}) {
    ::setenv("ARCHI_SHM_CMA", cma, 1);
    auto comms = Connect();
    ::unsetenv("ARCHI_SHM_CMA");
    ASSERT_TRUE(AllConnected(comms));
    const int64_t n = (6 << 20) + 5;
    std::unique_ptr<BackendTensor> src[2], dst[2];
    std::vector<uint8_t> want[2];
    std::shared_ptr<Work> sends[2], recvs[2];
    for (int r = 0; r < 2; ++r) {
      src[r] = Make(r, {n}, DType::kU8);
      dst[r] = Make(r, {n}, DType::kU8);
      ASSERT_TRUE(src[r] && dst[r]);
      want[r] = RandomBytes(n, 50 + r);
      ASSERT_TRUE(src[r]->Upload(want[r]));
    }
    for (int r = 0; r < 2; ++r) sends[r] = comms[r]->Send(src[r]->tensor(), 1 - r, 2);
    for (int r = 0; r < 2; ++r) recvs[r] = comms[r]->Recv(dst[r]->tensor(), 1 - r, 2);
    for (int r = 0; r < 2; ++r) {
      EXPECT_TRUE(testing::WaitFor(sends[r]).ok()) << "cma " << cma;
      EXPECT_TRUE(testing::WaitFor(recvs[r]).ok()) << "cma " << cma;
      EXPECT_EQ(dst[r]->Download(), want[1 - r]) << "cma " << cma << " rank " << r;
    }
    auto small = Make(1, {n - 1}, DType::kU8);
    ASSERT_TRUE(small);
    auto s = comms[0]->Send(src[0]->tensor(), 1, 3);
    auto r = comms[1]->Recv(small->tensor(), 0, 3);
    EXPECT_EQ(testing::WaitFor(s).code(), StatusCode::kInvalidArgument) << "cma " << cma;
    EXPECT_EQ(testing::WaitFor(r).code(), StatusCode::kInvalidArgument) << "cma " << cma;
    EXPECT_FALSE(comms[0]->broken());
    EXPECT_FALSE(comms[1]->broken());
  }
}

TEST_P(ConformanceTest, AllReduceEveryDtype) {
  auto comms = Connect();
  ASSERT_TRUE(AllConnected(comms));
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16, DType::kI32, DType::kI64, DType::kU8}) {
    for (int64_t n : {1, 1000}) {
      for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
        std::vector<std::unique_ptr<BackendTensor>> ts(kN);
        std::vector<int> expected(n);
        for (int r = 0; r < kN; ++r) {
          ts[r] = Make(r, {n}, dt);
          ASSERT_TRUE(ts[r]);
          std::vector<int> vals(n);
          for (int64_t i = 0; i < n; ++i) vals[i] = static_cast<int>(i % 5) + r + 1;
          ASSERT_TRUE(ts[r]->Upload(EncodeInts(vals, dt)));
        }
        for (int64_t i = 0; i < n; ++i) {
          const int base = static_cast<int>(i % 5) + 1;
          expected[i] = op == ReduceOp::kSum ? kN * base + kN * (kN - 1) / 2 : base + kN - 1;
        }
        std::vector<std::shared_ptr<Work>> works(kN);
        for (int r = 0; r < kN; ++r) works[r] = comms[r]->AllReduce(ts[r]->tensor(), op);
        for (int r = 0; r < kN; ++r) {
          Status s = testing::WaitFor(works[r]);
          ASSERT_TRUE(s.ok()) << s;
          EXPECT_EQ(ts[r]->Download(), EncodeInts(expected, dt))
              << DTypeName(dt) << " n=" << n << " op=" << static_cast<int>(op) << " rank " << r;
        }
      }
    }
  }
}

TEST_P(ConformanceTest, BroadcastBitExact) {
  auto comms = Connect();
  ASSERT_TRUE(AllConnected(comms));
  for (auto [n, dt] : std::vector<std::pair<int64_t, DType>>{{3, DType::kBF16}, {5000, DType::kF32}}) {
    std::vector<std::unique_ptr<BackendTensor>> ts(kN);
    const int root = 1;
    std::vector<uint8_t> payload;
    for (int r = 0; r < kN; ++r) {
      ts[r] = Make(r, {n}, dt);
      ASSERT_TRUE(ts[r]);
      auto bytes = RandomBytes(ts[r]->nbytes(), 100 + r);
      if (r == root) payload = bytes;
      ASSERT_TRUE(ts[r]->Upload(bytes));
    }
    std::vector<std::shared_ptr<Work>> works(kN);
    for (int r = 0; r < kN; ++r) works[r] = comms[r]->Broadcast(ts[r]->tensor(), root);
    for (int r = 0; r < kN; ++r) {
      ASSERT_TRUE(testing::WaitFor(works[r]).ok());
      EXPECT_EQ(ts[r]->Download(), payload) << "rank " << r;
    }
  }
}

TEST_P(ConformanceTest, AllGatherBitExact) {
  auto comms = Connect();
  ASSERT_TRUE(AllConnected(comms));
  for (auto [n, dt] : std::vector<std::pair<int64_t, DType>>{{1, DType::kU8}, {3000, DType::kI32}}) {
    std::vector<std::unique_ptr<BackendTensor>> in(kN), out(kN);
    std::vector<uint8_t> expected;
    for (int r = 0; r < kN; ++r) {
      in[r] = Make(r, {n}, dt);
      out[r] = Make(r, {n * kN}, dt);
      ASSERT_TRUE(in[r] && out[r]);
      auto bytes = RandomBytes(in[r]->nbytes(), 200 + r);
      expected.insert(expected.end(), bytes.begin(), bytes.end());
      ASSERT_TRUE(in[r]->Upload(bytes));
    }
    std::vector<std::shared_ptr<Work>> works(kN);
    for (int r = 0; r < kN; ++r) works[r] = comms[r]->AllGather(in[r]->tensor(), out[r]->tensor());
    for (int r = 0; r < kN; ++r) {
      ASSERT_TRUE(testing::WaitFor(works[r]).ok());
      EXPECT_EQ(out[r]->Download(), expected) << "rank " << r;
    }
  }
}

TEST_P(ConformanceTest, ReduceScatterSum) {
  auto comms = Connect();
  ASSERT_TRUE(AllConnected(comms));
  for (auto [n, dt] : std::vector<std::pair<int64_t, DType>>{{1, DType::kF16}, {777, DType::kF32}}) {
    std::vector<std::unique_ptr<BackendTensor>> in(kN), out(kN);
    for (int r = 0; r < kN; ++r) {
      in[r] = Make(r, {n * kN}, dt);
      out[r] = Make(r, {n}, dt);
      ASSERT_TRUE(in[r] && out[r]);
      std::vector<int> vals(n * kN);
      for (int64_t i = 0; i < n * kN; ++i) vals[i] = static_cast<int>(i % 7) + r;
      ASSERT_TRUE(in[r]->Upload(EncodeInts(vals, dt)));
    }
    std::vector<std::shared_ptr<Work>> works(kN);
    for (int r = 0; r < kN; ++r) {
      works[r] = comms[r]->ReduceScatter(in[r]->tensor(), out[r]->tensor(), ReduceOp::kSum);
    }
    for (int r = 0; r < kN; ++r) {
      ASSERT_TRUE(testing::WaitFor(works[r]).ok());
      std::vector<int> expected(n);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t g = r * n + i;
        expected[i] = kN * static_cast<int>(g % 7) + kN * (kN - 1) / 2;
      }
      EXPECT_EQ(out[r]->Download(), EncodeInts(expected, dt)) << "rank " << r;
    }
  }
}

TEST_P(ConformanceTest, BarrierCompletesOnlyWhenAllArrive) {
  auto comms = Connect();
  ASSERT_TRUE(AllConnected(comms));
  auto w0 = comms[0]->Barrier();
  EXPECT_EQ(w0->Wait(Deadline::AfterMs(50)).code(), StatusCode::kDeadlineExceeded);
  auto w1 = comms[1]->Barrier();
  EXPECT_TRUE(testing::WaitFor(w0).ok());
  EXPECT_TRUE(testing::WaitFor(w1).ok());
}

TEST_P(ConformanceTest, WaitShortDeadlineThenLaterCompletion) {
  auto comms = Connect();
  ASSERT_TRUE(AllConnected(comms));
  auto src = Make(0, {256}, DType::kF32);
  auto dst = Make(1, {256}, DType::kF32);
  ASSERT_TRUE(src && dst);
  const auto bytes = RandomBytes(1024, 9);
  ASSERT_TRUE(src->Upload(bytes));
  auto r = comms[1]->Recv(dst->tensor(), 0, 1);
  const auto t0 = Clock::now();
  EXPECT_EQ(r->Wait(Deadline::AfterMs(30)).code(), StatusCode::kDeadlineExceeded);
  EXPECT_LT(MsSince(t0), 500);
  EXPECT_FALSE(r->IsCompleted());
  auto s = comms[0]->Send(src->tensor(), 1, 1);
  EXPECT_TRUE(testing::WaitFor(r).ok());
  EXPECT_TRUE(testing::WaitFor(s).ok());
  EXPECT_EQ(dst->Download(), bytes);
}

TEST_P(ConformanceTest, AbortInterruptsPendingRecv) {
  std::atomic<int> calls{0};
  Status seen;
  std::vector<CommOptions> per_rank(kN);
  per_rank[1].label = "world 'conf' e1 rank 1/2";
  per_rank[1].on_broken = [&](const Status& s) {
    seen = s;
    ++calls;
  };
  auto comms = Connect({}, per_rank);
  ASSERT_TRUE(AllConnected(comms));
  auto dst = Make(1, {128}, DType::kF32);
  ASSERT_TRUE(dst);
  auto r = comms[1]->Recv(dst->tensor(), 0, 0);
  EXPECT_EQ(r->Wait(Deadline::AfterMs(30)).code(), StatusCode::kDeadlineExceeded);
  std::thread aborter([&] { comms[1]->Abort(AbortedError("test abort")); });
  const auto t0 = Clock::now();
  Status s = r->Wait(Deadline::AfterMs(5000));
  aborter.join();
  EXPECT_EQ(s.code(), StatusCode::kAborted) << s;
  EXPECT_LT(MsSince(t0), 2500);
  EXPECT_TRUE(comms[1]->broken());
  EXPECT_EQ(calls.load(), 1);  // before the op completed
  EXPECT_TRUE(comms[1]->error().message().starts_with("world 'conf' e1 rank 1/2"))
      << comms[1]->error();
  // Later ops fail at once.
  auto later = comms[1]->Recv(dst->tensor(), 0, 0);
  EXPECT_EQ(later->Wait(Deadline::AfterMs(100)).code(), StatusCode::kAborted);
  comms[1]->Abort(AbortedError("again"));  // idempotent
  EXPECT_EQ(calls.load(), 1);
}

// A peer that aborts (like one whose communicator is destroyed) fails a receive pending on it
// promptly: Gloo sees its connection closed, the fast path the peer's closed flag.
TEST_P(ConformanceTest, PeerAbortFailsPendingRecv) {
  if (kind() == BackendKind::kNccl) GTEST_SKIP() << "NCCL reports a revoked peer at the deadline";
  auto comms = Connect();
  ASSERT_TRUE(AllConnected(comms));
  auto dst = Make(0, {64}, DType::kF32);
  ASSERT_TRUE(dst);
  auto r = comms[0]->Recv(dst->tensor(), 1, 0);
  EXPECT_EQ(r->Wait(Deadline::AfterMs(20)).code(), StatusCode::kDeadlineExceeded);
  const auto t0 = Clock::now();
  comms[1]->Abort(AbortedError("peer gives up"));
  Status s = r->Wait(Deadline::AfterMs(5000));
  EXPECT_EQ(s.code(), StatusCode::kAborted) << s;
  EXPECT_LT(MsSince(t0), 2500);
  EXPECT_TRUE(comms[0]->broken());
}

TEST_P(ConformanceTest, OpDeadlineBreaksCommunicator) {
  std::atomic<int> calls{0};
  std::vector<CommOptions> per_rank(kN);
  per_rank[0].on_broken = [&](const Status&) { ++calls; };
  auto comms = Connect({}, per_rank);
  ASSERT_TRUE(AllConnected(comms));
  auto dst = Make(0, {16}, DType::kF32);
  ASSERT_TRUE(dst);
  OpOptions o;
  o.timeout_ms = 300;
  const auto t0 = Clock::now();
  auto r = comms[0]->Recv(dst->tensor(), 1, 0, o);
  auto queued = comms[0]->Recv(dst->tensor(), 1, 1);
  Status s = r->Wait(Deadline::AfterMs(5000));
  const double ms = MsSince(t0);
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s;
  EXPECT_GE(ms, 280);
  EXPECT_LT(ms, 2800);
  EXPECT_EQ(queued->Wait(Deadline::AfterMs(1000)).code(), StatusCode::kAborted);
  EXPECT_TRUE(comms[0]->broken());
  EXPECT_EQ(comms[0]->error().code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(calls.load(), 1);
  // Only the rank whose op timed out breaks (Gloo). NCCL may propagate the revoke to the peer as an
  // async error, so it is not asserted there.
  if (kind() == BackendKind::kGloo) {
    EXPECT_FALSE(comms[1]->broken());
  }
}

TEST_P(ConformanceTest, ConnectTimeoutWhenARankNeverShows) {
  for (int present : {0, 1}) {
    CommOptions o = testing::OptionsFor(GetParam(), present);
    o.connect_timeout_ms = 400;
    const auto t0 = Clock::now();
    auto c = CreateCommunicator(kind(), present, kN,
                                std::make_shared<PrefixStore>(store_, testing::UniquePrefix()), o);
    const double ms = MsSince(t0);
    ASSERT_FALSE(c.ok()) << "rank " << present;
    EXPECT_EQ(c.status().code(), StatusCode::kDeadlineExceeded) << c.status();
    EXPECT_LT(ms, 4000) << "rank " << present;
  }
}

TEST_P(ConformanceTest, TensorOnWrongDeviceIsInvalidArgument) {
  auto comms = Connect();
  ASSERT_TRUE(AllConnected(comms));
  float dummy[4] = {};
  // The other kind of memory than the backend wants (no byte is touched: validation fails first).
  const Device wrong = kind() == BackendKind::kNccl ? Device::Cpu() : Device::Cuda(0);
  auto t = Tensor::View(dummy, {4}, DType::kF32, wrong);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(testing::WaitFor(comms[0]->Send(*t, 1, 0)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(testing::WaitFor(comms[0]->AllReduce(*t, ReduceOp::kSum)).code(),
            StatusCode::kInvalidArgument);
  EXPECT_FALSE(comms[0]->broken());
}

INSTANTIATE_TEST_SUITE_P(Backends, ConformanceTest,
                         ::testing::ValuesIn(testing::AllBackendCases()),
                         [](const ::testing::TestParamInfo<testing::BackendCase>& info) {
                           return testing::CaseName(info.param);
                         });

}  // namespace
}  // namespace archi

namespace archi {
namespace {

// Runs on machines without a GPU: the NCCL backend is dispatched by the factory and reports the
// missing device as kUnavailable instead of crashing or hanging.
TEST(NcclBackendTest, CreateWithoutGpuIsUnavailable) {
  if (!BackendCompiledIn(BackendKind::kNccl)) GTEST_SKIP() << "NCCL backend not compiled in";
  if (CudaDeviceCount() > 0) GTEST_SKIP() << "a CUDA device is present: covered by the suite";
  CommOptions o;
  o.connect_timeout_ms = 500;
  auto c = CreateCommunicator(BackendKind::kNccl, 0, 1, std::make_shared<InMemoryStore>(), o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kUnavailable) << c.status();
}

}  // namespace
}  // namespace archi
