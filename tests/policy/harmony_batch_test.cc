// HarmonyBatch multi-SLO batching: the latency/cost model, the batch bound, provisioning and the
// two-stage merge, on a synthetic model whose every number can be checked by hand, and on the
// real coefficients (shared/data/harmonybatch/conf/model.json).
#include "runtime/policy/harmony_batch.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace archi::policy {
namespace {

// CPU: latency independent of cores (g0 = 0): 0.10, 0.15, 0.20, 0.25 s for batch 1..4, avg = max;
// one size (1 core), 1 GB of memory at any batch. GPU: whole device only (G = 1 GB, no slicing):
// L(b) = 0.01 b + 0.2 s. Prices: 1 per core-second, 1 per GPU GB-second, nothing else.
// So cost/request: CPU 0.1/1, 0.15/2 = 0.075, 0.2/3 = 0.0667, 0.25/4 = 0.0625; GPU 0.01 + 0.2/b.
HarmonyModel ToyModel() {
  HarmonyModel m;
  m.cpu.avg = {{0, 1, 0.10}, {0, 1, 0.15}, {0, 1, 0.20}, {0, 1, 0.25}};
  m.cpu.max = m.cpu.avg;
  m.cpu.mem_mb_per_batch = 0;
  m.cpu.mem_mb_base = 1024;
  m.gpu.l1 = 0.01;
  m.gpu.l2 = 0.2;
  m.gpu.slice_s = 0.002;
  m.gpu.total_gb = 1;
  m.gpu.mem_batch_thresholds = {};  // every batch fits in 1 GB
  m.gpu.host_mem_mb = 0;
  return m;
}

HarmonyOptions ToyOptions() {
  HarmonyOptions o;
  o.prices = HarmonyPrices{1.0, 0.0, 1.0, 0.0};
  o.cpu_cores_min = 1;
  o.cpu_cores_max = 1;
  o.cpu_cores_step = 1;
  o.gpu_max_batch = 32;
  return o;
}

TEST(HarmonyBatch, BatchBound) {
  EXPECT_EQ(MaxBatchForTimeout(10, 0.25), 3);  // floor(2.5) + 1
  EXPECT_EQ(MaxBatchForTimeout(4, 0.5), 3);    // floor(2.0) + 1: exactly 2 arrive after the first
  EXPECT_EQ(MaxBatchForTimeout(10, 0.3), 4);   // floor(3.0) + 1 despite 0.3 not being exact
  EXPECT_EQ(MaxBatchForTimeout(1, 0.9), 1);
  EXPECT_EQ(MaxBatchForTimeout(0, 5), 1);    // no arrivals: only the first request
  EXPECT_EQ(MaxBatchForTimeout(100, 0), 1);  // no waiting allowed
  EXPECT_EQ(MaxBatchForTimeout(100, -1), 1);
}

TEST(HarmonyBatch, ProvisionRespectsSloAndBound) {
  const HarmonyModel m = ToyModel();
  const HarmonyOptions o = ToyOptions();
  // Rate 1, SLO 1: b = 2 would need floor(1 * (1 - 0.15)) + 1 = 1 >= 2: no. So CPU b = 1.
  UnitConfig c = ProvisionCpu(m, o, 1, 1);
  ASSERT_TRUE(c.feasible);
  EXPECT_EQ(c.batch, 1);
  EXPECT_DOUBLE_EQ(c.cost_per_request, 0.1);
  EXPECT_DOUBLE_EQ(c.timeout_s, 0.9);
  // Rate 3, SLO 1: b = 3 (timeout 0.8, floor(2.4) + 1 = 3); b = 4 (0.75, floor(2.25) + 1 = 3) no.
  c = ProvisionCpu(m, o, 3, 1);
  EXPECT_EQ(c.batch, 3);
  EXPECT_NEAR(c.cost_per_request, 0.2 / 3, 1e-12);
  // GPU at rate 6, SLO 1: b = 5 (L = 0.25, timeout 0.75, floor(4.5) + 1 = 5); b = 6 (L = 0.26,
  // floor(4.44) + 1 = 5) no. Cost 0.01 + 0.2 / 5 = 0.05.
  const UnitConfig g = ProvisionGpu(m, o, 6, 1);
  ASSERT_TRUE(g.feasible);
  EXPECT_EQ(g.batch, 5);
  EXPECT_NEAR(g.cost_per_request, 0.05, 1e-12);
  // Cheaper of the two: CPU at rate 6 is b = 4, 0.0625 > 0.05 -> GPU.
  EXPECT_EQ(Provision(m, o, 6, 1).kind, UnitKind::kGpu);
  EXPECT_EQ(Provision(m, o, 3, 1).kind, UnitKind::kCpu);  // GPU b = 3 costs 0.0767 > 0.0667
  // An SLO below every CPU latency (0.1 s at best): no CPU; 0.2 s: CPU b = 1 fits, the GPU
  // (L(1) = 0.21 s) does not, so the cheaper-of-two is the CPU.
  EXPECT_FALSE(ProvisionCpu(m, o, 5, 0.05).feasible);
  EXPECT_FALSE(Provision(m, o, 5, 0.05).feasible);
  EXPECT_FALSE(ProvisionGpu(m, o, 5, 0.2).feasible);
  EXPECT_EQ(Provision(m, o, 5, 0.2).kind, UnitKind::kCpu);
}

TEST(HarmonyBatch, StageOneMergesCpuGroupsWhileCostFalls) {
  // Three apps at 1 req/s, SLO 1 s: alone each is CPU b = 1 (0.1/s, total 0.3/s).
  // A+B (2 req/s): CPU b = 2 -> 0.15/s < 0.2: merged. AB+C (3 req/s): CPU b = 3 -> 0.2/s < 0.25:
  // merged. One CPU group, batch 3, 0.2/s.
  const std::vector<App> apps = {{"a", 1, 1}, {"b", 1, 1}, {"c", 1, 1}};
  const BatchingPlan p = PlanMultiSloBatching(ToyModel(), ToyOptions(), apps);
  EXPECT_NEAR(p.singleton_cost_per_s, 0.3, 1e-12);
  ASSERT_EQ(p.groups.size(), 1u);
  EXPECT_EQ(p.groups[0].apps, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(p.groups[0].unit.kind, UnitKind::kCpu);
  EXPECT_EQ(p.groups[0].unit.batch, 3);
  EXPECT_NEAR(p.cost_per_s, 0.2, 1e-12);
  ASSERT_EQ(p.history.size(), 2u);
  EXPECT_EQ(p.history[0].stage, 1);
  EXPECT_EQ(p.history[0].left, (std::vector<int>{0}));
  EXPECT_EQ(p.history[0].right, (std::vector<int>{1}));
  EXPECT_NEAR(p.history[0].cost_after, 0.25, 1e-12);
  EXPECT_EQ(p.history[1].left, (std::vector<int>{0, 1}));
  EXPECT_EQ(p.history[1].right, (std::vector<int>{2}));
}

TEST(HarmonyBatch, TightSloAppStaysAloneAndOrderIsBySlo) {
  // Input order c, a, b; SLO order a (0.12 s), then c and b (1 s, kept in input order). a can only
  // run b = 1 (b = 2 takes 0.15 s): a+c costs 2 x 0.1 = 0.2/s, the same as apart -> not merged.
  // c+b: 0.15 < 0.2 -> merged.
  const std::vector<App> apps = {{"c", 1, 1}, {"a", 1, 0.12}, {"b", 1, 1}};
  const BatchingPlan p = PlanMultiSloBatching(ToyModel(), ToyOptions(), apps);
  ASSERT_EQ(p.groups.size(), 2u);
  EXPECT_EQ(p.groups[0].apps, (std::vector<int>{1}));
  EXPECT_EQ(p.groups[0].unit.batch, 1);
  EXPECT_EQ(p.groups[1].apps, (std::vector<int>{0, 2}));  // c then b (equal SLO: input order)
  EXPECT_EQ(p.groups[1].unit.batch, 2);
  EXPECT_NEAR(p.cost_per_s, 0.25, 1e-12);
  ASSERT_EQ(p.history.size(), 1u);
}

TEST(HarmonyBatch, SwitchToGpuThenStageTwoAbsorbs) {
  // Three apps at 3 req/s, SLO 1 s: alone CPU b = 3 (0.2/s each; GPU would be 0.23/s).
  // Stage 1: A+B (6 req/s): CPU b = 4 -> 0.375/s, GPU b = 5 -> 0.30/s: a GPU is now cheaper and
  // 0.30 < 0.40 -> merged onto a GPU, stage 1 ends (C is not merged in stage 1).
  // Stage 2: AB+C (9 req/s): GPU b = 7 (L = 0.27, floor(9 x 0.73) + 1 = 7; b = 8: floor(6.48) + 1
  // = 7 < 8) -> 9 x (0.01 + 0.2/7) = 0.3471/s < 0.30 + 0.20 -> merged.
  const std::vector<App> apps = {{"a", 3, 1}, {"b", 3, 1}, {"c", 3, 1}};
  const BatchingPlan p = PlanMultiSloBatching(ToyModel(), ToyOptions(), apps);
  ASSERT_EQ(p.history.size(), 2u);
  EXPECT_EQ(p.history[0].stage, 1);
  EXPECT_EQ(p.history[0].merged_kind, UnitKind::kGpu);
  EXPECT_NEAR(p.history[0].cost_after, 0.5, 1e-12);
  EXPECT_EQ(p.history[1].stage, 2);
  EXPECT_EQ(p.history[1].right, (std::vector<int>{2}));
  ASSERT_EQ(p.groups.size(), 1u);
  EXPECT_EQ(p.groups[0].unit.kind, UnitKind::kGpu);
  EXPECT_EQ(p.groups[0].unit.batch, 7);
  EXPECT_NEAR(p.cost_per_s, 9 * (0.01 + 0.2 / 7), 1e-12);
  EXPECT_NEAR(p.singleton_cost_per_s, 0.6, 1e-12);
}

TEST(HarmonyBatch, ParseRejectsMalformed) {
  EXPECT_EQ(ParseHarmonyModel("{", "VGG19").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseHarmonyModel("{}", "VGG19").status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(ParseHarmonyModel(R"({"VGG19": {"CPU": {}, "GPU": {}}})", "VGG19").ok());
  const std::string no_gpu_device = R"({"M": {"CPU": {"mem": [1, 2],
      "avg": {"Exponential": [[1, 1, 1]]}, "max": {"Exponential": [[1, 1, 1]]}},
      "GPU": {"mem": 512}}})";
  EXPECT_FALSE(ParseHarmonyModel(no_gpu_device, "M").ok());
  const std::string ok = R"({"M": {"CPU": {"mem": [1, 2],
      "avg": {"Exponential": [[1, 1, 1]]}, "max": {"Exponential": [[2, 1, 1]]}},
      "GPU": {"mem": 512, "gpu_mem": [0, 4], "X": {"l1": 0.5, "l2": 0.25, "t": 0.01, "G": 8}}}})";
  auto m = ParseHarmonyModel(ok, "M");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->gpu.total_gb, 8);
  EXPECT_EQ(GpuMinMemGb(m->gpu, 1), 2);  // 1 > 0, 1 <= 4 -> index 1 -> 2 GB
  EXPECT_EQ(GpuMinMemGb(m->gpu, 5), 3);  // past every threshold -> len + 1
  EXPECT_EQ(CpuMaxLatency(m->cpu, 2, 1),
            std::numeric_limits<double>::infinity());  // b = 2 unmodelled
}

