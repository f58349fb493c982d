#include "runtime/model/bert.h"

#include <cstring>
#include <string>
#include <utility>

namespace archi::model {
namespace {

namespace k = ::archi::kernels;

Status RequireCpu(const Tensor& t, const char* what) {
  if (!t.device().is_cpu()) {
    return UnimplementedError(std::string("BertEncoder: ") + what + " is on " +
                              t.device().ToString() +
                              "; only CPU tensors are supported (no permute op in kernels/ops.h)");
  }
  return Status::Ok();
}

// qkv [B, S, 3, Hh, D] -> q, k, v [B, Hh, S, D].
void SplitHeads(const Tensor& qkv, int64_t b, int64_t s, int64_t heads, int64_t d, Tensor& q,
                Tensor& kk, Tensor& v) {
  const size_t es = DTypeSize(qkv.dtype());
  const size_t row = static_cast<size_t>(d) * es;
  const auto* src = static_cast<const char*>(qkv.data());
  char* dst[3] = {static_cast<char*>(q.data()), static_cast<char*>(kk.data()),
                  static_cast<char*>(v.data())};
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t si = 0; si < s; ++si) {
      for (int64_t t = 0; t < 3; ++t) {
        for (int64_t h = 0; h < heads; ++h) {
          const int64_t from = (((bi * s + si) * 3 + t) * heads + h);
          const int64_t to = ((bi * heads + h) * s + si);
          std::memcpy(dst[t] + static_cast<size_t>(to) * row, src + static_cast<size_t>(from) * row,
                      row);
        }
      }
    }
  }
}

// x [B, Hh, S, D] -> y [B, S, Hh, D].
void MergeHeads(const Tensor& x, int64_t b, int64_t s, int64_t heads, int64_t d, Tensor& y) {
  const size_t row = static_cast<size_t>(d) * DTypeSize(x.dtype());
  const auto* src = static_cast<const char*>(x.data());
  auto* dst = static_cast<char*>(y.data());
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t si = 0; si < s; ++si) {
        const int64_t from = (bi * heads + h) * s + si;
        const int64_t to = (bi * s + si) * heads + h;
        std::memcpy(dst + static_cast<size_t>(to) * row, src + static_cast<size_t>(from) * row,
                    row);
      }
    }
  }
}

