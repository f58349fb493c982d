// archi-embed: sentence embeddings with a BERT encoder in the Archipelago model format (by default
// all-MiniLM-L6-v2 as converted by scripts/fetch_model.sh), on the CPU.
//
//   archi-embed "first sentence" "second sentence"      one embedding per line
//   echo -e "a\nb" | archi-embed --similarity            cosine similarity matrix
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

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
  app.add_option("--threads", threads, "CPU threads (0 = all)")->capture_default_str();
  app.add_option("--max-length", max_length,
                 "tokens per sentence incl. [CLS]/[SEP] (all-MiniLM-L6-v2 was trained with 256)")
      ->capture_default_str();
  app.add_option("--digits", digits, "decimals printed per value")->capture_default_str();
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

  std::vector<std::vector<int32_t>> ids;
  for (const auto& s : sentences) {
    auto r = (*tok)->Encode(s);
    if (!r.ok()) return Fail(r.status());
    ids.push_back(std::move(*r));
  }
  auto emb = (*enc)->Encode(ids);
  if (!emb.ok()) return Fail(emb.status());
  const int64_t n = emb->shape()[0], h = emb->shape()[1];
  const float* e = emb->data_as<const float>();

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
