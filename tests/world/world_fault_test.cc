// Fault tests with real processes on loopback: kill -9, SIGSTOP, recreate a world under the same
// name, several worlds per process initialised concurrently, leave and rejoin.
// This process is rank 0 of every world and hosts the gRPC store; peers are `world_peer`
// processes (tests/world/world_peer.cc) that echo every message back.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "world/store_server.h"
#include "world/world_manager.h"

extern char** environ;

namespace archi {
namespace {

// A child process running world_peer, with its stdout readable line by line.
class Peer {
 public:
  static std::unique_ptr<Peer> Start(const std::string& store, const std::vector<std::string>& worlds,
                                     int64_t hb_timeout_ms = 10'000) {
    std::vector<std::string> args = {ARCHI_WORLD_PEER_BIN, "--store", store, "--heartbeat-timeout-ms",
                                     std::to_string(hb_timeout_ms)};
    for (const auto& w : worlds) {
      args.push_back("--world");
      args.push_back(w);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return nullptr;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
    auto p = std::make_unique<Peer>();
    int rc = posix_spawn(&p->pid_, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(fds[1]);
    p->out_ = fds[0];
    if (rc != 0) return nullptr;
    return p;
  }
  ~Peer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::kill(pid_, SIGCONT);
      Reap();
    }
    if (out_ >= 0) ::close(out_);
  }
  pid_t pid() const { return pid_; }

  // Reads stdout until a line starting with `prefix` appears or the deadline passes.
  bool WaitLine(const std::string& prefix, Deadline d) {
    for (;;) {
      size_t pos;
      while ((pos = buf_.find('\n')) != std::string::npos) {
        std::string line = buf_.substr(0, pos);
        buf_.erase(0, pos + 1);
        if (line.rfind(prefix, 0) == 0) return true;
      }
      if (d.Expired()) return false;
      pollfd pfd{out_, POLLIN, 0};
      if (::poll(&pfd, 1, static_cast<int>(std::max<int64_t>(1, d.RemainingMs().count()))) <= 0) continue;
      char tmp[512];
      ssize_t n = ::read(out_, tmp, sizeof(tmp));
      if (n <= 0) return false;
      buf_.append(tmp, n);
    }
  }
  void Kill(int sig) { ::kill(pid_, sig); }
  int Reap() {
    int status = 0;
    if (pid_ > 0) ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string buf_;
};

class WorldFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = StoreServer::Start(StoreServerOptions{});
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    store_ = server_->store();
    mgr_ = std::make_unique<WorldManager>();
    mgr_->AddStateCallback([this](const WorldInfo& info) {
      std::lock_guard<std::mutex> lock(mu_);
      if (info.state == WorldState::kBroken) broken_at_[info.name] = Clock::now();
      cv_.notify_all();
    });
  }
  void TearDown() override {
    mgr_.reset();
    server_.reset();
  }

  WorldOptions Opts(int64_t hb_timeout_ms = 10'000) {
    WorldOptions o;
    o.init_timeout_ms = 10'000;
    o.heartbeat_timeout_ms = hb_timeout_ms;
    return o;
  }

  // Sends `elems` floats starting with `seq` and checks the echo bit for bit.
  Status Echo(const std::string& world, int64_t elems, float seq, Deadline d) {
    auto out = Tensor::Empty({elems}, DType::kF32).value();
    auto in = Tensor::Zeros({elems}, DType::kF32).value();
    for (int64_t i = 0; i < elems; ++i) out.data_as<float>()[i] = seq + static_cast<float>(i % 977) * 0.5f;
    auto sw = mgr_->Send(world, out, 1);
    auto rw = mgr_->Recv(world, in, 1);
    ARCHI_RETURN_IF_ERROR(sw->Wait(d));
    ARCHI_RETURN_IF_ERROR(rw->Wait(d));
    if (std::memcmp(out.data(), in.data(), out.nbytes()) != 0) return DataLossError("echo differs");
    return Status::Ok();
  }

  Status SendCommand(const std::string& world, int64_t elems, float cmd) {
    auto t = Tensor::Zeros({elems}, DType::kF32).value();
    t.data_as<float>()[0] = cmd;
    return mgr_->Send(world, t, 1)->Wait(Deadline::AfterMs(5000));
  }

  std::optional<Clock::time_point> BrokenAt(const std::string& w, Deadline d) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_until(lock, d.time_point(), [&] { return broken_at_.count(w) > 0; });
    if (!broken_at_.count(w)) return std::nullopt;
    return broken_at_[w];
  }

  Status InitAsync(const std::vector<std::string>& names, const WorldOptions& o,
                   std::vector<Status>* results) {
    results->assign(names.size(), Status());
    std::vector<std::jthread> ts;
    for (size_t i = 0; i < names.size(); ++i) {
      ts.emplace_back([&, i] { (*results)[i] = mgr_->InitializeWorld(names[i], 0, 2, store_, o); });
    }
    ts.clear();
    for (auto& r : *results) ARCHI_RETURN_IF_ERROR(r);
    return Status::Ok();
  }

