// WorldManager with ranks as threads (one manager per rank) over an in-memory store: lifecycle,
// ops by world name, and every kind of bad input.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "runtime/core/memory_store.h"
#include "world/store_client.h"
#include "world/world_manager.h"

namespace archi {
namespace {

using ::testing::HasSubstr;

WorldOptions Fast() {
  WorldOptions o;
  o.init_timeout_ms = 3000;
  o.op_timeout_ms = 3000;
  return o;
}

class WorldTest : public ::testing::Test {
 protected:
  std::shared_ptr<InMemoryStore> store_ = std::make_shared<InMemoryStore>();
  WorldManager a_, b_;

  // Initialises `name` on both managers concurrently (a: rank 0, b: rank 1).
  void InitPair(const std::string& name, WorldOptions o = Fast()) {
    Status sb;
    std::jthread t([&] { sb = b_.InitializeWorld(name, 1, 2, store_, o); });
    Status sa = a_.InitializeWorld(name, 0, 2, store_, o);
    t.join();
    ASSERT_TRUE(sa.ok()) << sa;
    ASSERT_TRUE(sb.ok()) << sb;
  }
};

TEST_F(WorldTest, InitSendRecvAndRemove) {
  ASSERT_NO_FATAL_FAILURE(InitPair("w"));
  auto info = a_.GetWorld("w");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->state, WorldState::kReady);
  EXPECT_EQ(info->rank, 0);
  EXPECT_EQ(info->size, 2);
  EXPECT_EQ(b_.GetWorld("w")->epoch, info->epoch);

  std::vector<int32_t> src(1000), dst(1000, 0);
  for (int i = 0; i < 1000; ++i) src[i] = i * 7 - 3;
  auto ts = Tensor::View(src.data(), {1000}, DType::kI32).value();
  auto td = Tensor::View(dst.data(), {1000}, DType::kI32).value();
  auto s = a_.Send("w", ts, 1, 5);
  auto r = b_.Recv("w", td, 0, 5);
  ASSERT_TRUE(s->Wait(Deadline::AfterMs(3000)).ok());
  ASSERT_TRUE(r->Wait(Deadline::AfterMs(3000)).ok());
  EXPECT_EQ(src, dst);

  // A collective through the manager.
  float va = 1.5f, vb = 2.0f;
  auto ta = Tensor::View(&va, {1}, DType::kF32).value();
  auto tb = Tensor::View(&vb, {1}, DType::kF32).value();
  auto wa = a_.AllReduce("w", ta);
  auto wb = b_.AllReduce("w", tb);
  ASSERT_TRUE(wa->Wait(Deadline::AfterMs(3000)).ok());
  ASSERT_TRUE(wb->Wait(Deadline::AfterMs(3000)).ok());
  EXPECT_EQ(va, 3.5f);
  EXPECT_EQ(vb, 3.5f);

  EXPECT_TRUE(a_.RemoveWorld("w").ok());
  EXPECT_TRUE(b_.RemoveWorld("w").ok());
  EXPECT_TRUE(a_.ListWorlds().empty());
  // Every key of the epoch is gone; only the name's epoch counter and pointer remain.
  auto keys = store_->List("archi/world/w/", Deadline::AfterMs(100));
  ASSERT_TRUE(keys.ok());
  for (auto& [k, v] : *keys) EXPECT_THAT(k, ::testing::AnyOf("archi/world/w/epoch", "archi/world/w/current"));
}

TEST_F(WorldTest, StateCallbackSeesReadyBrokenRemoved) {
  std::mutex mu;
  std::vector<WorldState> seen;
  std::condition_variable cv;
  a_.AddStateCallback([&](const WorldInfo& i) {
    std::lock_guard<std::mutex> l(mu);
    seen.push_back(i.state);
    cv.notify_all();
  });
  ASSERT_NO_FATAL_FAILURE(InitPair("cb"));
  ASSERT_TRUE(b_.RemoveWorld("cb").ok());  // the peer leaves: a's world breaks
  auto w = a_.Barrier("cb");
  EXPECT_EQ(w->Wait(Deadline::AfterMs(3000)).code(), StatusCode::kAborted);
  ASSERT_TRUE(a_.RemoveWorld("cb").ok());
  std::unique_lock<std::mutex> l(mu);
  cv.wait_for(l, std::chrono::seconds(3), [&] { return seen.size() >= 3; });
  EXPECT_THAT(seen, ::testing::ElementsAre(WorldState::kReady, WorldState::kBroken, WorldState::kRemoved));
}

TEST_F(WorldTest, NameIsReusableAndEpochsAdvance) {
  ASSERT_NO_FATAL_FAILURE(InitPair("again"));
  uint64_t e1 = a_.GetWorld("again")->epoch;
  ASSERT_TRUE(a_.RemoveWorld("again").ok());
  ASSERT_TRUE(b_.RemoveWorld("again").ok());
  ASSERT_NO_FATAL_FAILURE(InitPair("again"));
  EXPECT_GT(a_.GetWorld("again")->epoch, e1);
  EXPECT_EQ(a_.GetWorld("again")->epoch, b_.GetWorld("again")->epoch);
}

TEST_F(WorldTest, ManyWorldsConcurrently) {
  std::vector<std::jthread> ts;
  std::vector<Status> res(8);
  for (int i = 0; i < 4; ++i) {
    ts.emplace_back([&, i] { res[2 * i] = a_.InitializeWorld("m" + std::to_string(i), 0, 2, store_, Fast()); });
    ts.emplace_back([&, i] { res[2 * i + 1] = b_.InitializeWorld("m" + std::to_string(i), 1, 2, store_, Fast()); });
  }
  ts.clear();
  for (auto& r : res) EXPECT_TRUE(r.ok()) << r;
  EXPECT_EQ(a_.ListWorlds().size(), 4u);
}

TEST_F(WorldTest, BadInputGetsClearErrors) {
  auto o = Fast();
  EXPECT_EQ(a_.InitializeWorld("", 0, 2, store_, o).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a_.InitializeWorld("a/b", 0, 2, store_, o).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a_.InitializeWorld(std::string(300, 'x'), 0, 2, store_, o).code(), StatusCode::kInvalidArgument);
  Status st = a_.InitializeWorld("r", 2, 2, store_, o);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("rank 2"));
  EXPECT_EQ(a_.InitializeWorld("r", -1, 2, store_, o).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a_.InitializeWorld("r", 0, 0, store_, o).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a_.InitializeWorld("r", 0, 2, nullptr, o).code(), StatusCode::kInvalidArgument);

