// PipelinePlan: YAML parsing, JSON round trip, Validate against a model config, and every kind of
// bad input (the message must say what is wrong and where).
#include "runtime/executor/plan.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace archi::executor {
namespace {

namespace fs = std::filesystem;

constexpr char kGoodYaml[] = R"(# a full plan
pipeline: demo-1
model: models/tiny
stages:
  - layers: [0, 2]
  - layers: [2, 4]
  - layers: [4, -1]
batching:
  max_batch: 16
  max_wait_ms: 0
  max_queue: 99
  max_tokens: 24
routing:
  max_inflight_per_link: 7
request:
  default_timeout_ms: 1234
)";

model::ModelConfig SixLayers() {
  model::ModelConfig c;
  c.vocab_size = 100;
  c.hidden_size = 32;
  c.num_layers = 6;
  c.num_heads = 4;
  c.num_kv_heads = 4;
  c.intermediate_size = 64;
  c.max_positions = 32;
  c.type_vocab_size = 2;
  return c;
}

class PlanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("archi_plan_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path Write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }

  fs::path dir_;
};

// The status is kInvalidArgument and its message holds every one of `parts`.
void ExpectInvalid(const Status& s, std::initializer_list<std::string> parts) {
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  for (const std::string& part : parts) {
    EXPECT_NE(s.message().find(part), std::string::npos) << "'" << part << "' not in: " << s;
  }
}

void ExpectYamlInvalid(const std::string& yaml, std::initializer_list<std::string> parts) {
  SCOPED_TRACE(yaml);
  auto plan = PipelinePlan::FromYaml(yaml);
  ASSERT_FALSE(plan.ok());
  ExpectInvalid(plan.status(), parts);
}

TEST_F(PlanTest, ParsesEveryKey) {
  auto plan = PipelinePlan::FromYaml(kGoodYaml);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->name, "demo-1");
  EXPECT_EQ(plan->model_dir, "models/tiny");
  ASSERT_EQ(plan->num_stages(), 3);
  EXPECT_EQ(plan->stages[0].begin, 0);
  EXPECT_EQ(plan->stages[0].end, 2);
  EXPECT_EQ(plan->stages[2].begin, 4);
  EXPECT_EQ(plan->stages[2].end, -1);
  EXPECT_EQ(plan->max_batch, 16);
  EXPECT_EQ(plan->max_wait_ms, 0);
  EXPECT_EQ(plan->max_queue, 99);
  EXPECT_EQ(plan->max_tokens, 24);
  EXPECT_EQ(plan->max_inflight_per_link, 7);
  EXPECT_EQ(plan->default_timeout_ms, 1234);
}

TEST_F(PlanTest, DefaultsForOptionalSections) {
  auto plan = PipelinePlan::FromYaml(
      "pipeline: p\nmodel: m\nstages:\n  - layers: [0, -1]\n"
      "batching:\n  # every key commented out\n");
  ASSERT_TRUE(plan.ok()) << plan.status();
  const PipelinePlan defaults;
  EXPECT_EQ(plan->max_batch, defaults.max_batch);
  EXPECT_EQ(plan->max_wait_ms, defaults.max_wait_ms);
  EXPECT_EQ(plan->max_queue, defaults.max_queue);
  EXPECT_EQ(plan->max_tokens, defaults.max_tokens);
  EXPECT_EQ(plan->max_inflight_per_link, defaults.max_inflight_per_link);
  EXPECT_EQ(plan->default_timeout_ms, defaults.default_timeout_ms);
}

TEST_F(PlanTest, YamlJsonRoundTrip) {
  auto plan = PipelinePlan::FromYaml(kGoodYaml);
  ASSERT_TRUE(plan.ok()) << plan.status();
  const std::string json = plan->ToJson();
  auto back = PipelinePlan::FromJson(json);
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << json;
  EXPECT_TRUE(*back == *plan) << json;
  EXPECT_EQ(back->ToJson(), json);

  // And after Validate (end -1 resolved, max_tokens kept).
  ASSERT_TRUE(plan->Validate(SixLayers()).ok());
  auto validated = PipelinePlan::FromJson(plan->ToJson());
  ASSERT_TRUE(validated.ok()) << validated.status();
  EXPECT_TRUE(*validated == *plan);
  EXPECT_FALSE(*validated == *back);  // stage 2 end: 6 vs -1
}

