#include "runtime/policy/reactive.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "runtime/policy/str_format.h"

namespace archi::policy {
namespace {

// Hands out idle workers for AddReplica, each at most once per decision. Preference: a worker on
// a host that runs no replica (nor one added earlier in this decision), then the lowest
// price_per_hour, then the lowest id. The set of busy hosts is built on first use only, so a
// decision without an add never walks every replica.
class WorkerPicker {
 public:
  explicit WorkerPicker(const ClusterState& state) : state_(state) {}

  const Worker* Pick() {
    if (!built_) {
      for (const Stage& s : state_.stages) {
        for (const Replica& r : s.replicas) busy_hosts_.insert(r.worker.host);
      }
      built_ = true;
    }
    const Worker* best = nullptr;
    auto key = [&](const Worker& w) {
      return std::make_tuple(busy_hosts_.contains(w.host), w.price_per_hour,
                             std::string_view(w.id));
    };
    for (const Worker& w : state_.idle) {
      if (taken_.contains(w.id)) continue;
      if (best == nullptr || key(w) < key(*best)) best = &w;
    }
    if (best != nullptr) {
      taken_.insert(best->id);
      busy_hosts_.insert(best->host);
    }
    return best;
  }

 private:
  const ClusterState& state_;
  bool built_ = false;
  std::unordered_set<std::string_view> busy_hosts_;
  std::unordered_set<std::string_view> taken_;
};

// The ready replica to drain: lowest (utilisation, queue depth) by its replica metrics (a replica
// without metrics counts as unloaded), ties to the most expensive, then the lowest id.
const Replica* LeastLoaded(const Stage& stage, const StageMetrics* m) {
  std::unordered_map<std::string_view, const ReplicaMetrics*> by_id;
  if (m != nullptr) {
    by_id.reserve(m->replicas.size());
    for (const ReplicaMetrics& rm : m->replicas) by_id.emplace(rm.worker, &rm);
  }
  const Replica* best = nullptr;
  auto key = [&](const Replica& r) {
    auto it = by_id.find(r.worker.id);
    const ReplicaMetrics* rm = it == by_id.end() ? nullptr : it->second;
    return std::make_tuple(rm ? rm->utilisation : 0.0, rm ? rm->queue_depth : 0.0,
                           -r.worker.price_per_hour, std::string_view(r.worker.id));
  };
  for (const Replica& r : stage.replicas) {
    if (r.state != ReplicaState::kReady) continue;
    if (best == nullptr || key(r) < key(*best)) best = &r;
  }
  return best;
}

}  // namespace

Status ReactiveOptions::Validate() const {
  if (!(max_queue_per_replica > 0)) {
    return InvalidArgumentError("reactive: max_queue_per_replica must be > 0");
  }
  if (stage_p99_budget_ms < 0) return InvalidArgumentError("reactive: stage_p99_budget_ms < 0");
  if (scale_out_after_ms < 0 || scale_in_after_ms < 0 || cooldown_ms < 0) {
    return InvalidArgumentError("reactive: negative duration");
  }
  if (evaluation_interval_ms <= 0) {
    return InvalidArgumentError("reactive: evaluation_interval_ms must be > 0");
  }
  if (max_adds_per_decision < 1) {
    return InvalidArgumentError("reactive: max_adds_per_decision must be >= 1");
  }
  if (scale_in_below < 0 || scale_in_below >= 1) {
    return InvalidArgumentError("reactive: scale_in_below must be in [0, 1)");
  }
  auto check = [](const ReplicaBounds& b, const std::string& what) -> Status {
    if (b.min_replicas < 0 || b.max_replicas < b.min_replicas || b.max_replicas < 1) {
      return InvalidArgumentError(
          "reactive: " + what + ": need 0 <= min_replicas <= " + "max_replicas, max_replicas >= 1");
    }
    return Status::Ok();
  };
  if (Status s = check(bounds, "bounds"); !s.ok()) return s;
  for (const auto& [stage, b] : stage_bounds) {
    if (Status s = check(b, "stage_bounds[" + std::to_string(stage) + "]"); !s.ok()) return s;
  }
  return Status::Ok();
}

ReactivePolicy::ReactivePolicy(ReactiveOptions options) : options_(std::move(options)) {}

ReplicaBounds ReactivePolicy::BoundsFor(int stage) const {
  auto it = options_.stage_bounds.find(stage);
  return it == options_.stage_bounds.end() ? options_.bounds : it->second;
}

Plan ReactivePolicy::Decide(const ClusterState& state, const ClusterMetrics& metrics,
                            const Forecast& /*forecast: reactive*/) const {
  const ReactiveOptions& o = options_;
  const TimeMs now = state.now_ms;
  Plan plan;
  plan.next_evaluation_ms = now + o.evaluation_interval_ms;

  std::unordered_map<int, const StageMetrics*> metrics_by_stage;
  for (const StageMetrics& m : metrics.stages) metrics_by_stage.emplace(m.stage, &m);

  double p99_budget = o.stage_p99_budget_ms;
  if (p99_budget <= 0 && metrics.frontend.slo_p99_ms > 0 && !state.stages.empty()) {
    p99_budget = metrics.frontend.slo_p99_ms / static_cast<double>(state.stages.size());
  }

  WorkerPicker picker(state);
  for (const Stage& stage : state.stages) {
    const int idx = stage.index;
    StageMemory prev;
    if (auto it = state.memory.stages.find(idx); it != state.memory.stages.end()) {
      prev = it->second;
    }
    StageMemory mem;
    mem.last_action_ms = prev.last_action_ms;

    int active = 0, joining = 0, ready = 0;
    double ready_capacity = 0;
    for (const Replica& r : stage.replicas) {
      if (r.state == ReplicaState::kDraining) continue;
      ++active;
      if (r.state == ReplicaState::kJoining) ++joining;
      if (r.state == ReplicaState::kReady) {
        ++ready;
        ready_capacity += r.worker.capacity;
      }
    }
    const ReplicaBounds bounds = BoundsFor(idx);

    // Load now, and the timers.
    const StageMetrics* m = nullptr;
    if (auto it = metrics_by_stage.find(idx); it != metrics_by_stage.end()) m = it->second;
    bool over = false, under = false;
    std::string over_why;
    if (m != nullptr) {
      const double queue_per_replica =
          ready_capacity > 0 ? m->queue_depth / ready_capacity
                             : (m->queue_depth > 0 ? std::numeric_limits<double>::infinity() : 0);
      if (queue_per_replica > o.max_queue_per_replica) {
        over = true;
        over_why =
            StrFormat("queue %.1f per replica > %.1f", queue_per_replica, o.max_queue_per_replica);
      } else if (p99_budget > 0 && m->p99_ms > p99_budget) {
        over = true;
        over_why = StrFormat("p99 %.1f ms > %.1f ms", m->p99_ms, p99_budget);
      }
      under = !over && m->utilisation < o.scale_in_below;
      if (over) mem.over_since_ms = prev.over_since_ms != kNoTime ? prev.over_since_ms : now;
      if (under) mem.under_since_ms = prev.under_since_ms != kNoTime ? prev.under_since_ms : now;
    }
    const bool cooled =
        prev.last_action_ms == kNoTime || now - prev.last_action_ms >= o.cooldown_ms;

    std::vector<Action> actions;
    // Up to `count` adds (max_adds_per_decision > 1; else exactly one); the first missing idle
    // worker ends them with an unmet entry.
    auto add = [&](std::string reason, int count = 1) {
      count = std::max(1, std::min(count, o.max_adds_per_decision));
      for (int i = 0; i < count; ++i) {
        if (const Worker* w = picker.Pick()) {
          actions.push_back(Action{AddReplica{idx, w->id}, reason});
        } else {
          plan.unmet.push_back(Unmet{idx, "no idle worker: " + reason});
          break;
        }
      }
    };
    auto drain = [&](std::string reason) {
      if (const Replica* r = LeastLoaded(stage, m)) {
        actions.push_back(Action{DrainReplica{idx, r->worker.id}, std::move(reason)});
      }
    };

    if (active < bounds.min_replicas) {
      add(StrFormat("%d active < min_replicas %d", active, bounds.min_replicas),
          bounds.min_replicas - active);
    } else if (active > bounds.max_replicas) {
      drain(StrFormat("%d active > max_replicas %d", active, bounds.max_replicas));
    } else if (over && now - mem.over_since_ms >= o.scale_out_after_ms && cooled && joining == 0) {
      const std::string why =
          over_why + StrFormat(" for %lld ms", static_cast<long long>(now - mem.over_since_ms));
      if (active >= bounds.max_replicas) {
        plan.unmet.push_back(
            Unmet{idx, StrFormat("at max_replicas %d: ", bounds.max_replicas) + why});
      } else {
        // Replicas that would bring the queue per replica down to the threshold.
        const double needed = std::ceil(m->queue_depth / o.max_queue_per_replica - ready_capacity);
        const int want = needed >= 1 ? static_cast<int>(std::min(needed, 1e6)) : 1;
        add(why, std::min(want, bounds.max_replicas - active));
      }
    } else if (under && now - mem.under_since_ms >= o.scale_in_after_ms && cooled && joining == 0 &&
               active > bounds.min_replicas) {
      drain(StrFormat("utilisation %.2f < %.2f for %lld ms", m->utilisation, o.scale_in_below,
                      static_cast<long long>(now - mem.under_since_ms)));
    }

    if (!actions.empty()) {
      mem = StageMemory{kNoTime, kNoTime, now};
      for (Action& a : actions) plan.actions.push_back(std::move(a));
    }
    plan.memory.stages.emplace(idx, mem);
  }
  return plan;
}

}  // namespace archi::policy