// Stacks tensors along dimension 0 into a new host tensor.
Result<Tensor> Concat0(const std::vector<Tensor>& parts) {
  std::vector<int64_t> shape = parts[0].shape();
  shape[0] = 0;
  for (const Tensor& p : parts) shape[0] += p.shape()[0];
  ARCHI_ASSIGN_OR_RETURN(Tensor out, Tensor::Empty(shape, parts[0].dtype()));
  auto* dst = static_cast<char*>(out.data());
  for (const Tensor& p : parts) {
    std::memcpy(dst, p.data(), p.nbytes());
    dst += p.nbytes();
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<BertEncoder>> BertEncoder::Create(std::shared_ptr<const Model> model,
                                                         kernels::KernelContext ctx) {
  if (!model) return InvalidArgumentError("BertEncoder: null model");
  const ModelConfig& cfg = model->config();
  if (cfg.architecture != Architecture::kBertEncoder) {
    return InvalidArgumentError("BertEncoder: the model is not a BERT encoder");
  }
  std::unique_ptr<BertEncoder> enc(new BertEncoder());
  enc->model_ = model;
  enc->ctx_ = ctx;
  if (cfg.activation == "gelu") {
    enc->gelu_ = k::GeluKind::kErf;
  } else if (cfg.activation == "gelu_tanh") {
    enc->gelu_ = k::GeluKind::kTanh;
  } else {
    return InvalidArgumentError("BertEncoder: unsupported activation '" + cfg.activation + "'");
  }
  LayerRange r = model->range();
  if (r.end < 0) r.end = cfg.num_layers;
  if (r.begin < 0 || r.begin > r.end || r.end > cfg.num_layers) {
    return InvalidArgumentError("BertEncoder: bad layer range [" + std::to_string(r.begin) + ", " +
                                std::to_string(r.end) + ")");
  }
  enc->range_ = r;

  if (r.begin == 0) {
    ARCHI_ASSIGN_OR_RETURN(enc->tokens_, model->Get("embed.tokens"));
    ARCHI_ASSIGN_OR_RETURN(enc->positions_, model->Get("embed.positions"));
    ARCHI_ASSIGN_OR_RETURN(enc->token_types_, model->Get("embed.token_types"));
    ARCHI_ASSIGN_OR_RETURN(enc->embed_norm_weight_, model->Get("embed.norm.weight"));
    ARCHI_ASSIGN_OR_RETURN(enc->embed_norm_bias_, model->Get("embed.norm.bias"));
  }
  for (int64_t i = r.begin; i < r.end; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    Layer l;
    std::vector<Tensor> qkv_w, qkv_b;
    for (const char* name : {"q", "k", "v"}) {
      ARCHI_ASSIGN_OR_RETURN(Tensor w, model->Get(p + "attn." + name + ".weight"));
      ARCHI_ASSIGN_OR_RETURN(Tensor b, model->Get(p + "attn." + name + ".bias"));
      ARCHI_RETURN_IF_ERROR(RequireCpu(w, "a weight"));
      qkv_w.push_back(w);
      qkv_b.push_back(b);
    }
    ARCHI_ASSIGN_OR_RETURN(l.qkv_weight, Concat0(qkv_w));
    ARCHI_ASSIGN_OR_RETURN(l.qkv_bias, Concat0(qkv_b));
    ARCHI_ASSIGN_OR_RETURN(l.out_weight, model->Get(p + "attn.out.weight"));
    ARCHI_ASSIGN_OR_RETURN(l.out_bias, model->Get(p + "attn.out.bias"));
    ARCHI_ASSIGN_OR_RETURN(l.attn_norm_weight, model->Get(p + "attn_norm.weight"));
    ARCHI_ASSIGN_OR_RETURN(l.attn_norm_bias, model->Get(p + "attn_norm.bias"));
    ARCHI_ASSIGN_OR_RETURN(l.up_weight, model->Get(p + "mlp.up.weight"));
    ARCHI_ASSIGN_OR_RETURN(l.up_bias, model->Get(p + "mlp.up.bias"));
    ARCHI_ASSIGN_OR_RETURN(l.down_weight, model->Get(p + "mlp.down.weight"));
    ARCHI_ASSIGN_OR_RETURN(l.down_bias, model->Get(p + "mlp.down.bias"));
    ARCHI_ASSIGN_OR_RETURN(l.mlp_norm_weight, model->Get(p + "mlp_norm.weight"));
    ARCHI_ASSIGN_OR_RETURN(l.mlp_norm_bias, model->Get(p + "mlp_norm.bias"));
    enc->layers_.push_back(std::move(l));
  }
  return enc;
}

Status BertEncoder::Forward(const Tensor& ids, const Tensor& lengths, Tensor& hidden) const {
  if (range_.begin != 0) {
    return FailedPreconditionError("BertEncoder::Forward: this stage starts at layer " +
                                   std::to_string(range_.begin) +
                                   " and has no embeddings; use ForwardLayers");
  }
  const ModelConfig& cfg = config();
  if (ids.dtype() != DType::kI32 || ids.shape().size() != 2) {
    return InvalidArgumentError("BertEncoder::Forward: ids must be i32 [B, S], got " +
                                ids.ShapeString());
  }
  const int64_t b = ids.shape()[0];
  const int64_t s = ids.shape()[1];
  if (s > cfg.max_positions) {
    return InvalidArgumentError("BertEncoder::Forward: sequence length " + std::to_string(s) +
                                " exceeds max_positions " + std::to_string(cfg.max_positions));
  }
  if (hidden.shape() != std::vector<int64_t>{b, s, cfg.hidden_size} ||
      hidden.dtype() != tokens_.dtype()) {
    return InvalidArgumentError("BertEncoder::Forward: hidden must be [" + std::to_string(b) +
                                ", " + std::to_string(s) + ", " + std::to_string(cfg.hidden_size) +
                                "] " + std::string(DTypeName(tokens_.dtype())) + ", got " +
                                hidden.ShapeString());
  }
  ARCHI_RETURN_IF_ERROR(RequireCpu(ids, "ids"));
  // Position ids 0..S-1 in every row; token type 0 everywhere (single-segment input).
  ARCHI_ASSIGN_OR_RETURN(Tensor pos, Tensor::Empty({b, s}, DType::kI32));
  ARCHI_ASSIGN_OR_RETURN(Tensor types, Tensor::Zeros({b, s}, DType::kI32));
  for (int64_t i = 0; i < b * s; ++i) pos.data_as<int32_t>()[i] = static_cast<int32_t>(i % s);
  ARCHI_ASSIGN_OR_RETURN(Tensor tmp, Tensor::Empty(hidden.shape(), hidden.dtype()));

  ARCHI_RETURN_IF_ERROR(k::Embedding(ids, tokens_, hidden, ctx_));
  ARCHI_RETURN_IF_ERROR(k::Embedding(pos, positions_, tmp, ctx_));
  ARCHI_RETURN_IF_ERROR(k::Add(hidden, tmp, hidden, ctx_));
  ARCHI_RETURN_IF_ERROR(k::Embedding(types, token_types_, tmp, ctx_));
  ARCHI_RETURN_IF_ERROR(k::Add(hidden, tmp, hidden, ctx_));
  ARCHI_RETURN_IF_ERROR(
      k::LayerNorm(hidden, embed_norm_weight_, embed_norm_bias_, cfg.norm_eps, hidden, ctx_));
  return ForwardLayers(hidden, lengths);
}

Status BertEncoder::ForwardLayers(Tensor& hidden, const Tensor& lengths, LayerRange sub) const {
  if (sub.begin == 0 && sub.end < 0) sub = range_;  // the default {}: every loaded layer
  if (sub.end < 0) sub.end = range_.end;
  if (sub.begin < range_.begin || sub.begin > sub.end || sub.end > range_.end) {
    return InvalidArgumentError("BertEncoder::ForwardLayers: layers [" + std::to_string(sub.begin) +
                                ", " + std::to_string(sub.end) + ") are not within the loaded [" +
                                std::to_string(range_.begin) + ", " + std::to_string(range_.end) +
                                ")");
  }
  const int64_t h = config().hidden_size;
  if (hidden.shape().size() != 3 || hidden.shape()[2] != h) {
    return InvalidArgumentError("BertEncoder::ForwardLayers: hidden must be [B, S, " +
                                std::to_string(h) + "], got " + hidden.ShapeString());
  }
  if (lengths.dtype() != DType::kI32 ||
      lengths.shape() != std::vector<int64_t>{hidden.shape()[0]}) {
    return InvalidArgumentError("BertEncoder::ForwardLayers: lengths must be i32 [B], got " +
                                lengths.ShapeString());
  }
  ARCHI_RETURN_IF_ERROR(RequireCpu(hidden, "hidden"));
  ARCHI_RETURN_IF_ERROR(RequireCpu(lengths, "lengths"));
  const int64_t s = hidden.shape()[1];
  for (int64_t i = 0; i < hidden.shape()[0]; ++i) {
    const int32_t len = lengths.data_as<const int32_t>()[i];
    if (len < 1 || len > s) {
      return InvalidArgumentError("BertEncoder: lengths[" + std::to_string(i) +
                                  "] = " + std::to_string(len) + " is outside [1, " +
                                  std::to_string(s) + "]");
    }
  }
  if (sub.begin == sub.end) return Status::Ok();
  ARCHI_ASSIGN_OR_RETURN(Workspace ws, MakeWorkspace(hidden.shape()[0], s, hidden.dtype()));
  for (int64_t i = sub.begin; i < sub.end; ++i) {
    ARCHI_RETURN_IF_ERROR(
        RunLayer(layers_[static_cast<size_t>(i - range_.begin)], hidden, lengths, ws)
            .WithContext("layer " + std::to_string(i)));
  }
  return Status::Ok();
}

Result<BertEncoder::Workspace> BertEncoder::MakeWorkspace(int64_t b, int64_t s, DType dt) const {
  const ModelConfig& cfg = config();
  const int64_t h = cfg.hidden_size, heads = cfg.num_heads, d = cfg.head_dim();
  Workspace ws;
  ARCHI_ASSIGN_OR_RETURN(ws.qkv, Tensor::Empty({b, s, 3 * h}, dt));
  ARCHI_ASSIGN_OR_RETURN(ws.q, Tensor::Empty({b, heads, s, d}, dt));
  ARCHI_ASSIGN_OR_RETURN(ws.k, Tensor::Empty({b, heads, s, d}, dt));
  ARCHI_ASSIGN_OR_RETURN(ws.v, Tensor::Empty({b, heads, s, d}, dt));
  ARCHI_ASSIGN_OR_RETURN(ws.attn, Tensor::Empty({b, heads, s, d}, dt));
  ARCHI_ASSIGN_OR_RETURN(ws.merged, Tensor::Empty({b, s, h}, dt));
  ARCHI_ASSIGN_OR_RETURN(ws.tmp, Tensor::Empty({b, s, h}, dt));
  ARCHI_ASSIGN_OR_RETURN(ws.up, Tensor::Empty({b, s, cfg.intermediate_size}, dt));
  return ws;
}

Status BertEncoder::RunLayer(const Layer& l, Tensor& x, const Tensor& lengths,
                             Workspace& ws) const {
  const ModelConfig& cfg = config();
  const int64_t b = x.shape()[0], s = x.shape()[1];
  const int64_t heads = cfg.num_heads, d = cfg.head_dim();
  Tensor &qkv = ws.qkv, &q = ws.q, &kk = ws.k, &v = ws.v, &attn = ws.attn, &merged = ws.merged,
         &tmp = ws.tmp, &up = ws.up;

  // Self-attention block (post-norm): x = LN(x + out(attn(q, k, v))).
  ARCHI_RETURN_IF_ERROR(k::Gemm(x, l.qkv_weight, &l.qkv_bias, qkv, {}, ctx_));
  SplitHeads(qkv, b, s, heads, d, q, kk, v);
  ARCHI_RETURN_IF_ERROR(k::Attention(q, kk, v, &lengths, attn, {}, ctx_));
  MergeHeads(attn, b, s, heads, d, merged);
  ARCHI_RETURN_IF_ERROR(k::Gemm(merged, l.out_weight, &l.out_bias, tmp, {}, ctx_));
  ARCHI_RETURN_IF_ERROR(k::Add(tmp, x, tmp, ctx_));
  ARCHI_RETURN_IF_ERROR(
      k::LayerNorm(tmp, l.attn_norm_weight, l.attn_norm_bias, cfg.norm_eps, x, ctx_));
  // MLP block: x = LN(x + down(gelu(up(x)))).
  ARCHI_RETURN_IF_ERROR(k::Gemm(x, l.up_weight, &l.up_bias, up, {}, ctx_));
  ARCHI_RETURN_IF_ERROR(k::Gelu(up, up, gelu_, ctx_));
  ARCHI_RETURN_IF_ERROR(k::Gemm(up, l.down_weight, &l.down_bias, tmp, {}, ctx_));
  ARCHI_RETURN_IF_ERROR(k::Add(tmp, x, tmp, ctx_));
  return k::LayerNorm(tmp, l.mlp_norm_weight, l.mlp_norm_bias, cfg.norm_eps, x, ctx_);
}

Result<Tensor> BertEncoder::Encode(const std::vector<std::vector<int32_t>>& ids) const {
  const ModelConfig& cfg = config();
  if (range_.begin != 0 || range_.end != cfg.num_layers) {
    return FailedPreconditionError(
        "BertEncoder::Encode needs every layer loaded; this encoder "
        "holds [" +
        std::to_string(range_.begin) + ", " + std::to_string(range_.end) + ")");
  }
  if (ids.empty()) return InvalidArgumentError("BertEncoder::Encode: no sequences");
  const auto b = static_cast<int64_t>(ids.size());
  int64_t s = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto n = static_cast<int64_t>(ids[i].size());
    if (n < 1 || n > cfg.max_positions) {
      return InvalidArgumentError("BertEncoder::Encode: sequence " + std::to_string(i) + " has " +
                                  std::to_string(n) + " ids; expected 1.." +
                                  std::to_string(cfg.max_positions));
    }
    s = std::max(s, n);
  }
  ARCHI_ASSIGN_OR_RETURN(Tensor id_tensor, Tensor::Zeros({b, s}, DType::kI32));
  ARCHI_ASSIGN_OR_RETURN(Tensor lengths, Tensor::Empty({b}, DType::kI32));
  for (int64_t i = 0; i < b; ++i) {
    const auto& row = ids[static_cast<size_t>(i)];
    std::memcpy(id_tensor.data_as<int32_t>() + i * s, row.data(), row.size() * sizeof(int32_t));
    lengths.data_as<int32_t>()[i] = static_cast<int32_t>(row.size());
  }
  ARCHI_ASSIGN_OR_RETURN(Tensor hidden, Tensor::Empty({b, s, cfg.hidden_size}, tokens_.dtype()));
  ARCHI_RETURN_IF_ERROR(Forward(id_tensor, lengths, hidden));
  ARCHI_ASSIGN_OR_RETURN(Tensor out, Tensor::Empty({b, cfg.hidden_size}, tokens_.dtype()));
  ARCHI_RETURN_IF_ERROR(k::MeanPool(hidden, &lengths, out, ctx_));
  ARCHI_RETURN_IF_ERROR(k::L2Normalize(out, out, 1e-12f, ctx_));
  return out;
}

}  // namespace archi::model
