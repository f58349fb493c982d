// Model format: safetensors parsing/validation, ModelConfig, layer ranges, the random-model
// generator and zero-copy loading.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/common/numeric.h"
#include "runtime/core/device_buffer.h"
#include "runtime/model/model.h"
#include "runtime/model/safetensors.h"

namespace archi::model {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// ---- helpers -------------------------------------------------------------------------------

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "archi_model_test_XXXXXX").string();
    char* p = ::mkdtemp(tmpl.data());
    EXPECT_NE(p, nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return (fs::path(path_) / name).string(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

ModelConfig TinyConfig(Architecture arch, DType dtype = DType::kF32, int64_t layers = 2) {
  ModelConfig c;
  c.architecture = arch;
  c.vocab_size = 50;
  c.hidden_size = 16;
  c.num_layers = layers;
  c.num_heads = 4;
  c.intermediate_size = 24;
  c.max_positions = 20;
  c.dtype = dtype;
  if (arch == Architecture::kBertEncoder) {
    c.num_kv_heads = 4;
    c.type_vocab_size = 2;
    c.activation = "gelu";
    c.norm_eps = 1e-12f;
  } else {
    c.num_kv_heads = 2;
    c.type_vocab_size = 0;
    c.activation = "silu";
    c.norm_eps = 1e-5f;
  }
  return c;
}

// A safetensors image: 8-byte length, header text as given, `data_bytes` zero bytes.
std::string Image(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\0');
}

Result<SafetensorsHeader> Parse(const std::string& image) {
  return ParseSafetensorsHeader(reinterpret_cast<const uint8_t*>(image.data()), image.size(),
                                "mem.safetensors");
}

#define EXPECT_ERROR(expr, code_, substr)                                  \
  do {                                                                     \
    const auto& st_ = (expr);                                              \
    ASSERT_FALSE(st_.ok()) << #expr << " unexpectedly succeeded";          \
    const Status& s_ = ::archi::internal::AsStatus(st_);                   \
    EXPECT_EQ(s_.code(), (code_)) << s_.ToString();                        \
    EXPECT_THAT(std::string(s_.message()), HasSubstr(substr)) << s_.ToString(); \
  } while (0)

float ValueAt(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kF32: return t.data_as<const float>()[i];
    case DType::kF16: return kernels::HalfToFloat(t.data_as<const uint16_t>()[i]);
    case DType::kBF16: return kernels::Bf16ToFloat(t.data_as<const uint16_t>()[i]);
    default: return 0.0f;
  }
}

// True when [p, p+n) lies inside a mapping of `file` according to /proc/self/maps.
bool InsideFileMapping(const void* p, size_t n, const std::string& file) {
  const std::string want = fs::canonical(file).string();
  std::ifstream maps("/proc/self/maps");
  std::string line;
  const auto addr = reinterpret_cast<uintptr_t>(p);
  while (std::getline(maps, line)) {
    uintptr_t lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) != 2) continue;
    if (line.size() >= want.size() && line.compare(line.size() - want.size(), want.size(), want) == 0 &&
        addr >= lo && addr + n <= hi) {
      return true;
    }
  }
  return false;
}

// Rewrites dir/model.safetensors with `edit` applied to the list of its tensors.
void RewriteTensors(const std::string& dir,
                    const std::function<void(std::vector<SafetensorsWriteEntry>&)>& edit) {
  const std::string path = (fs::path(dir) / "model.safetensors").string();
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<SafetensorsWriteEntry> entries;
  for (const auto& [name, e] : file->header().tensors) {
    entries.push_back({name, e.dtype, e.shape, file->DataOf(e)});
  }
  edit(entries);
  auto bytes = SerializeSafetensors(entries);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  WriteFile(path, *bytes);  // `file` keeps the old mapping alive until here
}

// ---- safetensors parser ---------------------------------------------------------------------

