// Incremental indexes of the coordinator's live workers (issue 5, control-plane efficiency).
//
// The coordinator used to recompute per-stage replica counts, the idle pool and heartbeat
// timeouts by walking every live worker on every 20 ms pass of its control loop (~3 million map
// nodes a second at 10,000 workers). These two structures keep the same answers up to date on
// state changes instead:
//
//   - WorkerIndex: per-stage counts (assigned = loading|joining|ready, ready), per-state counts
//     (idle / serving / draining, the gauges), each stage's members in id order, and the idle
//     pool (idle, with a session, not cordoned) ordered highest capacity first, then by id (the
//     order the old scan picked in).
//   - DueQueue: ids ordered by a due time (the heartbeat deadline). The key kept for an id may be
//     earlier than its real due time: PopDue asks for the real one and re-queues ids that are not
//     due yet, so the common update (a heartbeat, which only moves the deadline later) costs
//     nothing; each worker is looked at about once per timeout period.
//
// Neither is thread-safe: the coordinator holds its lock around every call. Pure data structures
// (no gRPC, no clock); tests/coordinator/worker_index_test.cc.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace archi::coordinator {

// What WorkerIndex needs to know about one worker.
struct WorkerFacts {
  enum class State { kIdle, kLoading, kJoining, kReady, kDraining, kOther };
  State state = State::kIdle;
  int stage = -1;             // -1: none
  bool idle_eligible = false;  // may be assigned: idle, with a session, not cordoned
  double capacity = 0;
  friend bool operator==(const WorkerFacts&, const WorkerFacts&) = default;

  // "idle" | "loading" | "joining" | "ready" | "draining"; anything else is kOther.
  static State ParseState(std::string_view s);
  bool assigned() const {
    return state == State::kLoading || state == State::kJoining || state == State::kReady;
  }
};

class WorkerIndex {
 public:
  explicit WorkerIndex(int num_stages = 0);

  // Inserts `id` or replaces what is known about it. Stages outside [0, num_stages) count as none.
  void Update(const std::string& id, const WorkerFacts& facts);
  // Forgets `id` (no-op when unknown).
  void Remove(const std::string& id);
  void Clear();

  // Workers of `stage` in loading|joining|ready (0 for a stage outside the plan).
  int Assigned(int stage) const;
  // Workers of `stage` in ready.
  int Ready(int stage) const;
  // By state, as the gauges count them: idle, draining, and everything else ("serving").
  int idle() const { return idle_; }
  int draining() const { return draining_; }
  int serving() const { return static_cast<int>(facts_.size()) - idle_ - draining_; }
  size_t size() const { return facts_.size(); }
  const WorkerFacts* Find(const std::string& id) const;

  // Workers whose stage is `stage` (any state), in id order.
  const std::set<std::string>& Members(int stage) const;

  // The idle pool, best candidate first: highest capacity, then smallest id.
  struct IdleOrder {
    bool operator()(const std::pair<double, std::string>& a,
                    const std::pair<double, std::string>& b) const {
      if (a.first != b.first) return a.first > b.first;
      return a.second < b.second;
    }
  };
  using IdlePool = std::set<std::pair<double, std::string>, IdleOrder>;
  const IdlePool& idle_pool() const { return idle_pool_; }

 private:
  void Add(const std::string& id, const WorkerFacts& f, int sign);
  bool InPlan(int stage) const { return stage >= 0 && stage < static_cast<int>(assigned_.size()); }

  std::unordered_map<std::string, WorkerFacts> facts_;
  std::vector<int> assigned_, ready_;
  std::vector<std::set<std::string>> members_;
  std::set<std::string> no_members_;
  IdlePool idle_pool_;
  int idle_ = 0, draining_ = 0;
};

class DueQueue {
 public:
  // Queues `id` with due time `due` (replacing its key). Must be called again whenever an id's
  // real due time moves earlier than the key it was queued with.
  void Set(const std::string& id, int64_t due);
  // Unqueues `id` (no-op when unknown).
  void Erase(const std::string& id);
  void Clear();
  size_t size() const { return key_.size(); }
  bool contains(const std::string& id) const { return key_.contains(id); }
  // The earliest key (INT64_MAX when empty): nothing can be due before it.
  int64_t next_key() const;

  // Returns the ids whose real due time (`due_of(id)`, an int64_t) is <= now (in the order of
  // their keys) and unqueues them; ids whose key is <= now but whose real due time is later are
  // re-queued with it.
  template <typename DueOf>
  std::vector<std::string> PopDue(int64_t now, DueOf&& due_of) {
    std::vector<std::string> due;
    while (!by_due_.empty() && by_due_.begin()->first <= now) {
      auto node = by_due_.extract(by_due_.begin());
      const int64_t real = due_of(static_cast<const std::string&>(node.value().second));
      if (real <= now) {
        key_.erase(node.value().second);
        due.push_back(std::move(node.value().second));
      } else {
        node.value().first = real;
        key_[node.value().second] = real;
        by_due_.insert(std::move(node));
      }
    }
    return due;
  }

 private:
  std::set<std::pair<int64_t, std::string>> by_due_;
  std::unordered_map<std::string, int64_t> key_;
};

}  // namespace archi::coordinator
