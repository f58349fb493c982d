// Placement (SpotServe-style) and the Kuhn-Munkres assignment under it, on hand-checked cases and
// against exhaustive search on small random matrices.
#include "runtime/policy/placement.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

namespace archi::policy {
namespace {

using Matrix = std::vector<std::vector<double>>;

// Best total over every way to match min(R, C) pairs, by enumerating permutations of the larger
// side (fine for <= 7).
double BruteForceBest(const Matrix& w) {
  const int r = static_cast<int>(w.size());
  const int c = static_cast<int>(w[0].size());
  const bool rows_small = r <= c;
  const int small = rows_small ? r : c;
  const int large = rows_small ? c : r;
  std::vector<int> perm(large);
  std::iota(perm.begin(), perm.end(), 0);
  double best = -1e300;
  do {
    double t = 0;
    for (int i = 0; i < small; ++i) t += rows_small ? w[i][perm[i]] : w[perm[i]][i];
    best = std::max(best, t);
  } while (std::next_permutation(perm.begin(), perm.end()));
  return best;
}

// The assignment is a matching (each row and column once) whose total is what it claims.
void ExpectValidMatching(const Matrix& w, const Assignment& a) {
  const int r = static_cast<int>(w.size());
  const int c = static_cast<int>(w[0].size());
  ASSERT_EQ(static_cast<int>(a.row_to_col.size()), r);
  ASSERT_EQ(static_cast<int>(a.col_to_row.size()), c);
  int matched = 0;
  double total = 0;
  for (int i = 0; i < r; ++i) {
    const int j = a.row_to_col[i];
    if (j < 0) continue;
    ++matched;
    ASSERT_LT(j, c);
    EXPECT_EQ(a.col_to_row[j], i);
    total += w[i][j];
  }
  EXPECT_EQ(matched, std::min(r, c));
  EXPECT_DOUBLE_EQ(total, a.total);
}

TEST(MaxWeightAssignment, GreedyIsWrongHere) {
  // Greedy takes the largest entry (0,0)=3 and is left with (1,1)=0: total 3. The optimum crosses:
  // (0,1)+(1,0) = 2+2 = 4.
  const Matrix w = {{3, 2}, {2, 0}};
  const Assignment a = MaxWeightAssignment(w);
  ExpectValidMatching(w, a);
  EXPECT_EQ(a.row_to_col, (std::vector<int>{1, 0}));
  EXPECT_DOUBLE_EQ(a.total, 4);
}

TEST(MaxWeightAssignment, ThreeByThreeHandChecked) {
  // Rows 0 and 1 both prefer column 0 (9 vs 8): giving it to row 1 (8) lets row 0 take
  // column 2 (7): 8+7+... Enumerated by hand: the six permutations total
  // (0,1,2)=9+4+1=14 (0,2,1)=9+2+6=17 (1,0,2)=5+8+1=14 (1,2,0)=5+2+3=10 (2,0,1)=7+8+6=21
  // (2,1,0)=7+4+3=14 -> best 21 with rows -> columns (2,0,1).
  const Matrix w = {{9, 5, 7}, {8, 4, 2}, {3, 6, 1}};
  const Assignment a = MaxWeightAssignment(w);
  ExpectValidMatching(w, a);
  EXPECT_EQ(a.row_to_col, (std::vector<int>{2, 0, 1}));
  EXPECT_DOUBLE_EQ(a.total, 21);
}

TEST(MaxWeightAssignment, MoreColumnsThanRows) {
  // 2 rows, 4 columns: row 0 best alone at column 3 (10), row 1 also best at 3 (9); optimum gives
  // column 3 to row 0 and column 1 (8) to row 1: 18 (vs 9 + 6 = 15 the other way round).
  const Matrix w = {{1, 2, 6, 10}, {0, 8, 1, 9}};
  const Assignment a = MaxWeightAssignment(w);
  ExpectValidMatching(w, a);
  EXPECT_EQ(a.row_to_col, (std::vector<int>{3, 1}));
  EXPECT_EQ(a.col_to_row, (std::vector<int>{-1, 1, -1, 0}));
  EXPECT_DOUBLE_EQ(a.total, 18);
}

TEST(MaxWeightAssignment, MoreRowsThanColumns) {
  // The transpose of the case above: 4 rows, 2 columns; two rows stay unmatched.
  const Matrix w = {{1, 0}, {2, 8}, {6, 1}, {10, 9}};
  const Assignment a = MaxWeightAssignment(w);
  ExpectValidMatching(w, a);
  EXPECT_EQ(a.row_to_col, (std::vector<int>{-1, 1, -1, 0}));
  EXPECT_DOUBLE_EQ(a.total, 18);
}

TEST(MaxWeightAssignment, TiesAreDeterministic) {
  // Every permutation totals the same; the result must be a valid matching and the same each call.
  const Matrix w(4, std::vector<double>(4, 1.0));
  const Assignment a = MaxWeightAssignment(w);
  ExpectValidMatching(w, a);
  EXPECT_DOUBLE_EQ(a.total, 4);
  EXPECT_EQ(a, MaxWeightAssignment(w));
  // Partial ties: row 0 is indifferent between columns 0 and 1, row 1 only likes column 0.
  const Matrix t = {{5, 5}, {5, 0}};
  const Assignment b = MaxWeightAssignment(t);
  EXPECT_EQ(b.row_to_col, (std::vector<int>{1, 0}));
  EXPECT_DOUBLE_EQ(b.total, 10);
}

TEST(MaxWeightAssignment, NegativeWeightsStillMatchTheSmallerSide) {
  const Matrix w = {{-1, -5}, {-2, -3}};
  const Assignment a = MaxWeightAssignment(w);
  ExpectValidMatching(w, a);
  EXPECT_DOUBLE_EQ(a.total, -4);  // (0,0)+(1,1) = -4 beats (0,1)+(1,0) = -7
}

TEST(MaxWeightAssignment, EmptyAndRagged) {
  EXPECT_TRUE(MaxWeightAssignment({}).row_to_col.empty());
  const Assignment ragged = MaxWeightAssignment({{1, 2}, {3}});
  EXPECT_TRUE(ragged.row_to_col.empty());
  const Assignment no_cols = MaxWeightAssignment({{}, {}});
  EXPECT_EQ(no_cols.row_to_col, (std::vector<int>{-1, -1}));
}

TEST(MaxWeightAssignment, MatchesExhaustiveSearchOnRandomMatrices) {
  uint64_t x = 0x9E3779B97F4A7C15ull;
  auto next = [&] {  // xorshift64: a fixed sequence, so the test is the same every run
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  };
  for (int trial = 0; trial < 300; ++trial) {
    const int r = 1 + static_cast<int>(next() % 6);
    const int c = 1 + static_cast<int>(next() % 6);
    Matrix w(r, std::vector<double>(c));
    // Small integer weights make many ties, the hard case for a matcher.
    for (auto& row : w) {
      for (double& v : row) v = static_cast<double>(next() % 5);
    }
    const Assignment a = MaxWeightAssignment(w);
    ExpectValidMatching(w, a);
    EXPECT_DOUBLE_EQ(a.total, BruteForceBest(w)) << "trial " << trial;
  }
}

TEST(Placement, ReusesLoadedStagesWhenDepthChanges) {
  // Old configuration: 2 stages of 4 layers each ([0,4) on a,b; [4,8) on c,d), idle e.
  // New configuration: 4 stages of 2 layers, one replica each. Every old worker holds 2 layers of
  // exactly two new stages; the best placement reuses 2 layers on each of the 4 slots (8 of 8):
  // a/b take [0,2) and [2,4), c/d take [4,6) and [6,8); e stays unused.
  PlacementInput in;
  in.workers = {{"a", {{0, 4}}}, {"b", {{0, 4}}}, {"c", {{4, 8}}}, {"d", {{4, 8}}}, {"e", {}}};
  in.slots = {{0, {0, 2}}, {1, {2, 4}}, {2, {4, 6}}, {3, {6, 8}}};
  const Placement p = PlaceMinDataMovement(in);
  EXPECT_DOUBLE_EQ(p.reused, 8);
  EXPECT_DOUBLE_EQ(p.to_load, 0);
  EXPECT_EQ(p.unused, (std::vector<WorkerId>{"e"}));
  ASSERT_EQ(p.slots.size(), 4u);
  for (const SlotAssignment& s : p.slots) {
    const bool low = in.slots[s.slot].layers.end <= 4;
    if (low) {
      EXPECT_TRUE(s.worker == "a" || s.worker == "b") << s.worker;
    } else {
      EXPECT_TRUE(s.worker == "c" || s.worker == "d") << s.worker;
    }
  }
}

TEST(Placement, LayerBytesDecideAndGreedyWouldLose) {
  // Layer bytes 1, 10, 1 for layers 0, 1, 2. Worker x holds [0,3) (everything), y holds [2,3).
  // Slots: B = [1,3) and A = [0,2), 11 bytes each. x reuses 11 on either; y reuses 1 on B, 0 on A.
  // Giving the first slot (B) its best worker x leaves y on A: 11 + 0 = 11. The optimum is
  // y -> B, x -> A: 1 + 11 = 12.
  PlacementInput in;
  in.layer_bytes = {1, 10, 1};
  in.workers = {{"x", {{0, 3}}}, {"y", {{2, 3}}}};
  in.slots = {{0, {1, 3}}, {1, {0, 2}}};  // B first, so taking x for the first slot is greedy
  const Placement p = PlaceMinDataMovement(in);
  EXPECT_EQ(p.slots[0].worker, "y");
  EXPECT_EQ(p.slots[1].worker, "x");
  EXPECT_DOUBLE_EQ(p.reused, 12);
  EXPECT_DOUBLE_EQ(p.to_load, 10);  // y loads layer 1 (10 bytes) for slot B
  EXPECT_DOUBLE_EQ(p.slots[0].to_load, 10);
  EXPECT_DOUBLE_EQ(p.slots[1].to_load, 0);
}

TEST(Placement, MoreSlotsThanWorkersLeavesTheLeastReusableEmpty) {
  PlacementInput in;
  in.workers = {{"a", {{0, 2}}}};
  in.slots = {{0, {2, 4}}, {1, {0, 2}}, {2, {4, 6}}};
  const Placement p = PlaceMinDataMovement(in);
  EXPECT_EQ(p.slots[1].worker, "a");
  EXPECT_TRUE(p.slots[0].worker.empty());
  EXPECT_TRUE(p.slots[2].worker.empty());
  EXPECT_DOUBLE_EQ(p.slots[0].to_load, 2);  // an empty slot still needs all of its layers
  EXPECT_DOUBLE_EQ(p.to_load, 0);           // but the total counts filled slots only
  EXPECT_DOUBLE_EQ(p.reused, 2);
}

TEST(Placement, LoadedWeightsOfState) {
  ClusterState s;
  Stage s0{0, 0, 3, {}};
  s0.replicas.push_back(Replica{Worker{"w1", "h1", "", 1, 0}, ReplicaState::kReady, 0});
  s0.replicas.push_back(Replica{Worker{"w2", "h2", "", 1, 0}, ReplicaState::kDraining, 0});
  Stage s1{1, 3, 5, {}};
  s1.replicas.push_back(Replica{Worker{"w3", "h3", "", 1, 0}, ReplicaState::kJoining, 0});
  s.stages = {s0, s1};
  s.idle = {Worker{"w4", "h4", "", 1, 0}};
  const std::vector<LoadedWeights> lw = LoadedWeightsOf(s);
  ASSERT_EQ(lw.size(), 3u);
  EXPECT_EQ(lw[0], (LoadedWeights{"w1", {{0, 3}}}));
  EXPECT_EQ(lw[1], (LoadedWeights{"w3", {{3, 5}}}));
  EXPECT_EQ(lw[2], (LoadedWeights{"w4", {}}));
}

}  // namespace
}  // namespace archi::policy
