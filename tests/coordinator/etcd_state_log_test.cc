// The etcd state store (runtime/coordinator/etcd_state_log.h) against a real etcd the test starts
// (tests/coordinator/test_etcd.h; skipped when no etcd binary is installed): leader election,
// records and snapshots that round-trip through a new leader, fencing of a leader that lost its
// lease, and an unreachable etcd reported as an error within the deadlines.
#include "runtime/coordinator/etcd_state_log.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <thread>

#include "tests/coordinator/test_etcd.h"

namespace archi::coordinator {
namespace {

namespace fs = std::filesystem;
using testing_etcd::TestEtcd;

class EtcdStateLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (testing_etcd::EtcdBinary().empty()) {
      GTEST_SKIP() << "no etcd binary (/usr/bin/etcd; Debian package etcd-server, installed by "
                      "scripts/setup.sh; or set ARCHI_ETCD_BIN)";
    }
    dir_ = fs::temp_directory_path() /
           ("archi_etcd_log_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    auto e = TestEtcd::Start(dir_.string(), Deadline::AfterMs(30'000));
    ASSERT_TRUE(e.ok()) << e.status();
    etcd_ = std::move(*e);
    auto c = EtcdClient::Create(etcd_->endpoint());
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = std::shared_ptr<EtcdClient>(std::move(*c));
  }
  void TearDown() override {
    etcd_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  Result<std::shared_ptr<EtcdLeadership>> Lead(const std::string& who, Deadline deadline,
                                               std::string* seen = nullptr) {
    std::atomic<bool> stop{false};
    EtcdLeadershipOptions o;
    o.prefix = prefix_;
    o.identity = who;
    o.ttl_s = 2;
    o.retry_ms = 50;
    ARCHI_ASSIGN_OR_RETURN(auto l, EtcdLeadership::Campaign(
                                       client_, o, stop,
                                       [&](const std::string& leader) {
                                         if (seen) *seen = leader;
                                       },
                                       deadline));
    return std::shared_ptr<EtcdLeadership>(std::move(l));
  }

  // Every key under the log prefix, "lsn=value".
  std::vector<std::string> LogKeys() {
    etcdserverpb::RangeRequest r;
    r.set_key(prefix_ + "/log/");
    r.set_range_end(EtcdClient::PrefixEnd(prefix_ + "/log/"));
    auto got = client_->Range(r, Deadline::AfterMs(5000));
    EXPECT_TRUE(got.ok()) << got.status();
    std::vector<std::string> out;
    if (got.ok()) {
      for (const auto& kv : got->kvs()) {
        out.push_back(kv.key().substr(prefix_.size() + 5) + "=" + kv.value());
      }
    }
    return out;
  }

  fs::path dir_;
  std::unique_ptr<TestEtcd> etcd_;
  std::shared_ptr<EtcdClient> client_;
  std::string prefix_ = "/archi/test";
};

TEST_F(EtcdStateLogTest, RecordsAndSnapshotsRoundTripThroughANewLeader) {
  auto a = Lead("a", Deadline::AfterMs(10'000));
  ASSERT_TRUE(a.ok()) << a.status();
  WalContents c;
  auto log = EtcdStateLog::Open(client_, *a, &c);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_FALSE(c.snapshot.has_value());
  EXPECT_EQ(c.last_lsn, 0u);
  EXPECT_TRUE(c.records.empty());
  for (int i = 1; i <= 3; ++i) {
    auto lsn = (*log)->Append("r" + std::to_string(i));
    ASSERT_TRUE(lsn.ok()) << lsn.status();
    EXPECT_EQ(*lsn, static_cast<uint64_t>(i));
  }
  ASSERT_TRUE((*log)->Sync().ok());
  EXPECT_EQ((*log)->synced_lsn(), 3u);
  // A snapshot of 2.5 MB: written in parts (etcd refuses requests over 1.5 MiB).
  std::string big(2'500'000, 'x');
  for (size_t i = 0; i < big.size(); i += 997) big[i] = static_cast<char>('a' + i % 26);
  auto at = (*log)->BeginSnapshot();
  ASSERT_TRUE(at.ok()) << at.status();
  EXPECT_EQ(*at, 3u);
  EXPECT_FALSE((*log)->BeginSnapshot().ok()) << "a second snapshot while one is in progress";
  ASSERT_TRUE((*log)->Append("r4").ok());  // after BeginSnapshot: not covered
  ASSERT_TRUE((*log)->WriteSnapshot(*at, big).ok());
  // 250 more records: more than one Txn (<= 100 operations each).
  for (int i = 5; i <= 254; ++i) ASSERT_TRUE((*log)->Append("r" + std::to_string(i)).ok());
  ASSERT_TRUE((*log)->SyncTo(254).ok());
  EXPECT_EQ(LogKeys().size(), 251u) << "records 1..3 dropped with the snapshot, 4..254 kept";
  (*a)->Resign();
  EXPECT_FALSE((*log)->Writable().ok());
  EXPECT_EQ((*log)->Append("r255").ok(), true);
  EXPECT_EQ((*log)->Sync().code(), StatusCode::kFailedPrecondition);

  auto b = Lead("b", Deadline::AfterMs(10'000));
  ASSERT_TRUE(b.ok()) << b.status();
  WalContents c2;
  auto log2 = EtcdStateLog::Open(client_, *b, &c2);
  ASSERT_TRUE(log2.ok()) << log2.status();
  ASSERT_TRUE(c2.snapshot.has_value());
  EXPECT_EQ(*c2.snapshot, big);
  EXPECT_EQ(c2.snapshot_lsn, 3u);
  ASSERT_EQ(c2.records.size(), 251u);
  EXPECT_EQ(c2.records.front(), "r4");
  EXPECT_EQ(c2.records.back(), "r254");
  EXPECT_EQ(c2.last_lsn, 254u);
  auto next = (*log2)->Append("next");
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(*next, 255u);
  ASSERT_TRUE((*log2)->Sync().ok());
  // A second snapshot removes the first one's parts.
  auto at2 = (*log2)->BeginSnapshot();
  ASSERT_TRUE(at2.ok());
  ASSERT_TRUE((*log2)->WriteSnapshot(*at2, "small").ok());
  etcdserverpb::RangeRequest r;
  r.set_key(prefix_ + "/snap/");
  r.set_range_end(EtcdClient::PrefixEnd(prefix_ + "/snap/"));
  r.set_keys_only(true);
  auto parts = client_->Range(r, Deadline::AfterMs(5000));
  ASSERT_TRUE(parts.ok());
  EXPECT_EQ(parts->kvs_size(), 1);
  EXPECT_TRUE(LogKeys().empty());
}

TEST_F(EtcdStateLogTest, ALeaderThatLostItsLeaseCannotWrite) {
  auto a = Lead("a grpc=1", Deadline::AfterMs(10'000));
  ASSERT_TRUE(a.ok()) << a.status();
  WalContents c;
  auto log = EtcdStateLog::Open(client_, *a, &c);
  ASSERT_TRUE(log.ok()) << log.status();
  ASSERT_TRUE((*log)->Append("a1").ok());
  ASSERT_TRUE((*log)->Sync().ok());

  // A standby campaigns meanwhile and sees who leads.
  std::string seen;
  auto early = Lead("b grpc=2", Deadline::AfterMs(500), &seen);
  EXPECT_EQ(early.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(seen, "a grpc=1");

  // The lease ends behind a's back (as when a was paused past its TTL): b wins at once.
  ASSERT_TRUE(client_->LeaseRevoke((*a)->lease_id(), Deadline::AfterMs(5000)).ok());
  auto b = Lead("b grpc=2", Deadline::AfterMs(10'000));
  ASSERT_TRUE(b.ok()) << b.status();
  WalContents cb;
  auto logb = EtcdStateLog::Open(client_, *b, &cb);
  ASSERT_TRUE(logb.ok()) << logb.status();
  ASSERT_EQ(cb.records.size(), 1u);
  EXPECT_EQ(cb.records[0], "a1");

  // a has not noticed yet (its own clock says the lease is valid), so its write reaches etcd,
  // whose guard refuses it: nothing is written and a knows it lost.
  const bool a_knew = !(*a)->Valid().ok();
  ASSERT_TRUE((*log)->Append("a2 (stale)").ok());
  Status s = (*log)->Sync();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s;
  EXPECT_FALSE((*a)->Valid().ok());
  EXPECT_FALSE((*log)->Writable().ok());
  EXPECT_TRUE((*a)->WaitLost(Millis(10)));
  auto snap = (*log)->BeginSnapshot();
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ((*log)->WriteSnapshot(*snap, "stale snapshot").code(), StatusCode::kFailedPrecondition);
  // b writes; only its records are there.
  ASSERT_TRUE((*logb)->Append("b2").ok());
  ASSERT_TRUE((*logb)->Sync().ok());
  EXPECT_EQ(LogKeys(),
            (std::vector<std::string>{"00000000000000000001=a1", "00000000000000000002=b2"}))
      << "a's check before its write: " << (a_knew ? "already invalid" : "still valid");
  etcdserverpb::RangeRequest r;
  r.set_key(prefix_ + "/snapshot");
  auto head = client_->Range(r, Deadline::AfterMs(5000));
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->kvs_size(), 0) << "a's snapshot was fenced off";
}

TEST_F(EtcdStateLogTest, LeadershipExpiresWhenTheLeaderCannotRenew) {
  auto a = Lead("a", Deadline::AfterMs(10'000));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE((*a)->Valid().ok());
  // etcd stops answering (SIGSTOP): renewals fail, the leadership lapses by a's own clock
  // within 0.8 x TTL, with no answer from etcd needed.
  ASSERT_TRUE(etcd_->process().Signal(SIGSTOP).ok());
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE((*a)->WaitLost(Millis(10'000)));
  const auto lost_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  // (Not asserted: a timing. The property is that it lapsed by its own clock, with no answer.)
  std::printf("leadership lapsed %lld ms after etcd stopped answering (TTL %lld s)\n",
              static_cast<long long>(lost_ms), static_cast<long long>((*a)->ttl_s()));
  EXPECT_FALSE((*a)->Valid().ok());
  ASSERT_TRUE(etcd_->process().Signal(SIGCONT).ok());
}

TEST_F(EtcdStateLogTest, UnreachableEtcdIsAnErrorWithinTheDeadline) {
  auto a = Lead("a", Deadline::AfterMs(10'000));
  ASSERT_TRUE(a.ok()) << a.status();
  EtcdStateLogOptions o;
  o.call_timeout_ms = 3000;
  WalContents c;
  auto log = EtcdStateLog::Open(client_, *a, &c, o);
  ASSERT_TRUE(log.ok()) << log.status();
  ASSERT_TRUE(etcd_->process().Signal(SIGKILL).ok());
  (void)etcd_->process().WaitExit(Deadline::AfterMs(5000));
  ASSERT_TRUE((*log)->Append("r1").ok());
  auto t0 = std::chrono::steady_clock::now();
  Status s = (*log)->Sync();
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kDeadlineExceeded ||
              s.code() == StatusCode::kFailedPrecondition)
      << s;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10)) << s;  // deadline
  // The next Sync within a second answers from memory, without waiting on etcd again (a call
  // would take its 3 s deadline).
  t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE((*log)->Sync().ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(1500));
  // A client of a port nobody serves: bounded errors too.
  auto dead = EtcdClient::Create("127.0.0.1:" + std::to_string(testing_etcd::FreePort()));
  ASSERT_TRUE(dead.ok());
  etcdserverpb::RangeRequest r;
  r.set_key("k");
  t0 = std::chrono::steady_clock::now();
  auto got = (*dead)->Range(r, Deadline::AfterMs(300));
  EXPECT_FALSE(got.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  // Bad endpoint lists are refused.
  EXPECT_EQ(EtcdClient::Create("").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(EtcdClient::Create("nohost").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(EtcdClient::Create("h:12x").status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace archi::coordinator
