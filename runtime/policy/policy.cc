#include "runtime/policy/policy.h"

#include <cmath>
#include <cstdio>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>

namespace archi::policy {

std::string_view ReplicaStateName(ReplicaState s) {
  switch (s) {
    case ReplicaState::kJoining:
      return "joining";
    case ReplicaState::kReady:
      return "ready";
    case ReplicaState::kDraining:
      return "draining";
  }
  return "unknown";
}

Status Validate(const ClusterState& state) {
  std::unordered_set<std::string_view> ids;
  ids.reserve(state.idle.size() + 64);
  auto add_id = [&](const Worker& w, const std::string& where) -> Status {
    if (w.id.empty()) return InvalidArgumentError("worker with an empty id in " + where);
    if (!ids.insert(w.id).second) {
      return InvalidArgumentError("worker " + w.id + " appears twice (again in " + where + ")");
    }
    if (!(w.capacity > 0)) {
      return InvalidArgumentError("worker " + w.id + ": capacity must be > 0");
    }
    if (w.price_per_hour < 0) {
      return InvalidArgumentError("worker " + w.id + ": negative price_per_hour");
    }
    return Status::Ok();
  };
  for (size_t i = 0; i < state.stages.size(); ++i) {
    const Stage& s = state.stages[i];
    const std::string where = "stage " + std::to_string(s.index);
    if (i > 0 && s.index <= state.stages[i - 1].index) {
      return InvalidArgumentError("stages not sorted by unique index at " + where);
    }
    if (s.layer_begin < 0 || s.layer_end <= s.layer_begin) {
      return InvalidArgumentError(where + ": empty or negative layer range [" +
                                  std::to_string(s.layer_begin) + ", " +
                                  std::to_string(s.layer_end) + ")");
    }
    for (const Replica& r : s.replicas) {
      if (Status st = add_id(r.worker, where); !st.ok()) return st;
    }
  }
  for (const Worker& w : state.idle) {
    if (Status st = add_id(w, "the idle pool"); !st.ok()) return st;
  }
  return Status::Ok();
}

Status ValidatePlan(const Plan& plan, const ClusterState& state) {
  std::unordered_set<std::string_view> idle;
  idle.reserve(state.idle.size());
  for (const Worker& w : state.idle) idle.insert(w.id);
  // worker -> stage, for replicas that can still be drained.
  std::unordered_map<std::string_view, int> drainable;
  std::set<int> stages;
  for (const Stage& s : state.stages) {
    stages.insert(s.index);
    for (const Replica& r : s.replicas) {
      if (r.state != ReplicaState::kDraining) drainable.emplace(r.worker.id, s.index);
    }
  }
  std::unordered_set<std::string_view> used;
  auto check_weights = [](const Action& a, const std::vector<KindWeight>& ws) -> Status {
    std::set<std::string> kinds;
    double sum = 0;
    for (const KindWeight& w : ws) {
      if (!(w.weight >= 0) || !std::isfinite(w.weight)) {
        return InvalidArgumentError(ToString(a) + ": weight of " + w.kind + " not >= 0");
      }
      if (!kinds.insert(w.kind.empty() ? "default" : w.kind).second) {
        return InvalidArgumentError(ToString(a) + ": kind " + w.kind + " twice");
      }
      sum += w.weight;
    }
    if (!ws.empty() && std::abs(sum - 1.0) > 1e-6) {
      return InvalidArgumentError(ToString(a) + ": weights sum to " + std::to_string(sum));
    }
    return Status::Ok();
  };
  for (const Action& a : plan.actions) {
    if (const auto* r = std::get_if<SetRoutingWeights>(&a.op)) {
      if (r->stage != -1 && !stages.contains(r->stage)) {
        return InvalidArgumentError(ToString(a) + ": no stage " + std::to_string(r->stage));
      }
      ARCHI_RETURN_IF_ERROR(check_weights(a, r->weights));
      continue;
    }
    if (const auto* b = std::get_if<SetBatchingGroups>(&a.op)) {
      std::set<std::string> apps;
      for (const BatchingGroup& g : b->groups) {
        if (g.max_batch < 1 || !(g.timeout_ms >= 0) || !std::isfinite(g.timeout_ms)) {
          return InvalidArgumentError(ToString(a) + ": max_batch < 1 or timeout < 0");
        }
        for (const std::string& app : g.apps) {
          if (!apps.insert(app).second) {
            return InvalidArgumentError(ToString(a) + ": application " + app + " in two groups");
          }
        }
        ARCHI_RETURN_IF_ERROR(check_weights(a, g.route));
      }
      continue;
    }
    const bool add = std::holds_alternative<AddReplica>(a.op);
    const int stage = add ? std::get<AddReplica>(a.op).stage : std::get<DrainReplica>(a.op).stage;
    const std::string& worker =
        add ? std::get<AddReplica>(a.op).worker : std::get<DrainReplica>(a.op).worker;
    if (!stages.contains(stage)) {
      return InvalidArgumentError(ToString(a) + ": no stage " + std::to_string(stage));
    }
    if (!used.insert(worker).second) {
      return InvalidArgumentError(ToString(a) + ": worker " + worker + " in two actions");
    }
    if (add) {
      if (!idle.contains(worker)) {
        return InvalidArgumentError(ToString(a) + ": worker " + worker + " is not idle");
      }
    } else {
      auto it = drainable.find(worker);
      if (it == drainable.end() || it->second != stage) {
        return InvalidArgumentError(ToString(a) + ": worker " + worker +
                                    " is not a joining or ready replica of that stage");
      }
    }
  }
  return Status::Ok();
}

namespace {
std::string WeightsString(const std::vector<KindWeight>& ws) {
  std::string out;
  char buf[32];
  for (const KindWeight& w : ws) {
    std::snprintf(buf, sizeof buf, "%.3g", w.weight);
    out += (out.empty() ? "" : " ") + (w.kind.empty() ? std::string("default") : w.kind) + "=" + buf;
  }
  return out;
}
}  // namespace

std::string ToString(const Action& action) {
  std::string out = std::visit(
      [](const auto& op) {
        using T = std::decay_t<decltype(op)>;
        if constexpr (std::is_same_v<T, SetRoutingWeights>) {
          return "route s" + std::to_string(op.stage) + (op.mode.empty() ? "" : " " + op.mode) +
                 " " + WeightsString(op.weights);
        } else if constexpr (std::is_same_v<T, SetBatchingGroups>) {
          std::string s = "batch";
          char buf[48];
          for (const BatchingGroup& g : op.groups) {
            std::string apps;
            for (const std::string& a : g.apps) apps += (apps.empty() ? "" : ",") + a;
            std::snprintf(buf, sizeof buf, "]x%d/%.0fms", g.max_batch, g.timeout_ms);
            s += " [" + apps + buf;
            if (!g.route.empty()) s += "->{" + WeightsString(g.route) + "}";
          }
          return s;
        } else {
          const char* verb = std::is_same_v<T, AddReplica> ? "add" : "drain";
          return std::string(verb) + " s" + std::to_string(op.stage) + " " + op.worker;
        }
      },
      action.op);
  if (!action.reason.empty()) out += " (" + action.reason + ")";
  return out;
}

}  // namespace archi::policy
