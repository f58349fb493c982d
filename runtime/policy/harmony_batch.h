// Multi-SLO batching on CPU and GPU units (HarmonyBatch, Chen et al., IWQoS 2024).
//
// Applications (each a request rate and a latency SLO) are grouped; each group gets one unit
// kind (a CPU function with c cores, or a slice of g GB of a GPU) and one batch size b, chosen
// to minimise the cost per request while the group's tightest SLO holds:
//
//   CPU latency   avg(b, c) = g0_b * exp(-c / g1_b) + g2_b     (falls exponentially with cores;
//                 max(b, c) the same form with its own triple; one triple per batch size)
//   GPU latency   L(b) = l1 * b + l2 on the whole GPU; with g of its G GB (time-slicing):
//                 avg = G / g * L,  max = ((G - g) * ceil(L / (g * t)) * t + L) * (g < G ? 1.2 : 1)
//   cost/request  (avg latency * (resource price per second) + price per invocation) / b
//                 CPU: c * cpu_per_core_s + mem_gb(b) * mem_per_gb_s, mem_gb(b) = (a*b + m0)/1024
//                 GPU: g * gpu_per_gb_s + host_mem_gb * mem_per_gb_s
//   batch bound   a batch of b waits at most the timeout T = SLO - max latency, and in T at most
//                 floor(rate * T) requests arrive after the first: b <= floor(rate * T) + 1.
//
// Grouping (PlanMultiSloBatching) is the paper's two-stage merge over applications sorted by
// SLO, groups always contiguous in that order (a group's SLO is its tightest member's):
//   stage 1: walking the groups in SLO order, merge an adjacent pair of CPU groups when the
//            merged group costs less than the two apart (else move on to the next pair); a
//            merge after which a GPU unit is the cheaper choice for the merged group is taken
//            (if it costs less) and ends stage 1;
//   stage 2: repeatedly merge the adjacent pair (at least one on a GPU, the merge provisioned on a
//            GPU) that lowers the total cost the most; stop when no merge lowers it.
//
// Coefficients: ParseHarmonyModel / LoadHarmonyModel read the layout of HarmonyBatch's
// conf/model.json (shared/data/harmonybatch/conf/model.json: VGG19 on CPU functions and an A10).
// Default prices are the Alibaba Function Compute figures HarmonyBatch's cost model uses.
//
// Everything but LoadHarmonyModel (reads a file) is a pure function; all are thread-safe.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/status.h"

