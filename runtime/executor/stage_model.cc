#include "runtime/executor/stage_model.h"

#include <cstring>
#include <utility>
#include <vector>

#include "kernels/ops.h"
#include "runtime/core/half.h"

namespace archi::executor {
namespace {

std::string Shape(const std::vector<int64_t>& dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i) out += (i ? ", " : "") + std::to_string(dims[i]);
  return out + "]";
}

Status Bad(const std::string& what) { return InvalidArgumentError("StageModel::Run: " + what); }

// Widens [B, H] embeddings in f16 / bf16 to f32 (exact: every f16 and bf16 value is an f32).
Result<Tensor> ToF32(const Tensor& x) {
  if (x.dtype() == DType::kF32) return x;
  ARCHI_ASSIGN_OR_RETURN(Tensor out, Tensor::Empty(x.shape(), DType::kF32));
  const auto* src = x.data_as<const uint16_t>();
  float* dst = out.data_as<float>();
  switch (x.dtype()) {
    case DType::kF16:
      for (int64_t i = 0; i < x.numel(); ++i) dst[i] = HalfToFloat(src[i]);
      return out;
    case DType::kBF16:
      for (int64_t i = 0; i < x.numel(); ++i) dst[i] = Bf16ToFloat(src[i]);
      return out;
    default:
      return InternalError("StageModel: embeddings in " + std::string(DTypeName(x.dtype())));
  }
}

}  // namespace

std::string_view PayloadKindName(PayloadKind kind) {
  switch (kind) {
    case PayloadKind::kTokenIds:
      return "token_ids";
    case PayloadKind::kHidden:
      return "hidden";
    case PayloadKind::kEmbeddings:
      return "embeddings";
  }
  return "unknown";
}

Result<std::unique_ptr<StageModel>> StageModel::Load(const std::string& model_dir,
                                                     model::LayerRange range, int num_threads) {
  if (num_threads < 0) {
    return InvalidArgumentError("StageModel::Load: num_threads must be >= 0, got " +
                                std::to_string(num_threads));
  }
  ARCHI_ASSIGN_OR_RETURN(std::shared_ptr<const model::Model> model,
                         model::Model::Load(model_dir, range));
  ARCHI_ASSIGN_OR_RETURN(
      std::unique_ptr<model::BertEncoder> encoder,
      model::BertEncoder::Create(std::move(model), {.num_threads = num_threads}));
  std::unique_ptr<StageModel> stage(new StageModel());
  stage->encoder_ = std::move(encoder);
  stage->num_threads_ = num_threads;
  return stage;
}

bool StageModel::is_first() const { return range().begin == 0; }
bool StageModel::is_last() const { return range().end == config().num_layers; }

PayloadKind StageModel::input_kind() const {
  return is_first() ? PayloadKind::kTokenIds : PayloadKind::kHidden;
}

PayloadKind StageModel::output_kind() const {
  return is_last() ? PayloadKind::kEmbeddings : PayloadKind::kHidden;
}

Result<Tensor> StageModel::Run(const Tensor& input, const Tensor& lengths) const {
  const model::ModelConfig& cfg = config();
  const std::string takes(PayloadKindName(input_kind()));
  if (!input.defined()) return Bad("no input tensor");
  if (!lengths.defined()) return Bad("no lengths tensor");
  if (!input.device().is_cpu() || !lengths.device().is_cpu()) {
    return UnimplementedError("StageModel::Run: only CPU tensors are supported, got input on " +
                              input.device().ToString() + ", lengths on " +
                              lengths.device().ToString());
  }

  // The input: ids i32 [B, S] for the first stage, hidden [B, S, H] in the model dtype otherwise.
  const std::vector<int64_t>& shape = input.shape();
  if (is_first()) {
    if (input.dtype() != DType::kI32 || shape.size() != 2) {
      return Bad("this stage (layers from 0) takes token ids i32 [B, S], got " +
                 std::string(DTypeName(input.dtype())) + " " + Shape(shape));
    }
  } else {
    if (input.dtype() != cfg.dtype || shape.size() != 3 || shape[2] != cfg.hidden_size) {
      return Bad("this stage (layers from " + std::to_string(range().begin) +
                 ") takes hidden states " + std::string(DTypeName(cfg.dtype)) + " [B, S, " +
                 std::to_string(cfg.hidden_size) + "], got " +
                 std::string(DTypeName(input.dtype())) + " " + Shape(shape));
    }
  }
  const int64_t b = shape[0];
  const int64_t s = shape[1];
  if (b < 1) return Bad("empty batch (B = 0)");
  if (s < 1 || s > cfg.max_positions) {
    return Bad("sequence length S = " + std::to_string(s) +
               " is outside [1, max_positions = " + std::to_string(cfg.max_positions) + "]");
  }

  // lengths: i32 [B], each in [1, S].
  if (lengths.dtype() != DType::kI32 || lengths.shape() != std::vector<int64_t>{b}) {
    return Bad("lengths must be i32 [" + std::to_string(b) + "], got " +
               std::string(DTypeName(lengths.dtype())) + " " + Shape(lengths.shape()));
  }
  const auto* len = lengths.data_as<const int32_t>();
  for (int64_t i = 0; i < b; ++i) {
    if (len[i] < 1 || len[i] > s) {
      return Bad("lengths[" + std::to_string(i) + "] = " + std::to_string(len[i]) +
                 " is outside [1, S = " + std::to_string(s) + "]");
    }
  }

  const kernels::KernelContext ctx{.num_threads = num_threads_};
  ARCHI_ASSIGN_OR_RETURN(Tensor hidden, Tensor::Empty({b, s, cfg.hidden_size}, cfg.dtype));
  if (is_first()) {
    // Every id, padding included, must be a row of the embedding table.
    const auto* ids = input.data_as<const int32_t>();
    for (int64_t i = 0; i < b * s; ++i) {
      if (ids[i] < 0 || ids[i] >= cfg.vocab_size) {
        return Bad("token id " + std::to_string(ids[i]) + " at [" + std::to_string(i / s) + ", " +
                   std::to_string(i % s) +
                   "] is outside [0, vocab_size = " + std::to_string(cfg.vocab_size) + ")");
      }
    }
    ARCHI_RETURN_IF_ERROR(encoder_->Forward(input, lengths, hidden));
  } else {
    std::memcpy(hidden.data(), input.data(), input.nbytes());  // the layers run in place
    ARCHI_RETURN_IF_ERROR(encoder_->ForwardLayers(hidden, lengths));
  }
  if (!is_last()) return hidden;

  // Sentence embeddings exactly as BertEncoder::Encode computes them (in the model dtype), then
  // widened to f32.
  ARCHI_ASSIGN_OR_RETURN(Tensor pooled, Tensor::Empty({b, cfg.hidden_size}, cfg.dtype));
  ARCHI_RETURN_IF_ERROR(kernels::MeanPool(hidden, &lengths, pooled, ctx));
  ARCHI_RETURN_IF_ERROR(kernels::L2Normalize(pooled, pooled, 1e-12f, ctx));
  return ToF32(pooled);
}

}  // namespace archi::executor
