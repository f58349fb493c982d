// The coordinator's durable state on top of the write-ahead log (runtime/coordinator/wal.h):
// records and snapshot are protobuf messages (proto/coordinator_state.proto). This file holds the
// pure part: how a record changes the state, and how snapshot + log become one state again. The
// coordinator (coordinator.cc) decides what to append and when.
//
// Thread safety: plain functions on values.
#pragma once

#include <cstddef>

#include "proto/coordinator_state.pb.h"
#include "runtime/coordinator/wal.h"
#include "runtime/core/status.h"
#include "runtime/policy/policy.h"

namespace archi::coordinator {

// Applies one change. Live workers stay sorted by id; the dead list keeps its newest `max_dead`.
// kDataLoss for a record that cannot follow the state (empty, a recovery index past the end).
Status ApplyStateRecord(const proto::StateRecord& record, size_t max_dead,
                        proto::CoordinatorState* state);

// Parses the snapshot and replays the records after it. `found` is false when the directory held
// neither (a first start). kDataLoss when a payload does not parse or a record does not apply
// (naming its lsn); kFailedPrecondition when the state belongs to another pipeline or another
// number of stages.
Result<proto::CoordinatorState> RebuildState(const WalContents& contents, const std::string& pipeline,
                                             int num_stages, size_t max_dead, bool* found);

proto::PolicyState ToProto(const std::string& name, double slo_p99_ms,
                           const policy::PolicyMemory& memory);
policy::PolicyMemory FromProto(const proto::PolicyState& p);

}  // namespace archi::coordinator