TEST(Safetensors, SerializeParseRoundTripMixedDtypes) {
  std::vector<float> a = {1, 2, 3, 4, 5, 6};
  std::vector<uint16_t> b = {7, 8, 9};
  std::vector<int64_t> c = {-1, 42};
  std::vector<uint8_t> d = {1, 2, 3, 4, 5};
  std::vector<int32_t> e = {3};
  auto image = SerializeSafetensors({{"a", DType::kF32, {2, 3}, a.data()},
                                     {"b", DType::kBF16, {3}, b.data()},
                                     {"c", DType::kI64, {2}, c.data()},
                                     {"d", DType::kU8, {5}, d.data()},
                                     {"e", DType::kI32, {}, e.data()},
                                     {"empty", DType::kF16, {0, 4}, nullptr}},
                                    {{"k", "v"}});
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ((8 + (static_cast<uint8_t>((*image)[0]) | static_cast<uint8_t>((*image)[1]) << 8)) % 64, 0u);
  auto h = Parse(*image);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->tensors.size(), 6u);
  EXPECT_EQ(h->metadata.at("k"), "v");
  EXPECT_EQ(h->tensors.at("a").dtype, DType::kF32);
  EXPECT_EQ(h->tensors.at("a").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(h->tensors.at("b").dtype, DType::kBF16);
  EXPECT_EQ(h->tensors.at("c").dtype, DType::kI64);
  EXPECT_EQ(h->tensors.at("d").dtype, DType::kU8);
  EXPECT_EQ(h->tensors.at("e").shape, std::vector<int64_t>{});
  const auto& ea = h->tensors.at("a");
  EXPECT_EQ(std::memcmp(image->data() + h->data_offset + ea.begin, a.data(), 24), 0);
  const auto& ec = h->tensors.at("c");
  EXPECT_EQ(std::memcmp(image->data() + h->data_offset + ec.begin, c.data(), 16), 0);
}

TEST(Safetensors, WriterRejectsDuplicatesAndReservedNames) {
  float x = 0;
  EXPECT_ERROR(SerializeSafetensors({{"a", DType::kF32, {1}, &x}, {"a", DType::kF32, {1}, &x}}),
               StatusCode::kInvalidArgument, "duplicate tensor 'a'");
  EXPECT_ERROR(SerializeSafetensors({{"__metadata__", DType::kF32, {1}, &x}}),
               StatusCode::kInvalidArgument, "__metadata__");
}

TEST(Safetensors, TruncatedBeforeHeaderLength) {
  EXPECT_ERROR(Parse(std::string(5, '\0')), StatusCode::kDataLoss, "mem.safetensors: file is 5 bytes");
  EXPECT_ERROR(Parse(""), StatusCode::kDataLoss, "shorter than the 8-byte header length");
}

TEST(Safetensors, HeaderLengthBeyondFile) {
  std::string img = Image("{}", 0);
  img[0] = 100;
  EXPECT_ERROR(Parse(img), StatusCode::kDataLoss, "header length 100 runs past the end");
  img = Image("{}", 0);
  for (int i = 0; i < 8; ++i) img[i] = '\xff';
  EXPECT_ERROR(Parse(img), StatusCode::kDataLoss, "runs past the end");
}

TEST(Safetensors, BadJson) {
  EXPECT_ERROR(Parse(Image("{\"a\": ", 0)), StatusCode::kInvalidArgument, "not valid JSON");
  EXPECT_ERROR(Parse(Image("{\"a\": {}} trailing", 0)), StatusCode::kInvalidArgument,
               "not valid JSON");
  EXPECT_ERROR(Parse(Image("{\"\xff\": 1}", 0)), StatusCode::kInvalidArgument, "not valid JSON");
}

TEST(Safetensors, NonObjectHeader) {
  EXPECT_ERROR(Parse(Image("[1, 2, 3]", 0)), StatusCode::kInvalidArgument,
               "header is a JSON array, not an object");
  EXPECT_ERROR(Parse(Image("\"str\"", 0)), StatusCode::kInvalidArgument, "not an object");
  EXPECT_ERROR(Parse(Image("{\"t\": 5}", 0)), StatusCode::kInvalidArgument,
               "tensor 't': entry is not a JSON object");
  EXPECT_ERROR(Parse(Image("{\"__metadata__\": {\"k\": 1}}", 0)), StatusCode::kInvalidArgument,
               "__metadata__");
}

