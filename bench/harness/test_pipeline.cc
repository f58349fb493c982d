#include "bench/harness/test_pipeline.h"

#include <filesystem>
#include <fstream>
#include <random>

#include "runtime/model/model.h"

namespace archi::harness {

Status WriteTestModel(const std::string& dir) {
  model::ModelConfig c;
  c.architecture = model::Architecture::kBertEncoder;
  c.vocab_size = kTestVocab;
  c.hidden_size = kTestHidden;
  c.num_layers = kTestLayers;
  c.num_heads = 4;
  c.num_kv_heads = 4;
  c.intermediate_size = 128;
  c.max_positions = 64;
  c.type_vocab_size = 2;
  return model::WriteRandomModel(dir, c, 7);
}

Result<std::string> WriteTestPlan(const std::string& dir, const std::string& name,
                                  const std::string& model_dir,
                                  const std::vector<int>& stages_end, int max_batch,
                                  int64_t default_timeout_ms) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const std::string path = dir + "/plan.yaml";
  std::ofstream plan(path);
  plan << "pipeline: " << name << "\nmodel: " << model_dir << "\nstages:\n";
  int begin = 0;
  for (int end : stages_end) {
    plan << "  - layers: [" << begin << ", " << end << "]\n";
    begin = end;
  }
  plan << "batching:\n  max_batch: " << max_batch << "\n  max_wait_ms: 2\n  max_tokens: "
       << kTestMaxTokens << "\nrequest:\n  default_timeout_ms: " << default_timeout_ms << "\n";
  plan.close();
  if (!plan) return InternalError("cannot write " + path);
  return path;
}

std::vector<std::vector<int32_t>> RandomSequences(int n, uint64_t seed, int vocab, int max_len) {
  std::mt19937 gen(static_cast<uint32_t>(seed));
  std::uniform_int_distribution<int> len(1, max_len);
  std::uniform_int_distribution<int> tok(0, vocab - 1);
  std::vector<std::vector<int32_t>> out;
  for (int i = 0; i < n; ++i) {
    std::vector<int32_t> s(static_cast<size_t>(len(gen)));
    for (auto& t : s) t = tok(gen);
    out.push_back(std::move(s));
  }
  return out;
}

LoadOptions ClosedTestLoad(const std::string& target, double duration_s, int concurrency) {
  LoadOptions o;
  o.target = target;
  o.mode = LoadOptions::Mode::kClosed;
  o.concurrency = concurrency;
  for (auto& s : RandomSequences(64, 3)) o.inputs.push_back(LoadInput::Ids(std::move(s)));
  o.duration_s = duration_s;
  o.deadline_ms = 20'000;
  return o;
}

}  // namespace archi::harness
