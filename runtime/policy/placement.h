// Placement that moves the least data (SpotServe): when a new configuration is chosen, map
// workers to stage positions so that as many already-loaded weights as possible are reused.
//
//   PlacementInput in;
//   in.workers = LoadedWeightsOf(state);                  // what each worker holds now
//   in.slots = {{0, 0, 16}, {0, 0, 16}, {1, 16, 32}};     // the new configuration's positions
//   Placement p = PlaceMinDataMovement(in);               // worker per slot, bytes reused/moved
//
// The core is MaxWeightAssignment: Kuhn-Munkres (Hungarian algorithm with row/column potentials
// and shortest augmenting paths), O(n^2 m) for an n x m matrix with n <= m, i.e. O(n^3) when
// square. Rectangular matrices are handled by transposing so the smaller side is matched
// completely; ties are broken deterministically (the same input gives the same assignment).
//
// Pure functions of their arguments; thread-safe.
#pragma once

#include <string>
#include <vector>

#include "runtime/policy/policy.h"

namespace archi::policy {

// Result of MaxWeightAssignment on an R x C matrix (row-major, every row C long).
struct Assignment {
  std::vector<int> row_to_col;  // per row: the matched column, or -1 (only when R > C)
  std::vector<int> col_to_row;  // per column: the matched row, or -1 (only when C > R)
  double total = 0;             // sum of weight[r][row_to_col[r]] over matched rows
  friend bool operator==(const Assignment&, const Assignment&) = default;
};

// A maximum-weight assignment: min(R, C) pairs, each row and each column at most once, with the
// largest total weight. Weights may be any finite doubles (negative ones included: the smaller
// side is always matched completely). An empty or ragged matrix gives an empty assignment
// (ragged: kInvalidArgument would be nicer, but this sits on hot paths; callers build it).
Assignment MaxWeightAssignment(const std::vector<std::vector<double>>& weight);

// [begin, end) of layers.
struct LayerRange {
  int begin = 0;
  int end = 0;
  friend bool operator==(const LayerRange&, const LayerRange&) = default;
};

// What a worker holds in memory now (one range per stage it serves; usually one).
struct LoadedWeights {
  WorkerId worker;
  std::vector<LayerRange> ranges;
  friend bool operator==(const LoadedWeights&, const LoadedWeights&) = default;
};

// One position of the new configuration: a replica of `stage` serving `layers`.
struct TargetSlot {
  int stage = 0;
  LayerRange layers;
  friend bool operator==(const TargetSlot&, const TargetSlot&) = default;
};

struct PlacementInput {
  std::vector<LoadedWeights> workers;  // candidates (serving or idle)
  std::vector<TargetSlot> slots;
  // Bytes of layer i; empty = every layer weighs 1 (the result then counts layers).
  std::vector<double> layer_bytes;
  friend bool operator==(const PlacementInput&, const PlacementInput&) = default;
};

struct SlotAssignment {
  int slot = 0;        // index into PlacementInput::slots
  WorkerId worker;     // empty when the slot could not be filled (fewer workers than slots)
  double reused = 0;   // bytes of the slot's layers the worker already holds
  double to_load = 0;  // bytes it must fetch (the whole slot when it stays empty)
  friend bool operator==(const SlotAssignment&, const SlotAssignment&) = default;
};

struct Placement {
  std::vector<SlotAssignment> slots;  // one per slot, in slot order
  std::vector<WorkerId> unused;       // workers given no slot, in input order
  double reused = 0;                  // total bytes reused
  double to_load = 0;                 // total bytes to fetch (filled slots only)
  friend bool operator==(const Placement&, const Placement&) = default;
};

// Bytes of `slot` already held by `w` (overlap of its ranges with the slot's layers).
double ReusableBytes(const LoadedWeights& w, const TargetSlot& slot,
                     const std::vector<double>& layer_bytes);

// Maps workers to slots maximising the reused bytes (equivalently minimising the bytes loaded,
// since every filled slot loads its size minus what it reuses). With more slots than workers,
// the slots left empty are those whose filling would reuse the least.
Placement PlaceMinDataMovement(const PlacementInput& in);

// What every replica of `state` holds: its stage's layer range. Idle workers hold nothing.
// Draining replicas are left out (they are leaving).
std::vector<LoadedWeights> LoadedWeightsOf(const ClusterState& state);

}  // namespace archi::policy
