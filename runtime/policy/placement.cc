#include "runtime/policy/placement.h"

#include <algorithm>
#include <limits>

namespace archi::policy {
namespace {

// Minimum-cost assignment of every row of `cost` (n rows, m >= n columns) to a distinct column.
// Kuhn-Munkres with potentials: rows are added one at a time; for each, a Dijkstra-like search
// over reduced costs (cost - u[row] - v[col] >= 0) finds the cheapest augmenting path from the
// new row to a free column, the potentials are shifted by the search's distances so reduced
// costs stay non-negative, and the path is flipped. O(n^2 m). Index 0 of the column arrays is a
// virtual column that holds the row being inserted. Ties go to the lowest column index.
std::vector<int> MinCostRowsToCols(const std::vector<std::vector<double>>& cost, int n, int m) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  std::vector<double> u(n + 1, 0.0), v(m + 1, 0.0);
  std::vector<int> owner(m + 1, 0);  // owner[c]: 1-based row matched to column c (0: free)
  std::vector<int> prev(m + 1, 0);   // prev[c]: previous column on the shortest path to c
  std::vector<double> dist(m + 1);
  std::vector<char> done(m + 1);
  for (int row = 1; row <= n; ++row) {
    owner[0] = row;
    int col = 0;  // the column whose owner is being expanded
    std::fill(dist.begin(), dist.end(), kInf);
    std::fill(done.begin(), done.end(), 0);
    while (true) {
      done[col] = 1;
      const int r = owner[col];
      double best = kInf;
      int best_col = -1;
      for (int c = 1; c <= m; ++c) {
        if (done[c]) continue;
        const double reduced = cost[r - 1][c - 1] - u[r] - v[c];
        if (reduced < dist[c]) {
          dist[c] = reduced;
          prev[c] = col;
        }
        if (dist[c] < best) {
          best = dist[c];
          best_col = c;
        }
      }
      // Shift potentials: visited columns (and their rows) by `best`, the frontier's distances
      // shrink by the same amount.
      for (int c = 0; c <= m; ++c) {
        if (done[c]) {
          u[owner[c]] += best;
          v[c] -= best;
        } else {
          dist[c] -= best;
        }
      }
      col = best_col;
      if (owner[col] == 0) break;  // a free column: augment
    }
    // Flip the path back to the virtual column.
    while (col != 0) {
      const int p = prev[col];
      owner[col] = owner[p];
      col = p;
    }
  }
  std::vector<int> row_to_col(n, -1);
  for (int c = 1; c <= m; ++c) {
    if (owner[c] != 0) row_to_col[owner[c] - 1] = c - 1;
  }
  return row_to_col;
}

}  // namespace

Assignment MaxWeightAssignment(const std::vector<std::vector<double>>& weight) {
  Assignment out;
  const int rows = static_cast<int>(weight.size());
  if (rows == 0) return out;
  const int cols = static_cast<int>(weight[0].size());
  for (const auto& row : weight) {
    if (static_cast<int>(row.size()) != cols) return out;
  }
  out.row_to_col.assign(rows, -1);
  out.col_to_row.assign(cols, -1);
  if (cols == 0) return out;
  // Maximise weight = minimise its negation; match the smaller side completely.
  const bool transpose = rows > cols;
  const int n = transpose ? cols : rows;
  const int m = transpose ? rows : cols;
  std::vector<std::vector<double>> cost(n, std::vector<double>(m));
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < m; ++j) cost[i][j] = transpose ? -weight[j][i] : -weight[i][j];
  }
  const std::vector<int> match = MinCostRowsToCols(cost, n, m);
  for (int i = 0; i < n; ++i) {
    const int r = transpose ? match[i] : i;
    const int c = transpose ? i : match[i];
    out.row_to_col[r] = c;
    out.col_to_row[c] = r;
    out.total += weight[r][c];
  }
  return out;
}

double ReusableBytes(const LoadedWeights& w, const TargetSlot& slot,
                     const std::vector<double>& layer_bytes) {
  double bytes = 0;
  for (const LayerRange& r : w.ranges) {
    const int lo = std::max(r.begin, slot.layers.begin);
    const int hi = std::min(r.end, slot.layers.end);
    for (int layer = lo; layer < hi; ++layer) {
      bytes += layer_bytes.empty()                            ? 1.0
               : layer < static_cast<int>(layer_bytes.size()) ? layer_bytes[layer]
                                                              : 0.0;
    }
  }
  return bytes;
}

namespace {
double SlotBytes(const TargetSlot& slot, const std::vector<double>& layer_bytes) {
  return ReusableBytes(LoadedWeights{"", {slot.layers}}, slot, layer_bytes);
}
}  // namespace

Placement PlaceMinDataMovement(const PlacementInput& in) {
  Placement out;
  const int nw = static_cast<int>(in.workers.size());
  const int ns = static_cast<int>(in.slots.size());
  out.slots.reserve(ns);
  for (int s = 0; s < ns; ++s) {
    out.slots.push_back(SlotAssignment{s, "", 0.0, SlotBytes(in.slots[s], in.layer_bytes)});
  }
  if (nw == 0 || ns == 0) {
    for (const LoadedWeights& w : in.workers) out.unused.push_back(w.worker);
    out.to_load = 0;  // nothing filled
    return out;
  }
  std::vector<std::vector<double>> weight(nw, std::vector<double>(ns));
  for (int w = 0; w < nw; ++w) {
    for (int s = 0; s < ns; ++s)
      weight[w][s] = ReusableBytes(in.workers[w], in.slots[s], in.layer_bytes);
  }
  const Assignment a = MaxWeightAssignment(weight);
  for (int w = 0; w < nw; ++w) {
    const int s = a.row_to_col[w];
    if (s < 0) {
      out.unused.push_back(in.workers[w].worker);
      continue;
    }
    SlotAssignment& sa = out.slots[s];
    sa.worker = in.workers[w].worker;
    sa.reused = weight[w][s];
    sa.to_load -= sa.reused;
    out.reused += sa.reused;
    out.to_load += sa.to_load;
  }
  return out;
}

std::vector<LoadedWeights> LoadedWeightsOf(const ClusterState& state) {
  std::vector<LoadedWeights> out;
  for (const Stage& st : state.stages) {
    for (const Replica& r : st.replicas) {
      if (r.state == ReplicaState::kDraining) continue;
      out.push_back(LoadedWeights{r.worker.id, {LayerRange{st.layer_begin, st.layer_end}}});
    }
  }
  for (const Worker& w : state.idle) out.push_back(LoadedWeights{w.id, {}});
  return out;
}

}  // namespace archi::policy
