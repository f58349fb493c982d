// Trace loaders: every file in ../shared/data against the quick facts of its README, and small
// bad files written here (each must fail naming its file and line).
#include "bench/sim/traces.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

namespace archi::sim {
namespace {

namespace fs = std::filesystem;

const std::string kData = ARCHI_SHARED_DATA_DIR;

#define REQUIRE_DATA()                                                                  \
  do {                                                                                  \
    if (!fs::is_directory(kData)) GTEST_SKIP() << "no shared data at " << kData;        \
  } while (0)

struct ParcaeFacts {
  const char* file;
  int initial, min, max, final_count, add_rows, remove_rows, migration_rows, noop_rows,
      added_after_0, removed;
};
struct SegFacts {
  const char* file;
  int64_t end_ms;
  int initial, min, max, add_rows, remove_rows, other_rows;
};
struct ArrivalFacts {
  const char* file;
  size_t requests;
  double last_s;
  int prompt;
};
struct ProfileFacts {
  const char* file;
  const char* name;
  int layers, padded, hidden, max_tp;
  const char* tps;
  double init_min, init_max, incr_min, incr_max, init_comm, incr_comm, fix;
};

// Generated from ../shared/data/README.md quick-facts tables.
const ParcaeFacts kParcaeFacts[] = {
    {"bert/trace_hh_55_65.txt", 32, 20, 32, 29, 8, 9, 8, 35, 16, 19},
    {"bert/trace_hl_15_25.txt", 27, 23, 32, 23, 5, 6, 6, 43, 7, 11},
    {"bert/trace_lh_80_90.txt", 18, 11, 24, 17, 13, 8, 11, 28, 17, 18},
    {"bert/trace_ll_10_11.txt", 18, 14, 18, 14, 1, 3, 4, 52, 0, 4},
    {"gpt-1.5b/trace_hh_55_65.txt", 32, 20, 32, 29, 8, 9, 0, 43, 16, 19},
    {"gpt-1.5b/trace_hl_15_25.txt", 27, 23, 32, 23, 5, 6, 0, 49, 7, 11},
    {"gpt-1.5b/trace_lh_80_90.txt", 18, 11, 24, 17, 13, 8, 0, 39, 17, 18},
    {"gpt-1.5b/trace_ll_10_11.txt", 18, 14, 18, 14, 1, 3, 0, 56, 0, 4},
    {"gpt-6.7b/trace_hh_55_65.txt", 32, 20, 32, 29, 8, 9, 7, 36, 16, 19},
    {"gpt-6.7b/trace_hl_15_25.txt", 27, 23, 32, 23, 5, 6, 6, 43, 7, 11},
    {"gpt-6.7b/trace_lh_80_90.txt", 18, 12, 24, 18, 13, 7, 2, 38, 17, 17},
    {"gpt-6.7b/trace_ll_10_11.txt", 19, 15, 19, 15, 1, 3, 0, 56, 0, 4},
    {"resnet152/trace_hh_55_65.txt", 32, 20, 32, 29, 8, 9, 7, 36, 16, 19},
    {"resnet152/trace_hl_15_25.txt", 27, 23, 32, 23, 5, 6, 10, 39, 7, 11},
    {"resnet152/trace_lh_80_90.txt", 18, 12, 24, 18, 13, 7, 7, 33, 17, 17},
    {"resnet152/trace_ll_10_11.txt", 19, 15, 19, 15, 1, 3, 0, 56, 0, 4},
    {"vgg19/trace_hh_55_65.txt", 32, 20, 32, 29, 8, 9, 9, 34, 16, 19},
    {"vgg19/trace_hl_15_25.txt", 27, 23, 32, 23, 5, 6, 3, 46, 7, 11},
    {"vgg19/trace_lh_80_90.txt", 18, 11, 24, 17, 13, 8, 6, 33, 17, 18},
    {"vgg19/trace_ll_10_11.txt", 18, 14, 18, 14, 1, 3, 2, 54, 0, 4},
};
const SegFacts kSegFacts[] = {
    {"trace_0203.txt", 540000, 9, 6, 10, 5, 2, 0},
    {"trace_0203_ondemand.txt", 360000, 9, 6, 9, 3, 2, 0},
    {"trace_0203_real.txt", 720000, 9, 6, 10, 5, 2, 0},
    {"trace_0203_tight.txt", 450000, 9, 6, 10, 5, 2, 0},
    {"trace_0304.txt", 1320000, 7, 7, 10, 4, 2, 0},
    {"trace_0304_ondemand.txt", 1380000, 7, 7, 10, 4, 2, 0},
    {"trace_0304_real.txt", 1320000, 7, 7, 10, 4, 2, 0},
    {"trace_0304_tight.txt", 390000, 7, 7, 10, 4, 2, 0},
    {"trace_0304_workload.txt", 1140000, 7, 7, 12, 3, 1, 1},
    {"trace_0304_workload_pt.txt", 1140000, 7, 7, 14, 4, 1, 1},
    {"trace_0506.txt", 1440000, 10, 7, 10, 3, 2, 0},
    {"trace_0506_node3.txt", 1020000, 4, 4, 4, 1, 0, 0},
    {"trace_0506_node4.txt", 1020000, 4, 4, 4, 1, 0, 0},
    {"trace_0506_node6.txt", 1020000, 6, 6, 6, 1, 0, 0},
    {"trace_0506_node8.txt", 1020000, 8, 8, 8, 1, 0, 0},
    {"trace_0506_ondemand.txt", 720000, 10, 8, 10, 3, 2, 0},
    {"trace_0506_real.txt", 1020000, 10, 7, 10, 3, 2, 0},
    {"trace_0506_tight.txt", 330000, 10, 7, 10, 3, 2, 0},
    {"trace_0506_workload.txt", 1140000, 10, 8, 12, 4, 3, 1},
    {"trace_0506_workload_pt.txt", 1140000, 10, 8, 14, 4, 3, 1},
    {"trace_test.txt", 200000, 10, 10, 10, 1, 0, 0},
};
const ArrivalFacts kArrivalFacts[] = {
    {"query3072_tpt1.2_cv6.txt", 3072, 2556.4, 512},
    {"query3072_tpt3_cv6.txt", 3072, 1018.6, 512},
    {"query6144_tpt1.5_cv6.txt", 6144, 4099.5, 512},
    {"query6144_tpt1.8_cv6.txt", 6144, 3414.0, 512},
    {"query6144_tpt2.5_cv6.txt", 6144, 2458.0, 512},
    {"query6144_tpt2_cv6.txt", 6144, 3075.9, 512},
    {"query_realAr_cv6.txt", 681, 1141.6, 512},
    {"query_tpt0.1.txt", 1024, 10173.6, 512},
    {"query_tpt0.2.txt", 1024, 5099.2, 512},
    {"query_tpt0.25_cv6.txt", 1024, 4097.1, 512},
    {"query_tpt0.2_cv6.txt", 1024, 5112.2, 512},
    {"query_tpt0.3.txt", 1024, 3267.3, 512},
    {"query_tpt0.35_cv1.txt", 1024, 2926.5, 512},
    {"query_tpt0.35_cv12.txt", 1024, 2928.3, 512},
    {"query_tpt0.35_cv16.txt", 1024, 2917.3, 512},
    {"query_tpt0.35_cv2.txt", 1024, 2925.1, 512},
    {"query_tpt0.35_cv32.txt", 1024, 2933.6, 512},
    {"query_tpt0.35_cv4.txt", 1024, 2931.7, 512},
    {"query_tpt0.35_cv6.txt", 1024, 2925.0, 512},
    {"query_tpt0.4.txt", 1024, 2397.3, 512},
    {"query_tpt0.45_cv6.txt", 1024, 2282.3, 512},
    {"query_tpt0.4_cv1.txt", 1024, 2562.5, 512},
    {"query_tpt0.4_cv2.txt", 1024, 2560.5, 512},
    {"query_tpt0.4_cv4.txt", 1024, 2556.0, 512},
    {"query_tpt0.4_cv8.txt", 1024, 2557.7, 512},
    {"query_tpt0.55_cv6.txt", 1024, 1855.1, 512},
    {"query_tpt0.6.txt", 1024, 1768.2, 512},
    {"query_tpt0.6_cv6.txt", 1024, 1712.7, 512},
    {"query_tpt1.2_cv6.txt", 3072, 2559.0, 512},
    {"query_tpt1.5_cv6.txt", 1024, 681.9, 512},
    {"query_tpt1.txt", 1024, 1029.9, 512},
    {"query_tpt2.txt", 1024, 534.4, 512},
    {"query_tpt3.5.txt", 440, 125.0, 128},
    {"query_tpt4.txt", 400, 101.9, 512},
};
const ProfileFacts kProfileFacts[] = {
    {"T4-1x/megatron_345M_profile.json", "megatron_345M_profile", 24, 0, 0, 0, "1,2,4,8,16", 3.508, 49.107, 0.267, 4.38, 1.0, 0.03, 1.1},
    {"T4-1x/megatron_6.7B_profile.json", "megatron_6.7B_profile", 32, 0, 0, 0, "1,2,4,8,16", 19.289, 429.755, 1.943, 4.463, 5.3, 0.07, 1.1},
    {"T4-1x/megatron_h2048_profile.json", "megatron_h2048_profile", 24, 0, 0, 0, "1,2,4,8,16", 10.331, 130.568, 0.864, 4.498, 2.7, 0.04, 1.1},
    {"T4-1x/megatron_h2560_profile.json", "megatron_h2560_profile", 12, 0, 0, 0, "1,2,4,8,16", 11.85, 173.737, 1.175, 4.726, 3.1, 0.06, 1.1},
    {"T4-1x/megatron_h6144_profile.json", "megatron_h6144_profile", 44, 0, 0, 0, "1,2,4,8,16", 29.846, 986.37, 2.937, 10.436, 7.0, 0.1, 1.1},
    {"T4-4x/megatron_345M_profile.json", "megatron_345M_profile", 24, 24, 1024, 16, "1,2,4,8,16", 3.288, 28.293, 0.196, 1.338, 1.0, 0.03, 1.1},
    {"T4-4x/megatron_6.7B_profile.json", "megatron_6.7B_profile", 32, 36, 4096, 16, "1,2,4,8,16", 14.31, 404.76, 0.932, 4.435, 5.3, 0.07, 1.1},
    {"T4-4x/megatron_h2048_profile.json", "megatron_h2048_profile", 24, 24, 2048, 0, "1,2,4,8,16", 7.596, 101.715, 0.313, 1.543, 0.0, 0.0, 1.1},
    {"T4-4x/megatron_h2560_profile.json", "megatron_h2560_profile", 32, 36, 2560, 0, "1,2,4,8,16", 9.152, 161.376, 0.45, 1.743, 2.8, 0.05, 1.1},
    {"T4-4x/megatron_h6144_profile.json", "megatron_h6144_profile", 44, 48, 6144, 8, "1,2,4,8,16", 22.921, 912.695, 1.758, 9.919, 7.0, 0.1, 1.1},
    {"T4-4x/megatron_h7168_profile.json", "megatron_h7168_profile", 48, 48, 7168, 8, "1,2,4,8", 41.947, 1326.51, 2.263, 11.402, 8.0, 0.15, 1.1},
    {"V100-4x/20B.json", "opt-20B", 48, 0, 0, 0, "1,2,4", 10.345, 286.177, 0.655, 2.627, 33, 0.3, 1.06},
    {"V100-4x/345M.json", "opt-345M", 24, 24, 0, 0, "1,2,4", 0.698, 9.78, 0.099, 0.177, 5.0, 0.1, 1.1},
    {"V100-4x/6.7B.json", "opt-6.7B", 32, 0, 0, 0, "1,2,4", 4.653, 121.885, 0.365, 1.331, 26.14, 0.22, 1.06},
};

// Counts after each distinct timestamp's events.
std::vector<std::pair<int64_t, int>> Steps(const NodeTrace& t) {
  std::vector<std::pair<int64_t, int>> s;
  int n = 0;
  for (size_t i = 0; i < t.events.size(); ++i) {
    n += t.events[i].op == NodeOp::kAdd ? 1 : -1;
    if (i + 1 == t.events.size() || t.events[i + 1].time_ms != t.events[i].time_ms) {
      s.emplace_back(t.events[i].time_ms, n);
    }
  }
  return s;
}

// Rows of one op: runs of events with the same time and op.
int Rows(const NodeTrace& t, NodeOp op) {
  int rows = 0;
  for (size_t i = 0; i < t.events.size(); ++i) {
    if (t.events[i].op != op) continue;
    if (i == 0 || t.events[i - 1].time_ms != t.events[i].time_ms || t.events[i - 1].op != op) ++rows;
  }
  return rows;
}

TEST(TracesTest, EventLogsMatchReadme) {
  REQUIRE_DATA();
  auto p3 = LoadEventLog(kData + "/bamboo/traces/p3-trace.csv");
  ASSERT_TRUE(p3.ok()) << p3.status();
  EXPECT_EQ(p3->events.size(), 344u);
  EXPECT_EQ(p3->Adds(), 177u);
  EXPECT_EQ(p3->Removes(), 167u);
  EXPECT_EQ(p3->events.front().time_ms, 0);
  EXPECT_EQ(p3->end_ms, 40'920'000);
  EXPECT_EQ(p3->CountAt(0), 18);
  EXPECT_EQ(p3->MaxCount(), 32);
  EXPECT_EQ(p3->MinCount(), 10);
  EXPECT_EQ(p3->CountAt(p3->end_ms), 10);
  EXPECT_NEAR(p3->MeanCount(), 24.0, 0.05);
  EXPECT_EQ(Steps(*p3).size(), 163u);
  // First removal at 34 min.
  for (const NodeEvent& e : p3->events) {
    if (e.op == NodeOp::kRemove) {
      EXPECT_EQ(e.time_ms, 34 * 60'000);
      break;
    }
  }

  auto parcae = LoadEventLog(kData + "/parcae/liveput/traces/p3trace.csv");
  ASSERT_TRUE(parcae.ok()) << parcae.status();
  EXPECT_EQ(parcae->events, p3->events);  // the same file in two repositories

  auto g4 = LoadEventLog(kData + "/bamboo/traces/g4dn-trace.csv");
  ASSERT_TRUE(g4.ok()) << g4.status();
  EXPECT_EQ(g4->events.size(), 153u);
  EXPECT_EQ(g4->Adds(), 79u);
  EXPECT_EQ(g4->Removes(), 74u);
  EXPECT_EQ(g4->events.front().time_ms, 480'000);
  EXPECT_EQ(g4->end_ms, 38'760'000);
  EXPECT_EQ(g4->MaxCount(), 24);
  EXPECT_EQ(g4->CountAt(10 * 60'000), 21);
  EXPECT_EQ(g4->CountAt(g4->end_ms), 5);
  EXPECT_EQ(Steps(*g4).size(), 99u);
  auto g4s = LoadEventLog(kData + "/spotserve/elastic-switch/trace/trace_full/g4dn.csv");
  ASSERT_TRUE(g4s.ok()) << g4s.status();
  EXPECT_EQ(g4s->events, g4->events);
}

TEST(TracesTest, CountCsvIsTheRunningSumOfTheEventLog) {
  REQUIRE_DATA();
  auto counts = LoadCountCsv(kData + "/parcae/aws/traces/p3.csv");
  ASSERT_TRUE(counts.ok()) << counts.status();
  auto log = LoadEventLog(kData + "/parcae/liveput/traces/p3trace.csv");
  ASSERT_TRUE(log.ok()) << log.status();
  ASSERT_EQ(counts->points.size(), 344u);
  int n = 0;
  for (size_t i = 0; i < log->events.size(); ++i) {
    n += log->events[i].op == NodeOp::kAdd ? 1 : -1;
    ASSERT_EQ(counts->points[i].count, n) << "row " << i + 1;
    ASSERT_EQ(counts->points[i].time_ms, log->events[i].time_ms) << "row " << i + 1;
  }
  EXPECT_EQ(counts->Steps().size(), 163u);
  EXPECT_EQ(counts->Steps().front().count, 18);
  // As events (fresh names), it has the same step function as the log.
  NodeTrace ev = EventsFromCounts(*counts);
  EXPECT_EQ(Steps(ev), Steps(*log));
  auto auto_loaded = LoadNodeTrace(kData + "/parcae/aws/traces/p3.csv");
  ASSERT_TRUE(auto_loaded.ok()) << auto_loaded.status();
  EXPECT_EQ(Steps(*auto_loaded), Steps(*log));
}

TEST(TracesTest, GcpCountsAndTheBackwardsQuirk) {
  REQUIRE_DATA();
  const std::string v100 = kData + "/bamboo/traces/gcloud/v100x1-east1c.txt";
  auto strict = LoadGcpCounts(v100);
  ASSERT_FALSE(strict.ok());
  EXPECT_EQ(strict.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(strict.status().message().find(v100 + ":"), std::string_view::npos) << strict.status();
  EXPECT_NE(strict.status().message().find("backwards"), std::string_view::npos) << strict.status();

  auto tolerant = LoadGcpCounts(v100, LoadOptions{.tolerate_backwards_time = true});
  ASSERT_TRUE(tolerant.ok()) << tolerant.status();
  EXPECT_EQ(tolerant->points.size(), 1477u);
  EXPECT_EQ(tolerant->reordered, 15u);
  int mn = 1 << 30, mx = 0;
  std::set<int> distinct;
  for (const CountPoint& p : tolerant->points) {
    mn = std::min(mn, p.count);
    mx = std::max(mx, p.count);
    distinct.insert(p.count);
  }
  EXPECT_EQ(mn, 30);
  EXPECT_EQ(mx, 80);
  EXPECT_EQ(distinct.size(), 29u);
  // 2021-12-10 13:07:45 to 2021-12-11 13:17:58.
  EXPECT_EQ(tolerant->points.back().time_ms, (24 * 3600 + 10 * 60 + 13) * 1000);
  for (size_t i = 1; i < tolerant->points.size(); ++i) {
    ASSERT_LE(tolerant->points[i - 1].time_ms, tolerant->points[i].time_ms);
  }
  // Through LoadNodeTrace the quirk option travels too.
  EXPECT_FALSE(LoadNodeTrace(v100).ok());
  auto nt = LoadNodeTrace(v100, LoadOptions{.tolerate_backwards_time = true});
  ASSERT_TRUE(nt.ok()) << nt.status();
  EXPECT_EQ(nt->MaxCount(), 80);

  auto a100 = LoadGcpCounts(kData + "/bamboo/traces/gcloud/a100x1-east1b.txt");
  ASSERT_TRUE(a100.ok()) << a100.status();  // in time order: no option needed
  EXPECT_EQ(a100->points.size(), 268u);
  EXPECT_EQ(a100->reordered, 0u);
  NodeTrace a = EventsFromCounts(*a100);
  EXPECT_EQ(a.MaxCount(), 64);
  EXPECT_EQ(a.MinCount(), 17);
  // 2021-12-11 11:11:30 to 2021-12-12 14:12:36: 27.0 h.
  EXPECT_EQ(a100->points.back().time_ms, (27 * 3600 + 1 * 60 + 6) * 1000);
}

TEST(TracesTest, ParcaeSlicesMatchReadme) {
  REQUIRE_DATA();
  for (const ParcaeFacts& f : kParcaeFacts) {
    SCOPED_TRACE(f.file);
    auto s = LoadParcaeSlice(kData + "/parcae/aws/traces/" + f.file);
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_EQ(s->rows.size(), 60u);
    EXPECT_EQ(s->trace.end_ms, 3'600'000);
    int ops[4] = {0, 0, 0, 0};
    for (const SliceRow& r : s->rows) {
      ops[r.op == "add" ? 0 : r.op == "remove" ? 1 : r.op == "migration" ? 2 : 3]++;
      EXPECT_EQ(r.duration_ms, 60'000);
    }
    EXPECT_EQ(ops[0], f.add_rows);
    EXPECT_EQ(ops[1], f.remove_rows);
    EXPECT_EQ(ops[2], f.migration_rows);
    EXPECT_EQ(ops[3], f.noop_rows);
    EXPECT_EQ(s->trace.CountAt(0), f.initial);
    EXPECT_EQ(s->trace.MinCount(), f.min);
    EXPECT_EQ(s->trace.MaxCount(), f.max);
    EXPECT_EQ(s->trace.CountAt(s->trace.end_ms), f.final_count);
    size_t added_after_0 = 0;
    for (const NodeEvent& e : s->trace.events) added_after_0 += e.op == NodeOp::kAdd && e.time_ms > 0;
    EXPECT_EQ(added_after_0, static_cast<size_t>(f.added_after_0));
    EXPECT_EQ(s->trace.Removes(), static_cast<size_t>(f.removed));
    // dp x pp never exceeds the node count of the minute.
    for (const SliceRow& r : s->rows) {
      int n = s->trace.CountAt(r.time_ms);
      EXPECT_LE(r.throughput_opt.dp * r.throughput_opt.pp, n);
      EXPECT_LE(r.liveput_truth.dp * r.liveput_truth.pp, n);
      EXPECT_LE(r.liveput_predict.dp * r.liveput_predict.pp, n);
    }
  }
}

TEST(TracesTest, SpotServeSegmentsMatchReadme) {
  REQUIRE_DATA();
  const std::string dir = kData + "/spotserve/elastic-switch/trace/trace_seg/";
  for (const SegFacts& f : kSegFacts) {
    SCOPED_TRACE(f.file);
    auto t = LoadSpotServeSegment(dir + f.file);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->end_ms, f.end_ms);
    EXPECT_EQ(t->CountAt(0), f.initial);
    EXPECT_EQ(t->MinCount(), f.min);
    EXPECT_EQ(t->MaxCount(), f.max);
    EXPECT_EQ(Rows(*t, NodeOp::kAdd), f.add_rows);
    EXPECT_EQ(Rows(*t, NodeOp::kRemove), f.remove_rows);
    if (f.other_rows > 0) {
      ASSERT_EQ(t->required_tpt.size(), 2u);
      EXPECT_EQ(t->required_tpt[0], (std::pair<int64_t, double>{300'000, 0.8}));
      EXPECT_EQ(t->required_tpt[1], (std::pair<int64_t, double>{600'000, 0.6}));
    } else {
      EXPECT_TRUE(t->required_tpt.empty());
    }
  }
  auto n3 = LoadNodeTrace(dir + "trace_0506_node3.txt");
  auto n4 = LoadNodeTrace(dir + "trace_0506_node4.txt");
  ASSERT_TRUE(n3.ok() && n4.ok());
  EXPECT_EQ(n3->events, n4->events);  // identical files (README)
}

TEST(TracesTest, ArrivalsMatchReadme) {
  REQUIRE_DATA();
  const std::string dir = kData + "/spotserve/elastic-switch/trace/query/";
  size_t files = 0;
  for (const ArrivalFacts& f : kArrivalFacts) {
    SCOPED_TRACE(f.file);
    auto a = LoadArrivals(dir + f.file);
    ASSERT_TRUE(a.ok()) << a.status();
    ++files;
    EXPECT_EQ(a->time_s.size(), f.requests);
    EXPECT_NEAR(a->time_s.back(), f.last_s, 0.05);
    for (int len : a->prompt_len) ASSERT_EQ(len, f.prompt);
  }
  EXPECT_EQ(files, 34u);
  auto rates = LoadRates(dir + "arrival-rates.csv");
  ASSERT_TRUE(rates.ok()) << rates.status();
  ASSERT_EQ(rates->size(), 19u);
  double sum = 0, mn = 1e9, mx = 0;
  for (double r : *rates) sum += r, mn = std::min(mn, r), mx = std::max(mx, r);
  EXPECT_NEAR(mn, 0.5465, 1e-4);
  EXPECT_NEAR(mx, 0.7026, 1e-4);
  EXPECT_NEAR(sum / 19, 0.5976, 1e-4);
}

TEST(TracesTest, LatencyProfilesMatchReadme) {
  REQUIRE_DATA();
  const std::string dir = kData + "/spotserve/elastic-switch/profile/";
  for (const ProfileFacts& f : kProfileFacts) {
    SCOPED_TRACE(f.file);
    auto p = LoadLatencyProfile(dir + f.file);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(p->name, f.name);
    EXPECT_EQ(p->layer_num, f.layers);
    EXPECT_EQ(p->padded_layer_num, f.padded);
    EXPECT_EQ(p->hidden_size, f.hidden);
    EXPECT_EQ(p->max_tp, f.max_tp);
    std::string tps;
    double imn = 1e18, imx = 0, cmn = 1e18, cmx = 0;
    for (const auto& [tp, by_b] : p->tp) {
      tps += (tps.empty() ? "" : ",") + std::to_string(tp);
      EXPECT_EQ(by_b.size(), 4u);  // batch 1, 2, 4, 8
      for (const auto& [b, e] : by_b) {
        imn = std::min(imn, e.init), imx = std::max(imx, e.init);
        cmn = std::min(cmn, e.incr), cmx = std::max(cmx, e.incr);
      }
    }
    EXPECT_EQ(tps, f.tps);
    EXPECT_DOUBLE_EQ(imn, f.init_min);
    EXPECT_DOUBLE_EQ(imx, f.init_max);
    EXPECT_DOUBLE_EQ(cmn, f.incr_min);
    EXPECT_DOUBLE_EQ(cmx, f.incr_max);
    EXPECT_DOUBLE_EQ(p->pp_init_comm, f.init_comm);
    EXPECT_DOUBLE_EQ(p->pp_incr_comm, f.incr_comm);
    EXPECT_DOUBLE_EQ(p->final_fix_factor, f.fix);
    EXPECT_EQ(p->embed.size(), 4u);
  }
}

TEST(TracesTest, HarmonyModelMatchesReadme) {
  REQUIRE_DATA();
  auto m = LoadHarmonyModel(kData + "/harmonybatch/conf/model.json");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->model, "VGG19");
  EXPECT_EQ(m->gpu_kind, "A10");
  EXPECT_EQ(m->cpu_avg_exp.size(), 4u);
  EXPECT_NEAR(m->cpu_mem_a, 36.57, 0.01);
  EXPECT_NEAR(m->cpu_mem_b, 807.6, 0.1);
  EXPECT_NEAR(m->CpuMeanS(1, 1), 0.45, 0.01);
  EXPECT_NEAR(m->GpuMeanS(1, 24), 0.0038, 0.00005);
  EXPECT_NEAR(m->GpuMeanS(4, 24), 0.0088, 0.00005);
  EXPECT_NEAR(m->GpuMeanS(1, 12), 2 * 0.0038, 0.0001);
  EXPECT_EQ(m->gpu_G, 24);
  EXPECT_FALSE(LoadHarmonyModel(kData + "/harmonybatch/conf/model.json", "ResNet").ok());
}

// ---------------------------------------------------------------------------------------------
// Bad files

class BadFileTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& name, const std::string& content) {
    fs::path dir = fs::temp_directory_path() /
                   ("archi_sim_traces_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    std::string p = (dir / name).string();
    std::ofstream(p) << content;
    return p;
  }
  // The error is kInvalidArgument and names "path:line:" and contains `what`.
  static void ExpectError(const Status& s, const std::string& path, int line,
                          const std::string& what) {
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find(path + ":" + std::to_string(line) + ":"), std::string_view::npos)
        << s;
    EXPECT_NE(s.message().find(what), std::string_view::npos) << s;
  }
};

TEST_F(BadFileTest, EventLog) {
  std::string p = Write("unsorted.csv", "0,add,node1\n60000,add,node2\n30000,remove,node1\n");
  ExpectError(LoadEventLog(p).status(), p, 3, "before the previous");
  p = Write("negative.csv", "0,add,node1\n-60000,add,node2\n");
  ExpectError(LoadEventLog(p).status(), p, 2, "negative");
  p = Write("unknown.csv", "0,add,node1\n60000,remove,node7\n");
  ExpectError(LoadEventLog(p).status(), p, 2, "unknown node 'node7'");
  p = Write("twice.csv", "0,add,node1\n60000,add,node1\n");
  ExpectError(LoadEventLog(p).status(), p, 2, "already present");
  p = Write("missing.csv", "0,add,node1\n60000,add\n");
  ExpectError(LoadEventLog(p).status(), p, 2, "expected 3 fields");
  p = Write("nan.csv", "0,add,node1\n6e4x,add,node2\n");
  ExpectError(LoadEventLog(p).status(), p, 2, "not an integer");
  p = Write("op.csv", "0,add,node1\n\n60000,preempt,node1\n");
  ExpectError(LoadEventLog(p).status(), p, 3, "neither add nor remove");
  auto nf = LoadEventLog("/nonexistent/trace.csv");
  ASSERT_FALSE(nf.ok());
  EXPECT_EQ(nf.status().code(), StatusCode::kNotFound);
  // A good small file loads.
  p = Write("good.csv", "0,add,node1\n0,add,node2\n60000,remove,node1\n");
  auto ok = LoadEventLog(p);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->CountAt(60000), 1);
}

TEST_F(BadFileTest, Counts) {
  std::string p = Write("back.csv", "0,1\n60000,2\n30000,1\n");
  ExpectError(LoadCountCsv(p).status(), p, 3, "backwards");
  auto tol = LoadCountCsv(p, LoadOptions{.tolerate_backwards_time = true});
  ASSERT_TRUE(tol.ok()) << tol.status();
  EXPECT_EQ(tol->reordered, 1u);
  EXPECT_EQ(tol->points[1].time_ms, 30000);
  p = Write("neg.csv", "0,1\n60000,-2\n");
  ExpectError(LoadCountCsv(p).status(), p, 2, "negative node count");
  p = Write("gcp.txt", "2021-12-10, 13:07:45, 80\n2021-12-10, 13:08:45, eighty\n");
  ExpectError(LoadGcpCounts(p).status(), p, 2, "not an integer");
  p = Write("gcp2.txt", "2021-12-10, 13:07:45, 80\n2021-12-10, 25:08:45, 70\n");
  ExpectError(LoadGcpCounts(p).status(), p, 2, "HH:MM:SS");
  p = Write("gcp3.txt", "2021-12-10, 13:07:45, 80\n2021-12-10, 13:06:45, 70\n2021-12-10, 13:09:45, 60\n");
  ExpectError(LoadGcpCounts(p).status(), p, 2, "backwards");
  auto g = LoadGcpCounts(p, LoadOptions{.tolerate_backwards_time = true});
  ASSERT_TRUE(g.ok()) << g.status();
  // Time zero is the earliest row; sorted: 13:06:45 (70), 13:07:45 (80), 13:09:45 (60).
  ASSERT_EQ(g->points.size(), 3u);
  EXPECT_EQ(g->points[0].time_ms, 0);
  EXPECT_EQ(g->points[0].count, 70);
  EXPECT_EQ(g->points[1].time_ms, 60000);
  EXPECT_EQ(g->points[2].time_ms, 180000);
}

TEST_F(BadFileTest, JsonLines) {
  const std::string row0 =
      R"([0, "add", {"nodes": ["node-0", "node-1"], "duration": 60000, "throughput_opt_strategy": [1, 2], "liveput_truth_strategy": [1, 2], "liveput_predict_strategy": [1, 2]}])";
  std::string p = Write("slice_missing.txt", row0 + "\n" +
      R"([60000, "remove", {"nodes": ["node-0"], "throughput_opt_strategy": [1, 1], "liveput_truth_strategy": [1, 1], "liveput_predict_strategy": [1, 1]}])" "\n");
  ExpectError(LoadParcaeSlice(p).status(), p, 2, "missing field 'duration'");
  p = Write("slice_unknown.txt", row0 + "\n" +
      R"([60000, "remove", {"nodes": ["node-9"], "duration": 60000, "throughput_opt_strategy": [1, 1], "liveput_truth_strategy": [1, 1], "liveput_predict_strategy": [1, 1]}])" "\n");
  ExpectError(LoadParcaeSlice(p).status(), p, 2, "unknown node 'node-9'");
  p = Write("slice_strategy.txt", row0 + "\n" +
      R"([60000, "no-op", {"nodes": [], "duration": 60000, "throughput_opt_strategy": ["a", 1], "liveput_truth_strategy": [1, 1], "liveput_predict_strategy": [1, 1]}])" "\n");
  ExpectError(LoadParcaeSlice(p).status(), p, 2, "throughput_opt_strategy");
  p = Write("seg_unsorted.txt",
            "[0, \"add\", {\"nodes\": [\"node-0\"]}]\n[600000, \"add\", {\"nodes\": [\"node-1\"]}]\n"
            "[300000, \"remove\", {\"nodes\": [\"node-1\"]}]\n[900000, \"DONE\", {\"nodes\": []}]\n");
  ExpectError(LoadSpotServeSegment(p).status(), p, 3, "before the previous");
  p = Write("seg_json.txt", "[0, \"add\", {\"nodes\": [\"node-0\"]}]\n[600000, \"add\", {\"nodes\": [\n");
  ExpectError(LoadSpotServeSegment(p).status(), p, 2, "not valid JSON");
  p = Write("seg_tpt.txt",
            "[0, \"add\", {\"nodes\": [\"node-0\"]}]\n[1000, \"other\", {\"nodes\": [], \"required_tpt\": \"x\"}]\n");
  ExpectError(LoadSpotServeSegment(p).status(), p, 2, "required_tpt");
  p = Write("seg_neg.txt", "[-5, \"add\", {\"nodes\": [\"node-0\"]}]\n");
  ExpectError(LoadSpotServeSegment(p).status(), p, 1, "negative time");
  p = Write("seg_nodone.txt", "[0, \"add\", {\"nodes\": [\"node-0\"]}]\n");
  auto nd = LoadSpotServeSegment(p);
  ASSERT_FALSE(nd.ok());
  EXPECT_NE(nd.status().message().find("DONE"), std::string_view::npos);
}

TEST_F(BadFileTest, ArrivalsAndRates) {
  std::string p = Write("arr.txt", "0,1.5,512,0\n1,1.5,512,10\n");
  ExpectError(LoadArrivals(p).status(), p, 2, "not after the previous");
  p = Write("arr2.txt", "0,1.5,512,0\n1,abc,512,10\n");
  ExpectError(LoadArrivals(p).status(), p, 2, "not a number");
  p = Write("arr3.txt", "0,-1.5,512,0\n");
  ExpectError(LoadArrivals(p).status(), p, 1, "negative");
  p = Write("arr4.txt", "0,1.5,512,0\n1\n");
  ExpectError(LoadArrivals(p).status(), p, 2, "expected");
  p = Write("rates.csv", "0.5,0.6,nan\n");
  ExpectError(LoadRates(p).status(), p, 1, "not a number");
}

TEST_F(BadFileTest, CsvColumn) {
  std::string p = Write("col.csv", "index,latency_ms,code\n0,1.5,OK\n1,2.5,OK\n");
  auto ok = LoadCsvColumn(p, "latency_ms");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, (std::vector<double>{1.5, 2.5}));
  ExpectError(LoadCsvColumn(p, "p99").status(), p, 1, "no column 'p99'");
  p = Write("col2.csv", "index,latency_ms\n0,1.5\n1\n");
  ExpectError(LoadCsvColumn(p, "latency_ms").status(), p, 3, "missing field 'latency_ms'");
  p = Write("col3.csv", "index,latency_ms\n0,1.5\n1,fast\n");
  ExpectError(LoadCsvColumn(p, "latency_ms").status(), p, 3, "is not a number");
}

TEST_F(BadFileTest, JsonDocuments) {
  std::string p = Write("prof.json", "{\n  \"layer_num\": 2,\n  \"embed\": [1, 2],\n"
                                     "  \"pp_init_comm\": 1, \"pp_incr_comm\": 1, \"final_fix_factor\": 1,\n"
                                     "  \"tp-1\": {\"bsz-1\": {\"init\": \"slow\", \"incr\": 1}}\n}\n");
  auto s = LoadLatencyProfile(p);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find(p), std::string_view::npos);
  EXPECT_NE(s.status().message().find("tp-1.bsz-1.init' is not a number"), std::string_view::npos) << s.status();
  p = Write("prof2.json", "{\n  \"layer_num\": 2,\n  \"embed\": [1, 2]\n  \"x\": 1\n}\n");
  ExpectError(LoadLatencyProfile(p).status(), p, 4, "not valid JSON");
  p = Write("prof3.json", "{\"embed\": [1], \"pp_init_comm\": 1, \"pp_incr_comm\": 1, \"final_fix_factor\": 1}");
  auto m = LoadLatencyProfile(p);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("missing field 'layer_num'"), std::string_view::npos) << m.status();
  p = Write("hb.json", R"({"M": {"CPU": {"mem": [1, 2], "avg": {"Exponential": [[1, 1, 1]]}, "max": {"Exponential": [[1, 1, 1]]}}, "GPU": {"mem": 512, "gpu_mem": [0], "A10": {"l1": 0.1, "t": 0.002, "G": 24}}}})");
  auto h = LoadHarmonyModel(p);
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.status().message().find("missing field 'M.GPU.A10.l2'"), std::string_view::npos) << h.status();
}

}  // namespace
}  // namespace archi::sim