  Status DataLossError(std::string m) { return Status(StatusCode::kDataLoss, std::move(m)); }

  std::unique_ptr<StoreServer> server_;
  std::shared_ptr<Store> store_;
  std::unique_ptr<WorldManager> mgr_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Clock::time_point> broken_at_;
};

// kill -9 a peer of world A while traffic flows in world B: A breaks (fast path, not heartbeats:
// the heartbeat timeout is 10 s here), its pending recv fails with kAborted naming the world and
// the peer, and B's data keeps arriving bit-exact.
TEST_F(WorldFaultTest, KillPeerOfOneWorldLeavesTheOtherServing) {
  auto pa = Peer::Start(server_->address(), {"A:1:2:1024"});
  auto pb = Peer::Start(server_->address(), {"B:1:2:65536"});
  ASSERT_TRUE(pa && pb);
  std::vector<Status> r;
  ASSERT_TRUE(InitAsync({"A", "B"}, Opts(), &r).ok()) << r[0] << " / " << r[1];
  ASSERT_TRUE(pa->WaitLine("READY", Deadline::AfterMs(10'000)));
  ASSERT_TRUE(Echo("A", 1024, 1, Deadline::AfterMs(5000)).ok());

  std::atomic<bool> stop{false};
  std::atomic<int64_t> b_ok{0}, b_after_kill{0};
  std::atomic<bool> killed{false};
  Status b_error;
  std::jthread traffic([&] {
    for (int i = 0; !stop; ++i) {
      Status st = Echo("B", 65536, static_cast<float>(i), Deadline::AfterMs(5000));
      if (!st.ok()) {
        b_error = st;
        return;
      }
      b_ok++;
      if (killed) b_after_kill++;
    }
  });

  auto in = Tensor::Zeros({1024}, DType::kF32).value();
  auto pending = mgr_->Recv("A", in, 1);  // the peer never sends unprompted: stays pending
  auto t_kill = Clock::now();
  pa->Kill(SIGKILL);
  killed = true;
  Status st = pending->Wait(Deadline::AfterMs(5000));
  auto t_fail = Clock::now();
  EXPECT_EQ(st.code(), StatusCode::kAborted) << st;
  EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr("'A'"));
  auto broken = BrokenAt("A", Deadline::AfterMs(5000));
  ASSERT_TRUE(broken.has_value());
  double detect_ms = std::chrono::duration<double, std::milli>(*broken - t_kill).count();
  std::printf("dead-peer detection: world BROKEN %.1f ms, pending recv failed %.1f ms after kill -9\n",
              detect_ms, std::chrono::duration<double, std::milli>(t_fail - t_kill).count());
  // Far below the 10 s heartbeat timeout: the process handle / connection caught it.
  EXPECT_LT(detect_ms, 3000);
  EXPECT_EQ(mgr_->GetWorld("A")->state, WorldState::kBroken);
  EXPECT_EQ(mgr_->Send("A", in, 1)->Wait(Deadline::AfterMs(1000)).code(), StatusCode::kAborted);

  // B keeps going: wait (bounded) for a few more bit-exact round trips after the kill.
  auto d = Deadline::AfterMs(10'000);
  while (b_after_kill < 5 && !d.Expired() && b_error.ok()) std::this_thread::yield();
  stop = true;
  traffic.join();
  EXPECT_TRUE(b_error.ok()) << b_error;
  EXPECT_GE(b_after_kill.load(), 5);
  EXPECT_EQ(mgr_->GetWorld("B")->state, WorldState::kReady);

  auto t0 = Clock::now();
  EXPECT_TRUE(mgr_->RemoveWorld("A").ok());
  std::printf("RemoveWorld of the broken world: %.1f ms\n", MsSince(t0));
  EXPECT_TRUE(SendCommand("B", 65536, -1).ok());
}

// SIGSTOP a peer: its heartbeats stop, the world turns BROKEN within the heartbeat timeout, the
// pending recv returns kAborted instead of hanging, and RemoveWorld returns promptly.
TEST_F(WorldFaultTest, StoppedPeerIsDetectedByHeartbeat) {
  auto p = Peer::Start(server_->address(), {"S:1:2:256"});
  ASSERT_TRUE(p);
  ASSERT_TRUE(mgr_->InitializeWorld("S", 0, 2, store_, Opts(/*hb_timeout_ms=*/600)).ok());
  ASSERT_TRUE(Echo("S", 256, 7, Deadline::AfterMs(5000)).ok());
  auto in = Tensor::Zeros({256}, DType::kF32).value();
  auto pending = mgr_->Recv("S", in, 1);
  auto t0 = Clock::now();
  p->Kill(SIGSTOP);
  Status st = pending->Wait(Deadline::AfterMs(10'000));
  double ms = MsSince(t0);
  EXPECT_EQ(st.code(), StatusCode::kAborted) << st;
  EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr("heartbeat"));
  std::printf("hung-peer detection with a 600 ms heartbeat timeout: %.1f ms\n", ms);
  EXPECT_LT(ms, 5000);
  auto t1 = Clock::now();
  EXPECT_TRUE(mgr_->RemoveWorld("S").ok());
  double remove_ms = MsSince(t1);
  std::printf("RemoveWorld with a stopped peer: %.1f ms\n", remove_ms);
  EXPECT_LT(remove_ms, 2000);
  p->Kill(SIGKILL);
  p->Kill(SIGCONT);
  p->Reap();
}

// After a failure the same name can be initialised again at once, with a new epoch, and a new
// peer process joins it.
TEST_F(WorldFaultTest, RecreateWorldWithTheSameNameAfterFailure) {
  auto p1 = Peer::Start(server_->address(), {"R:1:2:64"});
  ASSERT_TRUE(mgr_->InitializeWorld("R", 0, 2, store_, Opts()).ok());
  ASSERT_TRUE(Echo("R", 64, 1, Deadline::AfterMs(5000)).ok());
  uint64_t e1 = mgr_->GetWorld("R")->epoch;
  p1->Kill(SIGKILL);
  p1->Reap();
  ASSERT_TRUE(BrokenAt("R", Deadline::AfterMs(5000)).has_value());
  ASSERT_TRUE(mgr_->RemoveWorld("R").ok());
  EXPECT_EQ(mgr_->GetWorld("R").status().code(), StatusCode::kNotFound);

  auto p2 = Peer::Start(server_->address(), {"R:1:2:64"});
  ASSERT_TRUE(mgr_->InitializeWorld("R", 0, 2, store_, Opts()).ok());
  auto info = mgr_->GetWorld("R");
  EXPECT_GT(info->epoch, e1);
  EXPECT_EQ(info->state, WorldState::kReady);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(Echo("R", 64, static_cast<float>(i), Deadline::AfterMs(5000)).ok());
  EXPECT_TRUE(SendCommand("R", 64, -1).ok());
  EXPECT_EQ(p2->Reap(), 0);
}

// One peer process in three worlds, all initialised concurrently on both sides; traffic in all.
TEST_F(WorldFaultTest, ThreeWorldsPerProcessWithConcurrentInit) {
  auto p = Peer::Start(server_->address(), {"X:1:2:16", "Y:1:2:4096", "Z:1:2:300000"});
  ASSERT_TRUE(p);
  std::vector<Status> r;
  ASSERT_TRUE(InitAsync({"X", "Y", "Z"}, Opts(), &r).ok());
  ASSERT_TRUE(p->WaitLine("READY", Deadline::AfterMs(10'000)));
  EXPECT_EQ(mgr_->ListWorlds().size(), 3u);
  std::vector<std::jthread> ts;
  std::vector<Status> res(3);
  const std::vector<std::pair<std::string, int64_t>> ws = {{"X", 16}, {"Y", 4096}, {"Z", 300000}};
  for (int k = 0; k < 3; ++k) {
    ts.emplace_back([&, k] {
      for (int i = 0; i < 30 && res[k].ok(); ++i) {
        res[k] = Echo(ws[k].first, ws[k].second, static_cast<float>(i), Deadline::AfterMs(5000));
      }
    });
  }
  ts.clear();
  for (int k = 0; k < 3; ++k) EXPECT_TRUE(res[k].ok()) << ws[k].first << ": " << res[k];
  for (auto& [name, elems] : ws) EXPECT_TRUE(SendCommand(name, elems, -1).ok());
  EXPECT_EQ(p->Reap(), 0);
}

// A process leaves a world and joins it again: rank 0 sees the world closed, removes it and
// re-creates it under the same name; the same peer process joins the new epoch.
TEST_F(WorldFaultTest, ProcessLeavesAndRejoins) {
  auto p = Peer::Start(server_->address(), {"L:1:2:32"});
  ASSERT_TRUE(mgr_->InitializeWorld("L", 0, 2, store_, Opts()).ok());
  ASSERT_TRUE(Echo("L", 32, 1, Deadline::AfterMs(5000)).ok());
  uint64_t e1 = mgr_->GetWorld("L")->epoch;
  ASSERT_TRUE(SendCommand("L", 32, -2).ok());  // peer leaves and rejoins
  ASSERT_TRUE(BrokenAt("L", Deadline::AfterMs(5000)).has_value());
  ASSERT_TRUE(mgr_->RemoveWorld("L").ok());
  ASSERT_TRUE(mgr_->InitializeWorld("L", 0, 2, store_, Opts()).ok());
  ASSERT_TRUE(p->WaitLine("REJOINED L", Deadline::AfterMs(10'000)));
  EXPECT_GT(mgr_->GetWorld("L")->epoch, e1);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(Echo("L", 32, static_cast<float>(i), Deadline::AfterMs(5000)).ok());
  EXPECT_TRUE(SendCommand("L", 32, -1).ok());
  EXPECT_EQ(p->Reap(), 0);
}

}  // namespace
}  // namespace archi
