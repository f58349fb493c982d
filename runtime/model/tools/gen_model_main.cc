// archi-gen-model: writes a deterministic random model (config.json + model.safetensors).
//   archi-gen-model --arch llama --out /tmp/m --hidden 64 --layers 4 --heads 4 --kv-heads 2
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <string>

#include "runtime/model/model.h"

int main(int argc, char** argv) {
  using archi::model::Architecture;
  using archi::model::ModelConfig;
  CLI::App app{
      "Writes a tiny deterministic random model (config.json + model.safetensors) to a "
      "directory. The same options and seed give byte-identical files. See "
      "docs/model_format.md."};
  std::string arch = "bert", out, dtype = "f32", activation;
  ModelConfig c;
  c.vocab_size = 128;
  c.hidden_size = 32;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 0;
  c.intermediate_size = 64;
  c.max_positions = 64;
  c.type_vocab_size = 2;
  uint64_t seed = 1;
  double norm_eps = 0, rope_theta = 10000.0;
  app.add_option("--arch", arch, "bert (encoder) or llama (decoder)")
      ->check(CLI::IsMember({"bert", "llama"}))
      ->capture_default_str();
  app.add_option("--out", out, "output directory (created if needed)")->required();
  app.add_option("--vocab", c.vocab_size, "vocabulary size V")->capture_default_str();
  app.add_option("--hidden", c.hidden_size, "hidden size H")->capture_default_str();
  app.add_option("--layers", c.num_layers, "number of layers")->capture_default_str();
  app.add_option("--heads", c.num_heads, "attention heads")->capture_default_str();
  app.add_option("--kv-heads", c.num_kv_heads, "KV heads (llama; default = heads)");
  app.add_option("--intermediate", c.intermediate_size, "MLP size I")->capture_default_str();
  app.add_option("--max-positions", c.max_positions, "max positions P")->capture_default_str();
  app.add_option("--type-vocab", c.type_vocab_size, "token types T (bert)")->capture_default_str();
  app.add_option("--dtype", dtype, "weight dtype: f32, f16 or bf16")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}))
      ->capture_default_str();
  app.add_option("--activation", activation, "bert: gelu|gelu_tanh (default gelu); llama: silu");
  app.add_option("--norm-eps", norm_eps, "norm epsilon (default 1e-12 bert, 1e-5 llama)");
  app.add_option("--rope-theta", rope_theta, "rotary base (llama)")->capture_default_str();
  app.add_option("--seed", seed, "random seed")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  // 0 (the default) means the architecture's default; anything else must be a valid epsilon.
  if (!(norm_eps >= 0.0) || !std::isfinite(norm_eps)) {
    std::fprintf(stderr, "archi-gen-model: --norm-eps must be a finite number >= 0, got %g\n",
                 norm_eps);
    return 2;
  }

  const bool decoder = arch == "llama";
  c.architecture = decoder ? Architecture::kLlamaDecoder : Architecture::kBertEncoder;
  if (c.num_kv_heads == 0) c.num_kv_heads = c.num_heads;
  if (decoder) c.type_vocab_size = 0;
  c.activation = !activation.empty() ? activation : (decoder ? "silu" : "gelu");
  c.norm_eps = static_cast<float>(norm_eps > 0 ? norm_eps : (decoder ? 1e-5 : 1e-12));
  c.rope_theta = static_cast<float>(rope_theta);
  auto parsed_dtype = archi::ParseDType(dtype);
  if (!parsed_dtype.ok()) {
    std::fprintf(stderr, "archi-gen-model: %s\n", parsed_dtype.status().ToString().c_str());
    return 2;
  }
  c.dtype = *parsed_dtype;
  archi::Status s = archi::model::WriteRandomModel(out, c, seed);
  if (!s.ok()) {
    std::fprintf(stderr, "archi-gen-model: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("wrote %s model (%lld layers, H=%lld, %s) to %s\n", arch.c_str(),
              static_cast<long long>(c.num_layers), static_cast<long long>(c.hidden_size),
              dtype.c_str(), out.c_str());
  return 0;
}