TEST(Safetensors, MalformedEntries) {
  EXPECT_ERROR(Parse(Image(R"({"t": {"shape": [1], "data_offsets": [0, 4]}})", 4)),
               StatusCode::kInvalidArgument, "tensor 't': missing \"dtype\"");
  EXPECT_ERROR(Parse(Image(R"({"t": {"dtype": "F32", "data_offsets": [0, 4]}})", 4)),
               StatusCode::kInvalidArgument, "missing \"shape\"");
  EXPECT_ERROR(Parse(Image(R"({"t": {"dtype": "F32", "shape": [1]}})", 4)),
               StatusCode::kInvalidArgument, "missing \"data_offsets\"");
  EXPECT_ERROR(Parse(Image(R"({"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4)),
               StatusCode::kInvalidArgument, "negative dimension");
  EXPECT_ERROR(Parse(Image(R"({"t": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})", 4)),
               StatusCode::kInvalidArgument, "non-integer");
  EXPECT_ERROR(Parse(Image(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", 4)),
               StatusCode::kInvalidArgument, "two integers");
  EXPECT_ERROR(Parse(Image(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})", 4)),
               StatusCode::kInvalidArgument, "non-negative");
}

TEST(Safetensors, UnknownDtype) {
  EXPECT_ERROR(Parse(Image(R"({"w": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 4]}})", 4)),
               StatusCode::kInvalidArgument, "tensor 'w': unknown dtype 'Q4'");
  EXPECT_ERROR(Parse(Image(R"({"w": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}})", 8)),
               StatusCode::kInvalidArgument, "unsupported dtype 'F64'");
}

TEST(Safetensors, OffsetsOutOfRangeOrReversed) {
  EXPECT_ERROR(Parse(Image(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8)),
               StatusCode::kDataLoss, "tensor 'w': data_offsets [0, 16) run past the end of the 8-byte");
  EXPECT_ERROR(Parse(Image(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})", 8)),
               StatusCode::kInvalidArgument, "end 4 < begin 8");
  EXPECT_ERROR(Parse(Image(
                   R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [18446744073709551615, 18446744073709551615]}})",
                   0)),
               StatusCode::kInvalidArgument, "byte size 0");
}

TEST(Safetensors, ByteSizeMismatch) {
  EXPECT_ERROR(Parse(Image(R"({"w": {"dtype": "F16", "shape": [2, 3], "data_offsets": [0, 8]}})", 16)),
               StatusCode::kInvalidArgument, "tensor 'w': byte size 8 (data_offsets) != 12");
  EXPECT_ERROR(Parse(Image(
                   R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})",
                   0)),
               StatusCode::kInvalidArgument, "overflows");
}

TEST(Safetensors, OverlappingTensors) {
  EXPECT_ERROR(Parse(Image(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                               "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                           16)),
               StatusCode::kInvalidArgument, "tensors 'a' [0, 8) and 'b' [4, 12) overlap");
  // Touching ranges and empty tensors do not overlap.
  EXPECT_TRUE(Parse(Image(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                              "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
                              "c": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}})",
                          16))
                  .ok());
}

TEST(Safetensors, OpenMissingFileIsNotFound) {
  TempDir dir;
  EXPECT_ERROR(SafetensorsFile::Open(dir / "nope.safetensors"), StatusCode::kNotFound,
               "nope.safetensors");
  EXPECT_ERROR(SafetensorsFile::Open(dir.path()), StatusCode::kInvalidArgument,
               "not a regular file");
}

// ---- ModelConfig ----------------------------------------------------------------------------

TEST(ModelConfig, ToJsonFromJsonRoundTrip) {
  for (auto arch : {Architecture::kBertEncoder, Architecture::kLlamaDecoder}) {
    for (auto dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
      ModelConfig c = TinyConfig(arch, dtype);
      auto back = ModelConfig::FromJson(c.ToJson());
      ASSERT_TRUE(back.ok()) << back.status();
      EXPECT_EQ(*back, c);
    }
  }
}

TEST(ModelConfig, Defaults) {
  auto c = ModelConfig::FromJson(R"({"architecture": "llama", "vocab_size": 10, "hidden_size": 8,
    "num_layers": 1, "num_heads": 2, "intermediate_size": 16, "max_positions": 4,
    "dtype": "bf16", "metadata": {"source": "anything"}})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_EQ(c->activation, "silu");
  EXPECT_EQ(c->dtype, DType::kBF16);
  EXPECT_EQ(c->head_dim(), 4);
}

TEST(ModelConfig, MissingFieldsAreNamed) {
  for (auto arch : {Architecture::kBertEncoder, Architecture::kLlamaDecoder}) {
    const nlohmann::json full = nlohmann::json::parse(TinyConfig(arch).ToJson());
    std::vector<std::string> required = {"architecture", "vocab_size", "hidden_size",
                                         "num_layers", "num_heads", "intermediate_size",
                                         "max_positions", "dtype"};
    if (arch == Architecture::kBertEncoder) required.push_back("type_vocab_size");
    for (const auto& key : required) {
      nlohmann::json j = full;
      j.erase(key);
      EXPECT_ERROR(ModelConfig::FromJson(j.dump()), StatusCode::kInvalidArgument,
                   "missing field \"" + key + "\"");
    }
  }
}

