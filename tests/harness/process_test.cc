// Process and WaitReadyFile against /bin/sh scripts: exit codes, signals, deadlines, logs.
#include "bench/harness/process.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>

#include "bench/harness/ready_file.h"

namespace archi::harness {
namespace {

class ProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/archi_harness_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::unique_ptr<Process> Sh(const std::string& script) {
    auto p =
        Process::Spawn({.binary = "/bin/sh", .args = {"-c", script}, .log_path = dir_ + "/sh.log"});
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? std::move(*p) : nullptr;
  }
  std::string dir_;
};

TEST_F(ProcessTest, ExitCodes) {
  for (int code : {0, 3, 42}) {
    auto p = Sh("exit " + std::to_string(code));
    ASSERT_NE(p, nullptr);
    auto e = p->WaitExit(Deadline::AfterMs(10'000));
    ASSERT_TRUE(e.ok()) << e.status();
    EXPECT_FALSE(e->signaled);
    EXPECT_EQ(e->code, code);
    EXPECT_EQ(e->ok(), code == 0);
    // Later calls return the same answer at once.
    auto again = p->WaitExit(Deadline::Past());
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->code, code);
  }
}

TEST_F(ProcessTest, KillNine) {
  auto p = Sh("sleep 100");
  ASSERT_NE(p, nullptr);
  EXPECT_TRUE(p->Running());
  ASSERT_TRUE(p->Signal(SIGKILL).ok());
  auto e = p->WaitExit(Deadline::AfterMs(10'000));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE(e->signaled);
  EXPECT_EQ(e->signal, SIGKILL);
  EXPECT_EQ(e->ToString().rfind("signal 9", 0), 0u) << e->ToString();
  // Reaped: no signal can reach a recycled pid.
  EXPECT_EQ(p->Signal(SIGKILL).code(), StatusCode::kFailedPrecondition);
}

TEST_F(ProcessTest, WaitExitNeverBlocksPastTheDeadline) {
  auto p = Sh("sleep 100");
  ASSERT_NE(p, nullptr);
  const auto t0 = Clock::now();
  auto e = p->WaitExit(Deadline::AfterMs(200));
  const double ms = MsSince(t0);
  EXPECT_EQ(e.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_GE(ms, 190);
  EXPECT_LT(ms, 2'000);
  EXPECT_TRUE(p->Running());
}

TEST_F(ProcessTest, DestructorKillsAndReaps) {
  pid_t pid = 0;
  {
    auto p = Sh("sleep 100");
    ASSERT_NE(p, nullptr);
    pid = p->Pid();
    ASSERT_EQ(::kill(pid, 0), 0);
  }
  // Killed and reaped: the pid no longer names a process of ours (not even a zombie).
  EXPECT_EQ(::kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
}

TEST_F(ProcessTest, SigtermHandlerAndTerminate) {
  auto p = Sh("trap 'echo got-term; exit 7' TERM; echo started; while :; do sleep 0.01; done");
  ASSERT_NE(p, nullptr);
  // Wait until the trap is installed (the script says "started" after it).
  for (int i = 0; i < 500 && p->LogTail().find("started") == std::string::npos; ++i) {
    std::this_thread::sleep_for(Millis(10));
  }
  ExitInfo e = p->Terminate(Millis(5'000));
  EXPECT_FALSE(e.signaled);
  EXPECT_EQ(e.code, 7);
  EXPECT_NE(p->LogTail().find("got-term"), std::string::npos) << p->LogTail();
}

TEST_F(ProcessTest, LogEnvAndArgs) {
  auto p = Process::Spawn({.binary = "/bin/sh",
                           .args = {"-c", "echo out-$ARCHI_HARNESS_X-$0; echo err >&2", "arg0"},
                           .env = {{"ARCHI_HARNESS_X", "hello"}},
                           .log_path = dir_ + "/env.log"});
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_TRUE((*p)->WaitExit(Deadline::AfterMs(10'000)).ok());
  const std::string log = (*p)->LogTail();
  EXPECT_NE(log.find("out-hello-arg0"), std::string::npos) << log;
  EXPECT_NE(log.find("err"), std::string::npos) << log;
}

TEST_F(ProcessTest, BadBinary) {
  auto p = Process::Spawn({.binary = dir_ + "/does-not-exist"});
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(ProcessTest, WaitReadyFile) {
  const std::string ready = dir_ + "/x.ready";
  auto p = Sh("sleep 0.2; echo '{\"grpc\":\"127.0.0.1:5\",\"pid\":'$$'}' > " + ready +
              ".tmp && mv " + ready + ".tmp " + ready + "; sleep 100");
  ASSERT_NE(p, nullptr);
  auto j = WaitReadyFile(ready, Deadline::AfterMs(10'000), p.get());
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ((*j)["grpc"], "127.0.0.1:5");
  EXPECT_EQ((*j)["pid"].get<int>(), p->Pid());
}

TEST_F(ProcessTest, WaitReadyFileProcessDied) {
  auto p = Sh("echo dying; exit 5");
  ASSERT_NE(p, nullptr);
  const auto t0 = Clock::now();
  auto j = WaitReadyFile(dir_ + "/never.ready", Deadline::AfterMs(20'000), p.get());
  EXPECT_EQ(j.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(std::string(j.status().message()).find("exit 5"), std::string::npos) << j.status();
  EXPECT_NE(std::string(j.status().message()).find("dying"), std::string::npos) << j.status();
  EXPECT_LT(MsSince(t0), 5'000);
}

TEST_F(ProcessTest, WaitReadyFileDeadline) {
  auto j = WaitReadyFile(dir_ + "/never.ready", Deadline::AfterMs(100));
  EXPECT_EQ(j.status().code(), StatusCode::kDeadlineExceeded);
}

}  // namespace
}  // namespace archi::harness
