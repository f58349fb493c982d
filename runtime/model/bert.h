// BERT-style encoder forward pass (post-norm, absolute positions, GELU MLP) over a loaded Model,
// built from the public operators in kernels/ops.h. A stage may hold a slice of the layers: the
// encoder runs whatever LayerRange its Model was loaded with (or a sub-range of it), so a
// pipeline stage can run layers [begin, end) on hidden states it received.
//
// Shapes: ids i32 [B, S] (rows padded past their length with any valid id), lengths i32 [B] with
// 1 <= lengths[b] <= S, hidden states [B, S, H] in the model's dtype. Padding positions never
// influence valid ones (attention masks keys past each row's length); their own outputs are
// unspecified.
//
// Ownership and threads: holds a shared reference to the Model (whose tensors it reads) and a few
// derived weights (fused QKV); immutable after Create, so every method is const and may be called
// from several threads at once (each call allocates its own activations). Calls block until the
// computation is done. CPU tensors only for now: the head split/merge (a transpose) is done on the
// host because kernels/ops.h has no permute op yet; CUDA tensors give kUnimplemented.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/ops.h"
#include "runtime/core/status.h"
#include "runtime/core/tensor.h"
#include "runtime/model/model.h"

namespace archi::model {

class BertEncoder {
 public:
  // kInvalidArgument when the model is not a BERT encoder or misses a tensor of its range.
  static Result<std::unique_ptr<BertEncoder>> Create(std::shared_ptr<const Model> model,
                                                     kernels::KernelContext ctx = {});

  // Embeddings + every loaded layer: ids [B, S], lengths [B] -> hidden [B, S, H] (allocated by
  // the caller). kFailedPrecondition when the loaded range does not start at layer 0.
  Status Forward(const Tensor& ids, const Tensor& lengths, Tensor& hidden) const;

  // Runs layers `sub` on hidden [B, S, H] in place: a sub-range of range() (end -1 = range().end);
  // the default {} means every loaded layer. This is what a pipeline stage after the first runs.
  Status ForwardLayers(Tensor& hidden, const Tensor& lengths, LayerRange sub = {}) const;

  // Sentence embeddings, the sentence-transformers pipeline: Forward, mean pooling over each
  // row's tokens, L2 normalisation. `ids` are whole sequences ([CLS] ... [SEP]) of 1..P ids each.
  // Needs the whole model (range() = all layers). Returns [B, H].
  Result<Tensor> Encode(const std::vector<std::vector<int32_t>>& ids) const;

  const ModelConfig& config() const { return model_->config(); }
  // The loaded range with end resolved (never -1).
  LayerRange range() const { return range_; }

 private:
  struct Layer {
    Tensor qkv_weight;  // [3H, H]: q, k, v weights stacked (owned here)
    Tensor qkv_bias;    // [3H]
    Tensor out_weight, out_bias, attn_norm_weight, attn_norm_bias;
    Tensor up_weight, up_bias, down_weight, down_bias, mlp_norm_weight, mlp_norm_bias;
  };

  // Activations of one layer, allocated once per call and reused by every layer.
  struct Workspace {
    Tensor qkv, q, k, v, attn, merged, tmp, up;
  };

  BertEncoder() = default;
  Result<Workspace> MakeWorkspace(int64_t batch, int64_t seq, DType dtype) const;
  Status RunLayer(const Layer& layer, Tensor& x, const Tensor& lengths, Workspace& ws) const;

  std::shared_ptr<const Model> model_;
  kernels::KernelContext ctx_;
  LayerRange range_;
  kernels::GeluKind gelu_ = kernels::GeluKind::kErf;
  // Embeddings (only when range_.begin == 0).
  Tensor tokens_, positions_, token_types_, embed_norm_weight_, embed_norm_bias_;
  std::vector<Layer> layers_;  // layers_[i] is layer range_.begin + i
};

}  // namespace archi::model
