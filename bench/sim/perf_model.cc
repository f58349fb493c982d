#include "bench/sim/perf_model.h"

#include <cmath>

namespace archi::sim {

double PerfModel::PipelineMs(int batch) const {
  double t = 0;
  for (const auto& s : stage_ms) t += s[batch - 1];
  return t + transfer_ms * static_cast<double>(stage_ms.size() > 0 ? stage_ms.size() - 1 : 0) +
         overhead_ms;
}

Result<PerfModel> PerfModel::FromStageTimes(const std::vector<double>& stage_p50_ms,
                                            double p99_over_p50, double overhead_ms,
                                            int max_batch) {
  if (stage_p50_ms.empty() || max_batch < 1) {
    return InvalidArgumentError("stages: no stage times, or max batch < 1");
  }
  if (!(p99_over_p50 >= 1) || !std::isfinite(p99_over_p50)) {
    return InvalidArgumentError("stages: p99 / p50 must be >= 1");
  }
  if (!(overhead_ms >= 0) || !std::isfinite(overhead_ms)) {
    return InvalidArgumentError("stages: the overhead must be >= 0");
  }
  // Lognormal multiplier with median m and p99 = m * ratio: sigma = ln(ratio) / z(0.99). The
  // stage's mean is its median * exp(sigma^2 / 2), the multiplier lognormal(-sigma^2/2, sigma)
  // has mean 1, so the product's median is the measured one.
  constexpr double kZ99 = 2.3263478740408408;
  const double sigma = std::log(p99_over_p50) / kZ99;
  PerfModel m;
  m.stage_ms.assign(stage_p50_ms.size(), std::vector<double>(static_cast<size_t>(max_batch)));
  std::string times;
  for (size_t s = 0; s < stage_p50_ms.size(); ++s) {
    if (!(stage_p50_ms[s] > 0) || !std::isfinite(stage_p50_ms[s])) {
      return InvalidArgumentError("stages: stage " + std::to_string(s) + " has no positive time");
    }
    for (double& v : m.stage_ms[s]) v = stage_p50_ms[s] * std::exp(0.5 * sigma * sigma);
    times += (s ? " / " : "") + std::to_string(stage_p50_ms[s]);
  }
  if (sigma > 0) m.noise = Distribution::Lognormal(-0.5 * sigma * sigma, sigma);
  m.overhead_ms = overhead_ms;
  m.description = "measured stage medians " + times + " ms (p99/p50 " +
                  std::to_string(p99_over_p50) + ", lognormal per batch)";
  if (overhead_ms > 0) {
    m.description += ", overhead outside the stages " + std::to_string(overhead_ms) + " ms";
  }
  return m;
}

PerfModel PerfModel::Constant(int stages, int max_batch, double stage_ms, double transfer_ms) {
  PerfModel m;
  m.description = "constant " + std::to_string(stage_ms) + " ms per stage and batch, transfer " +
                  std::to_string(transfer_ms) + " ms";
  m.stage_ms.assign(stages, std::vector<double>(max_batch, stage_ms));
  m.transfer_ms = transfer_ms;
  return m;
}

namespace {

// Value at batch b from the profiled powers of two, linear in between.
Result<double> Interp(const std::map<int, double>& by_b, int b) {
  auto hi = by_b.lower_bound(b);
  if (hi == by_b.end()) {
    return InvalidArgumentError("profile: batch " + std::to_string(b) + " is above the largest profiled (" +
                                std::to_string(by_b.rbegin()->first) + ")");
  }
  if (hi->first == b || hi == by_b.begin()) return hi->second;
  auto lo = std::prev(hi);
  double f = static_cast<double>(b - lo->first) / static_cast<double>(hi->first - lo->first);
  return lo->second + f * (hi->second - lo->second);
}

}  // namespace

Result<PerfModel> PerfModel::FromProfile(const LatencyProfile& p, int stages, int max_batch, int tp,
                                         int output_len) {
  if (stages < 1 || max_batch < 1 || output_len < 0) {
    return InvalidArgumentError("profile: stages and max batch must be >= 1, output_len >= 0");
  }
  if (stages > p.layer_num) {
    return InvalidArgumentError("profile " + p.name + ": " + std::to_string(stages) +
                                " stages for " + std::to_string(p.layer_num) + " layers");
  }
  auto t = p.tp.find(tp);
  if (t == p.tp.end()) {
    return InvalidArgumentError("profile " + p.name + ": no tp-" + std::to_string(tp));
  }
  std::map<int, double> per_layer, embed;
  for (const auto& [b, e] : t->second) per_layer[b] = e.init + output_len * e.incr;
  for (size_t i = 0; i < p.embed.size(); ++i) embed[1 << i] = p.embed[i];
  PerfModel m;
  m.description = "profile " + p.name + ", tp " + std::to_string(tp) + ", output " +
                  std::to_string(output_len) + " tokens, " + std::to_string(stages) + " stages";
  m.stage_ms.assign(stages, std::vector<double>(max_batch));
  for (int s = 0; s < stages; ++s) {
    int layers = p.layer_num / stages + (s < p.layer_num % stages ? 1 : 0);
    for (int b = 1; b <= max_batch; ++b) {
      ARCHI_ASSIGN_OR_RETURN(double l, Interp(per_layer, b));
      double ms = layers * l;
      if (s == 0 || s == stages - 1) {
        ARCHI_ASSIGN_OR_RETURN(double e, Interp(embed, b));
        ms += e * ((s == 0 && s == stages - 1) ? 2 : 1);
      }
      m.stage_ms[s][b - 1] = ms * p.final_fix_factor;
    }
  }
  m.transfer_ms = (p.pp_init_comm + output_len * p.pp_incr_comm) * p.final_fix_factor;
  return m;
}

Result<PerfModel> PerfModel::FromSamples(const std::vector<double>& samples_ms, int stages,
                                         int max_batch, FitReport* report) {
  if (stages < 1 || max_batch < 1) return InvalidArgumentError("fit: stages and max batch must be >= 1");
  ARCHI_ASSIGN_OR_RETURN(FitReport rep, FitBest(samples_ms));
  const Distribution d = rep.best().dist;
  const double mean = d.Mean();
  PerfModel m = Constant(stages, max_batch, mean / stages, 0);
  switch (d.kind) {
    case DistKind::kExponential: m.noise = Distribution::Exponential(1.0); break;
    case DistKind::kGamma: m.noise = Distribution::Gamma(d.a, 1.0 / d.a); break;
    case DistKind::kLognormal: m.noise = Distribution::Lognormal(-0.5 * d.b * d.b, d.b); break;
    case DistKind::kConstant: break;
  }
  m.description = "fitted " + d.ToString() + " over " + std::to_string(rep.n) +
                  " samples, mean split over " + std::to_string(stages) + " stages";
  if (report != nullptr) *report = std::move(rep);
  return m;
}

Result<PerfModel> PerfModel::FromHarmony(const HarmonyModel& h, int stages, int max_batch,
                                         const std::string& device, double gpu_gb, double vcpus) {
  if (stages < 1 || max_batch < 1) return InvalidArgumentError("harmony: stages and max batch must be >= 1");
  PerfModel m;
  m.stage_ms.assign(stages, std::vector<double>(max_batch));
  for (int b = 1; b <= max_batch; ++b) {
    double s = 0;
    if (device == "gpu") {
      s = h.GpuMeanS(b, gpu_gb);
    } else if (device == "cpu") {
      if (b > static_cast<int>(h.cpu_avg_exp.size())) {
        return InvalidArgumentError("harmony " + h.model + ": CPU model covers batch 1.." +
                                    std::to_string(h.cpu_avg_exp.size()));
      }
      if (vcpus <= 0) return InvalidArgumentError("harmony: vcpus must be > 0");
      s = h.CpuMeanS(b, vcpus);
    } else {
      return InvalidArgumentError("harmony: device '" + device + "' is neither gpu nor cpu");
    }
    for (int st = 0; st < stages; ++st) m.stage_ms[st][b - 1] = s * 1000.0 / stages;
  }
  m.description = "harmonybatch " + h.model + " on " +
                  (device == "gpu" ? h.gpu_kind + (gpu_gb > 0 ? " (" + std::to_string(gpu_gb) + " GB)" : "")
                                   : std::to_string(vcpus) + " vCPU") +
                  ", split over " + std::to_string(stages) + " stages";
  return m;
}

}  // namespace archi::sim