TEST(ModelConfig, InvalidValues) {
  const nlohmann::json bert = nlohmann::json::parse(TinyConfig(Architecture::kBertEncoder).ToJson());
  const nlohmann::json llama = nlohmann::json::parse(TinyConfig(Architecture::kLlamaDecoder).ToJson());
  auto with = [](nlohmann::json j, const std::string& key, nlohmann::json v) {
    j[key] = std::move(v);
    return ModelConfig::FromJson(j.dump());
  };
  EXPECT_ERROR(ModelConfig::FromJson("{"), StatusCode::kInvalidArgument, "not valid JSON");
  EXPECT_ERROR(ModelConfig::FromJson("[]"), StatusCode::kInvalidArgument, "not a JSON object");
  EXPECT_ERROR(with(bert, "hidden_size", 0), StatusCode::kInvalidArgument,
               "\"hidden_size\" must be positive");
  EXPECT_ERROR(with(bert, "vocab_size", -3), StatusCode::kInvalidArgument,
               "\"vocab_size\" must be positive");
  EXPECT_ERROR(with(bert, "num_layers", 2.5), StatusCode::kInvalidArgument,
               "\"num_layers\" must be an integer");
  EXPECT_ERROR(with(bert, "num_layers", "2"), StatusCode::kInvalidArgument,
               "\"num_layers\" must be an integer");
  EXPECT_ERROR(with(bert, "hidden_size", 18), StatusCode::kInvalidArgument,
               "not divisible by \"num_heads\"");
  EXPECT_ERROR(with(llama, "num_kv_heads", 3), StatusCode::kInvalidArgument,
               "not a multiple of \"num_kv_heads\"");
  EXPECT_ERROR(with(bert, "num_kv_heads", 2), StatusCode::kInvalidArgument,
               "must equal \"num_heads\"");
  EXPECT_ERROR(with(bert, "architecture", "gpt9"), StatusCode::kInvalidArgument,
               "unknown \"architecture\" \"gpt9\"");
  EXPECT_ERROR(with(bert, "activation", "relu"), StatusCode::kInvalidArgument,
               "unknown \"activation\" \"relu\"");
  EXPECT_ERROR(with(llama, "activation", "gelu"), StatusCode::kInvalidArgument,
               "unknown \"activation\" \"gelu\"");
  EXPECT_ERROR(with(bert, "dtype", "f64"), StatusCode::kInvalidArgument, "unknown \"dtype\" \"f64\"");
  EXPECT_ERROR(with(bert, "dtype", "i32"), StatusCode::kInvalidArgument, "unknown \"dtype\"");
  EXPECT_ERROR(with(bert, "norm_eps", -1.0), StatusCode::kInvalidArgument, "\"norm_eps\"");
  EXPECT_ERROR(with(llama, "type_vocab_size", 2), StatusCode::kInvalidArgument,
               "\"type_vocab_size\" must be 0");
  EXPECT_ERROR(with(bert, "hiden_size", 16), StatusCode::kInvalidArgument,
               "unknown field \"hiden_size\"");
  EXPECT_ERROR(with(bert, "vocab_size", int64_t{1} << 40), StatusCode::kInvalidArgument,
               "exceeds the limit");
  EXPECT_ERROR(with(llama, "hidden_size", 12), StatusCode::kInvalidArgument,  // head dim 3
               "must be even");
}

// ---- layer ranges ---------------------------------------------------------------------------

