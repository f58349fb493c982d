// WorkerIndex and DueQueue (runtime/coordinator/worker_index.h): hand-checked cases, then random
// operation sequences checked against a brute-force recomputation after every step.
#include "runtime/coordinator/worker_index.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>

namespace archi::coordinator {
namespace {

using State = WorkerFacts::State;

WorkerFacts F(State s, int stage, bool eligible = false, double capacity = 1) {
  WorkerFacts f;
  f.state = s;
  f.stage = stage;
  f.idle_eligible = eligible;
  f.capacity = capacity;
  return f;
}

std::vector<std::string> PoolIds(const WorkerIndex& x) {
  std::vector<std::string> ids;
  for (const auto& [c, id] : x.idle_pool()) ids.push_back(id);
  return ids;
}

TEST(WorkerIndexTest, CountsMembersAndIdlePoolFollowUpdates) {
  WorkerIndex x(3);
  x.Update("a", F(State::kIdle, -1, true, 1));
  x.Update("b", F(State::kIdle, -1, true, 4));
  x.Update("c", F(State::kIdle, -1, true, 4));
  x.Update("d", F(State::kIdle, -1, false, 9));  // no session / cordoned: not in the pool
  EXPECT_EQ(x.idle(), 4);
  EXPECT_EQ(x.serving(), 0);
  // Highest capacity first, ties by id.
  EXPECT_EQ(PoolIds(x), (std::vector<std::string>{"b", "c", "a"}));

  x.Update("b", F(State::kLoading, 1));
  x.Update("c", F(State::kReady, 1));
  x.Update("a", F(State::kJoining, 2));
  EXPECT_EQ(x.Assigned(0), 0);
  EXPECT_EQ(x.Assigned(1), 2);
  EXPECT_EQ(x.Ready(1), 1);
  EXPECT_EQ(x.Assigned(2), 1);
  EXPECT_EQ(x.Ready(2), 0);
  EXPECT_EQ(x.Members(1), (std::set<std::string>{"b", "c"}));
  EXPECT_EQ(PoolIds(x), std::vector<std::string>{});
  EXPECT_EQ(x.idle(), 1);
  EXPECT_EQ(x.serving(), 3);

  x.Update("c", F(State::kDraining, 1));  // draining: a member, not assigned
  EXPECT_EQ(x.Assigned(1), 1);
  EXPECT_EQ(x.Ready(1), 0);
  EXPECT_EQ(x.draining(), 1);
  EXPECT_TRUE(x.Members(1).contains("c"));

  x.Remove("c");
  x.Remove("c");  // twice: no-op
  x.Remove("zz");
  EXPECT_EQ(x.Members(1), std::set<std::string>{"b"});
  EXPECT_EQ(x.draining(), 0);
  EXPECT_EQ(x.size(), 3u);

  // Stages outside the plan count as none, and have no members.
  x.Update("e", F(State::kReady, 7));
  EXPECT_EQ(x.Assigned(7), 0);
  EXPECT_TRUE(x.Members(7).empty());
  EXPECT_TRUE(x.Members(-1).empty());
  EXPECT_EQ(x.serving(), 3);  // a, b, e (c was removed)

  x.Clear();
  EXPECT_EQ(x.size(), 0u);
  EXPECT_EQ(x.Assigned(1), 0);
  EXPECT_TRUE(x.Members(1).empty());
}

TEST(WorkerIndexTest, CapacityChangeMovesThePoolEntry) {
  WorkerIndex x(1);
  x.Update("a", F(State::kIdle, -1, true, 1));
  x.Update("b", F(State::kIdle, -1, true, 2));
  x.Update("a", F(State::kIdle, -1, true, 3));
  EXPECT_EQ(PoolIds(x), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(x.idle_pool().size(), 2u);
}

// Random sequences against a brute-force recomputation of every answer.
TEST(WorkerIndexTest, MatchesBruteForceOnRandomSequences) {
  std::mt19937 rng(7);
  constexpr int kStages = 4;
  for (int round = 0; round < 20; ++round) {
    WorkerIndex x(kStages);
    std::map<std::string, WorkerFacts> model;
    for (int step = 0; step < 400; ++step) {
      const std::string id = "w" + std::to_string(rng() % 30);
      if (rng() % 5 == 0) {
        x.Remove(id);
        model.erase(id);
      } else {
        const auto st = static_cast<State>(rng() % 6);
        const int stage = static_cast<int>(rng() % (kStages + 2)) - 1;  // -1 .. kStages
        const WorkerFacts f = F(st, stage, rng() % 2 == 0, static_cast<double>(rng() % 3));
        x.Update(id, f);
        model[id] = f;
      }
      ASSERT_EQ(x.size(), model.size());
      int idle = 0, draining = 0;
      std::vector<std::pair<double, std::string>> pool;
      for (int s = -1; s <= kStages; ++s) {
        int assigned = 0, ready = 0;
        std::set<std::string> members;
        for (const auto& [mid, f] : model) {
          if (f.stage != s || s < 0 || s >= kStages) continue;
          assigned += f.assigned();
          ready += f.state == State::kReady;
          members.insert(mid);
        }
        ASSERT_EQ(x.Assigned(s), assigned) << "stage " << s << " step " << step;
        ASSERT_EQ(x.Ready(s), ready) << "stage " << s << " step " << step;
        ASSERT_EQ(x.Members(s), members) << "stage " << s << " step " << step;
      }
      for (const auto& [mid, f] : model) {
        idle += f.state == State::kIdle;
        draining += f.state == State::kDraining;
        if (f.idle_eligible) pool.push_back({f.capacity, mid});
        ASSERT_NE(x.Find(mid), nullptr);
        ASSERT_EQ(*x.Find(mid), f);
      }
      std::sort(pool.begin(), pool.end(), [](const auto& a, const auto& b) {
        return a.first != b.first ? a.first > b.first : a.second < b.second;
      });
      ASSERT_EQ(x.idle(), idle);
      ASSERT_EQ(x.draining(), draining);
      ASSERT_EQ(x.serving(), static_cast<int>(model.size()) - idle - draining);
      ASSERT_EQ(std::vector(x.idle_pool().begin(), x.idle_pool().end()), pool) << "step " << step;
    }
  }
}

TEST(DueQueueTest, PopsOnlyWhatIsReallyDueAndRequeuesTheRest) {
  DueQueue q;
  std::map<std::string, int64_t> real = {{"a", 100}, {"b", 100}, {"c", 300}};
  for (const auto& [id, due] : real) q.Set(id, due);
  EXPECT_EQ(q.next_key(), 100);
  auto due_of = [&](const std::string& id) { return real.at(id); };

  EXPECT_TRUE(q.PopDue(99, due_of).empty());
  // "a" heartbeated: its real deadline moved to 250 without telling the queue.
  real["a"] = 250;
  EXPECT_EQ(q.PopDue(100, due_of), std::vector<std::string>{"b"});
  EXPECT_FALSE(q.contains("b"));
  EXPECT_TRUE(q.contains("a"));
  EXPECT_EQ(q.next_key(), 250);  // re-queued at its real deadline
  EXPECT_EQ(q.size(), 2u);

  real["a"] = 400;
  real["c"] = 260;  // earlier than its key: must be Set again to be found in time
  q.Set("c", 260);
  EXPECT_EQ(q.PopDue(260, due_of), std::vector<std::string>{"c"});
  EXPECT_EQ(q.next_key(), 400);
  EXPECT_EQ(q.PopDue(1000, due_of), std::vector<std::string>{"a"});
  EXPECT_EQ(q.size(), 0u);
  EXPECT_EQ(q.next_key(), std::numeric_limits<int64_t>::max());

  q.Set("x", 5);
  q.Set("x", 5);
  q.Set("y", 6);
  q.Erase("x");
  q.Erase("x");
  EXPECT_EQ(q.size(), 1u);
  EXPECT_EQ(q.PopDue(10, [](const std::string&) { return int64_t{0}; }),
            std::vector<std::string>{"y"});
  q.Set("z", 1);
  q.Clear();
  EXPECT_EQ(q.size(), 0u);
}

// Random heartbeats (later deadlines, not told to the queue) and earlier deadlines (told): every
// PopDue returns exactly the ids a full scan finds due.
TEST(DueQueueTest, MatchesFullScanOnRandomSequences) {
  std::mt19937 rng(11);
  for (int round = 0; round < 20; ++round) {
    DueQueue q;
    std::map<std::string, int64_t> real;
    int64_t now = 0;
    for (int step = 0; step < 500; ++step) {
      const std::string id = "w" + std::to_string(rng() % 40);
      switch (rng() % 4) {
        case 0:  // a new worker, or a heartbeat that moves the deadline later (queue not told)
          if (!real.contains(id)) {
            real[id] = now + 1 + static_cast<int64_t>(rng() % 50);
            q.Set(id, real[id]);
          } else {
            real[id] = std::max(real[id], now + 1 + static_cast<int64_t>(rng() % 50));
          }
          break;
        case 1:  // the deadline moves earlier: the queue is told
          if (real.contains(id)) {
            real[id] = now + static_cast<int64_t>(rng() % 5);
            q.Set(id, real[id]);
          }
          break;
        case 2:  // the worker leaves
          real.erase(id);
          q.Erase(id);
          break;
        default: {
          now += static_cast<int64_t>(rng() % 20);
          std::vector<std::string> want;
          for (const auto& [wid, due] : real) {
            if (due <= now) want.push_back(wid);
          }
          auto got = q.PopDue(now, [&](const std::string& wid) { return real.at(wid); });
          std::sort(got.begin(), got.end());
          ASSERT_EQ(got, want) << "round " << round << " step " << step;
          for (const auto& wid : got) real.erase(wid);
          break;
        }
      }
      ASSERT_EQ(q.size(), real.size());
      for (const auto& [wid, due] : real) {
        ASSERT_TRUE(q.contains(wid));
      }
      if (!real.empty()) {
        int64_t earliest = std::numeric_limits<int64_t>::max();
        for (const auto& [wid, due] : real) earliest = std::min(earliest, due);
        ASSERT_LE(q.next_key(), earliest);  // never later than a real deadline
      }
    }
  }
}

}  // namespace
}  // namespace archi::coordinator