  // Unknown and removed worlds.
  float x = 0;
  auto t = Tensor::View(&x, {1}, DType::kF32).value();
  Status unknown = a_.Send("nope", t, 1)->Wait(Deadline::AfterMs(100));
  EXPECT_EQ(unknown.code(), StatusCode::kNotFound);
  EXPECT_THAT(std::string(unknown.message()), HasSubstr("nope"));
  EXPECT_EQ(a_.RemoveWorld("nope").code(), StatusCode::kNotFound);
  EXPECT_EQ(a_.GetWorld("nope").status().code(), StatusCode::kNotFound);

  ASSERT_NO_FATAL_FAILURE(InitPair("dup"));
  EXPECT_EQ(a_.InitializeWorld("dup", 0, 2, store_, o).code(), StatusCode::kAlreadyExists);
  ASSERT_TRUE(a_.RemoveWorld("dup").ok());
  EXPECT_EQ(a_.Send("dup", t, 1)->Wait(Deadline::AfterMs(100)).code(), StatusCode::kNotFound);
}

TEST_F(WorldTest, SizeDisagreementFailsOnBothSides) {
  Status sb;
  std::jthread t([&] { sb = b_.InitializeWorld("sz", 1, 3, store_, Fast()); });
  Status sa = a_.InitializeWorld("sz", 0, 2, store_, Fast());
  t.join();
  EXPECT_EQ(sa.code(), StatusCode::kInvalidArgument) << sa;
  EXPECT_EQ(sb.code(), StatusCode::kInvalidArgument) << sb;
  EXPECT_THAT(std::string(sb.message()), HasSubstr("size"));
  EXPECT_TRUE(a_.ListWorlds().empty());
}

TEST_F(WorldTest, MissingPeerTimesOutWithinTheInitDeadline) {
  auto o = Fast();
  o.init_timeout_ms = 300;
  auto t0 = Clock::now();
  Status st = a_.InitializeWorld("lonely", 0, 2, store_, o);
  EXPECT_EQ(st.code(), StatusCode::kDeadlineExceeded) << st;
  EXPECT_LT(MsSince(t0), 3000);
  EXPECT_TRUE(a_.ListWorlds().empty());  // the name is free again
}

TEST_F(WorldTest, DtypeAndSizeMismatchAreReported) {
  ASSERT_NO_FATAL_FAILURE(InitPair("mm"));
  std::vector<float> f(10, 1.0f);
  std::vector<int32_t> i(10, 0);
  auto tf = Tensor::View(f.data(), {10}, DType::kF32).value();
  auto ti = Tensor::View(i.data(), {10}, DType::kI32).value();
  auto s = a_.Send("mm", tf, 1);
  auto r = b_.Recv("mm", ti, 0);
  Status rs = r->Wait(Deadline::AfterMs(3000));
  EXPECT_EQ(rs.code(), StatusCode::kInvalidArgument) << rs;
  s->Wait(Deadline::AfterMs(3000)).IgnoreError();
  std::vector<float> g(5, 0);
  auto tg = Tensor::View(g.data(), {5}, DType::kF32).value();
  auto s2 = a_.Send("mm", tf, 1);
  EXPECT_EQ(b_.Recv("mm", tg, 0)->Wait(Deadline::AfterMs(3000)).code(), StatusCode::kInvalidArgument);
  s2->Wait(Deadline::AfterMs(3000)).IgnoreError();
  // The world still works after the mismatches.
  std::vector<float> h(10, 0);
  auto th = Tensor::View(h.data(), {10}, DType::kF32).value();
  auto s3 = a_.Send("mm", tf, 1);
  ASSERT_TRUE(b_.Recv("mm", th, 0)->Wait(Deadline::AfterMs(3000)).ok());
  EXPECT_EQ(h, f);
  EXPECT_TRUE(s3->Wait(Deadline::AfterMs(3000)).ok());
}

TEST_F(WorldTest, UnreachableStoreIsAClearError) {
  auto t0 = Clock::now();
  auto c = StoreClient::Connect("127.0.0.1:1", Deadline::AfterMs(500));
  EXPECT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kUnavailable) << c.status();
  EXPECT_LT(MsSince(t0), 3000);
}

}  // namespace
}  // namespace archi