TEST(ExpectedTensors, RangesAreDisjointAndCoverTheModel) {
  for (auto arch : {Architecture::kBertEncoder, Architecture::kLlamaDecoder}) {
    ModelConfig c = TinyConfig(arch, DType::kF32, 4);
    auto full = ExpectedTensors(c, {});
    ASSERT_TRUE(full.ok());
    auto a = ExpectedTensors(c, {0, 2});
    auto b = ExpectedTensors(c, {2, -1});
    ASSERT_TRUE(a.ok() && b.ok());
    std::map<std::string, std::vector<int64_t>> both = *a;
    for (const auto& [name, shape] : *b) {
      EXPECT_TRUE(both.emplace(name, shape).second) << name << " in both stages";
    }
    EXPECT_EQ(both, *full);
    EXPECT_TRUE(a->count("embed.tokens"));
    EXPECT_FALSE(b->count("embed.tokens"));
    if (arch == Architecture::kLlamaDecoder) {
      EXPECT_EQ(full->size(), 1 + 4 * 9 + 2u);
      EXPECT_TRUE(b->count("lm_head.weight") && b->count("final_norm.weight"));
      EXPECT_FALSE(a->count("lm_head.weight"));
      EXPECT_EQ(full->at("layers.3.attn.k.weight"), (std::vector<int64_t>{8, 16}));  // Hkv*D = 2*4
      EXPECT_EQ(full->at("layers.0.attn.out.weight"), (std::vector<int64_t>{16, 16}));
    } else {
      EXPECT_EQ(full->size(), 5 + 4 * 16u);
      EXPECT_EQ(full->at("layers.1.mlp.up.weight"), (std::vector<int64_t>{24, 16}));
      EXPECT_EQ(full->at("embed.positions"), (std::vector<int64_t>{20, 16}));
    }
  }
}

TEST(ExpectedTensors, RejectsEmptyAndOutOfBoundsRanges) {
  ModelConfig c = TinyConfig(Architecture::kLlamaDecoder, DType::kF32, 4);
  for (LayerRange r : {LayerRange{2, 2}, LayerRange{3, 1}, LayerRange{-1, 2}, LayerRange{0, 5},
                       LayerRange{4, -1}}) {
    EXPECT_ERROR(ExpectedTensors(c, r), StatusCode::kInvalidArgument, "is empty or outside [0, 4)");
  }
}

// ---- generator and loader -------------------------------------------------------------------

class RoundTrip : public ::testing::TestWithParam<std::tuple<Architecture, DType>> {};

TEST_P(RoundTrip, GeneratedModelLoadsZeroCopy) {
  const auto [arch, dtype] = GetParam();
  TempDir dir;
  const ModelConfig c = TinyConfig(arch, dtype, 3);
  ASSERT_TRUE(WriteRandomModel(dir.path(), c, 7).ok());
  auto m = Model::Load(dir.path());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->config(), c);
  EXPECT_EQ((*m)->range().begin, 0);
  EXPECT_EQ((*m)->range().end, 3);
  auto expected = ExpectedTensors(c, {});
  ASSERT_TRUE(expected.ok());
  ASSERT_EQ((*m)->tensors().size(), expected->size());

  const std::string weights = dir / "model.safetensors";
  const std::string bytes = ReadFile(weights);
  auto header = ParseSafetensorsHeader(reinterpret_cast<const uint8_t*>(bytes.data()),
                                       bytes.size(), weights);
  ASSERT_TRUE(header.ok()) << header.status();
  for (const auto& [name, shape] : *expected) {
    auto t = (*m)->Get(name);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->shape(), shape) << name;
    EXPECT_EQ(t->dtype(), dtype) << name;
    EXPECT_TRUE(t->device().is_cpu());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data()) % DTypeSize(dtype), 0u) << name;
    // Zero-copy: the view points into the file's mapping and holds the file's bytes.
    EXPECT_TRUE(InsideFileMapping(t->data(), t->nbytes(), weights)) << name;
    const auto& e = header->tensors.at(name);
    EXPECT_EQ(std::memcmp(t->data(), bytes.data() + header->data_offset + e.begin, t->nbytes()), 0);
    // Value ranges: norms 1/0, biases within 0.02, weights within 1/sqrt(fan_in).
    const bool norm = name.find("norm") != std::string::npos;
    const bool bias = name.size() > 5 && name.substr(name.size() - 5) == ".bias";
    float max_abs = 0;
    for (int64_t i = 0; i < t->numel(); ++i) {
      const float v = ValueAt(*t, i);
      if (norm) {
        EXPECT_EQ(v, bias ? 0.0f : 1.0f) << name;
        if (v != (bias ? 0.0f : 1.0f)) break;
      }
      max_abs = std::max(max_abs, std::fabs(v));
    }
    if (!norm) {
      const float limit = bias ? 0.02f : name.rfind("embed.", 0) == 0
                                             ? 0.1f
                                             : 1.0f / std::sqrt(static_cast<float>(shape.back()));
      EXPECT_LE(max_abs, limit * 1.01f) << name;
      EXPECT_GT(max_abs, limit * 0.3f) << name;
    }
  }
  EXPECT_ERROR((*m)->Get("layers.99.attn.q.weight"), StatusCode::kNotFound, "layers.99.attn.q.weight");
}