TEST_F(PlanTest, EqualityComparesEveryField) {
  auto base = PipelinePlan::FromYaml(kGoodYaml);
  ASSERT_TRUE(base.ok());
  const PipelinePlan a = *base;
  auto differs = [&](auto change) {
    PipelinePlan b = a;
    change(b);
    return !(a == b);
  };
  EXPECT_TRUE(a == a);
  EXPECT_TRUE(differs([](PipelinePlan& p) { p.name = "x"; }));
  EXPECT_TRUE(differs([](PipelinePlan& p) { p.model_dir = "x"; }));
  EXPECT_TRUE(differs([](PipelinePlan& p) { p.stages[1].begin = 3; }));
  EXPECT_TRUE(differs([](PipelinePlan& p) { p.stages[1].end = 3; }));
  EXPECT_TRUE(differs([](PipelinePlan& p) { p.stages.pop_back(); }));
  EXPECT_TRUE(differs([](PipelinePlan& p) { p.max_batch = 1; }));
  EXPECT_TRUE(differs([](PipelinePlan& p) { p.max_wait_ms = 1; }));
  EXPECT_TRUE(differs([](PipelinePlan& p) { p.max_queue = 1; }));
  EXPECT_TRUE(differs([](PipelinePlan& p) { p.max_tokens = 1; }));
  EXPECT_TRUE(differs([](PipelinePlan& p) { p.max_inflight_per_link = 1; }));
  EXPECT_TRUE(differs([](PipelinePlan& p) { p.default_timeout_ms = 1; }));
}

TEST_F(PlanTest, FileResolvesModelAgainstItsDirectory) {
  fs::create_directories(dir_ / "models" / "tiny");
  const fs::path path = Write("plan.yaml", kGoodYaml);
  auto plan = PipelinePlan::FromYamlFile(path.string());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(fs::path(plan->model_dir), (dir_ / "models" / "tiny").lexically_normal());

  // Not present next to the file: kept as written (relative to the current directory).
  const fs::path other = Write("other.yaml",
                               "pipeline: p\nmodel: nowhere/m\nstages:\n"
                               "  - layers: [0, -1]\n");
  auto kept = PipelinePlan::FromYamlFile(other.string());
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->model_dir, "nowhere/m");

  // An absolute path is never touched.
  auto abs = PipelinePlan::FromYaml("pipeline: p\nmodel: /abs/m\nstages:\n  - layers: [0, 1]\n",
                                    dir_.string());
  ASSERT_TRUE(abs.ok());
  EXPECT_EQ(abs->model_dir, "/abs/m");
}

TEST_F(PlanTest, MissingFileNamesThePath) {
  const std::string path = (dir_ / "nope.yaml").string();
  auto plan = PipelinePlan::FromYamlFile(path);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), StatusCode::kNotFound);
  EXPECT_NE(plan.status().message().find(path), std::string::npos) << plan.status();
}

TEST_F(PlanTest, FileErrorsNameTheFileKeyAndLine) {
  const fs::path path = Write("bad.yaml",
                              "pipeline: p\nmodel: m\nstages:\n  - layers: [0, 1]\n"
                              "batching:\n  max_batch: 65\n");
  auto plan = PipelinePlan::FromYamlFile(path.string());
  ASSERT_FALSE(plan.ok());
  ExpectInvalid(plan.status(), {path.string(), "batching.max_batch", "line 6", "1..64", "65"});
}

TEST_F(PlanTest, SyntaxErrorNamesTheLine) {
  const fs::path path =
      Write("syntax.yaml", "pipeline: p\nmodel: m\nstages:\n  - layers: [0, 1\nbatching: {\n");
  auto plan = PipelinePlan::FromYamlFile(path.string());
  ASSERT_FALSE(plan.ok());
  ExpectInvalid(plan.status(), {path.string(), "syntax error", "line "});
  ExpectYamlInvalid("pipeline: p\nmodel: m\n  bad indentation: 1\n", {"syntax error", "line 3"});
}

TEST_F(PlanTest, MissingKeys) {
  ExpectYamlInvalid("model: m\nstages:\n  - layers: [0, 1]\n", {"missing", "'pipeline'"});
  ExpectYamlInvalid("pipeline: p\nstages:\n  - layers: [0, 1]\n", {"missing", "'model'"});
  ExpectYamlInvalid("pipeline: p\nmodel: m\n", {"missing", "'stages'"});
  ExpectYamlInvalid("pipeline: p\nmodel: m\nstages:\n  - {}\n", {"stages[0]", "'layers'"});
  ExpectYamlInvalid("", {"empty"});
  ExpectYamlInvalid("# only a comment\n", {"empty"});
}

