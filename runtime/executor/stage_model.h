// StageModel: the compute of one pipeline stage. A stage owns a layer range of a model; the first
// stage takes token ids, the others take hidden states, and the last one returns sentence
// embeddings (mean pooling over each row's tokens, then L2 normalisation), so a pipeline of any
// depth returns what the whole model returns in one process (BertEncoder::Encode).
//
// Shapes (B rows, S positions, H hidden):
//   first stage input:  ids i32 [B, S] (padding past each row's length: any valid id, e.g. 0)
//   other stages input: hidden [B, S, H] in the model's dtype
//   output: hidden [B, S, H], or embeddings f32 [B, H] from the last stage
//   lengths: i32 [B], 1 <= lengths[b] <= S
//
// Threads: Run is const and may be called from several threads at once. It blocks until done.
#pragma once

#include <memory>
#include <string>

#include "runtime/core/status.h"
#include "runtime/core/tensor.h"
#include "runtime/model/bert.h"
#include "runtime/model/model.h"

namespace archi::executor {

enum class PayloadKind : uint8_t { kTokenIds = 1, kHidden = 2, kEmbeddings = 3 };
std::string_view PayloadKindName(PayloadKind kind);

class StageModel {
 public:
  // Loads layers `range` of the model in `model_dir` (only those tensors). `num_threads` > 0
  // bounds the kernels' threads (0: the kernels' default).
  static Result<std::unique_ptr<StageModel>> Load(const std::string& model_dir,
                                                  model::LayerRange range, int num_threads = 0);

  // Validates `input` against what this stage takes (kind, dtype, shape, lengths), then computes.
  // kInvalidArgument with the reason on a mismatch; never crashes on bad input.
  Result<Tensor> Run(const Tensor& input, const Tensor& lengths) const;

  PayloadKind input_kind() const;   // kTokenIds for the first stage, kHidden otherwise
  PayloadKind output_kind() const;  // kEmbeddings for the last stage, kHidden otherwise
  const model::ModelConfig& config() const { return encoder_->config(); }
  model::LayerRange range() const { return encoder_->range(); }
  bool is_first() const;
  bool is_last() const;

 private:
  StageModel() = default;
  std::unique_ptr<model::BertEncoder> encoder_;
  int num_threads_ = 0;  // the pooling kernels' bound, as the encoder's
};

}  // namespace archi::executor
