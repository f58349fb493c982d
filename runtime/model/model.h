// Model format: a directory holding `config.json` (ModelConfig) and `model.safetensors`
// (weights under the names below). Weights are memory-mapped: on the CPU a loaded Tensor is a
// zero-copy view into the mapping; for CUDA they are streamed to device buffers.
//
// Tensor names (all row-major; Linear weights in PyTorch layout [out, in]):
//   both:    embed.tokens [V, H]
//   encoder (BERT-style, post-norm):
//            embed.positions [P, H], embed.token_types [T, H], embed.norm.{weight,bias} [H]
//            layers.{i}.attn.{q,k,v}.{weight [H, H], bias [H]}
//            layers.{i}.attn.out.{weight [H, H], bias [H]}, layers.{i}.attn_norm.{weight,bias} [H]
//            layers.{i}.mlp.up.{weight [I, H], bias [I]}, layers.{i}.mlp.down.{weight [H, I], bias [H]}
//            layers.{i}.mlp_norm.{weight,bias} [H]
//   decoder (GPT/LLaMA-style, pre-norm RMSNorm, rotary, SwiGLU, grouped-query attention):
//            layers.{i}.attn_norm.weight [H]
//            layers.{i}.attn.q.weight [Hq*D, H], layers.{i}.attn.{k,v}.weight [Hkv*D, H]
//            layers.{i}.attn.out.weight [H, Hq*D], layers.{i}.mlp_norm.weight [H]
//            layers.{i}.mlp.{gate,up}.weight [I, H], layers.{i}.mlp.down.weight [H, I]
//            final_norm.weight [H], lm_head.weight [V, H]
// A stage loads a LayerRange: the embeddings only when it starts at layer 0, final_norm and
// lm_head only when it ends at the last layer.
// Thread safety: a loaded Model is immutable and may be read from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/device_buffer.h"
#include "runtime/core/status.h"
#include "runtime/core/tensor.h"

namespace archi::model {

enum class Architecture : uint8_t { kBertEncoder = 0, kLlamaDecoder = 1 };

// "bert" | "llama" (the names used in config.json).
std::string_view ArchitectureName(Architecture arch);
Result<Architecture> ParseArchitecture(std::string_view name);

struct ModelConfig {
  Architecture architecture = Architecture::kBertEncoder;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;        // H
  int64_t num_layers = 0;
  int64_t num_heads = 0;          // Hq
  int64_t num_kv_heads = 0;       // Hkv (decoder; encoder: = num_heads)
  int64_t intermediate_size = 0;  // I
  int64_t max_positions = 0;      // P
  int64_t type_vocab_size = 0;    // T (encoder)
  float norm_eps = 1e-12f;
  float rope_theta = 10000.0f;    // decoder
  std::string activation = "gelu";  // encoder: gelu (erf) | gelu_tanh; decoder: silu (SwiGLU)
  DType dtype = DType::kF32;      // storage dtype of the weights

  int64_t head_dim() const { return num_heads ? hidden_size / num_heads : 0; }
  // Parses and validates (positive sizes, H divisible by heads, Hq % Hkv == 0, known names).
  static Result<ModelConfig> FromJson(const std::string& json_text);
  std::string ToJson() const;
  friend bool operator==(const ModelConfig&, const ModelConfig&) = default;
};

struct LayerRange {
  int64_t begin = 0;
  int64_t end = -1;  // exclusive; -1 = num_layers
};

// Replaces end == -1 by num_layers; kInvalidArgument for an empty or out-of-bounds range.
Result<LayerRange> ResolveLayerRange(const ModelConfig& config, LayerRange range);

// name -> shape, for every tensor a stage holding `range` must load.
Result<std::map<std::string, std::vector<int64_t>>> ExpectedTensors(const ModelConfig& config,
                                                                     LayerRange range);

class Model {
 public:
  // Loads `dir`/config.json and the tensors of `range` from `dir`/model.safetensors, validating
  // everything (see tests/model/); kInvalidArgument / kDataLoss / kNotFound with the file name
  // and the reason otherwise. Extra tensors outside the model's full set are an error; tensors of
  // other layers are skipped.
  static Result<std::shared_ptr<const Model>> Load(const std::string& dir, LayerRange range = {});

  const ModelConfig& config() const { return config_; }
  LayerRange range() const { return range_; }
  // kNotFound naming the tensor when it is not part of the loaded range.
  Result<Tensor> Get(const std::string& name) const;
  const std::map<std::string, Tensor>& tensors() const { return tensors_; }

  ~Model();

 private:
  Model() = default;
  ModelConfig config_;
  LayerRange range_;
  std::map<std::string, Tensor> tensors_;
  std::shared_ptr<void> mapping_;  // keeps the mmap alive while any tensor view exists
  friend class ModelLoader;
};

// Copies every tensor of `model` into its own DeviceBuffer on `device` (one tensor at a time,
// straight from the mapping). kUnavailable when the device cannot allocate (no CUDA support,
// driver or GPU), naming the tensor. Blocks until all copies are done.
Result<std::map<std::string, DeviceBuffer>> UploadToDevice(const Model& model, Device device);

// Writes a tiny deterministic random model (for tests and benchmarks) to `dir` (created if
// needed): config.json and model.safetensors, byte-identical for the same config and seed.
// Each tensor draws from its own std::mt19937_64 seeded by (seed, tensor name): Linear weights
// and embeddings uniform in [-1, 1] / sqrt(fan_in) (embeddings: [-0.1, 0.1]), biases uniform in
// [-0.02, 0.02], norm weights 1 and biases 0. Values are rounded to config.dtype.
Status WriteRandomModel(const std::string& dir, const ModelConfig& config, uint64_t seed);

}  // namespace archi::model
