// KindPicker and the routing table encoding (runtime/executor/routing.h).
#include "runtime/executor/routing.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace archi::executor {
namespace {

// Picks `n` times with every candidate's outstanding count unchanged between picks (replicas
// that keep up: each batch is acknowledged before the next), counting picks per kind.
std::map<std::string, int> CountKinds(KindPicker& picker, std::vector<RouteCandidate> c, int n) {
  std::map<std::string, int> counts;
  size_t rr = 0;
  for (int i = 0; i < n; ++i) {
    auto pick = picker.Pick(c, rr);
    if (!pick) {
      ++counts["<wait>"];
      continue;
    }
    rr = *pick + 1;
    ++counts[NormalKind(c[*pick].kind)];
  }
  return counts;
}

TEST(KindPickerTest, SplitFollowsWeights) {
  KindPicker picker;
  picker.SetWeights({{"cheap", 0.75}, {"fast", 0.25}});
  // Two replicas of each kind.
  const std::vector<RouteCandidate> c = {
      {"fast", 0, true}, {"cheap", 0, true}, {"fast", 0, true}, {"cheap", 0, true}};
  const int n = 4000;
  auto counts = CountKinds(picker, c, n);
  EXPECT_EQ(counts["<wait>"], 0);
  EXPECT_NEAR(counts["cheap"] / static_cast<double>(n), 0.75, 0.01);
  EXPECT_NEAR(counts["fast"] / static_cast<double>(n), 0.25, 0.01);
}

TEST(KindPickerTest, SplitFollowsUnevenWeightsOverThreeKinds) {
  KindPicker picker;
  picker.SetWeights({{"a", 0.5}, {"b", 0.3}, {"c", 0.2}});
  const std::vector<RouteCandidate> c = {{"a", 0, true}, {"b", 0, true}, {"c", 0, true}};
  const int n = 1000;
  auto counts = CountKinds(picker, c, n);
  EXPECT_NEAR(counts["a"], 500, 10);
  EXPECT_NEAR(counts["b"], 300, 10);
  EXPECT_NEAR(counts["c"], 200, 10);
}

TEST(KindPickerTest, WithinAKindTheLeastLoadedReplica) {
  KindPicker picker;
  picker.SetWeights({{"cheap", 1.0}});
  const std::vector<RouteCandidate> c = {
      {"cheap", 3, true}, {"fast", 0, true}, {"cheap", 1, true}, {"cheap", 2, true}};
  auto pick = picker.Pick(c, 0);
  ASSERT_TRUE(pick.has_value());
  EXPECT_EQ(*pick, 2u);  // cheap with 1 outstanding; the idle fast replica has weight 0
}

TEST(KindPickerTest, ZeroWeightKindGetsNothingWhileAWeightedKindIsHealthy) {
  KindPicker picker;
  picker.SetWeights({{"cheap", 1.0}, {"fast", 0.0}});
  std::vector<RouteCandidate> c = {{"fast", 0, true}, {"cheap", 0, true}};
  auto counts = CountKinds(picker, c, 100);
  EXPECT_EQ(counts["cheap"], 100);
  EXPECT_EQ(counts["fast"], 0);
  // The cheap replica at its credit limit: the batch waits for it rather than go to fast.
  c[1].outstanding = 4;
  c[1].has_credit = false;
  EXPECT_FALSE(picker.Pick(c, 0).has_value());
}

TEST(KindPickerTest, FallsBackToEveryReplicaWhenNoWeightedKindIsHere) {
  KindPicker picker;
  picker.SetWeights({{"cheap", 1.0}});
  // The cheap kind vanished: the remaining replicas serve, least loaded first.
  const std::vector<RouteCandidate> c = {{"fast", 2, true}, {"", 1, true}};
  auto pick = picker.Pick(c, 0);
  ASSERT_TRUE(pick.has_value());
  EXPECT_EQ(*pick, 1u);
}

TEST(KindPickerTest, BusyWeightedKindLeavesTheShareToTheOtherWeightedKind) {
  KindPicker picker;
  picker.SetWeights({{"cheap", 0.75}, {"fast", 0.25}});
  const std::vector<RouteCandidate> c = {{"cheap", 4, false}, {"fast", 0, true}};
  auto counts = CountKinds(picker, c, 10);
  EXPECT_EQ(counts["fast"], 10);  // work-conserving among the weighted kinds
}

TEST(KindPickerTest, NoWeightsIsLeastLoadedRoundRobin) {
  KindPicker picker;
  const std::vector<RouteCandidate> c = {{"a", 0, true}, {"b", 0, true}, {"c", 1, true}};
  auto counts = CountKinds(picker, c, 100);
  EXPECT_EQ(counts["a"], 50);  // ties alternate; c has more outstanding
  EXPECT_EQ(counts["b"], 50);
  EXPECT_EQ(counts["c"], 0);
  EXPECT_FALSE(picker.Pick({{"a", 4, false}}, 0).has_value());
}

TEST(RoutingTableTest, RoundTripAndStageFallback) {
  RoutingTable t;
  t[-1] = {{"default", 1.0}};
  t[1] = {{"cheap", 0.6}, {"fast", 0.4}};
  auto back = DecodeRoutingTable(EncodeRoutingTable(t));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, t);
  EXPECT_EQ(WeightsForStage(*back, 1), t[1]);
  EXPECT_EQ(WeightsForStage(*back, 0), t[-1]);
  EXPECT_TRUE(WeightsForStage(RoutingTable{}, 0).empty());
  EXPECT_FALSE(DecodeRoutingTable("{\"stages\":{\"0\":{\"a\":-1}}}").ok());
  EXPECT_FALSE(DecodeRoutingTable("{\"stages\":{\"x\":{}}}").ok());
  EXPECT_FALSE(DecodeRoutingTable("not json").ok());
}

}  // namespace
}  // namespace archi::executor
