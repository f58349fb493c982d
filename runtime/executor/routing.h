// Routing weights per worker kind (issue 9, SetRoutingWeights live).
//
// Where the weights come from: the coordinator applies a policy's SetRoutingWeights by writing
// one key of the rendezvous store, RoutingKey(pipeline) = "archi/pipeline/<name>/routing", whose
// value is EncodeRoutingTable(table): {"stages": {"<stage>": {"<kind>": weight, ...}, ...}}
// (stage -1: every stage without its own entry). Every PipelineNode reads that key with its
// membership poll and routes to its downstream stage by the weights for that stage. The kind of a
// downstream replica is MemberInfo::kind, which a worker writes into its registry entry from
// WorkerOptions::kind (archi-worker --kind, the kind it declared at Register). "" and "default"
// are the same kind. No key, or no weights for a stage: routing as before (least loaded).
//
// KindPicker chooses among a node's downstream links:
//   - without weights: the least outstanding link with credit, round-robin among ties;
//   - with weights: the weighted kinds are those with weight > 0 that have a usable link (a link
//     with or without credit). None: every link is eligible, as without weights (a kind with
//     weight 0 gets traffic only when no weighted kind has a usable replica). Otherwise the kind
//     is chosen by smooth weighted round-robin among the weighted kinds that have a link with
//     credit (a deterministic interleaving: with weights 3:1 and no backpressure, exactly 3 of
//     every 4 batches go to the first kind), then the least outstanding link of that kind. When
//     no weighted kind has credit the batch waits (nullopt), even if an unweighted kind has some.
//     Under backpressure the share moves toward the kinds with credit (work-conserving among the
//     weighted kinds), so the split follows the weights when the replicas keep up.
//
// Threading: plain values; KindPicker is not thread-safe (the node calls it under its lock).
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "runtime/core/status.h"

namespace archi::executor {

using KindWeights = std::map<std::string, double>;  // by NormalKind(kind)
using RoutingTable = std::map<int, KindWeights>;    // by stage; -1: every stage

std::string RoutingKey(const std::string& pipeline);  // "archi/pipeline/<name>/routing"
// "" -> "default"; otherwise the kind as is.
std::string NormalKind(const std::string& kind);
std::string EncodeRoutingTable(const RoutingTable& table);
// kInvalidArgument for malformed JSON or a negative / non-finite weight.
Result<RoutingTable> DecodeRoutingTable(const std::string& json);
// The weights for `stage`: its own entry, else the -1 entry, else none.
KindWeights WeightsForStage(const RoutingTable& table, int stage);

struct RouteCandidate {
  std::string kind;  // the peer's kind (normalised by the picker)
  int outstanding = 0;
  bool has_credit = true;  // outstanding below the per-link limit
};

class KindPicker {
 public:
  // Replaces the weights; the round-robin state restarts when they differ from the current ones.
  void SetWeights(KindWeights weights);
  const KindWeights& weights() const { return weights_; }
  // The candidate to send to (an index into `candidates`), or nullopt to wait for credit.
  // `rr` rotates the start of the scan (ties among equally loaded links).
  std::optional<size_t> Pick(const std::vector<RouteCandidate>& candidates, size_t rr);

 private:
  KindWeights weights_;
  std::map<std::string, double> current_;  // smooth weighted round-robin state per kind
};

}  // namespace archi::executor