std::string SharedModelPath() {
  return std::string(ARCHI_SHARED_DATA_DIR) + "/harmonybatch/conf/model.json";
}

TEST(HarmonyBatchRealModel, CoefficientsGiveHandCheckedLatencies) {
  if (!std::filesystem::exists(SharedModelPath())) GTEST_SKIP() << "no " << SharedModelPath();
  auto m = LoadHarmonyModel(SharedModelPath(), "VGG19");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ(m->cpu.avg.size(), 4u);
  // 1.82607 * exp(-1 / 0.52837) + 0.18015 = 0.45530 s (data README: "about 0.45 s").
  EXPECT_NEAR(CpuAvgLatency(m->cpu, 1, 1), 0.455305, 1e-5);
  // 36.571 * 2 + 807.619 MB = 880.76 MB.
  EXPECT_NEAR(CpuMemGb(m->cpu, 2), 880.7619 / 1024, 1e-6);
  // A10: L(1) = 0.0016798 + 0.0021131 = 3.79 ms, L(4) = 8.83 ms.
  EXPECT_NEAR(GpuFullLatency(m->gpu, 1), 0.0037929, 1e-6);
  EXPECT_NEAR(GpuFullLatency(m->gpu, 4), 0.0088325, 1e-6);
  // 6 of 24 GB, b = 4: avg = 24/6 x 8.8325 ms = 35.33 ms; max: ceil(8.8325 / (6 x 2)) = 1 slice
  // round, (18 x 1 x 2 ms + 8.8325 ms) x 1.2 = 53.80 ms.
  EXPECT_NEAR(GpuAvgLatency(m->gpu, 4, 6), 0.0353299, 1e-6);
  EXPECT_NEAR(GpuMaxLatency(m->gpu, 4, 6), 0.0537990, 1e-6);
  EXPECT_NEAR(GpuMaxLatency(m->gpu, 4, 24), GpuFullLatency(m->gpu, 4), 1e-12);  // whole GPU
  EXPECT_EQ(GpuMinMemGb(m->gpu, 1), 2);  // gpu_mem = [0]: every batch needs 2 GB
}

