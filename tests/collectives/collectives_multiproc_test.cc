// Fault tests with real processes: the peer (rank 1) is a fork()ed child that is killed with
// SIGKILL or frozen with SIGSTOP while the parent (rank 0) has operations pending.
#include <gtest/gtest.h>

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "collectives/communicator.h"
#include "tests/collectives/file_store.h"

namespace archi {
namespace {

using testing::FileStore;

class MultiprocTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/archi_coll_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    store_ = std::make_shared<FileStore>(dir_);
  }
  void TearDown() override {
    if (child_ > 0) {
      ::kill(child_, SIGKILL);
      ::waitpid(child_, nullptr, 0);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Forks rank 1. The child connects, runs `body`, publishes "child_ready" and then waits to be
  // killed (it never returns into GoogleTest).
  template <typename Body>
  void ForkChild(Body body) {
    child_ = ::fork();
    ASSERT_GE(child_, 0);
    if (child_ == 0) {
      CommOptions o;
      o.connect_timeout_ms = 10'000;
      auto c = CreateCommunicator(BackendKind::kGloo, 1, 2, store_, o);
      if (!c.ok()) ::_exit(3);
      body(**c);
      (void)store_->Set("child_ready", "1", Deadline::AfterMs(1000));
      while (true) ::pause();
    }
  }

  std::unique_ptr<Communicator> ConnectParent(CommOptions o) {
    o.connect_timeout_ms = 10'000;
    auto c = CreateCommunicator(BackendKind::kGloo, 0, 2, store_, o);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(c).value() : nullptr;
  }

  void WaitChildReady() {
    ASSERT_TRUE(store_->Wait({"child_ready"}, Deadline::AfterMs(10'000)).ok());
  }

  std::string dir_;
  std::shared_ptr<Store> store_;
  pid_t child_ = -1;
};

struct BrokenFlag {
  std::atomic<int> calls{0};
  CommOptions Options() {
    CommOptions o;
    o.on_broken = [this](const Status&) { ++calls; };
    return o;
  }
  bool WaitCalled(int64_t ms) {
    const Deadline d = Deadline::AfterMs(ms);
    while (calls.load() == 0 && !d.Expired()) std::this_thread::sleep_for(Millis(1));
    return calls.load() > 0;
  }
};

TEST_F(MultiprocTest, PeerKilledFailsPendingRecvPromptly) {
  ForkChild([](Communicator&) {});
  BrokenFlag flag;
  auto comm = ConnectParent(flag.Options());
  ASSERT_TRUE(comm);
  std::vector<float> buf(1024);
  auto t = Tensor::View(buf.data(), {1024}, DType::kF32);
  ASSERT_TRUE(t.ok());
  auto r = comm->Recv(*t, 1, 0);
  WaitChildReady();
  EXPECT_EQ(r->Wait(Deadline::AfterMs(20)).code(), StatusCode::kDeadlineExceeded);
  ASSERT_EQ(::kill(child_, SIGKILL), 0);
  const auto t0 = Clock::now();
  Status s = r->Wait(Deadline::AfterMs(2000));
  const double ms = MsSince(t0);
  EXPECT_EQ(s.code(), StatusCode::kAborted) << s;
  EXPECT_NE(s.message().find("peer rank 1"), std::string_view::npos) << s;
  EXPECT_LT(ms, 100);
  EXPECT_TRUE(comm->broken());
  EXPECT_TRUE(flag.WaitCalled(1000));
  EXPECT_EQ(flag.calls.load(), 1);
  const auto t1 = Clock::now();
  comm.reset();
  EXPECT_LT(MsSince(t1), 200);
}

TEST_F(MultiprocTest, FrozenPeerLargeSendHitsOpDeadline) {
  constexpr int64_t kN = 16 << 20;  // 64 MiB of f32
  ForkChild([](Communicator& c) {
    static std::vector<float> in(kN);
    auto t = Tensor::View(in.data(), {kN}, DType::kF32);
    (void)c.Recv(*t, 0, 0);  // posted; the parent freezes us before much arrives
  });
  BrokenFlag flag;
  auto comm = ConnectParent(flag.Options());
  ASSERT_TRUE(comm);
  WaitChildReady();
  ASSERT_EQ(::kill(child_, SIGSTOP), 0);
  std::vector<float> out(kN, 1.0f);
  auto t = Tensor::View(out.data(), {kN}, DType::kF32);
  OpOptions o;
  o.timeout_ms = 1000;
  const auto t0 = Clock::now();
  auto s = comm->Send(*t, 1, 0, o);
  Status st = s->Wait(Deadline::AfterMs(5000));
  const double ms = MsSince(t0);
  EXPECT_EQ(st.code(), StatusCode::kDeadlineExceeded) << st;
  EXPECT_GE(ms, 950);
  EXPECT_LT(ms, 1500);
  EXPECT_TRUE(comm->broken());
  EXPECT_TRUE(flag.WaitCalled(1000));
  const auto t1 = Clock::now();
  comm.reset();
  EXPECT_LT(MsSince(t1), 200);
}

TEST_F(MultiprocTest, FrozenPeerRecvHitsOpDeadline) {
  ForkChild([](Communicator&) {});
  BrokenFlag flag;
  auto comm = ConnectParent(flag.Options());
  ASSERT_TRUE(comm);
  WaitChildReady();
  ASSERT_EQ(::kill(child_, SIGSTOP), 0);
  std::vector<float> buf(256);
  auto t = Tensor::View(buf.data(), {256}, DType::kF32);
  OpOptions o;
  o.timeout_ms = 1000;
  const auto t0 = Clock::now();
  auto r = comm->Recv(*t, 1, 4, o);
  auto pending = comm->Recv(*t, 1, 5);
  Status st = r->Wait(Deadline::AfterMs(5000));
  const double ms = MsSince(t0);
  EXPECT_EQ(st.code(), StatusCode::kDeadlineExceeded) << st;
  EXPECT_GE(ms, 950);
  EXPECT_LT(ms, 1500);
  EXPECT_EQ(pending->Wait(Deadline::AfterMs(100)).code(), StatusCode::kAborted);
  EXPECT_TRUE(flag.WaitCalled(1000));
  const auto t1 = Clock::now();
  comm.reset();
  EXPECT_LT(MsSince(t1), 200);
}

TEST_F(MultiprocTest, PeerKilledDuringCollective) {
  ForkChild([](Communicator&) {});
  BrokenFlag flag;
  auto comm = ConnectParent(flag.Options());
  ASSERT_TRUE(comm);
  WaitChildReady();
  std::vector<float> buf(4096, 1.0f);
  auto t = Tensor::View(buf.data(), {4096}, DType::kF32);
  auto w = comm->AllReduce(*t, ReduceOp::kSum);
  EXPECT_EQ(w->Wait(Deadline::AfterMs(20)).code(), StatusCode::kDeadlineExceeded);
  ASSERT_EQ(::kill(child_, SIGKILL), 0);
  const auto t0 = Clock::now();
  Status s = w->Wait(Deadline::AfterMs(3000));
  EXPECT_EQ(s.code(), StatusCode::kAborted) << s;
  EXPECT_LT(MsSince(t0), 100);
  EXPECT_TRUE(flag.WaitCalled(1000));
}

}  // namespace
}  // namespace archi
