// ModelConfig (config.json), the tensor-name convention (ExpectedTensors), layer ranges, and the
// header-vs-config checks. No I/O and no spdlog here: the fuzzer compiles this file on its own.
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "runtime/model/model.h"
#include "runtime/model/model_check.h"

namespace archi::model {

namespace {

using json = nlohmann::json;

// Bounds that keep every product in ExpectedTensors far from int64 overflow.
constexpr int64_t kMaxDim = int64_t{1} << 24;
constexpr int64_t kMaxLayers = 4096;

const std::set<std::string>& KnownKeys() {
  static const std::set<std::string> keys = {
      "architecture", "vocab_size",   "hidden_size", "num_layers",      "num_heads",
      "num_kv_heads", "intermediate_size", "max_positions", "type_vocab_size", "norm_eps",
      "rope_theta",   "activation",   "dtype",       "metadata"};
  return keys;
}

Status ConfigError(const std::string& what) { return InvalidArgumentError("config: " + what); }

Result<int64_t> GetInt(const json& j, const char* key, bool required, int64_t fallback) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (required) return ConfigError(std::string("missing field \"") + key + "\"");
    return fallback;
  }
  if (!it->is_number_integer()) {
    return ConfigError(std::string("field \"") + key + "\" must be an integer, got " +
                       it->type_name());
  }
  if (it->is_number_unsigned() &&
      it->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return ConfigError(std::string("field \"") + key + "\" is out of range");
  }
  return it->get<int64_t>();
}

Result<float> GetFloat(const json& j, const char* key, float fallback) {
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  if (!it->is_number()) {
    return ConfigError(std::string("field \"") + key + "\" must be a number, got " +
                       it->type_name());
  }
  const double d = it->get<double>();
  if (!std::isfinite(d) || d <= 0.0 || d > 1e30) {
    return ConfigError(std::string("field \"") + key + "\" must be a positive finite number");
  }
  const float f = static_cast<float>(d);
  if (!(f > 0.0f)) return ConfigError(std::string("field \"") + key + "\" underflows float");
  return f;
}

Result<std::string> GetString(const json& j, const char* key, bool required,
                              const std::string& fallback) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (required) return ConfigError(std::string("missing field \"") + key + "\"");
    return fallback;
  }
  if (!it->is_string()) {
    return ConfigError(std::string("field \"") + key + "\" must be a string, got " +
                       it->type_name());
  }
  return it->get<std::string>();
}

Status CheckSize(const char* key, int64_t v) {
  if (v <= 0) return ConfigError(std::string("\"") + key + "\" must be positive, got " + std::to_string(v));
  const int64_t limit = std::string_view(key) == "num_layers" ? kMaxLayers : kMaxDim;
  if (v > limit) {
    return ConfigError(std::string("\"") + key + "\" = " + std::to_string(v) +
                       " exceeds the limit " + std::to_string(limit));
  }
  return Status::Ok();
}