namespace archi::policy {

struct CpuLatencyModel {
  // Triples [g0, g1, g2] per batch size 1..N (index b-1); batch sizes past N are not modelled
  // and therefore never chosen on a CPU.
  std::vector<std::array<double, 3>> avg;
  std::vector<std::array<double, 3>> max;
  double mem_mb_per_batch = 0;  // memory = mem_mb_per_batch * b + mem_mb_base
  double mem_mb_base = 0;
  friend bool operator==(const CpuLatencyModel&, const CpuLatencyModel&) = default;
};

struct GpuLatencyModel {
  double l1 = 0;                          // seconds per request in the batch, whole GPU
  double l2 = 0;                          // seconds per batch, whole GPU
  double slice_s = 0.002;                 // time-slice length t
  double total_gb = 24;                   // G
  std::vector<int> mem_batch_thresholds;  // min GB for batch b: first i with b <= th[i] -> i+1
  double host_mem_mb = 0;                 // host memory billed with the GPU function
  friend bool operator==(const GpuLatencyModel&, const GpuLatencyModel&) = default;
};

struct HarmonyModel {
  CpuLatencyModel cpu;
  GpuLatencyModel gpu;
  friend bool operator==(const HarmonyModel&, const HarmonyModel&) = default;
};

// `json` in the layout of HarmonyBatch's conf/model.json; `model` the top-level key ("VGG19").
// The GPU entry used is the first one that is an object with l1/l2/t/G (e.g. "A10").
// kInvalidArgument naming the missing or malformed field.
Result<HarmonyModel> ParseHarmonyModel(std::string_view json, std::string_view model);
// Reads `path` and parses it (kNotFound if unreadable).
Result<HarmonyModel> LoadHarmonyModel(const std::string& path, std::string_view model);

struct HarmonyPrices {
  double cpu_per_core_s = 0.00009;
  double mem_per_gb_s = 0.000009;
  double gpu_per_gb_s = 0.00011;
  double per_invocation = 0.009 / 10000;
  friend bool operator==(const HarmonyPrices&, const HarmonyPrices&) = default;
};

// Latencies in seconds; +infinity where the model does not cover b (or b < 1, cores <= 0,
// g outside [1, G]).
double CpuAvgLatency(const CpuLatencyModel& m, int batch, double cores);
double CpuMaxLatency(const CpuLatencyModel& m, int batch, double cores);
double CpuMemGb(const CpuLatencyModel& m, int batch);
double GpuFullLatency(const GpuLatencyModel& m, int batch);
double GpuAvgLatency(const GpuLatencyModel& m, int batch, int gpu_gb);
double GpuMaxLatency(const GpuLatencyModel& m, int batch, int gpu_gb);
int GpuMinMemGb(const GpuLatencyModel& m, int batch);

// The batch bound: floor(rate_rps * timeout_s) + 1 (1 when either is <= 0).
int MaxBatchForTimeout(double rate_rps, double timeout_s);

enum class UnitKind { kCpu, kGpu };
std::string_view UnitKindName(UnitKind k);

// One provisioning choice for a group.
struct UnitConfig {
  bool feasible = false;
  UnitKind kind = UnitKind::kCpu;
  double cores = 0;  // CPU
  int gpu_gb = 0;    // GPU
  int batch = 0;
  double timeout_s = 0;  // SLO - max latency: how long the group's batcher may wait
  double avg_latency_s = 0;
  double max_latency_s = 0;
  double cost_per_request = 0;
  friend bool operator==(const UnitConfig&, const UnitConfig&) = default;
};

struct HarmonyOptions {
  HarmonyPrices prices;
  double cpu_cores_min = 0.5;  // grid of CPU sizes: min, min + step, ..., <= max
  double cpu_cores_max = 16;
  double cpu_cores_step = 0.5;
  int gpu_max_batch = 32;
  // GPU sizes searched: [max(gpu_gb_min, the batch's memory), gpu_gb_max or G when 0]. Fixed
  // node sizes (a simulator or cluster whose GPUs are not sliced per group) set both.
  int gpu_gb_min = 1;
  int gpu_gb_max = 0;
  friend bool operator==(const HarmonyOptions&, const HarmonyOptions&) = default;
};

// The cheapest feasible CPU (resp. GPU) configuration for a group with this total rate and SLO
// (feasible: max latency <= SLO and b within the batch bound). Ties go to the smaller batch,
// then the fewer cores / GB. `feasible` false when none is.
UnitConfig ProvisionCpu(const HarmonyModel& model, const HarmonyOptions& o, double rate_rps,
                        double slo_s);
UnitConfig ProvisionGpu(const HarmonyModel& model, const HarmonyOptions& o, double rate_rps,
                        double slo_s);
// The cheaper of the two (CPU on a tie).
UnitConfig Provision(const HarmonyModel& model, const HarmonyOptions& o, double rate_rps,
                     double slo_s);

struct App {
  std::string name;
  double rate_rps = 0;
  double slo_s = 0;
  friend bool operator==(const App&, const App&) = default;
};

struct BatchGroup {
  std::vector<int> apps;  // indices into the input, in SLO order
  double rate_rps = 0;    // sum of members' rates
  double slo_s = 0;       // tightest member SLO
  UnitConfig unit;
  double cost_per_s = 0;  // rate * cost per request (+inf when infeasible)
  friend bool operator==(const BatchGroup&, const BatchGroup&) = default;
};

struct MergeStep {
  int stage = 0;          // 1 or 2
  std::vector<int> left;  // apps of the two groups merged
  std::vector<int> right;
  double cost_before = 0;  // total cost per second of all groups before / after
  double cost_after = 0;
  UnitKind merged_kind = UnitKind::kCpu;
  friend bool operator==(const MergeStep&, const MergeStep&) = default;
};

struct BatchingPlan {
  std::vector<BatchGroup> groups;   // in SLO order
  double cost_per_s = 0;            // total
  double singleton_cost_per_s = 0;  // every application alone (the starting point)
  std::vector<MergeStep> history;   // merges in the order made
  friend bool operator==(const BatchingPlan&, const BatchingPlan&) = default;
};

// The two-stage merge above. Applications are sorted by SLO (ties by input index).
BatchingPlan PlanMultiSloBatching(const HarmonyModel& model, const HarmonyOptions& o,
                                  const std::vector<App>& apps);

}  // namespace archi::policy
