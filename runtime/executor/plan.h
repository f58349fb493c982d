// PipelinePlan: how a model is split into pipeline stages and how the frontend batches requests.
// Read from a YAML file by the frontend (archi-frontend --plan FILE), published as JSON in the
// rendezvous store (key "archi/pipeline/<name>/plan") for workers, which only need the store
// address, the pipeline name and their stage index. Every field is documented in docs/config.md.
//
//   pipeline: demo                 # name: [A-Za-z0-9_-]{1,32}; used in world names and keys
//   model: build/models/minilm     # model directory (config.json, model.safetensors[, vocab.txt])
//   stages:                        # consecutive layer ranges [begin, end) covering every layer
//     - layers: [0, 2]
//     - layers: [2, 4]
//     - layers: [4, 6]
//   batching:
//     max_batch: 8                 # requests per micro-batch, 1..64 (wire header limit)
//     max_wait_ms: 5               # how long the first request of a batch waits for company
//     max_queue: 1024              # admitted, unanswered requests; beyond: RESOURCE_EXHAUSTED
//     max_tokens: 0                # longest sequence accepted (0: the model's max_positions)
//   routing:
//     max_inflight_per_link: 4     # unacknowledged micro-batches per (upstream, downstream) pair
//   request:
//     default_timeout_ms: 10000    # deadline of a request that carries no gRPC deadline
//
// A relative `model` path is resolved against the YAML file's directory first, then the current
// directory. Unknown keys are an error (typos must not be silently ignored).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/core/status.h"
#include "runtime/model/model.h"

namespace archi::executor {

inline constexpr int kMaxBatch = 64;

struct PipelinePlan {
  std::string name;
  std::string model_dir;
  std::vector<model::LayerRange> stages;  // resolved: end never -1 after Validate
  int max_batch = 8;
  int64_t max_wait_ms = 5;
  int max_queue = 1024;
  int max_tokens = 0;
  int max_inflight_per_link = 4;
  int64_t default_timeout_ms = 10'000;

  int num_stages() const { return static_cast<int>(stages.size()); }

  // Parse only (syntax, types, ranges of scalar fields); errors name the file, the key and its
  // YAML line. Call Validate once the model config is known. A missing file is kNotFound, every
  // other error kInvalidArgument. FromYaml tries a relative `model` against `base_dir` (empty:
  // kept as written); FromYamlFile uses the file's directory.
  static Result<PipelinePlan> FromYamlFile(const std::string& path);
  static Result<PipelinePlan> FromYaml(const std::string& text, const std::string& base_dir = "");
  static Result<PipelinePlan> FromJson(const std::string& json);
  std::string ToJson() const;

  // Checks the stages against the model: consecutive, non-empty, covering [0, num_layers);
  // resolves end -1; sets max_tokens to max_positions when 0 and rejects values above it.
  Status Validate(const model::ModelConfig& config);

  friend bool operator==(const PipelinePlan&, const PipelinePlan&);
};

// What a process serving a plan needs (frontend, coordinator): the plan read from `path`, its
// model directory made absolute (workers may run elsewhere), its model config read from
// <model>/config.json, and the plan validated against it. kNotFound when a file is missing.
struct ServingPlan {
  PipelinePlan plan;
  model::ModelConfig config;
};
Result<ServingPlan> LoadServingPlan(const std::string& path);

}  // namespace archi::executor