INSTANTIATE_TEST_SUITE_P(
    Model, RoundTrip,
    ::testing::Combine(::testing::Values(Architecture::kBertEncoder, Architecture::kLlamaDecoder),
                       ::testing::Values(DType::kF32, DType::kF16, DType::kBF16)),
    [](const auto& info) {
      return std::string(ArchitectureName(std::get<0>(info.param))) + "_" +
             std::string(DTypeName(std::get<1>(info.param)));
    });

TEST(Model, ViewsOutliveNothingButTheModel) {
  TempDir dir;
  ASSERT_TRUE(WriteRandomModel(dir.path(), TinyConfig(Architecture::kLlamaDecoder), 1).ok());
  Tensor t;
  {
    auto m = Model::Load(dir.path());
    ASSERT_TRUE(m.ok()) << m.status();
    std::shared_ptr<const Model> keep = *m;
    t = *keep->Get("final_norm.weight");
    // Replacing the file on disk does not disturb a loaded model (the mapping is private).
    ASSERT_TRUE(WriteRandomModel(dir.path(), TinyConfig(Architecture::kLlamaDecoder), 2).ok());
    EXPECT_EQ(t.data_as<const float>()[0], 1.0f);
  }
}

TEST(Generator, DeterministicForASeed) {
  for (auto arch : {Architecture::kBertEncoder, Architecture::kLlamaDecoder}) {
    TempDir a, b, c;
    const ModelConfig cfg = TinyConfig(arch, DType::kBF16);
    ASSERT_TRUE(WriteRandomModel(a.path(), cfg, 42).ok());
    ASSERT_TRUE(WriteRandomModel(b.path(), cfg, 42).ok());
    ASSERT_TRUE(WriteRandomModel(c.path(), cfg, 43).ok());
    EXPECT_EQ(ReadFile(a / "model.safetensors"), ReadFile(b / "model.safetensors"));
    EXPECT_EQ(ReadFile(a / "config.json"), ReadFile(b / "config.json"));
    EXPECT_NE(ReadFile(a / "model.safetensors"), ReadFile(c / "model.safetensors"));
  }
}

TEST(Generator, KnownValue) {
  // Pins the formula (mt19937_64 + fixed arithmetic): a change here changes every test model.
  TempDir dir;
  ASSERT_TRUE(WriteRandomModel(dir.path(), TinyConfig(Architecture::kLlamaDecoder), 1).ok());
  auto m = Model::Load(dir.path());
  ASSERT_TRUE(m.ok()) << m.status();
  const float v = (*m)->Get("layers.0.attn.q.weight")->data_as<const float>()[0];
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  RecordProperty("q0_bits", std::to_string(bits));
  EXPECT_LE(std::fabs(v), 0.25f);
}

TEST(Generator, RejectsInvalidConfig) {
  TempDir dir;
  ModelConfig c = TinyConfig(Architecture::kBertEncoder);
  c.hidden_size = 15;
  EXPECT_ERROR(WriteRandomModel(dir.path(), c, 1), StatusCode::kInvalidArgument, "not divisible");
}

TEST(Model, LayerRangeStagesLoadDisjointSets) {
  for (auto arch : {Architecture::kBertEncoder, Architecture::kLlamaDecoder}) {
    TempDir dir;
    const ModelConfig c = TinyConfig(arch, DType::kF16, 4);
    ASSERT_TRUE(WriteRandomModel(dir.path(), c, 3).ok());
    auto s0 = Model::Load(dir.path(), {0, 2});
    auto s1 = Model::Load(dir.path(), {2, 4});
    ASSERT_TRUE(s0.ok() && s1.ok()) << s0.status() << s1.status();
    std::set<std::string> seen;
    for (const auto& [name, t] : (*s0)->tensors()) seen.insert(name);
    for (const auto& [name, t] : (*s1)->tensors()) {
      EXPECT_TRUE(seen.insert(name).second) << name << " loaded by both stages";
    }
    auto full = ExpectedTensors(c, {});
    std::set<std::string> all;
    for (const auto& [name, shape] : *full) all.insert(name);
    EXPECT_EQ(seen, all);
    EXPECT_TRUE((*s0)->Get("layers.1.mlp.up.weight").ok());
    EXPECT_ERROR((*s0)->Get("layers.2.mlp.up.weight"), StatusCode::kNotFound, "[0, 2)");
    EXPECT_ERROR((*s1)->Get("embed.tokens"), StatusCode::kNotFound, "embed.tokens");
    if (arch == Architecture::kLlamaDecoder) {
      EXPECT_TRUE((*s1)->Get("lm_head.weight").ok());
      EXPECT_ERROR((*s0)->Get("lm_head.weight"), StatusCode::kNotFound, "lm_head.weight");
    }
    for (LayerRange r : {LayerRange{1, 1}, LayerRange{0, 5}, LayerRange{-2, 1}}) {
      EXPECT_ERROR(Model::Load(dir.path(), r), StatusCode::kInvalidArgument, "layer range");
    }
  }
}

