// libFuzzer target over the model-format parsers: the bytes go to the safetensors header parser
// (from memory) and, as text, to ModelConfig::FromJson. Parsed headers are then checked against
// two tiny fixed configs (those of the seed corpus) and every tensor's bytes are touched, so
// ASan sees any out-of-bounds view. Built and run by run_fuzz_smoke.sh (ctest model_fuzz_smoke);
// by hand:
//   clang++-14 -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -I. -Ibuild/include \
//     tests/model/fuzz/safetensors_fuzz.cc runtime/model/safetensors.cc \
//     runtime/model/model_config.cc runtime/core/status.cc runtime/core/tensor.cc -o fuzz
//   ./fuzz -max_total_time=60 tests/model/fuzz/corpus
#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/model/model.h"
#include "runtime/model/model_check.h"
#include "runtime/model/safetensors.h"

namespace {

using archi::model::Architecture;
using archi::model::ModelConfig;

ModelConfig Fixed(Architecture arch) {
  ModelConfig c;
  c.architecture = arch;
  c.vocab_size = 16;
  c.hidden_size = 8;
  c.num_layers = 2;
  c.num_heads = 2;
  c.intermediate_size = 16;
  c.max_positions = 8;
  if (arch == Architecture::kBertEncoder) {
    c.num_kv_heads = 2;
    c.type_vocab_size = 2;
    c.activation = "gelu";
    c.dtype = archi::DType::kF32;
  } else {
    c.num_kv_heads = 1;
    c.type_vocab_size = 0;
    c.activation = "silu";
    c.norm_eps = 1e-5f;
    c.dtype = archi::DType::kF16;
  }
  return c;
}

void Require(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto header = archi::model::ParseSafetensorsHeader(data, size, "fuzz");
  if (header.ok()) {
    Require(header->data_offset <= size && header->data_size == size - header->data_offset);
    volatile uint8_t sink = 0;
    for (const auto& [name, e] : header->tensors) {
      Require(e.begin <= e.end && e.end <= header->data_size);
      auto view = archi::Tensor::View(const_cast<uint8_t*>(data + header->data_offset + e.begin),
                                      e.shape, e.dtype);
      Require(view.ok() && view->nbytes() == e.end - e.begin);
      if (e.end > e.begin) {
        sink = sink + data[header->data_offset + e.begin] + data[header->data_offset + e.end - 1];
      }
    }
    for (Architecture arch : {Architecture::kBertEncoder, Architecture::kLlamaDecoder}) {
      const ModelConfig c = Fixed(arch);
      for (archi::model::LayerRange r : {archi::model::LayerRange{0, -1}, {0, 1}, {1, 2}}) {
        archi::model::CheckTensorsAgainstConfig(*header, c, r, "fuzz").IgnoreError();
      }
    }
  }

  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = ModelConfig::FromJson(text);
  if (config.ok()) {
    // A valid config survives ToJson/FromJson unchanged.
    auto again = ModelConfig::FromJson(config->ToJson());
    Require(again.ok() && *again == *config);
    if (config->num_layers <= 64 && config->hidden_size <= 4096) {
      auto names = archi::model::ExpectedTensors(*config, {});
      Require(names.ok() && !names->empty());
    }
  }
  return 0;
}
