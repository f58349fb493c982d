// The scaling-policy and heartbeat flags of a coordinator, shared by archi-coordinator and
// archi-frontend (whose embedded coordinator takes the same options), so the two binaries cannot
// drift apart. Header-only: both tools include it; nothing else should.
//
//   CoordinatorPolicyFlags flags;                  // must outlive the parse: CLI11 binds to it
//   AddCoordinatorPolicyFlags(app, options, flags, "coordinator: ");
//   CLI11_PARSE(app, argc, argv);
//   if (!ApplyCoordinatorPolicyFlags(flags, options, argv[0])) return 2;
#pragma once

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "runtime/coordinator/coordinator.h"
#include "runtime/policy/harmony_batch.h"
#include "runtime/policy/registry.h"

namespace archi::coordinator {

// Flags that do not map one-to-one onto a CoordinatorOptions field (applied after the parse).
struct CoordinatorPolicyFlags {
  double reference_rps = 0;
  int min_replicas = 0;
  std::string harmony_model;
  std::string harmony_model_name = "VGG19";
};

// Registers --policy, --slo-p99-ms, --reference-rps, --min-replicas, --harmony-model[-name],
// --heartbeat-timeout-ms and --heartbeat-interval-ms; `prefix` starts every help text.
inline void AddCoordinatorPolicyFlags(CLI::App& app, CoordinatorOptions& o,
                                      CoordinatorPolicyFlags& flags, const std::string& prefix) {
  flags.reference_rps = o.policy_options.cost_capacity.reference_rps;
  flags.min_replicas = o.policy_options.reactive.bounds.min_replicas;
  std::vector<std::string> policies = policy::PolicyNames();
  policies.insert(policies.begin(), "none");
  app.add_option("--policy", o.policy,
                 prefix + "scaling policy (none | " + policy::PolicyNamesJoined() + ")")
      ->check(CLI::IsMember(policies))
      ->capture_default_str();
  app.add_option("--slo-p99-ms", o.slo_p99_ms, prefix + "end-to-end p99 target for the policy")
      ->check(CLI::Range(0.0, 1e7));
  app.add_option("--reference-rps", flags.reference_rps,
                 prefix +
                     "cost-capacity / combined: req/s one stage replica of capacity 1.0 serves "
                     "(their routing's capacity model; compare with the admitted rate)")
      ->check(CLI::Range(1e-3, 1e9))
      ->capture_default_str();
  app.add_option("--min-replicas", flags.min_replicas,
                 prefix + "reactive / cost-capacity / harmony: never drain a stage below this")
      ->check(CLI::Range(0, 256))
      ->capture_default_str();
  app.add_option("--harmony-model", flags.harmony_model,
                 prefix + "harmony / combined: HarmonyBatch model.json (required by those two)")
      ->check(CLI::ExistingFile);
  app.add_option("--harmony-model-name", flags.harmony_model_name,
                 prefix + "harmony / combined: the model's key in that file")
      ->capture_default_str();
  app.add_option("--heartbeat-timeout-ms", o.heartbeat_timeout_ms,
                 prefix + "declare a worker dead after this long without a heartbeat")
      ->check(CLI::Range(20, 600'000))
      ->capture_default_str();
  app.add_option("--heartbeat-interval-ms", o.heartbeat_interval_ms,
                 prefix + "how often workers heartbeat")
      ->check(CLI::Range(10, 60'000))
      ->capture_default_str();
}

// Copies the parsed flags into the policies' options and loads the HarmonyBatch model. False
// (after printing why on stderr) when the model does not load.
inline bool ApplyCoordinatorPolicyFlags(const CoordinatorPolicyFlags& flags, CoordinatorOptions& o,
                                        const char* argv0) {
  o.policy_options.cost_capacity.reference_rps = flags.reference_rps;
  o.policy_options.combined.routing.reference_rps = flags.reference_rps;
  for (auto* b : {&o.policy_options.reactive.bounds, &o.policy_options.cost_capacity.scaling.bounds,
                  &o.policy_options.harmony.scaling.bounds}) {
    b->min_replicas = flags.min_replicas;
  }
  if (flags.harmony_model.empty()) return true;
  auto model = policy::LoadHarmonyModel(flags.harmony_model, flags.harmony_model_name);
  if (!model.ok()) {
    std::fprintf(stderr, "%s: --harmony-model: %s\n", argv0, model.status().ToString().c_str());
    return false;
  }
  o.policy_options.harmony.model = *model;
  o.policy_options.combined.batching.model = *model;
  return true;
}

}  // namespace archi::coordinator
