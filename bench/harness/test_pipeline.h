// What the multi-process tests (tests/pipeline, tests/coordinator) and the replay smoke test
// share: the small generated BERT they all serve, its plan file, and closed-loop token-id load.
// Thread safety: free functions without shared state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench/harness/load_generator.h"
#include "runtime/core/status.h"

namespace archi::harness {

// The test model: BERT encoder, 6 layers, hidden 64, 4 heads, FFN 128, vocab 500, 64 positions,
// random weights from seed 7 (runtime/model WriteRandomModel).
inline constexpr int kTestLayers = 6;
inline constexpr int kTestVocab = 500;
inline constexpr int kTestHidden = 64;
inline constexpr int kTestMaxTokens = 48;  // the plans' batching.max_tokens
Status WriteTestModel(const std::string& dir);

// Writes DIR/plan.yaml for pipeline `name` serving `model_dir`: stages ending at `stages_end`
// (consecutive from layer 0), max_batch, max_wait 2 ms, max_tokens kTestMaxTokens and the default
// request timeout. Returns the plan's path.
Result<std::string> WriteTestPlan(const std::string& dir, const std::string& name,
                                  const std::string& model_dir,
                                  const std::vector<int>& stages_end = {2, 4, 6},
                                  int max_batch = 8, int64_t default_timeout_ms = 20'000);

// `n` token-id sequences of 1..max_len ids below `vocab`, the same for the same seed.
std::vector<std::vector<int32_t>> RandomSequences(int n, uint64_t seed, int vocab = kTestVocab,
                                                  int max_len = kTestMaxTokens);

// Closed-loop load on `target`: `concurrency` outstanding requests cycling over 64 random
// sequences (seed 3) for `duration_s`, each with a 20 s deadline.
LoadOptions ClosedTestLoad(const std::string& target, double duration_s, int concurrency = 12);

}  // namespace archi::harness