TEST(Model, StageLoadsWithOtherLayersAbsent) {
  // A file holding only stage 1's tensors serves stage 1 (and only stage 1).
  TempDir dir;
  const ModelConfig c = TinyConfig(Architecture::kLlamaDecoder, DType::kF32, 4);
  ASSERT_TRUE(WriteRandomModel(dir.path(), c, 3).ok());
  auto stage1 = ExpectedTensors(c, {2, 4});
  RewriteTensors(dir.path(), [&](auto& entries) {
    std::erase_if(entries, [&](const auto& e) { return !stage1->count(e.name); });
  });
  EXPECT_TRUE(Model::Load(dir.path(), {2, 4}).ok());
  EXPECT_ERROR(Model::Load(dir.path(), {0, 2}), StatusCode::kNotFound, "missing tensor");
}

// ---- loader validation ----------------------------------------------------------------------

class LoadErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = TinyConfig(Architecture::kLlamaDecoder, DType::kF32, 2);
    ASSERT_TRUE(WriteRandomModel(dir_.path(), config_, 5).ok());
    weights_ = dir_ / "model.safetensors";
  }
  TempDir dir_;
  ModelConfig config_;
  std::string weights_;
};

TEST_F(LoadErrors, MissingFiles) {
  fs::remove(weights_);
  EXPECT_ERROR(Model::Load(dir_.path()), StatusCode::kNotFound, "model.safetensors");
  fs::remove(dir_ / "config.json");
  EXPECT_ERROR(Model::Load(dir_.path()), StatusCode::kNotFound, "config.json: no such file");
}

TEST_F(LoadErrors, BadConfigNamesTheFile) {
  WriteFile(dir_ / "config.json", R"({"architecture": "llama"})");
  EXPECT_ERROR(Model::Load(dir_.path()), StatusCode::kInvalidArgument, "config.json: ");
  EXPECT_ERROR(Model::Load(dir_.path()), StatusCode::kInvalidArgument,
               "missing field \"vocab_size\"");
}

TEST_F(LoadErrors, TruncatedFile) {
  const std::string bytes = ReadFile(weights_);
  for (size_t keep : {bytes.size() - 1, bytes.size() / 2, size_t{100}, size_t{7}, size_t{0}}) {
    WriteFile(weights_, bytes.substr(0, keep));
    EXPECT_ERROR(Model::Load(dir_.path()), StatusCode::kDataLoss, weights_ + ": ");
  }
}

TEST_F(LoadErrors, MissingTensor) {
  RewriteTensors(dir_.path(), [](auto& e) {
    std::erase_if(e, [](const auto& x) { return x.name == "layers.1.mlp.down.weight"; });
  });
  EXPECT_ERROR(Model::Load(dir_.path()), StatusCode::kNotFound,
               "model.safetensors: missing tensor 'layers.1.mlp.down.weight'");
}

TEST_F(LoadErrors, ExtraTensor) {
  static float x[4] = {};
  RewriteTensors(dir_.path(),
                 [](auto& e) { e.push_back({"layers.2.attn.q.weight", DType::kF32, {4}, x}); });
  EXPECT_ERROR(Model::Load(dir_.path()), StatusCode::kInvalidArgument,
               "unexpected tensor 'layers.2.attn.q.weight'");
  RewriteTensors(dir_.path(), [](auto& e) {
    std::erase_if(e, [](const auto& t) { return t.name == "layers.2.attn.q.weight"; });
    e.push_back({"rotary.inv_freq", DType::kF32, {4}, x});
  });
  EXPECT_ERROR(Model::Load(dir_.path()), StatusCode::kInvalidArgument,
               "unexpected tensor 'rotary.inv_freq'");
}

