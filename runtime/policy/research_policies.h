// The issue 9 research algorithms as Policies (docs/policies.md, "Research policies as
// policies"): selectable by name (registry.h) live and in the simulator.
//
//   cost-capacity  Biran & Kissos' cost / capacity modes (hetero_routing.h) over the worker kinds
//                  of each stage: DecideRouting per stage, with the stage's ready replicas grouped
//                  into one DeploymentUnit per Worker::kind; emits SetRoutingWeights for a stage
//                  when its mode changes or a weight moves by more than min_weight_change.
//   harmony        HarmonyBatch's multi-SLO groups (harmony_batch.h) over the applications in
//                  ClusterMetrics::apps; emits SetBatchingGroups (each group's batch size and
//                  batching wait from its UnitConfig) when the grouping changes. Re-plans when the
//                  set of applications changes or a rate moves by more than replan_rate_change
//                  (relative) since the last plan. per_app = true is the baseline that batches
//                  every application alone (Provision per application, no merging).
//   combined       CombinedPlan (combined.h): Parcae's membership, cost/capacity routing over the
//                  kinds of the whole pipeline and the harmony groups, each group routed only to
//                  kinds whose latency + batching wait fits its SLO (BatchingGroup::route).
//
// Membership (which idle worker serves which stage) is not what the first two are about: they
// take the reactive policy's AddReplica / DrainReplica unchanged (ReactiveOptions `scaling`), so
// against the reactive baseline the only difference is the routing or the batching. The
// combined policy takes Parcae's.
//
// Memory, in PolicyMemory::values under the policy's name: the routing memory per stage
// ("<name>/s<i>/..."), the last weights emitted ("<name>/w<i>/<kind>", "<name>/m<i>" for the
// mode), the rates of the last batching plan ("<name>/rate/<app>") and its signature
// ("<name>/g/<app>", "<name>/b<j>", "<name>/t<j>"). Pure, deterministic, thread-safe (policy.h).
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/policy/harmony_batch.h"
#include "runtime/policy/hetero_routing.h"
#include "runtime/policy/parcae.h"
#include "runtime/policy/policy.h"
#include "runtime/policy/reactive.h"

namespace archi::policy {

struct CostCapacityOptions {
  RoutingOptions routing;
  ReactiveOptions scaling;
  // req/s one stage replica of capacity 1.0 serves (the unit's max_rps = capacity x this).
  double reference_rps = 10;
  // Measured end-to-end latency per kind (DeploymentUnit::latency_ms), for routing.latency_slo_ms.
  std::map<std::string, double> latency_ms;
  // Ablation: cost-mode weights always (cheap pool only, ~ capacity / cost), no capacity mode.
  bool cost_only = false;
  double min_weight_change = 0.02;
  // The demand routing plans for: the frontend's admitted rate smoothed exponentially with this
  // time constant (memory "<name>/demand", "<name>/demand_at"), so that one busy window does not
  // flip the mode; 0 = the last window's rate as is.
  TimeMs demand_smoothing_ms = 30'000;
  Status Validate() const;
  friend bool operator==(const CostCapacityOptions&, const CostCapacityOptions&) = default;
};

struct HarmonyPolicyOptions {
  HarmonyModel model;  // coefficients (LoadHarmonyModel); the GPU line must be set (l1 or l2 > 0)
  HarmonyOptions harmony;
  ReactiveOptions scaling;
  bool per_app = false;
  double replan_rate_change = 0.2;
  int max_batch_cap = 0;  // clamp the groups' batch (0: none), e.g. the executor's largest batch
  Status Validate() const;
  friend bool operator==(const HarmonyPolicyOptions&, const HarmonyPolicyOptions&) = default;
};

struct CombinedPolicyOptions {
  ParcaeOptions parcae;
  CostCapacityOptions routing;  // routing, reference_rps, latency_ms, min_weight_change
  HarmonyPolicyOptions batching;
  Status Validate() const;
  friend bool operator==(const CombinedPolicyOptions&, const CombinedPolicyOptions&) = default;
};

// Deployment units of a pipeline: one per Worker::kind of the ready replicas, in name order;
// a kind's requests go through every stage, so its max_rps is the smallest, over the stages, of
// its ready capacity there x reference_rps (instances = 1 per kind, so capacity_rps = that) and
// its cost per inference the sum over the stages of price / 3600 / (capacity x reference_rps)
// of one replica (mean price and capacity of the kind at the stage). A kind missing from a
// stage has no capacity. With one stage this is UnitsFromWorkers' per-replica model summed.
std::vector<DeploymentUnit> PipelineUnits(const ClusterState& state, double reference_rps,
                                          const std::map<std::string, double>& latency_ms);

// Routing weights from a decision: the units with weight > 0, in unit order, renormalised.
std::vector<KindWeight> WeightsOf(const std::vector<DeploymentUnit>& units,
                                  const RoutingDecision& d);
// Cost-mode weights without modes (the cost_only ablation): the cheap pool of the eligible units
// (as DecideRouting), ~ capacity / cost.
std::vector<KindWeight> CostOnlyWeights(const std::vector<DeploymentUnit>& units,
                                        const RoutingOptions& o);

// The groups a batching plan gives, as a SetBatchingGroups (apps by name; batch clamped to
// max_batch_cap when > 0; infeasible groups batch 1 with no wait).
std::vector<BatchingGroup> GroupsOf(const BatchingPlan& plan, const std::vector<App>& apps,
                                    int max_batch_cap);
// Every application alone (the per-app baseline): Provision for each.
BatchingPlan PerAppBatching(const HarmonyModel& model, const HarmonyOptions& o,
                            const std::vector<App>& apps);

class CostCapacityPolicy final : public Policy {
 public:
  static constexpr std::string_view kName = "cost-capacity";
  explicit CostCapacityPolicy(CostCapacityOptions options = {});
  std::string_view name() const override { return kName; }
  Plan Decide(const ClusterState& state, const ClusterMetrics& metrics,
              const Forecast& forecast) const override;
  const CostCapacityOptions& options() const { return options_; }

 private:
  CostCapacityOptions options_;
  ReactivePolicy scaling_;
};

class HarmonyPolicy final : public Policy {
 public:
  static constexpr std::string_view kName = "harmony";
  explicit HarmonyPolicy(HarmonyPolicyOptions options);
  std::string_view name() const override { return kName; }
  Plan Decide(const ClusterState& state, const ClusterMetrics& metrics,
              const Forecast& forecast) const override;
  const HarmonyPolicyOptions& options() const { return options_; }

 private:
  HarmonyPolicyOptions options_;
  ReactivePolicy scaling_;
};

class CombinedPolicy final : public Policy {
 public:
  static constexpr std::string_view kName = "combined";
  explicit CombinedPolicy(CombinedPolicyOptions options);
  std::string_view name() const override { return kName; }
  Plan Decide(const ClusterState& state, const ClusterMetrics& metrics,
              const Forecast& forecast) const override;
  const CombinedPolicyOptions& options() const { return options_; }

 private:
  CombinedPolicyOptions options_;
  ParcaePolicy parcae_;
};

}  // namespace archi::policy
