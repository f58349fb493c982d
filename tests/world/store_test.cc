// End-to-end tests of the gRPC rendezvous store: StoreServer (embedded) + StoreClient, the raw gRPC
// service for what the client does not expose (cancellation, timeout_ms), and the `archi-store`
// binary as a real child process (kill -9, SIGTERM, port in use).
#include <fcntl.h>
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "proto/store.grpc.pb.h"
#include "runtime/core/deadline.h"
#include "world/store_client.h"
#include "world/store_server.h"

#ifndef ARCHI_STORE_BIN
#error "ARCHI_STORE_BIN must name the archi-store binary"
#endif

namespace archi {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

Deadline Soon() { return Deadline::AfterMs(5000); }

// Polls `cond` until it holds or `ms` pass (no sleeping as synchronisation: a short back-off
// between checks of an observable condition).
bool PollUntil(const std::function<bool()>& cond, int64_t ms = 5000) {
  const Deadline d = Deadline::AfterMs(ms);
  while (!cond()) {
    if (d.Expired()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

int ThreadCount() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  }
  return -1;
}

// A loopback port with nothing listening (bound, read, closed).
int DeadPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = StoreServer::Start({});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    auto client = StoreClient::Connect(server_->address(), Soon());
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
  }

  std::unique_ptr<StoreServer> server_;
  std::shared_ptr<StoreClient> client_;
};

TEST_F(StoreTest, AddressHasBoundPort) {
  EXPECT_GT(server_->port(), 0);
  EXPECT_EQ(server_->address(), "127.0.0.1:" + std::to_string(server_->port()));
  EXPECT_EQ(client_->address(), server_->address());
}

TEST_F(StoreTest, EveryRpc) {
  auto& c = *client_;
  // Set / Get (binary-safe).
  ASSERT_TRUE(c.Set("a", "1", Soon()).ok());
  EXPECT_EQ(*c.Get("a", Soon()), "1");
  const std::string bin("k\0\xff", 3), val("\0v\0", 3);
  ASSERT_TRUE(c.Set(bin, val, Soon()).ok());
  EXPECT_EQ(*c.Get(bin, Soon()), val);
  // Add.
  EXPECT_EQ(*c.Add("n", 5, Soon()), 5);
  EXPECT_EQ(*c.Add("n", -2, Soon()), 3);
  // CompareSet.
  EXPECT_EQ(*c.CompareSet("cas", "", "x", Soon()), "x");
  EXPECT_EQ(*c.CompareSet("cas", "wrong", "y", Soon()), "x");
  EXPECT_EQ(*c.CompareSet("cas", "x", "y", Soon()), "y");
  // Delete.
  EXPECT_TRUE(*c.Delete("cas", Soon()));
  EXPECT_FALSE(*c.Delete("cas", Soon()));
  // Wait on present keys.
  EXPECT_TRUE(c.Wait({"a", "n"}, Soon()).ok());
  EXPECT_TRUE(c.Wait({}, Soon()).ok());
  // List (sorted) / DeletePrefix.
  for (const char* k : {"p/2", "p/1", "q/1"}) ASSERT_TRUE(c.Set(k, k, Soon()).ok());
  auto kv = c.List("p/", Soon());
  ASSERT_TRUE(kv.ok()) << kv.status();
  ASSERT_EQ(kv->size(), 2u);
  EXPECT_EQ((*kv)[0], (std::pair<std::string, std::string>("p/1", "p/1")));
  EXPECT_EQ((*kv)[1].first, "p/2");
  EXPECT_EQ(*c.DeletePrefix("p/", Soon()), 2);
  EXPECT_EQ(c.List("p/", Soon())->size(), 0u);
  // The server's in-process store is the same data.
  EXPECT_EQ(*server_->store()->Get("q/1", Soon()), "q/1");
  ASSERT_TRUE(server_->store()->Set("local", "v", Soon()).ok());
  EXPECT_EQ(*c.Get("local", Soon()), "v");
}

