#include "runtime/policy/policy.h"

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
  for (const Action& a : plan.actions) {
    const int stage = std::visit([](const auto& op) { return op.stage; }, a.op);
    const std::string& worker =
        std::visit([](const auto& op) -> const std::string& { return op.worker; }, a.op);
    if (!stages.contains(stage)) {
      return InvalidArgumentError(ToString(a) + ": no stage " + std::to_string(stage));
    }
    if (!used.insert(worker).second) {
      return InvalidArgumentError(ToString(a) + ": worker " + worker + " in two actions");
    }
    if (std::holds_alternative<AddReplica>(a.op)) {
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

std::string ToString(const Action& action) {
  std::string out = std::visit(
      [](const auto& op) {
        using T = std::decay_t<decltype(op)>;
        const char* verb = std::is_same_v<T, AddReplica> ? "add" : "drain";
        return std::string(verb) + " s" + std::to_string(op.stage) + " " + op.worker;
      },
      action.op);
  if (!action.reason.empty()) out += " (" + action.reason + ")";
  return out;
}

}  // namespace archi::policy
