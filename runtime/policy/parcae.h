// Parcae: proactive liveput planning on preemptible instances.
//
// A configuration is (dp, pp): dp data-parallel pipelines of pp stages, on dp * pp instances.
// Its *liveput* over the next interval is its throughput in expectation over the preemptions
// that may happen in that interval, after the cheapest repair:
//
//   scenarios   the forecast's drop in available instances from the start of the interval to the
//               next (n_k - n_{k+1}, when positive) is the expected number of preempted
//               instances; each Monte Carlo scenario preempts floor(drop) (+1 with probability
//               frac(drop)) distinct instances drawn uniformly from the n_k available. Seeded
//               (ParcaeOptions::seed, the interval and n_k): deterministic. Instance i of a
//               configuration serves stage i % pp of pipeline i / pp; instances >= dp * pp are
//               spares. All configurations are judged on the same scenarios.
//   repair      (a) rebuild worlds only: the surviving replicas of each stage regroup into
//               min_s(alive_s) pipelines, the rebuilt ones idle for rebuild_s;
//               (b) move one stage's weights: surviving spares load the missing stages, up to
//               the largest d <= dp with sum_s max(0, d - alive_s) <= spares left, the moved
//               pipelines idle for move_stage_s. The better of the two counts.
//   liveput     mean over scenarios of pipelines x PipelineRps(pp) x (the fraction of the
//               interval each serves); the throughput itself when no instance is lost.
//
// PlanLiveput runs a dynamic program over `horizon` intervals (10 one-minute intervals by
// default): value of a path = sum_k liveput_k(C_k) x interval - sum_k migration(C_{k-1} -> C_k),
// with C_0's predecessor the current configuration and C_k limited to dp * pp <= n_k. Migration
// cost (requests not served): same configuration 0; more pipelines at the same depth:
// (dp' - dp) x PipelineRps x move_stage_s (each new instance loads one stage); fewer pipelines:
// T(new) x rebuild_s; another depth: full re-partition, T(new) x repartition_s. Only the first
// step is applied; the next decision plans again.
//
// ParcaePolicy wraps it as a Policy named "parcae": pp is the current number of stages (the
// runtime cannot re-partition through an ActionOp yet, so the depth is held; the unrestricted
// best depth is reported in Plan::unmet and memory), the first step's dp becomes AddReplica
// (idle workers only, to stages below dp) and DrainReplica (replicas above dp: they return to
// the idle pool, where they serve as spares for any stage). It reads Forecast::available_workers.
//
// Pure; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "runtime/policy/policy.h"