TEST_F(StoreTest, ErrorsMapOneToOne) {
  auto& c = *client_;
  const std::string prefix = "store " + server_->address() + ": ";

  auto absent = c.Get("absent", Soon());
  EXPECT_EQ(absent.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(std::string(absent.status().message()), StartsWith(prefix));
  EXPECT_THAT(std::string(absent.status().message()), HasSubstr("absent"));

  EXPECT_EQ(c.Set("", "v", Soon()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.Get("", Soon()).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.Add("", 1, Soon()).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.CompareSet("", "", "x", Soon()).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.Delete("", Soon()).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.Wait({"ok", ""}, Soon()).code(), StatusCode::kInvalidArgument);

  ASSERT_TRUE(c.Set("text", "hello", Soon()).ok());
  auto add = c.Add("text", 1, Soon());
  EXPECT_EQ(add.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(add.status().message()), StartsWith(prefix));
  ASSERT_TRUE(c.Set("max", std::to_string(INT64_MAX), Soon()).ok());
  EXPECT_EQ(c.Add("max", 1, Soon()).status().code(), StatusCode::kOutOfRange);

  // Limits.
  EXPECT_EQ(c.Set(std::string(5000, 'k'), "v", Soon()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.List(std::string(5000, 'k'), Soon()).status().code(), StatusCode::kInvalidArgument);
  std::vector<std::string> too_many(5000, "k");
  EXPECT_EQ(c.Wait(too_many, Soon()).code(), StatusCode::kInvalidArgument);
  // A large (1 MiB) value is fine.
  const std::string big(1 << 20, 'x');
  ASSERT_TRUE(c.Set("big", big, Soon()).ok());
  EXPECT_EQ(c.Get("big", Soon())->size(), big.size());
}

TEST_F(StoreTest, ExpiredAndInfiniteDeadlines) {
  ASSERT_TRUE(client_->Set("a", "1", Soon()).ok());
  EXPECT_EQ(client_->Get("a", Deadline::Past()).status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(*client_->Get("a", Deadline::Infinite()), "1");  // capped, not unbounded
  EXPECT_TRUE(client_->Wait({"a"}, Deadline::Infinite()).ok());
}

TEST_F(StoreTest, WaitSatisfiedByAnotherThread) {
  auto store = server_->store();
  std::thread writer([&] {
    // Write once the Wait is registered on the server.
    ASSERT_TRUE(PollUntil([&] { return store->pending_watches() == 1; }));
    auto other = StoreClient::Connect(server_->address(), Soon());
    ASSERT_TRUE(other.ok()) << other.status();
    ASSERT_TRUE((*other)->Set("x", "1", Soon()).ok());
    ASSERT_TRUE((*other)->Add("y", 1, Soon()).ok());
  });
  auto t0 = Clock::now();
  Status st = client_->Wait({"x", "y"}, Deadline::AfterMs(5000));
  writer.join();
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_LT(MsSince(t0), 5000);
  EXPECT_TRUE(PollUntil([&] { return store->pending_watches() == 0; }));
}

TEST_F(StoreTest, WaitDeadline) {
  auto t0 = Clock::now();
  Status st = client_->Wait({"never"}, Deadline::AfterMs(200));
  const double ms = MsSince(t0);
  EXPECT_EQ(st.code(), StatusCode::kDeadlineExceeded) << st;
  EXPECT_THAT(std::string(st.message()), StartsWith("store " + server_->address() + ": "));
  EXPECT_GE(ms, 190);
  EXPECT_LT(ms, 2000);
  // The server's watch is gone too (timed out or cancelled with the RPC).
  EXPECT_TRUE(PollUntil([&] { return server_->store()->pending_watches() == 0; }));
}

// Raw stub: what StoreClient does not expose.
class RawStoreTest : public StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    stub_ = store::v1::Store::NewStub(channel_);
  }
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<store::v1::Store::Stub> stub_;
};

TEST_F(RawStoreTest, RequestTimeoutEndsWaitAndNamesMissingKeys) {
  ASSERT_TRUE(client_->Set("here", "1", Soon()).ok());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  store::v1::WaitRequest req;
  req.add_keys("here");
  req.add_keys("missing");
  req.set_timeout_ms(100);
  store::v1::WaitResponse resp;
  auto t0 = Clock::now();
  grpc::Status st = stub_->Wait(&ctx, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_THAT(st.error_message(), HasSubstr("'missing'"));
  EXPECT_THAT(st.error_message(), ::testing::Not(HasSubstr("'here'")));
  EXPECT_LT(MsSince(t0), 5000);
}

TEST_F(RawStoreTest, CancelledRpcCancelsWatch) {
  auto store = server_->store();
  grpc::ClientContext ctx;  // no deadline, no timeout_ms: only cancellation ends it
  store::v1::WaitRequest req;
  req.add_keys("never");
  store::v1::WaitResponse resp;
  std::promise<grpc::Status> done;
  std::thread caller([&] { done.set_value(stub_->Wait(&ctx, req, &resp)); });
  ASSERT_TRUE(PollUntil([&] { return store->pending_watches() == 1; }));
  ctx.TryCancel();
  auto f = done.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(f.get().error_code(), grpc::StatusCode::CANCELLED);
  caller.join();
  // The server noticed and dropped the watch (OnCancel -> CancelWatch).
  EXPECT_TRUE(PollUntil([&] { return store->pending_watches() == 0; }));
  // And is still healthy.
  ASSERT_TRUE(client_->Set("never", "1", Soon()).ok());
}

TEST_F(StoreTest, ManyConcurrentWaitsHoldNoServerThreads) {
  constexpr int kWaiters = 200;
  auto store = server_->store();
  const int threads_before = ThreadCount();
  std::vector<std::thread> waiters;
  std::atomic<int> ok{0};
  for (int i = 0; i < kWaiters; ++i) {
    waiters.emplace_back([&, i] {
      // Half wait on one shared key, half on their own key as well.
      std::vector<std::string> keys = {"go"};
      if (i % 2) keys.push_back("own/" + std::to_string(i));
      if (client_->Wait(keys, Deadline::AfterMs(8000)).ok()) ++ok;
    });
  }
  ASSERT_TRUE(PollUntil([&] { return store->pending_watches() == kWaiters; }, 8000))
      << store->pending_watches() << " of " << kWaiters << " Waits registered";
  // All 200 Waits are pending: the process has our 200 caller threads plus gRPC's pools, but not a
  // server thread per Wait.
  const int threads_waiting = ThreadCount();
  EXPECT_LT(threads_waiting - threads_before, kWaiters + 64)
      << "before " << threads_before << ", with Waits pending " << threads_waiting;
  for (int i = 1; i < kWaiters; i += 2) {
    ASSERT_TRUE(client_->Set("own/" + std::to_string(i), "", Soon()).ok());
  }
  ASSERT_TRUE(client_->Set("go", "1", Soon()).ok());
  for (auto& t : waiters) t.join();
  EXPECT_EQ(ok.load(), kWaiters);
  EXPECT_EQ(store->pending_watches(), 0u);
}

TEST_F(StoreTest, ShutdownWithPendingWaitsIsPrompt) {
  constexpr int kWaiters = 20;
  auto store = server_->store();
  std::vector<std::thread> waiters;
  std::vector<Status> results(kWaiters);
  for (int i = 0; i < kWaiters; ++i) {
    waiters.emplace_back(
        [&, i] { results[i] = client_->Wait({"never"}, Deadline::AfterMs(8000)); });
  }
  ASSERT_TRUE(PollUntil([&] { return store->pending_watches() == kWaiters; }));
  auto t0 = Clock::now();
  server_->Shutdown(Deadline::AfterMs(5000));
  EXPECT_LT(MsSince(t0), 2000) << "Shutdown waited for the pending Waits";
  for (auto& t : waiters) t.join();
  EXPECT_LT(MsSince(t0), 3000);
  for (const Status& st : results) {
    EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st;
  }
  server_->Shutdown(Deadline::AfterMs(5000));  // idempotent
}

TEST_F(StoreTest, CallAfterServerShutdownIsUnavailable) {
  ASSERT_TRUE(client_->Set("a", "1", Soon()).ok());
  server_->Shutdown(Deadline::AfterMs(1000));
  auto t0 = Clock::now();
  auto r = client_->Get("a", Deadline::AfterMs(3000));
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status();
  EXPECT_LT(MsSince(t0), 3000);
  server_.reset();  // destroying a shut-down server is fine
  EXPECT_EQ(client_->Wait({"x"}, Deadline::AfterMs(3000)).code(), StatusCode::kUnavailable);
}

TEST(StoreServerTest, DestructorIsBoundedWithPendingWaits) {
  auto server = StoreServer::Start({});
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = StoreClient::Connect((*server)->address(), Soon());
  ASSERT_TRUE(client.ok());
  std::promise<Status> done;
  std::thread waiter([&] { done.set_value((*client)->Wait({"never"}, Deadline::Infinite())); });
  auto store = (*server)->store();
  ASSERT_TRUE(PollUntil([&] { return store->pending_watches() == 1; }));
  auto t0 = Clock::now();
  server->reset();
  EXPECT_LT(MsSince(t0), 3000);
  auto f = done.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(f.get().code(), StatusCode::kUnavailable);
  waiter.join();
}

TEST(StoreServerTest, BindFailureIsAClearError) {
  auto first = StoreServer::Start({});
  ASSERT_TRUE(first.ok()) << first.status();
  StoreServerOptions opts;
  opts.address = (*first)->address();
  auto second = StoreServer::Start(opts);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr(opts.address));

  opts.address = "no-port-here";
  EXPECT_EQ(StoreServer::Start(opts).status().code(), StatusCode::kInvalidArgument);
  opts.address = "127.0.0.1:";
  EXPECT_EQ(StoreServer::Start(opts).status().code(), StatusCode::kInvalidArgument);
}

TEST(StoreClientTest, ConnectToDeadPortFailsWithinDeadline) {
  const std::string addr = "127.0.0.1:" + std::to_string(DeadPort());
  auto t0 = Clock::now();
  auto c = StoreClient::Connect(addr, Deadline::AfterMs(300));
  const double ms = MsSince(t0);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(std::string(c.status().message()), StartsWith("store at " + addr + " unreachable"));
  EXPECT_LT(ms, 2000);
  EXPECT_EQ(StoreClient::Connect("", Soon()).status().code(), StatusCode::kInvalidArgument);
}

// --------------------------------------------------------------------------------------------- The
// archi-store binary as a child process.

class StoreProcess {
 public:
  // Starts `archi-store --listen listen` with stdout (and stderr when `capture_stderr`) on pipes.
  explicit StoreProcess(const std::string& listen) {
    int out[2], err[2];
    EXPECT_EQ(::pipe2(out, O_CLOEXEC), 0);
    EXPECT_EQ(::pipe2(err, O_CLOEXEC), 0);
    const std::string bin = ARCHI_STORE_BIN;
    std::vector<std::string> args = {bin, "--listen", listen, "--shutdown-grace-ms", "500"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {  // child: async-signal-safe calls only
      ::dup2(out[1], STDOUT_FILENO);
      ::dup2(err[1], STDERR_FILENO);
      ::execv(bin.c_str(), argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    ::close(err[1]);
    out_ = out[0];
    err_ = err[0];
  }
  ~StoreProcess() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(out_);
    ::close(err_);
  }

  pid_t pid() const { return pid_; }

  // Reads stdout until "archi-store listening on ADDR\n"; returns ADDR or "" at the deadline/EOF.
  std::string WaitListening(Deadline deadline) {
    std::string buf;
    const std::string marker = "archi-store listening on ";
    while (!deadline.Expired()) {
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(std::max<int64_t>(deadline.RemainingMs().count(), 1))) <=
          0) {
        continue;
      }
      char chunk[256];
      ssize_t n = ::read(out_, chunk, sizeof(chunk));
      if (n <= 0) return "";
      buf.append(chunk, static_cast<size_t>(n));
      const size_t at = buf.find(marker), nl = buf.find('\n', at == std::string::npos ? 0 : at);
      if (at != std::string::npos && nl != std::string::npos) {
        return buf.substr(at + marker.size(), nl - at - marker.size());
      }
    }
    return "";
  }

  std::string ReadStderr() {
    std::string buf;
    char chunk[512];
    ssize_t n;
    while ((n = ::read(err_, chunk, sizeof(chunk))) > 0) buf.append(chunk, static_cast<size_t>(n));
    return buf;
  }

  // Waits for the child to exit; returns its wait status or -1 at the deadline.
  int Reap(Deadline deadline) {
    while (true) {
      int status = 0;
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        reaped_ = true;
        return status;
      }
      if (deadline.Expired()) return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1, err_ = -1;
  bool reaped_ = false;
};

TEST(ArchiStoreBinaryTest, ServesThenKillNineMakesCallsFailFast) {
  StoreProcess proc("127.0.0.1:0");
  const std::string addr = proc.WaitListening(Deadline::AfterMs(8000));
  ASSERT_FALSE(addr.empty()) << "archi-store did not report its address; stderr: "
                             << proc.ReadStderr();
  auto client = StoreClient::Connect(addr, Soon());
  ASSERT_TRUE(client.ok()) << client.status();
  auto& c = **client;
  ASSERT_TRUE(c.Set("k", "v", Soon()).ok());
  EXPECT_EQ(*c.Get("k", Soon()), "v");
  EXPECT_EQ(*c.Add("n", 2, Soon()), 2);

  // A Wait in flight when the process dies.
  std::promise<Status> waited;
  std::thread waiter([&] { waited.set_value(c.Wait({"never"}, Deadline::AfterMs(8000))); });
  // Make sure the Wait reached the server: its keys are absent, so it stays pending; a Get on the
  // same channel afterwards proves the connection is up. (Either order is a valid test.)
  ASSERT_TRUE(c.Get("k", Soon()).ok());

  ASSERT_EQ(::kill(proc.pid(), SIGKILL), 0);
  const int status = proc.Reap(Soon());
  ASSERT_NE(status, -1);
  EXPECT_TRUE(WIFSIGNALED(status));

  auto t0 = Clock::now();
  auto r = c.Get("k", Deadline::AfterMs(3000));
  EXPECT_THAT(r.status().code(), AnyOf(StatusCode::kUnavailable, StatusCode::kDeadlineExceeded))
      << r.status();
  EXPECT_LT(MsSince(t0), 3000);

  auto f = waited.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_THAT(f.get().code(), AnyOf(StatusCode::kUnavailable, StatusCode::kDeadlineExceeded));
  EXPECT_LT(MsSince(t0), 5000);
  waiter.join();
}

TEST(ArchiStoreBinaryTest, SigtermStopsCleanly) {
  StoreProcess proc("127.0.0.1:0");
  const std::string addr = proc.WaitListening(Deadline::AfterMs(8000));
  ASSERT_FALSE(addr.empty()) << proc.ReadStderr();
  auto client = StoreClient::Connect(addr, Soon());
  ASSERT_TRUE(client.ok()) << client.status();
  std::promise<Status> waited;
  std::thread waiter(
      [&] { waited.set_value((*client)->Wait({"never"}, Deadline::AfterMs(8000))); });
  ASSERT_TRUE((*client)->Set("k", "v", Soon()).ok());

  ASSERT_EQ(::kill(proc.pid(), SIGTERM), 0);
  const int status = proc.Reap(Deadline::AfterMs(5000));
  ASSERT_NE(status, -1) << "archi-store did not exit after SIGTERM";
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_THAT(proc.ReadStderr(), HasSubstr("SIGTERM"));
  auto f = waited.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  {
    Status ws = f.get();
    EXPECT_EQ(ws.code(), StatusCode::kUnavailable) << ws;
  }
  waiter.join();
}

TEST(ArchiStoreBinaryTest, PortInUseExitsNonZeroWithMessage) {
  auto server = StoreServer::Start({});
  ASSERT_TRUE(server.ok()) << server.status();
  StoreProcess proc((*server)->address());
  const int status = proc.Reap(Deadline::AfterMs(8000));
  ASSERT_NE(status, -1);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 0);
  EXPECT_THAT(proc.ReadStderr(), HasSubstr("cannot listen on " + (*server)->address()));
}

}  // namespace
}  // namespace archi
