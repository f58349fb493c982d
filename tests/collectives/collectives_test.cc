// Communicator tests with ranks as threads over one in-memory store (Gloo backend).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>
#include <thread>

#include "collectives/communicator.h"
#include "runtime/core/memory_store.h"
#include "tests/collectives/comm_test_util.h"

namespace archi {
namespace {

using testing::FillRandom;
using testing::MakeComms;
using testing::MakeTensor;
using testing::RunRanks;
using testing::SameBytes;
using testing::WaitFor;

std::shared_ptr<Store> NewStore() { return std::make_shared<InMemoryStore>(); }

// ---- element access for every dtype (values are small integers, exact in f16/bf16) ----

double Get(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kF32:
      return t.data_as<float>()[i];
    case DType::kI32:
      return t.data_as<int32_t>()[i];
    case DType::kI64:
      return static_cast<double>(t.data_as<int64_t>()[i]);
    case DType::kU8:
      return t.data_as<uint8_t>()[i];
    case DType::kF16: {
      uint16_t h = t.data_as<uint16_t>()[i];
      // integers up to 2048 only: exponent/mantissa decode
      int e = (h >> 10) & 0x1f;
      int m = h & 0x3ff;
      double v = e == 0 ? m / 1024.0 * std::pow(2.0, -14) : (1 + m / 1024.0) * std::pow(2.0, e - 15);
      return (h & 0x8000) ? -v : v;
    }
    case DType::kBF16: {
      uint32_t bits = static_cast<uint32_t>(t.data_as<uint16_t>()[i]) << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
  }
  return 0;
}

void Set(Tensor& t, int64_t i, double v) {
  switch (t.dtype()) {
    case DType::kF32:
      t.data_as<float>()[i] = static_cast<float>(v);
      return;
    case DType::kI32:
      t.data_as<int32_t>()[i] = static_cast<int32_t>(v);
      return;
    case DType::kI64:
      t.data_as<int64_t>()[i] = static_cast<int64_t>(v);
      return;
    case DType::kU8:
      t.data_as<uint8_t>()[i] = static_cast<uint8_t>(v);
      return;
    case DType::kF16: {
      // exact for small non-negative integers
      uint16_t h = 0;
      if (v != 0) {
        int e = static_cast<int>(std::floor(std::log2(v)));
        int m = static_cast<int>(std::lround((v / std::pow(2.0, e) - 1) * 1024));
        h = static_cast<uint16_t>(((e + 15) << 10) | m);
      }
      t.data_as<uint16_t>()[i] = h;
      return;
    }
    case DType::kBF16: {
      float f = static_cast<float>(v);
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      t.data_as<uint16_t>()[i] = static_cast<uint16_t>(bits >> 16);
      return;
    }
  }
}

// Value of element i on rank r: small positive integers so every dtype and op is exact.
double Val(int r, int64_t i) { return 1 + ((r * 3 + i) % 5); }

double Reduce(ReduceOp op, int n, int64_t i) {
  double acc = Val(0, i);
  for (int r = 1; r < n; ++r) {
    double v = Val(r, i);
    switch (op) {
      case ReduceOp::kSum:
        acc += v;
        break;
      case ReduceOp::kProd:
        acc *= v;
        break;
      case ReduceOp::kMin:
        acc = std::min(acc, v);
        break;
      case ReduceOp::kMax:
        acc = std::max(acc, v);
        break;
    }
  }
  return acc;
}

// ---- factory / names ----

TEST(CommunicatorFactory, BackendNames) {
  EXPECT_EQ(BackendName(BackendKind::kGloo), "gloo");
  EXPECT_EQ(BackendName(BackendKind::kNccl), "nccl");
  EXPECT_EQ(*ParseBackend("gloo"), BackendKind::kGloo);
  EXPECT_EQ(*ParseBackend("nccl"), BackendKind::kNccl);
  EXPECT_EQ(ParseBackend("mpi").status().code(), StatusCode::kInvalidArgument);
}

TEST(CommunicatorFactory, NcclUnimplementedOnlyWhenNotBuilt) {
  if (BackendCompiledIn(BackendKind::kNccl)) {
    GTEST_SKIP() << "NCCL is built: see NcclBackendTest and the conformance suite";
  }
  auto c = CreateCommunicator(BackendKind::kNccl, 0, 1, NewStore(), {});
  EXPECT_EQ(c.status().code(), StatusCode::kUnimplemented);
}

TEST(CommunicatorFactory, BadArguments) {
  EXPECT_EQ(CreateCommunicator(BackendKind::kGloo, 2, 2, NewStore(), {}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateCommunicator(BackendKind::kGloo, 0, 0, NewStore(), {}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateCommunicator(BackendKind::kGloo, 0, 1, nullptr, {}).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(CommunicatorFactory, CompletedWork) {
  auto w = CompletedWork(InvalidArgumentError("x"));
  EXPECT_TRUE(w->IsCompleted());
  EXPECT_EQ(w->Wait(Deadline::Past()).code(), StatusCode::kInvalidArgument);
}

TEST(GlooConnect, TimeoutWhenARankNeverShowsUp) {
  CommOptions o;
  o.connect_timeout_ms = 400;
  const auto t0 = Clock::now();
  auto c = CreateCommunicator(BackendKind::kGloo, 0, 2,
                              std::make_shared<PrefixStore>(NewStore(), "lonely"), o);
  const double ms = MsSince(t0);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kDeadlineExceeded) << c.status();
  EXPECT_GE(ms, 350);
  EXPECT_LT(ms, 1500);
}

TEST(GlooConnect, SizeOne) {
  auto comms = MakeComms(1, NewStore());
  ASSERT_TRUE(comms[0]);
  auto t = MakeTensor({4}, DType::kF32);
  for (int i = 0; i < 4; ++i) t.data_as<float>()[i] = i;
  EXPECT_TRUE(WaitFor(comms[0]->AllReduce(t, ReduceOp::kSum)).ok());
  EXPECT_EQ(t.data_as<float>()[3], 3);
  auto out = MakeTensor({4}, DType::kF32);
  EXPECT_TRUE(WaitFor(comms[0]->AllGather(t, out)).ok());
  EXPECT_TRUE(SameBytes(t, out));
  EXPECT_TRUE(WaitFor(comms[0]->Barrier()).ok());
}

// ---- point to point ----

TEST(GlooP2P, SendRecvBitExactAllSizes) {
  auto comms = MakeComms(2, NewStore());
  ASSERT_TRUE(comms[0] && comms[1]);
  std::vector<int64_t> sizes = {0, 1};
  for (int64_t n = 3; n * 4 <= (16 << 20); n *= 3) sizes.push_back(n);
  sizes.push_back((16 << 20) / 4);  // exactly 16 MiB
  for (int64_t n : sizes) {
    auto src = MakeTensor({n}, DType::kF32);
    auto dst = MakeTensor({n}, DType::kF32);
    FillRandom(src, static_cast<uint32_t>(n));
    if (n > 0) std::memset(dst.data(), 0, dst.nbytes());
    auto r = comms[1]->Recv(dst, 0, 7);
    auto s = comms[0]->Send(src, 1, 7);
    ASSERT_TRUE(WaitFor(s).ok()) << "n=" << n;
    ASSERT_TRUE(WaitFor(r).ok()) << "n=" << n;
    EXPECT_TRUE(SameBytes(src, dst)) << "n=" << n;
  }
}

TEST(GlooP2P, SendBeforeRecvIsPosted) {
  auto comms = MakeComms(2, NewStore());
  auto src = MakeTensor({1000}, DType::kI32);
  FillRandom(src, 1);
  auto s = comms[0]->Send(src, 1, 3);
  EXPECT_EQ(s->Wait(Deadline::AfterMs(50)).code(), StatusCode::kDeadlineExceeded);
  auto dst = MakeTensor({1000}, DType::kI32);
  ASSERT_TRUE(WaitFor(comms[1]->Recv(dst, 0, 3)).ok());
  ASSERT_TRUE(WaitFor(s).ok());
  EXPECT_TRUE(SameBytes(src, dst));
}

TEST(GlooP2P, ManyMessagesInterleavedTagsBothDirections) {
  auto comms = MakeComms(2, NewStore());
  constexpr int kTags = 4;
  constexpr int kPerTag = 60;
  // Each rank sends kPerTag messages on every tag, interleaving tags; the receiver posts its
  // receives tag by tag in reverse tag order. Message k on tag t carries (t, k) in its content.
  RunRanks(2, [&](int r) {
    Communicator& c = *comms[r];
    const int peer = 1 - r;
    std::vector<Tensor> out, in;
    std::vector<std::shared_ptr<Work>> works;
    for (int k = 0; k < kPerTag; ++k) {
      for (int t = 0; t < kTags; ++t) {
        auto x = MakeTensor({3 + (k % 5)}, DType::kI64);
        for (int64_t i = 0; i < x.numel(); ++i) x.data_as<int64_t>()[i] = r * 1'000'000 + t * 1000 + k;
        out.push_back(x);
        works.push_back(c.Send(x, peer, t));
      }
    }
    std::vector<std::pair<int, int>> expect;
    for (int t = kTags - 1; t >= 0; --t) {
      for (int k = 0; k < kPerTag; ++k) {
        auto y = MakeTensor({3 + (k % 5)}, DType::kI64);
        in.push_back(y);
        expect.emplace_back(t, k);
        works.push_back(c.Recv(y, peer, t));
      }
    }
    for (auto& w : works) ASSERT_TRUE(WaitFor(w).ok());
    for (size_t j = 0; j < in.size(); ++j) {
      auto [t, k] = expect[j];
      for (int64_t i = 0; i < in[j].numel(); ++i) {
        ASSERT_EQ(in[j].data_as<int64_t>()[i], peer * 1'000'000 + t * 1000 + k);
      }
    }
  });
}

TEST(GlooP2P, SendsCompleteOutOfOrderAcrossTags) {
  // A send on tag 1 completes although an earlier send on tag 0 is not matched yet.
  auto comms = MakeComms(2, NewStore());
  auto a = MakeTensor({10}, DType::kF32), b = MakeTensor({10}, DType::kF32);
  FillRandom(a, 1);
  FillRandom(b, 2);
  auto s0 = comms[0]->Send(a, 1, 0);
  auto s1 = comms[0]->Send(b, 1, 1);
  auto rb = MakeTensor({10}, DType::kF32), ra = MakeTensor({10}, DType::kF32);
  ASSERT_TRUE(WaitFor(comms[1]->Recv(rb, 0, 1)).ok());
  ASSERT_TRUE(WaitFor(s1).ok());
  EXPECT_FALSE(s0->IsCompleted());
  ASSERT_TRUE(WaitFor(comms[1]->Recv(ra, 0, 0)).ok());
  ASSERT_TRUE(WaitFor(s0).ok());
  EXPECT_TRUE(SameBytes(a, ra));
  EXPECT_TRUE(SameBytes(b, rb));
}

TEST(GlooP2P, DtypeAndSizeMismatchThenStillUsable) {
  auto comms = MakeComms(2, NewStore());
  // dtype mismatch (same byte size)
  auto f = MakeTensor({16}, DType::kF32);
  auto i = MakeTensor({16}, DType::kI32);
  auto r = comms[1]->Recv(i, 0, 1);
  auto s = comms[0]->Send(f, 1, 1);
  Status rs = WaitFor(r), ss = WaitFor(s);
  EXPECT_EQ(rs.code(), StatusCode::kInvalidArgument) << rs;
  EXPECT_EQ(ss.code(), StatusCode::kInvalidArgument) << ss;
  EXPECT_NE(rs.message().find("f32"), std::string_view::npos) << rs;
  EXPECT_NE(rs.message().find("i32"), std::string_view::npos) << rs;
  EXPECT_NE(ss.message().find("i32"), std::string_view::npos) << ss;
  // size mismatch, larger and smaller
  auto big = MakeTensor({1 << 16}, DType::kF32);
  auto small = MakeTensor({100}, DType::kF32);
  r = comms[1]->Recv(small, 0, 2);
  s = comms[0]->Send(big, 1, 2);
  rs = WaitFor(r);
  EXPECT_EQ(rs.code(), StatusCode::kInvalidArgument) << rs;
  EXPECT_NE(rs.message().find("262144"), std::string_view::npos) << rs;
  EXPECT_NE(rs.message().find("400"), std::string_view::npos) << rs;
  EXPECT_EQ(WaitFor(s).code(), StatusCode::kInvalidArgument);
  r = comms[1]->Recv(big, 0, 2);
  s = comms[0]->Send(small, 1, 2);
  EXPECT_EQ(WaitFor(r).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(WaitFor(s).code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(comms[0]->broken());
  EXPECT_FALSE(comms[1]->broken());
  // still usable, same tag
  auto x = MakeTensor({100}, DType::kF32), y = MakeTensor({100}, DType::kF32);
  FillRandom(x, 9);
  r = comms[1]->Recv(y, 0, 2);
  s = comms[0]->Send(x, 1, 2);
  ASSERT_TRUE(WaitFor(r).ok());
  ASSERT_TRUE(WaitFor(s).ok());
  EXPECT_TRUE(SameBytes(x, y));
}

TEST(GlooP2P, Validation) {
  auto comms = MakeComms(2, NewStore());
  auto t = MakeTensor({4}, DType::kF32);
  auto code = [](const std::shared_ptr<Work>& w) { return w->Wait(Deadline::Past()).code(); };
  EXPECT_EQ(code(comms[0]->Send(t, 2, 0)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(comms[0]->Send(t, -1, 0)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(comms[0]->Send(t, 0, 0)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(comms[0]->Recv(t, 0, 0)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(comms[0]->Recv(t, 5, 0)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(comms[0]->Send(t, 1, (1u << 20) + 1)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(comms[0]->Recv(t, 1, 0xffffffffu)), StatusCode::kInvalidArgument);
  float host[4];
  auto gpu = Tensor::View(host, {4}, DType::kF32, Device::Cuda(0));
  ASSERT_TRUE(gpu.ok());
  EXPECT_EQ(code(comms[0]->Send(*gpu, 1, 0)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(comms[0]->AllReduce(*gpu, ReduceOp::kSum)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(comms[0]->Broadcast(t, 2)), StatusCode::kInvalidArgument);
  auto wrong = MakeTensor({7}, DType::kF32);
  EXPECT_EQ(code(comms[0]->AllGather(t, wrong)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(comms[0]->ReduceScatter(t, wrong, ReduceOp::kSum)), StatusCode::kInvalidArgument);
  auto wrong_dtype = MakeTensor({8}, DType::kI32);
  EXPECT_EQ(code(comms[0]->AllGather(t, wrong_dtype)), StatusCode::kInvalidArgument);
  EXPECT_FALSE(comms[0]->broken());
}

TEST(GlooP2P, WaitShortDeadlineThenCompletesLater) {
  auto comms = MakeComms(2, NewStore());
  auto y = MakeTensor({32}, DType::kU8);
  auto r = comms[1]->Recv(y, 0, 0);
  EXPECT_EQ(r->Wait(Deadline::AfterMs(20)).code(), StatusCode::kDeadlineExceeded);
  EXPECT_FALSE(r->IsCompleted());
  auto x = MakeTensor({32}, DType::kU8);
  FillRandom(x, 3);
  ASSERT_TRUE(WaitFor(comms[0]->Send(x, 1, 0)).ok());
  ASSERT_TRUE(WaitFor(r).ok());
  EXPECT_TRUE(SameBytes(x, y));
  EXPECT_FALSE(comms[1]->broken());
}

TEST(GlooP2P, AbortInterruptsPendingRecv) {
  std::atomic<int> broken_calls{0};
  Status seen;
  std::mutex mu;
  CommOptions o;
  o.on_broken = [&](const Status& s) {
    std::lock_guard lock(mu);
    seen = s;
    ++broken_calls;
  };
  auto comms = MakeComms(2, NewStore(), o);
  auto y = MakeTensor({1024}, DType::kF32);
  auto r = comms[1]->Recv(y, 0, 5);
  auto r2 = comms[1]->Recv(y, 0, 6);
  EXPECT_EQ(r->Wait(Deadline::AfterMs(30)).code(), StatusCode::kDeadlineExceeded);
  std::thread aborter([&] { comms[1]->Abort(AbortedError("test abort")); });
  const auto t0 = Clock::now();
  Status s = r->Wait(Deadline::AfterMs(2000));
  const double ms = MsSince(t0);
  aborter.join();
  EXPECT_EQ(s.code(), StatusCode::kAborted) << s;
  EXPECT_NE(s.message().find("test abort"), std::string_view::npos) << s;
  EXPECT_LT(ms, 100);
  EXPECT_EQ(WaitFor(r2).code(), StatusCode::kAborted);
  EXPECT_TRUE(comms[1]->broken());
  EXPECT_EQ(comms[1]->error().code(), StatusCode::kAborted);
  EXPECT_EQ(comms[1]->Send(y, 0, 0)->Wait(Deadline::Past()).code(), StatusCode::kAborted);
  EXPECT_EQ(comms[1]->Barrier()->Wait(Deadline::Past()).code(), StatusCode::kAborted);
  comms[1]->Abort(AbortedError("again"));  // idempotent
  const Deadline d = Deadline::AfterMs(2000);
  while (broken_calls.load() == 0 && !d.Expired()) std::this_thread::sleep_for(Millis(1));
  EXPECT_EQ(broken_calls.load(), 1);
  {
    std::lock_guard lock(mu);
    EXPECT_NE(seen.message().find("test abort"), std::string_view::npos);
  }
  // The peer sees the broken connection on its next op involving rank 1.
  auto x = MakeTensor({1024}, DType::kF32);
  Status peer = WaitFor(comms[0]->Recv(x, 1, 0), 3000);
  EXPECT_EQ(peer.code(), StatusCode::kAborted) << peer;
  EXPECT_NE(peer.message().find("peer rank 1"), std::string_view::npos) << peer;
  EXPECT_TRUE(comms[0]->broken());
}

TEST(GlooP2P, OpDeadlineBreaksCommunicator) {
  std::atomic<int> broken_calls{0};
  CommOptions o;
  o.on_broken = [&](const Status&) { ++broken_calls; };
  auto comms = MakeComms(2, NewStore(), o);
  auto y = MakeTensor({8}, DType::kF32);
  auto other = comms[1]->Recv(y, 0, 9);  // default (long) op deadline
  OpOptions short_op;
  short_op.timeout_ms = 150;
  const auto t0 = Clock::now();
  auto r = comms[1]->Recv(y, 0, 1, short_op);
  Status s = WaitFor(r, 3000);
  const double ms = MsSince(t0);
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s;
  EXPECT_GE(ms, 140);
  EXPECT_LT(ms, 1000);
  EXPECT_TRUE(comms[1]->broken());
  EXPECT_EQ(comms[1]->error().code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(WaitFor(other).code(), StatusCode::kAborted);
  const Deadline d = Deadline::AfterMs(2000);
  while (broken_calls.load() == 0 && !d.Expired()) std::this_thread::sleep_for(Millis(1));
  EXPECT_EQ(broken_calls.load(), 1);
}

TEST(GlooP2P, DestructionWithPendingOpsIsQuick) {
  auto comms = MakeComms(2, NewStore());
  auto y = MakeTensor({8}, DType::kF32);
  auto r = comms[1]->Recv(y, 0, 1);
  auto big = MakeTensor({1 << 20}, DType::kF32);
  auto s = comms[1]->Send(big, 0, 2);  // never received
  auto b = comms[1]->Barrier();        // rank 0 never joins
  const auto t0 = Clock::now();
  comms[1].reset();
  EXPECT_LT(MsSince(t0), 200);
  EXPECT_EQ(r->Wait(Deadline::Past()).code(), StatusCode::kAborted);
  EXPECT_EQ(s->Wait(Deadline::Past()).code(), StatusCode::kAborted);
  EXPECT_EQ(b->Wait(Deadline::Past()).code(), StatusCode::kAborted);
  const auto t1 = Clock::now();
  comms[0].reset();  // its peer is gone
  EXPECT_LT(MsSince(t1), 200);
}

// ---- collectives ----

class GlooCollectives : public ::testing::TestWithParam<int> {};

TEST_P(GlooCollectives, AllOpsAllDtypes) {
  const int n = GetParam();
  auto comms = MakeComms(n, NewStore());
  for (auto& c : comms) ASSERT_TRUE(c);
  const std::vector<DType> dtypes = {DType::kF32, DType::kI32, DType::kI64,
                                     DType::kU8,  DType::kF16, DType::kBF16};
  const std::vector<ReduceOp> ops = {ReduceOp::kSum, ReduceOp::kProd, ReduceOp::kMin,
                                     ReduceOp::kMax};
  const int64_t kNumel = 37;
  RunRanks(n, [&](int r) {
    Communicator& c = *comms[r];
    for (DType dt : dtypes) {
      SCOPED_TRACE(std::string(DTypeName(dt)) + " rank " + std::to_string(r));
      for (ReduceOp op : ops) {
        auto t = MakeTensor({kNumel}, dt);
        for (int64_t i = 0; i < kNumel; ++i) Set(t, i, Val(r, i));
        ASSERT_TRUE(WaitFor(c.AllReduce(t, op)).ok());
        for (int64_t i = 0; i < kNumel; ++i) {
          double want = Reduce(op, n, i);
          if (dt == DType::kU8) want = static_cast<uint8_t>(static_cast<int64_t>(want));
          ASSERT_EQ(Get(t, i), want) << "op " << static_cast<int>(op) << " i " << i;
        }
      }
      // broadcast from every root
      for (int root = 0; root < n; ++root) {
        auto t = MakeTensor({kNumel}, dt);
        for (int64_t i = 0; i < kNumel; ++i) Set(t, i, r == root ? Val(root, i) : 0);
        ASSERT_TRUE(WaitFor(c.Broadcast(t, root)).ok());
        for (int64_t i = 0; i < kNumel; ++i) ASSERT_EQ(Get(t, i), Val(root, i));
      }
      // all_gather
      auto in = MakeTensor({kNumel}, dt);
      for (int64_t i = 0; i < kNumel; ++i) Set(in, i, Val(r, i));
      auto out = MakeTensor({n * kNumel}, dt);
      ASSERT_TRUE(WaitFor(c.AllGather(in, out)).ok());
      for (int q = 0; q < n; ++q) {
        for (int64_t i = 0; i < kNumel; ++i) ASSERT_EQ(Get(out, q * kNumel + i), Val(q, i));
      }
      // reduce_scatter (sum): block r of the sum of everyone's inputs
      auto rin = MakeTensor({n * kNumel}, dt);
      for (int64_t i = 0; i < n * kNumel; ++i) Set(rin, i, Val(r, i));
      auto rout = MakeTensor({kNumel}, dt);
      ASSERT_TRUE(WaitFor(c.ReduceScatter(rin, rout, ReduceOp::kSum)).ok());
      for (int64_t i = 0; i < kNumel; ++i) {
        ASSERT_EQ(Get(rout, i), Reduce(ReduceOp::kSum, n, r * kNumel + i));
      }
      ASSERT_TRUE(WaitFor(c.Barrier()).ok());
    }
    // a large f32 all_reduce (several Gloo segments) and an empty one
    auto big = MakeTensor({3 << 18}, DType::kF32);
    for (int64_t i = 0; i < big.numel(); ++i) big.data_as<float>()[i] = static_cast<float>(r + (i % 13));
    ASSERT_TRUE(WaitFor(c.AllReduce(big, ReduceOp::kSum)).ok());
    const float base = static_cast<float>(n * (n - 1) / 2);
    for (int64_t i = 0; i < big.numel(); i += 997) {
      ASSERT_EQ(big.data_as<float>()[i], base + n * static_cast<float>(i % 13));
    }
    auto empty = MakeTensor({0}, DType::kF32);
    ASSERT_TRUE(WaitFor(c.AllReduce(empty, ReduceOp::kSum)).ok());
  });
  for (auto& c : comms) EXPECT_FALSE(c->broken());
}

INSTANTIATE_TEST_SUITE_P(Sizes, GlooCollectives, ::testing::Values(2, 3, 4));

TEST(GlooCollectivesFaults, AbortReturnsRunningCollectivePromptly) {
  auto comms = MakeComms(3, NewStore());
  auto t = MakeTensor({1024}, DType::kF32);
  auto w = comms[0]->AllReduce(t, ReduceOp::kSum);  // ranks 1 and 2 never join
  EXPECT_EQ(w->Wait(Deadline::AfterMs(50)).code(), StatusCode::kDeadlineExceeded);
  const auto t0 = Clock::now();
  comms[0]->Abort(AbortedError("stop it"));
  Status s = w->Wait(Deadline::AfterMs(2000));
  EXPECT_LT(MsSince(t0), 100);
  EXPECT_EQ(s.code(), StatusCode::kAborted) << s;
  EXPECT_NE(s.message().find("stop it"), std::string_view::npos) << s;
  // The others notice on their next collective (connection to rank 0 is gone).
  std::vector<std::shared_ptr<Work>> others;
  auto t1 = MakeTensor({1024}, DType::kF32), t2 = MakeTensor({1024}, DType::kF32);
  others.push_back(comms[1]->AllReduce(t1, ReduceOp::kSum));
  others.push_back(comms[2]->AllReduce(t2, ReduceOp::kSum));
  for (auto& o : others) EXPECT_EQ(WaitFor(o, 3000).code(), StatusCode::kAborted);
}

TEST(GlooCollectivesFaults, CollectiveOpDeadline) {
  auto comms = MakeComms(2, NewStore());
  OpOptions o;
  o.timeout_ms = 200;
  auto queued = MakeTensor({4}, DType::kF32);
  const auto t0 = Clock::now();
  auto b = comms[0]->Barrier(o);
  auto next = comms[0]->AllReduce(queued, ReduceOp::kMax);
  Status s = WaitFor(b, 3000);
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s;
  EXPECT_LT(MsSince(t0), 1000);
  EXPECT_EQ(WaitFor(next).code(), StatusCode::kAborted);
  EXPECT_TRUE(comms[0]->broken());
}

}  // namespace
}  // namespace archi