namespace archi::policy {

struct ParallelConfig {
  int dp = 0;
  int pp = 0;
  int instances() const { return dp * pp; }
  friend bool operator==(const ParallelConfig&, const ParallelConfig&) = default;
};

// Throughput of a pipeline: a batch takes compute_s through the whole model on one instance;
// split over pp stages the bottleneck stage takes compute_s / pp + comm_s per batch.
struct PipelineModel {
  double compute_s = 1.0;
  double comm_s = 0.02;
  int min_depth = 1;  // the model does not fit in fewer stages
  int max_depth = 16;
  double PipelineRps(int pp) const { return pp > 0 ? 1.0 / (compute_s / pp + comm_s) : 0.0; }
  double Throughput(const ParallelConfig& c) const { return c.dp * PipelineRps(c.pp); }
  friend bool operator==(const PipelineModel&, const PipelineModel&) = default;
};

// Seconds each migration kind keeps the affected pipelines from serving.
struct MigrationCosts {
  double rebuild_s = 2;       // rebuild worlds only (a surviving replica covers)
  double move_stage_s = 15;   // load one stage's weights on another instance
  double repartition_s = 60;  // full re-partition to another pipeline depth
  friend bool operator==(const MigrationCosts&, const MigrationCosts&) = default;
};

struct ParcaeOptions {
  PipelineModel model;
  MigrationCosts migration;
  TimeMs interval_ms = 60'000;
  int horizon = 10;    // intervals looked ahead
  int scenarios = 64;  // Monte Carlo scenarios per interval
  uint64_t seed = 1;
  // Up to this many available instances every dp is a candidate; above it, per depth only the
  // current dp, the largest dp that fits each interval's n_k and 0 (keeps the DP small at
  // 10,000 instances; the optimum uses one of these unless migration costs are ~0).
  int enumerate_all_up_to = 256;
  // A new target dp replaces the last one only after the last one has held this long, unless
  // it no longer fits the workers there are (ParcaePolicy).
  TimeMs min_hold_ms = 30'000;
  // kInvalidArgument on non-positive interval/horizon/scenarios/compute, depth bounds < 1 or
  // min > max, negative costs.
  Status Validate() const;
  friend bool operator==(const ParcaeOptions&, const ParcaeOptions&) = default;
};

// Requests lost to migrating from `from` to `to` (see the top of this file).
double MigrationCost(const ParallelConfig& from, const ParallelConfig& to, const ParcaeOptions& o);

// Liveput (requests/s) of each config over one interval with `available` instances at its start
// and an expected `drop` of instances during it; `salt` separates intervals' scenarios. Configs
// with dp * pp > available get 0.
std::vector<double> LiveputOf(const std::vector<ParallelConfig>& configs, int available,
                              double drop, uint64_t salt, const ParcaeOptions& o);

struct LiveputInterval {
  int available = 0;  // n_k
  double drop = 0;    // expected preemptions during the interval
  std::vector<ParallelConfig> candidates;
  std::vector<double> liveput;  // per candidate, requests/s
  friend bool operator==(const LiveputInterval&, const LiveputInterval&) = default;
};

struct LiveputPlan {
  ParallelConfig first;                    // apply this now
  std::vector<ParallelConfig> path;        // one per interval, path[0] == first
  double value = 0;                        // requests served over the horizon, net of migrations
  std::vector<LiveputInterval> intervals;  // the DP's tables (for tests and logs)
  friend bool operator==(const LiveputPlan&, const LiveputPlan&) = default;
};

// available[0] is the count now; available[k] (k >= 1) the forecast at the start of interval k;
// a forecast longer than horizon + 1 is cut, a shorter one is extended with its last value.
// `depth`: plan only this pipeline depth (nullopt: every depth in [min_depth, max_depth]).
LiveputPlan PlanLiveput(const ParallelConfig& current, const std::vector<double>& available,
                        const ParcaeOptions& o, std::optional<int> depth = std::nullopt);

// Both plans a ParcaePolicy decision needs, from one set of liveput tables (depths
// [min_depth, max_depth] plus the current one): `held` keeps the current depth (serving nothing
// allowed), `free` may choose any of those depths. Each equals what PlanLiveput gives for the
// same depths (the scenarios of a configuration do not depend on the other candidates).
struct HeldAndFreePlans {
  LiveputPlan held;
  LiveputPlan free;
};
HeldAndFreePlans PlanLiveputHeldAndFree(const ParallelConfig& current,
                                        const std::vector<double>& available,
                                        const ParcaeOptions& o);

class ParcaePolicy final : public Policy {
 public:
  static constexpr std::string_view kName = "parcae";
  explicit ParcaePolicy(ParcaeOptions options = {});
  std::string_view name() const override { return kName; }
  Plan Decide(const ClusterState& state, const ClusterMetrics& metrics,
              const Forecast& forecast) const override;
  const ParcaeOptions& options() const { return options_; }

  // What Decide feeds PlanLiveput: the current configuration (pp = stages, dp = fewest active
  // replicas in any stage) and n_0 = active replicas + idle workers, then the forecast at
  // now + k * interval (the last point at or before it; the first point before any).
  static ParallelConfig CurrentConfig(const ClusterState& state);
  std::vector<double> AvailabilityPath(const ClusterState& state, const Forecast& f) const;

 private:
  ParcaeOptions options_;
};

}  // namespace archi::policy
