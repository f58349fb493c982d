// The coordinator's write-ahead log (runtime/coordinator/wal.h) and the state it carries
// (state_journal.h): round trip, a torn last record (dropped), a corrupt record in the middle
// (refused, naming file and offset), snapshot + deletion of the covered segments, a crash between
// the two, the directory lock; and replay of state records.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "runtime/coordinator/state_journal.h"
#include "runtime/coordinator/wal.h"

namespace archi::coordinator {
namespace {

namespace fs = std::filesystem;
namespace pb = archi::proto;

class WalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("archi_wal_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<fs::path> Segments() const {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(dir_)) {
      if (e.path().filename().string().starts_with("wal-")) out.push_back(e.path());
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  static std::string Payload(int i) { return "record-" + std::to_string(i) + std::string(i, 'x'); }

  // Appends records 1..n to a fresh log and closes it; returns the segment they are in.
  fs::path Write(int n) {
    WalContents c;
    auto wal = WriteAheadLog::Open(dir_.string(), &c);
    EXPECT_TRUE(wal.ok()) << wal.status();
    for (int i = 1; i <= n; ++i) {
      auto lsn = (*wal)->Append(Payload(i));
      EXPECT_TRUE(lsn.ok()) << lsn.status();
      EXPECT_EQ(*lsn, static_cast<uint64_t>(i));
    }
    EXPECT_TRUE((*wal)->Sync().ok());
    EXPECT_EQ((*wal)->synced_lsn(), static_cast<uint64_t>(n));
    auto segs = Segments();
    EXPECT_EQ(segs.size(), 1u);
    return segs.empty() ? fs::path() : segs.back();
  }

  fs::path dir_;
};

TEST_F(WalTest, RoundTripKeepsEveryRecordInOrder) {
  Write(100);
  WalContents c;
  auto wal = WriteAheadLog::Open(dir_.string(), &c);
  ASSERT_TRUE(wal.ok()) << wal.status();
  EXPECT_FALSE(c.snapshot.has_value());
  EXPECT_TRUE(c.torn.empty()) << c.torn;
  ASSERT_EQ(c.records.size(), 100u);
  for (int i = 1; i <= 100; ++i) EXPECT_EQ(c.records[static_cast<size_t>(i - 1)], Payload(i));
  EXPECT_EQ(c.last_lsn, 100u);
  // Appends continue the sequence (in a new segment) and survive the next open too.
  auto lsn = (*wal)->Append("after");
  ASSERT_TRUE(lsn.ok());
  EXPECT_EQ(*lsn, 101u);
  wal->reset();
  ASSERT_TRUE(WriteAheadLog::Open(dir_.string(), &c).ok());
  ASSERT_EQ(c.records.size(), 101u);
  EXPECT_EQ(c.records.back(), "after");
}

TEST_F(WalTest, TornLastRecordIsDroppedAndCutOff) {
  const fs::path seg = Write(10);
  const auto full = fs::file_size(seg);
  const auto last_len = 16 + Payload(10).size();
  // Cut the last record in the middle of its payload (a write a crash interrupted).
  fs::resize_file(seg, full - last_len / 2);
  WalContents c;
  auto wal = WriteAheadLog::Open(dir_.string(), &c);
  ASSERT_TRUE(wal.ok()) << wal.status();
  ASSERT_EQ(c.records.size(), 9u);
  EXPECT_EQ(c.last_lsn, 9u);
  EXPECT_NE(c.torn.find(seg.string()), std::string::npos) << c.torn;
  EXPECT_NE(c.torn.find("offset " + std::to_string(full - last_len)), std::string::npos) << c.torn;
  EXPECT_EQ(fs::file_size(seg), full - last_len);  // cut off, so later appends follow good data
  auto lsn = (*wal)->Append("replacement");
  ASSERT_TRUE(lsn.ok());
  EXPECT_EQ(*lsn, 10u);
  wal->reset();
  ASSERT_TRUE(WriteAheadLog::Open(dir_.string(), &c).ok());
  EXPECT_TRUE(c.torn.empty()) << c.torn;
  ASSERT_EQ(c.records.size(), 10u);
  EXPECT_EQ(c.records[8], Payload(9));
  EXPECT_EQ(c.records[9], "replacement");
}

TEST_F(WalTest, TornHeaderAndZeroTailAreDropped) {
  const fs::path seg = Write(3);
  {
    std::ofstream out(seg, std::ios::binary | std::ios::app);
    out.write("\x05\x00\x00", 3);  // a header cut after 3 bytes
  }
  WalContents c;
  {
    auto wal = WriteAheadLog::Open(dir_.string(), &c);
    ASSERT_TRUE(wal.ok()) << wal.status();
    EXPECT_EQ(c.records.size(), 3u);
    EXPECT_FALSE(c.torn.empty());
  }
  // A tail of zero bytes (space a crash allocated but never filled) is torn too.
  for (const auto& s : Segments()) fs::remove(s);
  const fs::path seg2 = Write(3);
  {
    std::ofstream out(seg2, std::ios::binary | std::ios::app);
    const std::string zeros(100, '\0');
    out.write(zeros.data(), static_cast<std::streamsize>(zeros.size()));
  }
  auto wal = WriteAheadLog::Open(dir_.string(), &c);
  ASSERT_TRUE(wal.ok()) << wal.status();
  EXPECT_EQ(c.records.size(), 3u);
  EXPECT_FALSE(c.torn.empty());
}

TEST_F(WalTest, CorruptRecordInTheMiddleIsRefusedNamingFileAndOffset) {
  const fs::path seg = Write(10);
  size_t off = 0;
  for (int i = 1; i < 5; ++i) off += 16 + Payload(i).size();  // record 5 starts here
  {
    std::fstream f(seg, std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(static_cast<std::streamoff>(off + 16 + 2));
    f.put('#');  // one payload byte of record 5
  }
  WalContents c;
  auto wal = WriteAheadLog::Open(dir_.string(), &c);
  ASSERT_FALSE(wal.ok());
  EXPECT_EQ(wal.status().code(), StatusCode::kDataLoss);
  const std::string msg(wal.status().message());
  EXPECT_NE(msg.find(seg.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("offset " + std::to_string(off)), std::string::npos) << msg;
  EXPECT_NE(msg.find("checksum"), std::string::npos) << msg;
  // Nothing was cut: the damaged log is left for inspection.
  EXPECT_GT(fs::file_size(seg), off + 16 + Payload(5).size());
}

TEST_F(WalTest, SnapshotCoversTheLogAndDeletesItsSegments) {
  WalContents c;
  auto wal = WriteAheadLog::Open(dir_.string(), &c);
  ASSERT_TRUE(wal.ok());
  for (int i = 1; i <= 50; ++i) ASSERT_TRUE((*wal)->Append(Payload(i)).ok());
  EXPECT_EQ((*wal)->records_since_snapshot(), 50u);
  auto lsn = (*wal)->BeginSnapshot();
  ASSERT_TRUE(lsn.ok());
  EXPECT_EQ(*lsn, 50u);
  EXPECT_EQ((*wal)->BeginSnapshot().status().code(), StatusCode::kFailedPrecondition);
  // Appends between the two steps go to the new segment and are kept.
  for (int i = 51; i <= 55; ++i) ASSERT_TRUE((*wal)->Append(Payload(i)).ok());
  EXPECT_EQ((*wal)->records_since_snapshot(), 5u);
  ASSERT_TRUE((*wal)->WriteSnapshot(*lsn, "state at 50").ok());
  ASSERT_TRUE((*wal)->Sync().ok());
  auto segs = Segments();
  ASSERT_EQ(segs.size(), 1u);
  EXPECT_EQ(segs[0].filename().string(), "wal-00000000000000000051.log");
  EXPECT_FALSE(fs::exists(dir_ / "snapshot.tmp"));
  wal->reset();
  auto again = WriteAheadLog::Open(dir_.string(), &c);
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_TRUE(c.snapshot.has_value());
  EXPECT_EQ(*c.snapshot, "state at 50");
  EXPECT_EQ(c.snapshot_lsn, 50u);
  ASSERT_EQ(c.records.size(), 5u);
  EXPECT_EQ(c.records[0], Payload(51));
  EXPECT_EQ(c.last_lsn, 55u);
}

TEST_F(WalTest, CrashBetweenSnapshotAndSegmentDeletionSkipsCoveredRecords) {
  const fs::path seg = Write(20);
  const fs::path saved = dir_ / "saved.bin";
  WalContents c;
  {
    auto wal = WriteAheadLog::Open(dir_.string(), &c);
    ASSERT_TRUE(wal.ok());
    fs::copy_file(seg, saved);
    auto lsn = (*wal)->BeginSnapshot();
    ASSERT_TRUE(lsn.ok());
    ASSERT_TRUE((*wal)->Append("21").ok());
    ASSERT_TRUE((*wal)->WriteSnapshot(*lsn, "state at 20").ok());
  }
  ASSERT_FALSE(fs::exists(seg));
  fs::rename(saved, seg);  // as if the crash came before the deletion
  auto wal = WriteAheadLog::Open(dir_.string(), &c);
  ASSERT_TRUE(wal.ok()) << wal.status();
  EXPECT_EQ(c.snapshot_lsn, 20u);
  ASSERT_EQ(c.records.size(), 1u);
  EXPECT_EQ(c.records[0], "21");
}

TEST_F(WalTest, CorruptSnapshotAndSequenceGapAreRefused) {
  Write(5);
  WalContents c;
  {
    auto wal = WriteAheadLog::Open(dir_.string(), &c);
    ASSERT_TRUE(wal.ok());
    auto lsn = (*wal)->BeginSnapshot();
    ASSERT_TRUE((*wal)->WriteSnapshot(*lsn, "snapshot payload").ok());
  }
  {
    std::fstream f(dir_ / "snapshot", std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(30);
    f.put('!');
  }
  auto bad = WriteAheadLog::Open(dir_.string(), &c);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find("snapshot"), std::string::npos) << bad.status();

  // A segment whose records do not follow the snapshot (a lost segment) is a gap.
  fs::remove_all(dir_);
  Write(5);
  {
    auto wal = WriteAheadLog::Open(dir_.string(), &c);
    ASSERT_TRUE(wal.ok());
    for (int i = 6; i <= 8; ++i) ASSERT_TRUE((*wal)->Append(Payload(i)).ok());
  }
  fs::remove(Segments().front());  // records 1..5 lost, 6..8 remain
  auto gap = WriteAheadLog::Open(dir_.string(), &c);
  ASSERT_FALSE(gap.ok());
  EXPECT_EQ(gap.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(gap.status().message().find("sequence number 6"), std::string::npos) << gap.status();
}

TEST_F(WalTest, SecondOpenOfTheSameDirectoryIsRefused) {
  WalContents c;
  auto first = WriteAheadLog::Open(dir_.string(), &c);
  ASSERT_TRUE(first.ok());
  auto second = WriteAheadLog::Open(dir_.string(), &c);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
  first->reset();
  EXPECT_TRUE(WriteAheadLog::Open(dir_.string(), &c).ok());
}

// ---- state records ----

pb::DurableWorker Worker(const std::string& id, uint64_t epoch, int stage,
                         const std::string& state) {
  pb::DurableWorker w;
  w.mutable_spec()->set_worker_id(id);
  w.set_epoch(epoch);
  w.set_stage(stage);
  w.set_state(state);
  return w;
}

TEST_F(WalTest, StateIsRebuiltFromSnapshotAndRecords) {
  WalContents c;
  {
    auto wal = WriteAheadLog::Open(dir_.string(), &c);
    ASSERT_TRUE(wal.ok());
    pb::CoordinatorState snap;
    snap.set_pipeline("p");
    snap.set_num_stages(2);
    snap.mutable_targets()->add_replicas(1);
    snap.mutable_targets()->add_replicas(1);
    *snap.add_live() = Worker("b", 7, 0, "ready");
    auto lsn = (*wal)->BeginSnapshot();
    ASSERT_TRUE((*wal)->WriteSnapshot(*lsn, snap.SerializeAsString()).ok());
    std::vector<pb::StateRecord> rs(6);
    *rs[0].mutable_worker() = Worker("c", 9, -1, "idle");
    *rs[1].mutable_worker() = Worker("a", 8, 1, "loading");
    *rs[2].mutable_worker() = Worker("a", 8, 1, "ready");  // replaces
    *rs[3].mutable_dead() = Worker("b", 7, 0, "ready");
    rs[3].mutable_dead()->set_dead_reason("session broken");
    rs[4].mutable_targets()->add_replicas(2);
    rs[4].mutable_targets()->add_replicas(1);
    rs[5].mutable_recovery()->set_index(0);
    rs[5].mutable_recovery()->mutable_recovery()->set_worker_id("b");
    for (const auto& r : rs) ASSERT_TRUE((*wal)->Append(r.SerializeAsString()).ok());
  }
  ASSERT_TRUE(WriteAheadLog::Open(dir_.string(), &c).ok());
  bool found = false;
  auto s = RebuildState(c, "p", 2, 10, &found);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(found);
  ASSERT_EQ(s->live_size(), 2);
  EXPECT_EQ(s->live(0).spec().worker_id(), "a");  // sorted by id
  EXPECT_EQ(s->live(0).state(), "ready");
  EXPECT_EQ(s->live(1).spec().worker_id(), "c");
  ASSERT_EQ(s->dead_size(), 1);
  EXPECT_EQ(s->dead(0).dead_reason(), "session broken");
  EXPECT_EQ(s->targets().replicas(0), 2);
  ASSERT_EQ(s->recoveries_size(), 1);

  // Another pipeline's state, or another stage count, is refused.
  EXPECT_EQ(RebuildState(c, "q", 2, 10, &found).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(RebuildState(c, "p", 3, 10, &found).status().code(), StatusCode::kFailedPrecondition);
  // A record that does not parse names its lsn.
  WalContents junk = c;
  junk.records.push_back("\xff\xff\xff");
  auto j = RebuildState(junk, "p", 2, 10, &found);
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(j.status().message().find("lsn " + std::to_string(c.last_lsn + 1)), std::string::npos)
      << j.status();
}

TEST(PolicyStateTest, PolicyMemoryRoundTrips) {
  policy::PolicyMemory m;
  m.stages[0].over_since_ms = 5;
  m.stages[2].last_action_ms = policy::kNoTime;
  m.stages[2].under_since_ms = 77;
  m.values["parcae/dp"] = 3.5;
  const auto p = ToProto("reactive", 250, m);
  EXPECT_EQ(p.name(), "reactive");
  EXPECT_EQ(p.slo_p99_ms(), 250);
  EXPECT_EQ(FromProto(p), m);
}

}  // namespace
}  // namespace archi::coordinator
