#include "runtime/coordinator/state_journal.h"

#include <algorithm>

namespace archi::coordinator {

namespace pb = archi::proto;

Status ApplyStateRecord(const pb::StateRecord& r, size_t max_dead, pb::CoordinatorState* s) {
  auto find_live = [&](const std::string& id) {
    auto* live = s->mutable_live();
    return std::lower_bound(live->begin(), live->end(), id,
                            [](const pb::DurableWorker& w, const std::string& key) {
                              return w.spec().worker_id() < key;
                            });
  };
  switch (r.change_case()) {
    case pb::StateRecord::kWorker: {
      const std::string& id = r.worker().spec().worker_id();
      auto it = find_live(id);
      if (it != s->mutable_live()->end() && it->spec().worker_id() == id) {
        *it = r.worker();
      } else {
        // Insert keeping the order: append, then rotate into place.
        const auto pos = it - s->mutable_live()->begin();
        *s->add_live() = r.worker();
        auto* live = s->mutable_live();
        std::rotate(live->begin() + pos, live->end() - 1, live->end());
      }
      return Status::Ok();
    }
    case pb::StateRecord::kDead: {
      const std::string& id = r.dead().spec().worker_id();
      auto it = find_live(id);
      if (it != s->mutable_live()->end() && it->spec().worker_id() == id &&
          it->epoch() == r.dead().epoch()) {
        s->mutable_live()->erase(it);
      }
      *s->add_dead() = r.dead();
      if (static_cast<size_t>(s->dead_size()) > max_dead) {
        s->mutable_dead()->DeleteSubrange(0, s->dead_size() - static_cast<int>(max_dead));
      }
      return Status::Ok();
    }
    case pb::StateRecord::kCounters:
      *s->mutable_counters() = r.counters();
      return Status::Ok();
    case pb::StateRecord::kTargets:
      *s->mutable_targets() = r.targets();
      return Status::Ok();
    case pb::StateRecord::kPolicy:
      *s->mutable_policy() = r.policy();
      return Status::Ok();
    case pb::StateRecord::kRecovery: {
      const uint32_t i = r.recovery().index();
      if (i < static_cast<uint32_t>(s->recoveries_size())) {
        *s->mutable_recoveries(static_cast<int>(i)) = r.recovery().recovery();
      } else if (i == static_cast<uint32_t>(s->recoveries_size())) {
        *s->add_recoveries() = r.recovery().recovery();
      } else {
        return Status(StatusCode::kDataLoss,
                      "recovery record " + std::to_string(i) + " follows only " +
                          std::to_string(s->recoveries_size()));
      }
      return Status::Ok();
    }
    case pb::StateRecord::CHANGE_NOT_SET:
      break;
  }
  return Status(StatusCode::kDataLoss, "empty state record");
}

Result<pb::CoordinatorState> RebuildState(const WalContents& c, const std::string& pipeline,
                                          int num_stages, size_t max_dead, bool* found) {
  pb::CoordinatorState s;
  *found = c.snapshot.has_value() || !c.records.empty();
  if (c.snapshot && !s.ParseFromString(*c.snapshot)) {
    return Status(StatusCode::kDataLoss,
                  "state snapshot (lsn " + std::to_string(c.snapshot_lsn) + ") does not parse");
  }
  for (size_t i = 0; i < c.records.size(); ++i) {
    const uint64_t lsn = c.snapshot_lsn + 1 + i;
    pb::StateRecord r;
    if (!r.ParseFromString(c.records[i])) {
      return Status(StatusCode::kDataLoss,
                    "state record lsn " + std::to_string(lsn) + " does not parse");
    }
    if (Status a = ApplyStateRecord(r, max_dead, &s); !a.ok()) {
      return Status(StatusCode::kDataLoss,
                    "state record lsn " + std::to_string(lsn) + ": " + std::string(a.message()));
    }
  }
  if (!*found) return s;
  if (!s.pipeline().empty() && s.pipeline() != pipeline) {
    return FailedPreconditionError("the state is of pipeline '" + s.pipeline() + "', not '" +
                                   pipeline + "'");
  }
  if (s.num_stages() != 0 && s.num_stages() != num_stages) {
    return FailedPreconditionError("the state has " + std::to_string(s.num_stages()) +
                                   " stages; the plan has " + std::to_string(num_stages));
  }
  if (s.targets().replicas_size() != 0 && s.targets().replicas_size() != num_stages) {
    return FailedPreconditionError("the state has targets for " +
                                   std::to_string(s.targets().replicas_size()) +
                                   " stages; the plan has " + std::to_string(num_stages));
  }
  for (const auto& w : s.live()) {
    if (w.stage() >= num_stages) {
      return FailedPreconditionError("worker " + w.spec().worker_id() + " serves stage " +
                                     std::to_string(w.stage()) + "; the plan has " +
                                     std::to_string(num_stages));
    }
  }
  return s;
}

pb::PolicyState ToProto(const std::string& name, double slo_p99_ms,
                        const policy::PolicyMemory& m) {
  pb::PolicyState p;
  p.set_name(name);
  p.set_slo_p99_ms(slo_p99_ms);
  for (const auto& [stage, sm] : m.stages) {
    auto* s = p.add_stages();
    s->set_stage(stage);
    s->set_over_since_ms(sm.over_since_ms);
    s->set_under_since_ms(sm.under_since_ms);
    s->set_last_action_ms(sm.last_action_ms);
  }
  for (const auto& [k, v] : m.values) (*p.mutable_values())[k] = v;
  return p;
}

policy::PolicyMemory FromProto(const pb::PolicyState& p) {
  policy::PolicyMemory m;
  for (const auto& s : p.stages()) {
    policy::StageMemory sm;
    sm.over_since_ms = s.over_since_ms();
    sm.under_since_ms = s.under_since_ms();
    sm.last_action_ms = s.last_action_ms();
    m.stages[s.stage()] = sm;
  }
  for (const auto& [k, v] : p.values()) m.values[k] = v;
  return m;
}

}  // namespace archi::coordinator
