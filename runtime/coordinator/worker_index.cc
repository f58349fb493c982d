#include "runtime/coordinator/worker_index.h"

#include <limits>

namespace archi::coordinator {

WorkerFacts::State WorkerFacts::ParseState(std::string_view s) {
  if (s == "idle") return State::kIdle;
  if (s == "loading") return State::kLoading;
  if (s == "joining") return State::kJoining;
  if (s == "ready") return State::kReady;
  if (s == "draining") return State::kDraining;
  return State::kOther;
}

WorkerIndex::WorkerIndex(int num_stages)
    : assigned_(static_cast<size_t>(num_stages), 0),
      ready_(static_cast<size_t>(num_stages), 0),
      members_(static_cast<size_t>(num_stages)) {}

void WorkerIndex::Add(const std::string& id, const WorkerFacts& f, int sign) {
  if (f.state == WorkerFacts::State::kIdle) idle_ += sign;
  if (f.state == WorkerFacts::State::kDraining) draining_ += sign;
  if (InPlan(f.stage)) {
    const auto s = static_cast<size_t>(f.stage);
    if (f.assigned()) assigned_[s] += sign;
    if (f.state == WorkerFacts::State::kReady) ready_[s] += sign;
    if (sign > 0) {
      members_[s].insert(id);
    } else {
      members_[s].erase(id);
    }
  }
  if (f.idle_eligible) {
    if (sign > 0) {
      idle_pool_.insert({f.capacity, id});
    } else {
      idle_pool_.erase({f.capacity, id});
    }
  }
}

void WorkerIndex::Update(const std::string& id, const WorkerFacts& facts) {
  auto it = facts_.find(id);
  if (it != facts_.end()) {
    if (it->second == facts) return;
    Add(id, it->second, -1);
    it->second = facts;
  } else {
    facts_.emplace(id, facts);
  }
  Add(id, facts, +1);
}

void WorkerIndex::Remove(const std::string& id) {
  auto it = facts_.find(id);
  if (it == facts_.end()) return;
  Add(id, it->second, -1);
  facts_.erase(it);
}

void WorkerIndex::Clear() {
  const int stages = static_cast<int>(assigned_.size());
  *this = WorkerIndex(stages);
}

int WorkerIndex::Assigned(int stage) const {
  return InPlan(stage) ? assigned_[static_cast<size_t>(stage)] : 0;
}

int WorkerIndex::Ready(int stage) const {
  return InPlan(stage) ? ready_[static_cast<size_t>(stage)] : 0;
}

const WorkerFacts* WorkerIndex::Find(const std::string& id) const {
  auto it = facts_.find(id);
  return it == facts_.end() ? nullptr : &it->second;
}

const std::set<std::string>& WorkerIndex::Members(int stage) const {
  return InPlan(stage) ? members_[static_cast<size_t>(stage)] : no_members_;
}

void DueQueue::Set(const std::string& id, int64_t due) {
  auto it = key_.find(id);
  if (it != key_.end()) {
    if (it->second == due) return;
    by_due_.erase({it->second, id});
    it->second = due;
  } else {
    key_.emplace(id, due);
  }
  by_due_.insert({due, id});
}

void DueQueue::Erase(const std::string& id) {
  auto it = key_.find(id);
  if (it == key_.end()) return;
  by_due_.erase({it->second, id});
  key_.erase(it);
}

void DueQueue::Clear() {
  by_due_.clear();
  key_.clear();
}

int64_t DueQueue::next_key() const {
  return by_due_.empty() ? std::numeric_limits<int64_t>::max() : by_due_.begin()->first;
}

}  // namespace archi::coordinator