Result<ModelConfig> FromJsonImpl(const std::string& text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    return ConfigError(std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object()) return ConfigError(std::string("not a JSON object but a ") + j.type_name());
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!KnownKeys().count(it.key())) {
      return ConfigError("unknown field \"" + it.key() +
                         "\" (free-form information belongs under \"metadata\")");
    }
  }

  ModelConfig c;
  ARCHI_ASSIGN_OR_RETURN(std::string arch, GetString(j, "architecture", true, ""));
  ARCHI_ASSIGN_OR_RETURN(c.architecture, ParseArchitecture(arch));
  const bool decoder = c.architecture == Architecture::kLlamaDecoder;

  ARCHI_ASSIGN_OR_RETURN(c.vocab_size, GetInt(j, "vocab_size", true, 0));
  ARCHI_ASSIGN_OR_RETURN(c.hidden_size, GetInt(j, "hidden_size", true, 0));
  ARCHI_ASSIGN_OR_RETURN(c.num_layers, GetInt(j, "num_layers", true, 0));
  ARCHI_ASSIGN_OR_RETURN(c.num_heads, GetInt(j, "num_heads", true, 0));
  ARCHI_ASSIGN_OR_RETURN(c.num_kv_heads, GetInt(j, "num_kv_heads", false, c.num_heads));
  ARCHI_ASSIGN_OR_RETURN(c.intermediate_size, GetInt(j, "intermediate_size", true, 0));
  ARCHI_ASSIGN_OR_RETURN(c.max_positions, GetInt(j, "max_positions", true, 0));
  ARCHI_ASSIGN_OR_RETURN(c.type_vocab_size, GetInt(j, "type_vocab_size", !decoder, 0));
  ARCHI_ASSIGN_OR_RETURN(c.norm_eps, GetFloat(j, "norm_eps", decoder ? 1e-5f : 1e-12f));
  ARCHI_ASSIGN_OR_RETURN(c.rope_theta, GetFloat(j, "rope_theta", 10000.0f));
  ARCHI_ASSIGN_OR_RETURN(c.activation, GetString(j, "activation", false, decoder ? "silu" : "gelu"));
  ARCHI_ASSIGN_OR_RETURN(std::string dtype, GetString(j, "dtype", true, ""));

  for (auto [key, v] : {std::pair{"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size},
                        {"num_layers", c.num_layers}, {"num_heads", c.num_heads},
                        {"num_kv_heads", c.num_kv_heads},
                        {"intermediate_size", c.intermediate_size},
                        {"max_positions", c.max_positions}}) {
    ARCHI_RETURN_IF_ERROR(CheckSize(key, v));
  }
  if (decoder) {
    if (c.type_vocab_size != 0) {
      return ConfigError("\"type_vocab_size\" must be 0 or absent for architecture \"llama\"");
    }
  } else {
    ARCHI_RETURN_IF_ERROR(CheckSize("type_vocab_size", c.type_vocab_size));
    if (c.num_kv_heads != c.num_heads) {
      return ConfigError("\"num_kv_heads\" (" + std::to_string(c.num_kv_heads) +
                         ") must equal \"num_heads\" (" + std::to_string(c.num_heads) +
                         ") for architecture \"bert\"");
    }
  }
  if (c.hidden_size % c.num_heads != 0) {
    return ConfigError("\"hidden_size\" (" + std::to_string(c.hidden_size) +
                       ") is not divisible by \"num_heads\" (" + std::to_string(c.num_heads) + ")");
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    return ConfigError("\"num_heads\" (" + std::to_string(c.num_heads) +
                       ") is not a multiple of \"num_kv_heads\" (" +
                       std::to_string(c.num_kv_heads) + ")");
  }
  if (decoder && c.head_dim() % 2 != 0) {
    return ConfigError("head dim " + std::to_string(c.head_dim()) +
                       " must be even for rotary embeddings");
  }
  if (decoder ? c.activation != "silu" : (c.activation != "gelu" && c.activation != "gelu_tanh")) {
    return ConfigError("unknown \"activation\" \"" + c.activation + "\" for architecture \"" +
                       arch + "\" (expected " + (decoder ? "silu" : "gelu or gelu_tanh") + ")");
  }
  if (dtype == "f32") {
    c.dtype = DType::kF32;
  } else if (dtype == "f16") {
    c.dtype = DType::kF16;
  } else if (dtype == "bf16") {
    c.dtype = DType::kBF16;
  } else {
    return ConfigError("unknown \"dtype\" \"" + dtype + "\" (expected f32, f16 or bf16)");
  }
  return c;
}

// The double nearest to the shortest decimal that reads back as `f` (1e-12, not 9.9999e-13);
// parsing it and rounding to float gives `f` again.
double ShortestDouble(float f) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), f);
  return std::strtod(std::string(buf, res.ptr).c_str(), nullptr);
}

}  // namespace

std::string_view ArchitectureName(Architecture arch) {
  switch (arch) {
    case Architecture::kBertEncoder: return "bert";
    case Architecture::kLlamaDecoder: return "llama";
  }
  return "?";
}

Result<Architecture> ParseArchitecture(std::string_view name) {
  if (name == "bert") return Architecture::kBertEncoder;
  if (name == "llama") return Architecture::kLlamaDecoder;
  return ConfigError("unknown \"architecture\" \"" + std::string(name) +
                     "\" (expected bert or llama)");
}

Result<ModelConfig> ModelConfig::FromJson(const std::string& json_text) {
  try {
    return FromJsonImpl(json_text);
  } catch (const std::exception& e) {  // nlohmann type errors, bad_alloc: never past here
    return ConfigError(std::string("malformed: ") + e.what());
  }
}

std::string ModelConfig::ToJson() const {
  json j = json::object();
  const bool decoder = architecture == Architecture::kLlamaDecoder;
  j["architecture"] = std::string(ArchitectureName(architecture));
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["num_layers"] = num_layers;
  j["num_heads"] = num_heads;
  j["num_kv_heads"] = num_kv_heads;
  j["intermediate_size"] = intermediate_size;
  j["max_positions"] = max_positions;
  if (!decoder) j["type_vocab_size"] = type_vocab_size;
  j["norm_eps"] = ShortestDouble(norm_eps);
  if (decoder) j["rope_theta"] = ShortestDouble(rope_theta);
  j["activation"] = activation;
  j["dtype"] = std::string(DTypeName(dtype));
  try {
    return j.dump(2) + "\n";
  } catch (const json::exception&) {  // invalid UTF-8 in activation: not a valid config anyway
    return "{}\n";
  }
}