TEST_F(PlanTest, UnknownKeys) {
  const std::string base = "pipeline: p\nmodel: m\nstages:\n  - layers: [0, 1]\n";
  ExpectYamlInvalid(base + "batchnig:\n  max_batch: 2\n", {"'batchnig'", "unknown", "line 5"});
  ExpectYamlInvalid(base + "batching:\n  max_bacth: 2\n",
                    {"'batching.max_bacth'", "unknown", "line 6", "max_batch"});
  ExpectYamlInvalid(base + "routing:\n  max_batch: 2\n", {"'routing.max_batch'", "unknown"});
  ExpectYamlInvalid("pipeline: p\nmodel: m\nstages:\n  - layers: [0, 1]\n    device: 0\n",
                    {"'stages[0].device'", "unknown", "line 5"});
  ExpectYamlInvalid(base + "pipeline: q\n", {"'pipeline'", "duplicate", "line 5"});
}

TEST_F(PlanTest, BadNames) {
  for (const std::string& name :
       std::vector<std::string>{"'has space'", "'a/b'", "'dot.name'", "''", "\"\"",
                                std::string(33, 'x'), "'na\xc3\xafve'"}) {
    ExpectYamlInvalid("pipeline: " + name + "\nmodel: m\nstages:\n  - layers: [0, 1]\n",
                      {"'pipeline'", "[A-Za-z0-9_-]{1,32}"});
  }
  ExpectYamlInvalid("pipeline: [a]\nmodel: m\nstages:\n  - layers: [0, 1]\n",
                    {"'pipeline'", "must be a string"});
  for (const std::string& name :
       std::vector<std::string>{"a", "A_b-9", "007", std::string(32, 'z')}) {
    auto plan =
        PipelinePlan::FromYaml("pipeline: " + name + "\nmodel: m\nstages:\n  - layers: [0, 1]\n");
    ASSERT_TRUE(plan.ok()) << name << ": " << plan.status();
    EXPECT_EQ(plan->name, name);
  }
}

TEST_F(PlanTest, ScalarLimits) {
  const std::string base = "pipeline: p\nmodel: m\nstages:\n  - layers: [0, 1]\n";
  struct Case {
    std::string yaml;
    std::string key;
  };
  const Case bad[] = {
      {"batching:\n  max_batch: 0\n", "batching.max_batch"},
      {"batching:\n  max_batch: 65\n", "batching.max_batch"},
      {"batching:\n  max_batch: -1\n", "batching.max_batch"},
      {"batching:\n  max_batch: 2.5\n", "batching.max_batch"},
      {"batching:\n  max_batch: '8'\n", "batching.max_batch"},
      {"batching:\n  max_batch: eight\n", "batching.max_batch"},
      {"batching:\n  max_batch: 99999999999999999999999\n", "batching.max_batch"},
      {"batching:\n  max_batch: [8]\n", "batching.max_batch"},
      {"batching:\n  max_wait_ms: -1\n", "batching.max_wait_ms"},
      {"batching:\n  max_wait_ms: 60001\n", "batching.max_wait_ms"},
      {"batching:\n  max_queue: 0\n", "batching.max_queue"},
      {"batching:\n  max_tokens: -1\n", "batching.max_tokens"},
      {"routing:\n  max_inflight_per_link: 0\n", "routing.max_inflight_per_link"},
      {"routing:\n  max_inflight_per_link: 1025\n", "routing.max_inflight_per_link"},
      {"request:\n  default_timeout_ms: 0\n", "request.default_timeout_ms"},
      {"batching: 3\n", "batching"},
  };
  for (const Case& c : bad) ExpectYamlInvalid(base + c.yaml, {"'" + c.key + "'"});

  const char* good[] = {"batching:\n  max_batch: 1\n", "batching:\n  max_batch: 64\n",
                        "batching:\n  max_wait_ms: 60000\n",
                        "routing:\n  max_inflight_per_link: 1024\n",
                        "request:\n  default_timeout_ms: 1\n"};
  for (const char* g : good) {
    auto plan = PipelinePlan::FromYaml(base + g);
    EXPECT_TRUE(plan.ok()) << g << plan.status();
  }
}

