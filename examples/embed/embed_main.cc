// archi-embed: sentence embeddings with a BERT encoder in the Archipelago model format (by default
// all-MiniLM-L6-v2 as converted by scripts/fetch_model.sh), on the CPU.
//
//   archi-embed "first sentence" "second sentence"      one embedding per line
//   echo -e "a\nb" | archi-embed --similarity            cosine similarity matrix
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstddef>
#include <limits>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "kernels/common/numeric.h"
#include "runtime/core/params.h"
#include "runtime/model/bert.h"
#include "runtime/model/model.h"
#include "runtime/model/wordpiece.h"

namespace {

int Fail(const archi::Status& s) {
  std::fprintf(stderr, "archi-embed: %s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"archi-embed: sentence embeddings (mean pooling + L2 norm) with a BERT encoder"};
  std::string model_dir = archi::EnvString("ARCHI_MINILM_DIR", ARCHI_MINILM_DEFAULT_DIR);
  std::vector<std::string> sentences;
  bool similarity = false;
  bool print_ids = false;
  int threads = 0;
  int64_t max_length = 256;
  int digits = 6;
  app.add_option("--model", model_dir,
                 "model directory (config.json, model.safetensors, vocab.txt); default "
                 "$ARCHI_MINILM_DIR or the build's models/minilm")
      ->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (0 = all)")
      ->check(CLI::Range(0, 4096))
      ->capture_default_str();
  app.add_option("--max-length", max_length,
                 "tokens per sentence incl. [CLS]/[SEP] (all-MiniLM-L6-v2 was trained with 256)")
      ->check(CLI::Range(int64_t{2}, std::numeric_limits<int64_t>::max()))
      ->capture_default_str();
  // Bounded: printf pads to the precision, so a huge value would print gigabytes per number.
  app.add_option("--digits", digits, "decimals printed per value")
      ->check(CLI::Range(0, 20))
      ->capture_default_str();
  app.add_flag("--similarity", similarity, "print the cosine similarity matrix instead");
  app.add_flag("--ids", print_ids, "print the token ids of each sentence instead (no model run)");
  app.add_option("sentences", sentences, "sentences (default: one per line from stdin)");
  CLI11_PARSE(app, argc, argv);

  if (sentences.empty()) {
    for (std::string line; std::getline(std::cin, line);) {
      if (!line.empty()) sentences.push_back(line);
    }
  }
  if (sentences.empty()) {
    std::fprintf(stderr, "archi-embed: no sentences (pass them as arguments or on stdin)\n");
    return 2;
  }

  auto tok =
      archi::model::WordPieceTokenizer::Load(model_dir + "/vocab.txt", {.max_length = max_length});
  if (!tok.ok()) {
    std::fprintf(stderr, "archi-embed: get the model with scripts/fetch_model.sh BUILD_DIR\n");
    return Fail(tok.status());
  }
  if (print_ids) {
    for (const auto& s : sentences) {
      auto r = (*tok)->Encode(s);
      if (!r.ok()) return Fail(r.status());
      for (size_t i = 0; i < r->size(); ++i) std::printf("%s%d", i ? " " : "", (*r)[i]);
      std::printf("\n");
    }
    return 0;
  }
  auto model = archi::model::Model::Load(model_dir);
  if (!model.ok()) return Fail(model.status());
  auto enc = archi::model::BertEncoder::Create(*model, {.num_threads = threads});
  if (!enc.ok()) return Fail(enc.status());

  // Encode in batches: one Encode call allocates activations for all its rows (padded to the
  // longest), so a long stdin in a single call would need memory proportional to its length.
  constexpr size_t kBatch = 64;
  const int64_t n = static_cast<int64_t>(sentences.size());
  const int64_t h = (*enc)->config().hidden_size;
  std::vector<float> embeddings(static_cast<size_t>(n * h));
  for (size_t first = 0; first < sentences.size(); first += kBatch) {
    std::vector<std::vector<int32_t>> ids;
    for (size_t i = first; i < std::min(sentences.size(), first + kBatch); ++i) {
      auto r = (*tok)->Encode(sentences[i]);
      if (!r.ok()) return Fail(r.status().WithContext("sentence " + std::to_string(i + 1)));
      ids.push_back(std::move(*r));
    }
    auto emb = (*enc)->Encode(ids);
    if (!emb.ok()) return Fail(emb.status());
    // The embeddings have the model's dtype; print them as f32.
    float* dst = embeddings.data() + static_cast<std::ptrdiff_t>(first) * h;
    for (int64_t i = 0; i < emb->numel(); ++i) {
      switch (emb->dtype()) {
        case archi::DType::kF16:
          dst[i] = archi::kernels::HalfToFloat(emb->data_as<const uint16_t>()[i]);
          break;
        case archi::DType::kBF16:
          dst[i] = archi::kernels::Bf16ToFloat(emb->data_as<const uint16_t>()[i]);
          break;
        default:
          dst[i] = emb->data_as<const float>()[i];
      }
    }
  }
  const float* e = embeddings.data();

  if (similarity) {
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double dot = 0;
        for (int64_t k = 0; k < h; ++k) dot += double(e[i * h + k]) * e[j * h + k];
        std::printf("%s%.*f", j ? " " : "", digits, dot);  // rows are unit vectors
      }
      std::printf("  %s\n", sentences[static_cast<size_t>(i)].c_str());
    }
    return 0;
  }
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < h; ++k) std::printf("%s%.*f", k ? " " : "", digits, e[i * h + k]);
    std::printf("\n");
  }
  return 0;
}