Result<LayerRange> ResolveLayerRange(const ModelConfig& config, LayerRange range) {
  LayerRange r = range;
  if (r.end == -1) r.end = config.num_layers;
  if (r.begin < 0 || r.end > config.num_layers || r.begin >= r.end) {
    return InvalidArgumentError("layer range [" + std::to_string(range.begin) + ", " +
                                std::to_string(range.end) + ") is empty or outside [0, " +
                                std::to_string(config.num_layers) + ")");
  }
  return r;
}

Result<std::map<std::string, std::vector<int64_t>>> ExpectedTensors(const ModelConfig& config,
                                                                     LayerRange range) {
  ARCHI_ASSIGN_OR_RETURN(LayerRange r, ResolveLayerRange(config, range));
  const int64_t V = config.vocab_size, H = config.hidden_size, I = config.intermediate_size;
  std::map<std::string, std::vector<int64_t>> t;
  if (config.architecture == Architecture::kBertEncoder) {
    if (r.begin == 0) {
      t["embed.tokens"] = {V, H};
      t["embed.positions"] = {config.max_positions, H};
      t["embed.token_types"] = {config.type_vocab_size, H};
      t["embed.norm.weight"] = {H};
      t["embed.norm.bias"] = {H};
    }
    for (int64_t i = r.begin; i < r.end; ++i) {
      const std::string p = "layers." + std::to_string(i) + ".";
      for (const char* proj : {"q", "k", "v", "out"}) {
        t[p + "attn." + proj + ".weight"] = {H, H};
        t[p + "attn." + proj + ".bias"] = {H};
      }
      t[p + "attn_norm.weight"] = {H};
      t[p + "attn_norm.bias"] = {H};
      t[p + "mlp.up.weight"] = {I, H};
      t[p + "mlp.up.bias"] = {I};
      t[p + "mlp.down.weight"] = {H, I};
      t[p + "mlp.down.bias"] = {H};
      t[p + "mlp_norm.weight"] = {H};
      t[p + "mlp_norm.bias"] = {H};
    }
  } else {
    const int64_t D = config.head_dim();
    const int64_t Q = config.num_heads * D, KV = config.num_kv_heads * D;
    if (r.begin == 0) t["embed.tokens"] = {V, H};
    for (int64_t i = r.begin; i < r.end; ++i) {
      const std::string p = "layers." + std::to_string(i) + ".";
      t[p + "attn_norm.weight"] = {H};
      t[p + "attn.q.weight"] = {Q, H};
      t[p + "attn.k.weight"] = {KV, H};
      t[p + "attn.v.weight"] = {KV, H};
      t[p + "attn.out.weight"] = {H, Q};
      t[p + "mlp_norm.weight"] = {H};
      t[p + "mlp.gate.weight"] = {I, H};
      t[p + "mlp.up.weight"] = {I, H};
      t[p + "mlp.down.weight"] = {H, I};
    }
    if (r.end == config.num_layers) {
      t["final_norm.weight"] = {H};
      t["lm_head.weight"] = {V, H};
    }
  }
  return t;
}

namespace {
std::string ShapeStr(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}
}  // namespace

Status CheckTensorsAgainstConfig(const SafetensorsHeader& header, const ModelConfig& config,
                                 LayerRange range, std::string_view source) {
  const std::string src = std::string(source) + ": ";
  ARCHI_ASSIGN_OR_RETURN(auto full, ExpectedTensors(config, LayerRange{0, -1}));
  ARCHI_ASSIGN_OR_RETURN(auto mine, ExpectedTensors(config, range));
  for (const auto& [name, e] : header.tensors) {
    auto it = full.find(name);
    if (it == full.end()) {
      return InvalidArgumentError(src + "unexpected tensor '" + name + "' (not part of a " +
                                  std::string(ArchitectureName(config.architecture)) +
                                  " model with " + std::to_string(config.num_layers) +
                                  " layers)");
    }
    if (e.dtype != config.dtype) {
      return InvalidArgumentError(src + "tensor '" + name + "' has dtype " +
                                  std::string(SafetensorsDTypeName(e.dtype)) +
                                  " but config.json says " + std::string(DTypeName(config.dtype)));
    }
    if (e.shape != it->second) {
      return InvalidArgumentError(src + "tensor '" + name + "' has shape " + ShapeStr(e.shape) +
                                  " but the config expects " + ShapeStr(it->second));
    }
  }
  for (const auto& [name, shape] : mine) {
    if (!header.tensors.count(name)) {
      return NotFoundError(src + "missing tensor '" + name + "' " + ShapeStr(shape));
    }
  }
  return Status::Ok();
}

}  // namespace archi::model
