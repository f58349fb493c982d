// --policy NAME -> a Policy: the one list of scaling policies, shared by the coordinator
// (archi-coordinator --policy, the SetPolicy admin RPC, a restored state's policy name) and the
// simulator (archi-sim --policy), so the names accepted live and in simulation cannot diverge.
//
//   ARCHI_ASSIGN_OR_RETURN(std::unique_ptr<Policy> p, MakePolicy("parcae"));
//
// "none" is not a policy: callers that allow manual scaling only handle it before calling here.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/status.h"
#include "runtime/policy/parcae.h"
#include "runtime/policy/policy.h"
#include "runtime/policy/reactive.h"
#include "runtime/policy/research_policies.h"

namespace archi::policy {

// Options of every registered policy; each factory takes its own member.
struct PolicyOptions {
  ReactiveOptions reactive;
  ParcaeOptions parcae;
  CostCapacityOptions cost_capacity;  // "cost-capacity"
  HarmonyPolicyOptions harmony;       // "harmony": needs a model (LoadHarmonyModel)
  CombinedPolicyOptions combined;     // "combined": needs combined.batching.model
};

// The registered names, sorted: "combined", "cost-capacity", "harmony", "parcae", "reactive".
std::vector<std::string> PolicyNames();

// "combined | cost-capacity | harmony | parcae | reactive", for error messages and flag help.
std::string PolicyNamesJoined(std::string_view sep = " | ");

// A new policy object. kInvalidArgument for an unknown name (listing the known ones) or options
// that fail the policy's Validate().
Result<std::unique_ptr<Policy>> MakePolicy(std::string_view name, const PolicyOptions& options = {});

}  // namespace archi::policy
