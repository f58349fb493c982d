// Loaders for the trace formats in ../shared/data (see its README.md for each format):
//
//   LoadEventLog         time_ms,add|remove,nodeK              (bamboo p3/g4dn, parcae p3trace)
//   LoadCountCsv         time_ms,node_count                    (parcae aws/traces/p3.csv)
//   LoadGcpCounts        YYYY-MM-DD, HH:MM:SS, count           (bamboo gcloud/*.txt)
//   LoadParcaeSlice      [time_ms, op, {nodes, duration, *_strategy}] JSON Lines (parcae slices)
//   LoadSpotServeSegment [time_ms, op, {nodes, required_tpt?}] JSON Lines (spotserve trace_seg)
//   LoadNodeTrace        any of the above, recognised by its first line, as add/remove events
//   LoadArrivals         request_id,arrival_time_s,prompt_len,offset (spotserve query/*.txt)
//   LoadRates            one line of comma-separated req/s, one per minute (arrival-rates.csv)
//   LoadLatencyProfile   spotserve profile/*/*.json
//   LoadHarmonyModel     harmonybatch conf/model.json
//
// Every loader checks what it reads: a bad file (unsorted or negative times, a node removed
// that is not present or added twice, a missing field, a field that is not a number) gives
// kInvalidArgument "PATH:LINE: what is wrong"; a file that cannot be opened gives kNotFound.
// The one known quirk of the shared data (the GCP V100 file whose timestamps step back by up to
// a minute in 15 places) is an error by default; LoadOptions::tolerate_backwards_time accepts
// it by sorting the rows by time (stable, so rows with equal times keep their file order) and
// counts the rows that stepped back in CountSeries::reordered.
//
// Thread safety: free functions over value types; no shared state.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "runtime/core/status.h"

namespace archi::sim {

struct LoadOptions {
  // Accept timestamps that step backwards (sort by time instead of failing). Applies to
  // LoadGcpCounts and LoadCountCsv only: a node event log whose times go backwards has no
  // sensible reading.
  bool tolerate_backwards_time = false;
};

enum class NodeOp { kAdd, kRemove };

struct NodeEvent {
  int64_t time_ms = 0;
  NodeOp op = NodeOp::kAdd;
  std::string node;
  friend bool operator==(const NodeEvent&, const NodeEvent&) = default;
};

// Add/remove events in time order; a node is present between its add and its remove.
struct NodeTrace {
  std::string source;              // the file it came from
  std::vector<NodeEvent> events;   // sorted by time (file order within a timestamp)
  int64_t end_ms = 0;              // DONE row if the format has one, else the last event time
  // SpotServe workload segments: required throughput (req/s) from a time on.
  std::vector<std::pair<int64_t, double>> required_tpt;

