#include "runtime/executor/routing.h"

#include <cmath>
#include <nlohmann/json.hpp>

namespace archi::executor {

std::string RoutingKey(const std::string& pipeline) {
  return "archi/pipeline/" + pipeline + "/routing";
}

std::string NormalKind(const std::string& kind) { return kind.empty() ? "default" : kind; }

std::string EncodeRoutingTable(const RoutingTable& table) {
  nlohmann::json stages = nlohmann::json::object();
  for (const auto& [stage, weights] : table) {
    nlohmann::json w = nlohmann::json::object();
    for (const auto& [kind, weight] : weights) w[NormalKind(kind)] = weight;
    stages[std::to_string(stage)] = std::move(w);
  }
  return nlohmann::json{{"stages", std::move(stages)}}.dump();
}

Result<RoutingTable> DecodeRoutingTable(const std::string& json) {
  try {
    const auto j = nlohmann::json::parse(json);
    RoutingTable table;
    for (const auto& [stage, weights] : j.at("stages").items()) {
      size_t used = 0;
      const int s = std::stoi(stage, &used);
      if (used != stage.size() || s < -1) {
        return InvalidArgumentError("routing table: bad stage '" + stage + "'");
      }
      KindWeights& out = table[s];
      for (const auto& [kind, weight] : weights.items()) {
        const double w = weight.get<double>();
        if (!std::isfinite(w) || w < 0) {
          return InvalidArgumentError("routing table: weight of '" + kind + "' at stage " + stage +
                                      " must be finite and >= 0");
        }
        out[NormalKind(kind)] += w;
      }
    }
    return table;
  } catch (const std::exception& e) {
    return InvalidArgumentError(std::string("routing table: ") + e.what());
  }
}

KindWeights WeightsForStage(const RoutingTable& table, int stage) {
  if (auto it = table.find(stage); it != table.end()) return it->second;
  if (auto it = table.find(-1); it != table.end()) return it->second;
  return {};
}

void KindPicker::SetWeights(KindWeights weights) {
  KindWeights normal;
  for (const auto& [kind, w] : weights) normal[NormalKind(kind)] += w;
  if (normal == weights_) return;
  weights_ = std::move(normal);
  current_.clear();
}

std::optional<size_t> KindPicker::Pick(const std::vector<RouteCandidate>& candidates, size_t rr) {
  const size_t n = candidates.size();
  if (n == 0) return std::nullopt;
  // Least outstanding with credit among the candidates `eligible` accepts; rr rotates ties.
  auto least = [&](auto&& eligible) -> std::optional<size_t> {
    std::optional<size_t> best;
    for (size_t k = 0; k < n; ++k) {
      const size_t i = (rr + k) % n;
      const RouteCandidate& c = candidates[i];
      if (!c.has_credit || !eligible(c)) continue;
      if (!best || c.outstanding < candidates[*best].outstanding) best = i;
    }
    return best;
  };
  auto any = [](const RouteCandidate&) { return true; };
  if (weights_.empty()) return least(any);

  // Weighted kinds with a usable link, and those of them with credit.
  std::map<std::string, bool> present;  // kind -> has credit somewhere
  for (const RouteCandidate& c : candidates) {
    const std::string kind = NormalKind(c.kind);
    auto w = weights_.find(kind);
    if (w == weights_.end() || !(w->second > 0)) continue;
    present[kind] = present[kind] || c.has_credit;
  }
  if (present.empty()) return least(any);  // no weighted kind is here: every replica serves

  double total = 0;
  for (const auto& [kind, credit] : present) {
    if (!credit) continue;
    current_[kind] += weights_.at(kind);
    total += weights_.at(kind);
  }
  if (total == 0) return std::nullopt;  // the weighted kinds are all busy: wait for them
  const std::string* chosen = nullptr;
  for (const auto& [kind, credit] : present) {
    if (!credit) continue;
    if (chosen == nullptr || current_[kind] > current_[*chosen]) chosen = &kind;
  }
  current_[*chosen] -= total;
  const std::string kind = *chosen;
  return least([&](const RouteCandidate& c) { return NormalKind(c.kind) == kind; });
}

}  // namespace archi::executor