TEST_F(LoadErrors, DtypeMismatch) {
  static uint16_t h[16] = {};
  RewriteTensors(dir_.path(), [](auto& e) {
    for (auto& t : e) {
      if (t.name == "final_norm.weight") {
        t.dtype = DType::kF16;
        t.data = h;
      }
    }
  });
  EXPECT_ERROR(Model::Load(dir_.path()), StatusCode::kInvalidArgument,
               "tensor 'final_norm.weight' has dtype F16 but config.json says f32");
}

TEST_F(LoadErrors, ShapeMismatch) {
  RewriteTensors(dir_.path(), [](auto& e) {
    for (auto& t : e) {
      if (t.name == "layers.0.attn.k.weight") t.shape = {16, 8};  // transposed
    }
  });
  EXPECT_ERROR(Model::Load(dir_.path()), StatusCode::kInvalidArgument,
               "tensor 'layers.0.attn.k.weight' has shape [16, 8] but the config expects [8, 16]");
}

TEST_F(LoadErrors, ConfigDisagreesWithWeights) {
  ModelConfig other = config_;
  other.intermediate_size = 32;
  WriteFile(dir_ / "config.json", other.ToJson());
  EXPECT_ERROR(Model::Load(dir_.path()), StatusCode::kInvalidArgument, "has shape");
  other = config_;
  other.dtype = DType::kBF16;
  WriteFile(dir_ / "config.json", other.ToJson());
  EXPECT_ERROR(Model::Load(dir_.path()), StatusCode::kInvalidArgument, "says bf16");
  other = config_;
  other.num_layers = 3;
  WriteFile(dir_ / "config.json", other.ToJson());
  EXPECT_ERROR(Model::Load(dir_.path()), StatusCode::kNotFound, "missing tensor 'layers.2.");
}

TEST_F(LoadErrors, CorruptHeaderThroughLoad) {
  std::string bytes = ReadFile(weights_);
  bytes[8] = '[';  // '{' -> '[': not JSON any more
  WriteFile(weights_, bytes);
  EXPECT_ERROR(Model::Load(dir_.path()), StatusCode::kInvalidArgument,
               weights_ + ": header is not valid JSON");
}

TEST_F(LoadErrors, MisalignedTensor) {
  // A hand-made file whose f32 tensor starts 2 bytes into the data section.
  ModelConfig c = config_;
  c.num_layers = 1;
  WriteFile(dir_ / "config.json", c.ToJson());
  auto expected = ExpectedTensors(c, {});
  nlohmann::json h;
  uint64_t off = 2;
  for (const auto& [name, shape] : *expected) {
    uint64_t n = 4;
    for (auto d : shape) n *= d;
    h[name] = {{"dtype", "F32"}, {"shape", shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  std::string text = h.dump();
  while ((8 + text.size()) % 64) text += ' ';
  WriteFile(weights_, Image(text, off));
  EXPECT_ERROR(Model::Load(dir_.path()), StatusCode::kInvalidArgument, "is not aligned to 4 bytes");
}

// ---- devices --------------------------------------------------------------------------------

TEST(Upload, CpuCopiesAndCudaFailsCleanlyWithoutAGpu) {
  TempDir dir;
  ASSERT_TRUE(WriteRandomModel(dir.path(), TinyConfig(Architecture::kBertEncoder), 9).ok());
  auto m = Model::Load(dir.path());
  ASSERT_TRUE(m.ok()) << m.status();
  auto cpu = UploadToDevice(**m, Device::Cpu());
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  ASSERT_EQ(cpu->size(), (*m)->tensors().size());
  const Tensor& q = (*m)->tensors().at("layers.0.attn.q.weight");
  const DeviceBuffer& qb = cpu->at("layers.0.attn.q.weight");
  ASSERT_EQ(qb.size(), q.nbytes());
  EXPECT_NE(qb.data(), q.data());
  EXPECT_EQ(std::memcmp(qb.data(), q.data(), q.nbytes()), 0);

  auto gpu = UploadToDevice(**m, Device::Cuda(0));
  if (CudaDeviceCount() > 0) {
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    std::vector<uint8_t> back(q.nbytes());
    ASSERT_TRUE(gpu->at("layers.0.attn.q.weight").CopyToHost(back.data(), back.size()).ok());
    EXPECT_EQ(std::memcmp(back.data(), q.data(), q.nbytes()), 0);
  } else {
    EXPECT_ERROR(gpu, StatusCode::kUnavailable, "uploading tensor '");
  }
}

}  // namespace
}  // namespace archi::model