  // Nodes present after every event at or before `t_ms` has been applied.
  int CountAt(int64_t t_ms) const;
  // Max / min of the running count over all distinct timestamps (after each timestamp's events).
  int MaxCount() const;
  int MinCount() const;
  // Time-weighted mean count over [first event, end_ms].
  double MeanCount() const;
  size_t Adds() const;
  size_t Removes() const;
};

Result<NodeTrace> LoadEventLog(const std::string& path);

struct CountPoint {
  int64_t time_ms = 0;
  int count = 0;
};
struct CountSeries {
  std::string source;
  std::vector<CountPoint> points;  // every row, sorted by time
  size_t reordered = 0;            // rows whose time was before the previous row's (tolerated)
  // The step function: rows sharing a timestamp collapse to the last one.
  std::vector<CountPoint> Steps() const;
};

Result<CountSeries> LoadCountCsv(const std::string& path, const LoadOptions& options = {});
// Times are ms since the first row (the file's time zone is not stated; only differences
// matter).
Result<CountSeries> LoadGcpCounts(const std::string& path, const LoadOptions& options = {});

// A count step function as add/remove events: a rise adds nodes named PREFIX<k> with fresh k,
// a fall removes the most recently added ones first (the trace does not say which went).
NodeTrace EventsFromCounts(const CountSeries& counts, const std::string& prefix = "node");

struct Strategy {
  int dp = 0;  // data-parallel pipelines
  int pp = 0;  // pipeline stages
  friend bool operator==(const Strategy&, const Strategy&) = default;
};
struct SliceRow {
  int64_t time_ms = 0;
  std::string op;  // add | remove | no-op | migration
  std::vector<std::string> nodes;
  int64_t duration_ms = 0;
  Strategy throughput_opt, liveput_truth, liveput_predict;
};
struct ParcaeSlice {
  std::vector<SliceRow> rows;
  NodeTrace trace;  // the add/remove rows as events; end_ms = last row time + its duration
};
Result<ParcaeSlice> LoadParcaeSlice(const std::string& path);

Result<NodeTrace> LoadSpotServeSegment(const std::string& path);

// Any node trace format above, recognised by its first non-empty line: "[...]" with a
// "duration" field -> Parcae slice, other "[...]" -> SpotServe segment, "a, b, c" with a date ->
// GCP counts, three CSV fields -> event log, two -> count CSV. Count formats become events via
// EventsFromCounts.
Result<NodeTrace> LoadNodeTrace(const std::string& path, const LoadOptions& options = {});

struct ArrivalTrace {
  std::string source;
  std::vector<double> time_s;   // strictly increasing
  std::vector<int> prompt_len;  // tokens
};
Result<ArrivalTrace> LoadArrivals(const std::string& path);

// One numeric column of a CSV file with a header row (e.g. latency_ms of archi-bench pipeline's
// pipeline_requests.csv): errors name file:line for a missing field or a non-number.
Result<std::vector<double>> LoadCsvColumn(const std::string& path, const std::string& column);

// Requests per second, one value per minute.
Result<std::vector<double>> LoadRates(const std::string& path);

// Per-layer latencies (ms) of a GPT-style model by tensor-parallel degree and batch size.
struct LatencyProfile {
  std::string name;
  int layer_num = 0;
  int padded_layer_num = 0;  // 0 when absent
  int hidden_size = 0;       // 0 when absent
  int max_tp = 0;            // 0 when absent
  std::vector<double> embed;  // for batch 1, 2, 4, 8
  double pp_init_comm = 0, pp_incr_comm = 0, final_fix_factor = 1;
  struct Entry {
    double init = 0;  // prefill, per layer
    double incr = 0;  // one decode step, per layer
  };
  std::map<int, std::map<int, Entry>> tp;  // tp degree -> batch size -> latencies
};
Result<LatencyProfile> LoadLatencyProfile(const std::string& path);

// HarmonyBatch latency model of one model (seconds; see the data README 4.1).
struct HarmonyModel {
  std::string model;
  double cpu_mem_a = 0, cpu_mem_b = 0;           // MB = a * batch + b
  std::vector<std::vector<double>> cpu_avg_exp;  // per batch 1..n: [g0, g1, g2]
  std::vector<std::vector<double>> cpu_max_exp;
  double gpu_mem_mb = 0;
  std::vector<double> gpu_mem_thresholds;
  std::string gpu_kind;  // "A10"
  double gpu_l1 = 0, gpu_l2 = 0, gpu_t = 0, gpu_G = 0;

  // Mean latency (s) on a CPU function with `vcpus` cores, batch in 1..cpu_avg_exp.size().
  double CpuMeanS(int batch, double vcpus) const;
  // Full-GPU latency (s): l1 * batch + l2; with `gb` of the G GB, stretched by G / gb.
  double GpuMeanS(int batch, double gb) const;
};
// `model` empty: the file must hold exactly one model.
Result<HarmonyModel> LoadHarmonyModel(const std::string& path, const std::string& model = "");

}  // namespace archi::sim