TEST_F(PlanTest, BadStages) {
  const std::string base = "pipeline: p\nmodel: m\n";
  ExpectYamlInvalid(base + "stages: []\n", {"'stages'", "non-empty"});
  ExpectYamlInvalid(base + "stages:\n", {"'stages'", "non-empty"});
  ExpectYamlInvalid(base + "stages:\n  - layers: [0]\n", {"'stages[0].layers'", "two integers"});
  ExpectYamlInvalid(base + "stages:\n  - layers: [0, 1, 2]\n", {"'stages[0].layers'"});
  ExpectYamlInvalid(base + "stages:\n  - layers: 3\n", {"'stages[0].layers'"});
  ExpectYamlInvalid(base + "stages:\n  - layers: [a, 1]\n", {"'stages[0].layers[0]'"});
  ExpectYamlInvalid(base + "stages:\n  - layers: [-1, 1]\n", {"'stages[0].layers[0]'"});
  ExpectYamlInvalid(base + "stages:\n  - layers: [0, -2]\n", {"'stages[0].layers[1]'"});
  ExpectYamlInvalid(base + "stages:\n  - [0, 1]\n", {"'stages[0]'", "layers"});
}

TEST_F(PlanTest, ValidateResolvesAndChecksStages) {
  auto parsed = PipelinePlan::FromYaml(kGoodYaml);
  ASSERT_TRUE(parsed.ok());
  PipelinePlan plan = *parsed;
  ASSERT_TRUE(plan.Validate(SixLayers()).ok());
  EXPECT_EQ(plan.stages[2].end, 6);
  EXPECT_EQ(plan.max_tokens, 24);

  auto stages = [](std::vector<model::LayerRange> s, int max_tokens = 0) {
    PipelinePlan p;
    p.name = "p";
    p.model_dir = "m";
    p.stages = std::move(s);
    p.max_tokens = max_tokens;
    return p;
  };
  PipelinePlan whole = stages({{0, -1}});
  ASSERT_TRUE(whole.Validate(SixLayers()).ok());
  EXPECT_EQ(whole.stages[0].end, 6);
  EXPECT_EQ(whole.max_tokens, 32);  // 0: the model's max_positions

  struct Case {
    std::vector<model::LayerRange> stages;
    std::string expect;
  };
  const Case bad[] = {
      {{{0, 2}, {3, 6}}, "gap"},            // layer 2 in no stage
      {{{1, 6}}, "gap"},                    // layer 0 in no stage
      {{{0, 3}, {2, 6}}, "overlap"},        // layer 2 twice
      {{{0, 2}, {2, 4}}, "[4, 6)"},         // layers 4, 5 uncovered
      {{{0, 2}, {2, 2}, {2, 6}}, "empty"},  // an empty stage
      {{{0, 7}}, "past"},                   // beyond the model
      {{{0, -1}, {6, -1}}, "empty"},        // -1 twice: the second is [6, 6)
      {{}, "no stages"},
  };
  for (const Case& c : bad) {
    PipelinePlan p = stages(c.stages);
    const PipelinePlan before = p;
    ExpectInvalid(p.Validate(SixLayers()), {c.expect});
    EXPECT_TRUE(p == before) << "a failed Validate must leave the plan as it was";
  }

  PipelinePlan too_long = stages({{0, -1}}, 33);
  ExpectInvalid(too_long.Validate(SixLayers()), {"max_tokens", "33", "32"});
  PipelinePlan bad_batch = stages({{0, -1}});
  bad_batch.max_batch = 65;
  ExpectInvalid(bad_batch.Validate(SixLayers()), {"max_batch"});
  PipelinePlan bad_name = stages({{0, -1}});
  bad_name.name = "a b";
  ExpectInvalid(bad_name.Validate(SixLayers()), {"pipeline"});
}

TEST_F(PlanTest, BadJson) {
  auto syntax = PipelinePlan::FromJson("{\"pipeline\": ");
  ASSERT_FALSE(syntax.ok());
  ExpectInvalid(syntax.status(), {"JSON"});
  auto unknown = PipelinePlan::FromJson(
      R"({"pipeline":"p","model":"m","stages":[{"layers":[0,1]}],"extra":1})");
  ASSERT_FALSE(unknown.ok());
  ExpectInvalid(unknown.status(), {"'extra'", "unknown"});
  // JSON has real types: a string is not an integer.
  auto typed = PipelinePlan::FromJson(
      R"({"pipeline":"p","model":"m","stages":[{"layers":[0,1]}],"batching":{"max_batch":"8"}})");
  ASSERT_FALSE(typed.ok());
  ExpectInvalid(typed.status(), {"'batching.max_batch'"});
  auto range = PipelinePlan::FromJson(
      R"({"pipeline":"p","model":"m","stages":[{"layers":[0,1]}],"batching":{"max_batch":0}})");
  ASSERT_FALSE(range.ok());
  ExpectInvalid(range.status(), {"'batching.max_batch'", "1..64"});
}

}  // namespace
}  // namespace archi::executor
