#include "runtime/policy/registry.h"

#include <functional>
#include <map>

namespace archi::policy {
namespace {

using Factory = std::function<Result<std::unique_ptr<Policy>>(const PolicyOptions&)>;

const std::map<std::string, Factory, std::less<>>& Table() {
  static const auto* table = new std::map<std::string, Factory, std::less<>>{
      {"reactive",
       [](const PolicyOptions& o) -> Result<std::unique_ptr<Policy>> {
         ARCHI_RETURN_IF_ERROR(o.reactive.Validate());
         return std::unique_ptr<Policy>(std::make_unique<ReactivePolicy>(o.reactive));
       }},
      {"parcae",
       [](const PolicyOptions& o) -> Result<std::unique_ptr<Policy>> {
         ARCHI_RETURN_IF_ERROR(o.parcae.Validate());
         return std::unique_ptr<Policy>(std::make_unique<ParcaePolicy>(o.parcae));
       }},
      {"cost-capacity",
       [](const PolicyOptions& o) -> Result<std::unique_ptr<Policy>> {
         ARCHI_RETURN_IF_ERROR(o.cost_capacity.Validate());
         return std::unique_ptr<Policy>(std::make_unique<CostCapacityPolicy>(o.cost_capacity));
       }},
      {"harmony",
       [](const PolicyOptions& o) -> Result<std::unique_ptr<Policy>> {
         ARCHI_RETURN_IF_ERROR(o.harmony.Validate());
         return std::unique_ptr<Policy>(std::make_unique<HarmonyPolicy>(o.harmony));
       }},
      {"combined",
       [](const PolicyOptions& o) -> Result<std::unique_ptr<Policy>> {
         ARCHI_RETURN_IF_ERROR(o.combined.Validate());
         return std::unique_ptr<Policy>(std::make_unique<CombinedPolicy>(o.combined));
       }},
  };
  return *table;
}

}  // namespace

std::vector<std::string> PolicyNames() {
  std::vector<std::string> names;
  for (const auto& [n, _] : Table()) names.push_back(n);
  return names;
}

std::string PolicyNamesJoined(std::string_view sep) {
  std::string s;
  for (const auto& [n, _] : Table()) {
    if (!s.empty()) s += sep;
    s += n;
  }
  return s;
}

Result<std::unique_ptr<Policy>> MakePolicy(std::string_view name, const PolicyOptions& options) {
  auto it = Table().find(name);
  if (it == Table().end()) {
    return InvalidArgumentError("unknown policy '" + std::string(name) + "' (known: " +
                                PolicyNamesJoined(", ") + ")");
  }
  return it->second(options);
}

}  // namespace archi::policy
