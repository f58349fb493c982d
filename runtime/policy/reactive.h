// ReactivePolicy: scale a stage out when it has been overloaded for a while, in when it has been
// idle for a while; hysteresis and a cooldown against flapping. Rules (docs/policies.md):
//
//   active   = joining + ready replicas of the stage (draining ones are on their way out)
//   overload = queue_depth / (sum of ready replicas' capacity) > max_queue_per_replica
//              or p99_ms > the stage's p99 budget
//   idle     = not overloaded and utilisation < scale_in_below
//
//   1. active < min_replicas: add a replica now (repair; no hysteresis, no cooldown).
//   2. active > max_replicas: drain the least-loaded ready replica now.
//   3. overloaded continuously for scale_out_after_ms, past the cooldown, no replica joining,
//      active < max_replicas: add a replica.
//   4. idle continuously for scale_in_after_ms, past the cooldown, no replica joining,
//      active > min_replicas: drain the least-loaded ready replica.
//   At most one action per stage per decision; an action resets the stage's timers and starts
//   its cooldown. A worker is added only from the idle pool, preferring one on a host that runs
//   no replica, then the cheapest, then the lowest id.
//
// Timers live in PolicyMemory (ClusterState::memory in, Plan::memory out). A stage without
// metrics keeps no timers (its load is unknown): only rules 1 and 2 apply to it.
//
// Thread safety: immutable after construction; Decide may run concurrently.
#pragma once

#include <map>
#include <string_view>

#include "runtime/policy/policy.h"

namespace archi::policy {

struct ReplicaBounds {
  int min_replicas = 1;
  int max_replicas = 64;
  friend bool operator==(const ReplicaBounds&, const ReplicaBounds&) = default;
};

struct ReactiveOptions {
  // Overload: queued micro-batches per unit of ready capacity (1.0 = one reference replica).
  double max_queue_per_replica = 4.0;
  // Overload: stage p99 above this many ms. 0 = the frontend's SLO p99 split evenly over the
  // stages (no rule when the frontend has no SLO either).
  double stage_p99_budget_ms = 0.0;
  // How long overload must last, unbroken at every decision, before a scale-out.
  TimeMs scale_out_after_ms = 5'000;
  // Idle: utilisation below this fraction; how long it must last before a scale-in. With n >= 2
  // replicas the n-1 left run at most n/(n-1) <= 2x the old utilisation: keep it well under 0.5.
  double scale_in_below = 0.3;
  TimeMs scale_in_after_ms = 60'000;
  // No rule-3/4 action on a stage for this long after the last action on it.
  TimeMs cooldown_ms = 30'000;
  // Bounds per stage; `stage_bounds` overrides `bounds` for the stages it names.
  ReplicaBounds bounds;
  std::map<int, ReplicaBounds> stage_bounds;
  // Plan::next_evaluation_ms = now + this.
  TimeMs evaluation_interval_ms = 1'000;
  // Adds per stage per decision (rules 1 and 3). 1 (the default): one action per stage per
  // decision. Above 1: a repair adds up to min_replicas - active at once, and a scale-out adds
  // ceil(queue_depth / max_queue_per_replica - ready capacity) replicas (at least 1), so the
  // queue per replica would fall to the threshold, capped by this and max_replicas.
  int max_adds_per_decision = 1;

  // kInvalidArgument on a negative duration, min > max, min < 0, non-positive thresholds.
  Status Validate() const;
};

class ReactivePolicy final : public Policy {
 public:
  static constexpr std::string_view kName = "reactive";

  // Options are taken as given; call options.Validate() first where they come from a user.
  explicit ReactivePolicy(ReactiveOptions options = {});

  std::string_view name() const override { return kName; }
  Plan Decide(const ClusterState& state, const ClusterMetrics& metrics,
              const Forecast& forecast) const override;

  const ReactiveOptions& options() const { return options_; }
  ReplicaBounds BoundsFor(int stage) const;

 private:
  ReactiveOptions options_;
};

}  // namespace archi::policy