TEST(HarmonyBatchRealModel, MergesOnlyLowerCostAndKeepEverySlo) {
  if (!std::filesystem::exists(SharedModelPath())) GTEST_SKIP() << "no " << SharedModelPath();
  auto m = LoadHarmonyModel(SharedModelPath(), "VGG19");
  ASSERT_TRUE(m.ok());
  const HarmonyOptions o;
  uint64_t x = 12345;
  auto next = [&] {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  };
  int merged_runs = 0;
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<App> apps;
    const int n = 2 + static_cast<int>(next() % 5);
    for (int i = 0; i < n; ++i) {
      const double rate = 0.5 + static_cast<double>(next() % 200) / 10.0;  // 0.5 .. 20.4 req/s
      const double slo = 0.3 + static_cast<double>(next() % 8) / 10.0;     // 0.3 .. 1.0 s
      apps.push_back(App{"app" + std::to_string(i), rate, slo});
    }
    const BatchingPlan p = PlanMultiSloBatching(*m, o, apps);
    EXPECT_LE(p.cost_per_s, p.singleton_cost_per_s * (1 + 1e-12));
    int last_stage = 1;
    for (const MergeStep& s : p.history) {
      EXPECT_LT(s.cost_after, s.cost_before);  // every merge lowers the total
      EXPECT_GE(s.stage, last_stage);          // stage 1 merges all come first
      last_stage = s.stage;
    }
    merged_runs += !p.history.empty();
    // Groups partition the apps, contiguous in SLO order; each keeps its tightest SLO and bound.
    double prev_slo = 0;
    size_t covered = 0;
    for (const BatchGroup& g : p.groups) {
      ASSERT_TRUE(g.unit.feasible);
      double rate = 0, slo = 1e9;
      for (int a : g.apps) {
        EXPECT_GE(apps[a].slo_s, prev_slo);
        prev_slo = apps[a].slo_s;
        rate += apps[a].rate_rps;
        slo = std::min(slo, apps[a].slo_s);
      }
      covered += g.apps.size();
      EXPECT_NEAR(g.rate_rps, rate, 1e-9);
      EXPECT_LE(g.unit.max_latency_s, slo + 1e-12);
      EXPECT_LE(g.unit.batch, MaxBatchForTimeout(rate, slo - g.unit.max_latency_s));
    }
    EXPECT_EQ(covered, apps.size());
  }
  EXPECT_GT(merged_runs, 0);  // the scenarios exercise merging at all
}

}  // namespace
}  // namespace archi::policy
