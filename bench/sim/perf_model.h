// Performance model of the simulator: how long a stage takes to serve a batch, and how long a
// batch's activations take to move from one stage to the next.
//
//   constant   every stage takes `stage_ms` per batch regardless of its size (tests, calibration
//              against one measured number)
//   profile    a SpotServe latency profile (data README 3.5): with `stages` stages the layers
//              are split as evenly as possible (the first stages take the remainder); stage s
//              serving a batch of b requests of `output_len` generated tokens takes
//                (layers_s * (init[tp][b] + output_len * incr[tp][b]) + embed[b] on the first and
//                 the last stage) * final_fix_factor
//              and a hand-over between stages (pp_init_comm + output_len * pp_incr_comm) *
//              final_fix_factor. Summed over the stages this is SpotServe's own estimate with one
//              micro-batch. Batch sizes between the profiled 1, 2, 4, 8 are interpolated
//              linearly; above 8 is an error.
//   fit        samples of a measured time (e.g. latency_ms of our own archi-bench pipeline
//              output at low load): the best of exponential/gamma/lognormal (fit.h) gives the
//              mean, split evenly over the stages, and the shape, as a per-batch multiplier with
//              mean 1 (`noise`); batch size does not change it (the samples already carry the
//              run's batching).
//   stages     measured per-stage service times (the workers' own compute timings, e.g. what
//              archi-bench replay reads from the coordinator after its calibration): stage s takes
//              its median, with a lognormal per-batch multiplier whose spread matches the measured
//              p99 / p50; whatever the unloaded end-to-end latency has beyond the stages
//              (frontend, RPC, batching wait) is `overhead_ms`, which occupies no replica.
//   harmony    a HarmonyBatch model (data README 4.1): the whole model takes l1 * b + l2 seconds
//              on a full GPU (stretched by G / gpu_gb on a slice) or the CPU formula at `vcpus`,
//              split evenly over the stages; no transfer time.
//
// The table is computed once (Build); lookups in the hot path are array reads.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "bench/sim/fit.h"
#include "bench/sim/traces.h"
#include "runtime/core/status.h"

namespace archi::sim {

struct PerfModel {
  std::string description;
  // stage_ms[s][b - 1]: stage s serving a batch of b (1..max_batch).
  std::vector<std::vector<double>> stage_ms;
  double transfer_ms = 0;
  // Time outside every stage (frontend intake and answer, RPC hops): added to each request's
  // end-to-end latency, occupies no replica.
  double overhead_ms = 0;
  // Per-batch service time multiplier with mean 1 (fit models); none: deterministic.
  std::optional<Distribution> noise;

  double StageMs(int stage, int batch) const { return stage_ms[stage][batch - 1]; }
  // Sum over the stages of a batch of b plus the hand-overs and the overhead: the unloaded
  // end-to-end latency.
  double PipelineMs(int batch) const;

  static PerfModel Constant(int stages, int max_batch, double stage_ms, double transfer_ms);
  static Result<PerfModel> FromProfile(const LatencyProfile& p, int stages, int max_batch, int tp,
                                       int output_len);
  // Fitted to measured samples (ms); `report` receives the fit table when not null.
  static Result<PerfModel> FromSamples(const std::vector<double>& samples_ms, int stages,
                                       int max_batch, FitReport* report = nullptr);
  // Median service time of each stage (ms, any batch size), the per-batch multiplier's spread
  // as p99 / p50 of the measured times (1: deterministic) and the overhead outside the stages.
  static Result<PerfModel> FromStageTimes(const std::vector<double>& stage_p50_ms,
                                          double p99_over_p50, double overhead_ms, int max_batch);
  // device "gpu" (gpu_gb of the GPU; 0 = all) or "cpu" (vcpus).
  static Result<PerfModel> FromHarmony(const HarmonyModel& m, int stages, int max_batch,
                                       const std::string& device, double gpu_gb, double vcpus);
};

}  // namespace archi::sim
