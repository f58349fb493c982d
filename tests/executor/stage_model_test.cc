// StageModel on a generated 6-layer BERT: a pipeline of stages returns what one stage with every
// layer returns (bit for bit) and what BertEncoder::Encode returns; bad inputs are refused.
#include "runtime/executor/stage_model.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "runtime/core/half.h"

namespace archi::executor {
namespace {

namespace fs = std::filesystem;

model::ModelConfig SixLayerBert(DType dtype = DType::kF32) {
  model::ModelConfig c;
  c.architecture = model::Architecture::kBertEncoder;
  c.vocab_size = 100;
  c.hidden_size = 32;
  c.num_layers = 6;
  c.num_heads = 4;
  c.num_kv_heads = 4;
  c.intermediate_size = 64;
  c.max_positions = 32;
  c.type_vocab_size = 2;
  c.activation = "gelu";
  c.dtype = dtype;
  return c;
}

// Rows padded with id 0 to the longest; ids i32 [B, S] and lengths i32 [B].
struct Batch {
  Tensor ids;
  Tensor lengths;
};

Batch MakeBatch(const std::vector<std::vector<int32_t>>& rows) {
  size_t s = 0;
  for (const auto& r : rows) s = std::max(s, r.size());
  const auto b = static_cast<int64_t>(rows.size());
  Batch batch{Tensor::Zeros({b, static_cast<int64_t>(s)}, DType::kI32).value(),
              Tensor::Empty({b}, DType::kI32).value()};
  for (size_t i = 0; i < rows.size(); ++i) {
    std::memcpy(batch.ids.data_as<int32_t>() + i * s, rows[i].data(),
                rows[i].size() * sizeof(int32_t));
    batch.lengths.data_as<int32_t>()[i] = static_cast<int32_t>(rows[i].size());
  }
  return batch;
}

std::vector<std::vector<int32_t>> RandomRows(std::initializer_list<int> lengths, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> id(0, 99);
  std::vector<std::vector<int32_t>> rows;
  for (int n : lengths) {
    std::vector<int32_t> row(static_cast<size_t>(n));
    for (int32_t& v : row) v = id(rng);
    rows.push_back(std::move(row));
  }
  return rows;
}

class StageModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() /
                        ("archi_stage_model_test_" + std::to_string(::getpid())));
    fs::remove_all(*dir_);
    ASSERT_TRUE(model::WriteRandomModel((*dir_ / "f32").string(), SixLayerBert(), 11).ok());
    ASSERT_TRUE(
        model::WriteRandomModel((*dir_ / "f16").string(), SixLayerBert(DType::kF16), 11).ok());
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }

  static std::string Dir(const char* which = "f32") { return (*dir_ / which).string(); }

  static std::unique_ptr<StageModel> Stage(model::LayerRange range, const char* which = "f32") {
    auto stage = StageModel::Load(Dir(which), range, /*num_threads=*/1);
    EXPECT_TRUE(stage.ok()) << stage.status();
    return stage.ok() ? std::move(*stage) : nullptr;
  }

  static std::unique_ptr<model::BertEncoder> Encoder(const char* which = "f32") {
    auto m = model::Model::Load(Dir(which));
    EXPECT_TRUE(m.ok()) << m.status();
    auto enc = model::BertEncoder::Create(*m, {.num_threads = 1});
    EXPECT_TRUE(enc.ok()) << enc.status();
    return std::move(*enc);
  }

  static fs::path* dir_;
};

fs::path* StageModelTest::dir_ = nullptr;

TEST_F(StageModelTest, Kinds) {
  auto first = Stage({0, 2}), middle = Stage({2, 4}), last = Stage({4, -1}), whole = Stage({});
  ASSERT_TRUE(first && middle && last && whole);
  EXPECT_TRUE(first->is_first());
  EXPECT_FALSE(first->is_last());
  EXPECT_EQ(first->input_kind(), PayloadKind::kTokenIds);
  EXPECT_EQ(first->output_kind(), PayloadKind::kHidden);
  EXPECT_EQ(middle->input_kind(), PayloadKind::kHidden);
  EXPECT_EQ(middle->output_kind(), PayloadKind::kHidden);
  EXPECT_EQ(last->input_kind(), PayloadKind::kHidden);
  EXPECT_EQ(last->output_kind(), PayloadKind::kEmbeddings);
  EXPECT_EQ(last->range().end, 6);
  EXPECT_TRUE(whole->is_first() && whole->is_last());
  EXPECT_EQ(PayloadKindName(PayloadKind::kTokenIds), "token_ids");
  EXPECT_EQ(PayloadKindName(PayloadKind::kHidden), "hidden");
  EXPECT_EQ(PayloadKindName(PayloadKind::kEmbeddings), "embeddings");
}

TEST_F(StageModelTest, ThreeStagesMatchOneStageBitwiseAndEncode) {
  auto s0 = Stage({0, 2}), s1 = Stage({2, 4}), s2 = Stage({4, 6}), whole = Stage({0, -1});
  ASSERT_TRUE(s0 && s1 && s2 && whole);
  const auto rows = RandomRows({5, 9, 1, 17, 9}, 3);
  const Batch batch = MakeBatch(rows);

  auto h1 = s0->Run(batch.ids, batch.lengths);
  ASSERT_TRUE(h1.ok()) << h1.status();
  EXPECT_EQ(h1->shape(), (std::vector<int64_t>{5, 17, 32}));
  EXPECT_EQ(h1->dtype(), DType::kF32);
  auto h2 = s1->Run(*h1, batch.lengths);
  ASSERT_TRUE(h2.ok()) << h2.status();
  auto out = s2->Run(*h2, batch.lengths);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->shape(), (std::vector<int64_t>{5, 32}));
  ASSERT_EQ(out->dtype(), DType::kF32);

  auto ref = whole->Run(batch.ids, batch.lengths);
  ASSERT_TRUE(ref.ok()) << ref.status();
  ASSERT_EQ(ref->shape(), out->shape());
  EXPECT_EQ(std::memcmp(out->data(), ref->data(), out->nbytes()), 0)
      << "a 3-stage pipeline differs from one stage holding every layer";

  auto enc = Encoder()->Encode(rows);
  ASSERT_TRUE(enc.ok()) << enc.status();
  ASSERT_EQ(enc->shape(), out->shape());
  for (int64_t i = 0; i < out->numel(); ++i) {
    EXPECT_NEAR(out->data_as<float>()[i], enc->data_as<float>()[i], 1e-6) << "element " << i;
  }
  // Unit rows.
  for (int64_t r = 0; r < 5; ++r) {
    double norm = 0;
    for (int64_t k = 0; k < 32; ++k) norm += std::pow(out->data_as<float>()[r * 32 + k], 2);
    EXPECT_NEAR(norm, 1.0, 1e-5);
  }
  // The input of a later stage is not modified (it may be a received buffer still in use).
  auto h2_again = s1->Run(*h1, batch.lengths);
  ASSERT_TRUE(h2_again.ok());
  EXPECT_EQ(std::memcmp(h2_again->data(), h2->data(), h2->nbytes()), 0);
}

TEST_F(StageModelTest, F16ModelGivesF32Embeddings) {
  auto s0 = Stage({0, 3}, "f16"), s1 = Stage({3, 6}, "f16");
  ASSERT_TRUE(s0 && s1);
  const auto rows = RandomRows({4, 7}, 5);
  const Batch batch = MakeBatch(rows);
  auto h = s0->Run(batch.ids, batch.lengths);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->dtype(), DType::kF16);
  auto out = s1->Run(*h, batch.lengths);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->dtype(), DType::kF32);
  ASSERT_EQ(out->shape(), (std::vector<int64_t>{2, 32}));
  auto enc = Encoder("f16")->Encode(rows);
  ASSERT_TRUE(enc.ok()) << enc.status();
  ASSERT_EQ(enc->dtype(), DType::kF16);
  for (int64_t i = 0; i < out->numel(); ++i) {
    EXPECT_EQ(out->data_as<float>()[i], HalfToFloat(enc->data_as<uint16_t>()[i])) << i;
  }
  // An f32 hidden state is not what an f16 stage takes.
  auto f32_hidden = Tensor::Zeros({2, 7, 32}, DType::kF32).value();
  EXPECT_EQ(s1->Run(f32_hidden, batch.lengths).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(StageModelTest, BadInputs) {
  auto first = Stage({0, 2}), middle = Stage({2, 4});
  ASSERT_TRUE(first && middle);
  const Batch good = MakeBatch(RandomRows({3, 4}, 9));
  ASSERT_TRUE(first->Run(good.ids, good.lengths).ok());
  auto hidden = Tensor::Zeros({2, 4, 32}, DType::kF32).value();
  ASSERT_TRUE(middle->Run(hidden, good.lengths).ok());

  auto expect_invalid = [](const Result<Tensor>& r, const std::string& part) {
    ASSERT_FALSE(r.ok()) << part;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status();
    EXPECT_NE(r.status().message().find(part), std::string::npos) << r.status();
  };
  auto lengths = [](std::vector<int32_t> v) {
    Tensor t = Tensor::Empty({static_cast<int64_t>(v.size())}, DType::kI32).value();
    std::memcpy(t.data(), v.data(), v.size() * sizeof(int32_t));
    return t;
  };

  // Wrong dtype: i64 ids, f32 "ids", i32 hidden, f16 hidden on an f32 model.
  expect_invalid(first->Run(Tensor::Zeros({2, 4}, DType::kI64).value(), good.lengths), "i32");
  expect_invalid(first->Run(Tensor::Zeros({2, 4}, DType::kF32).value(), good.lengths), "i32");
  expect_invalid(middle->Run(Tensor::Zeros({2, 4, 32}, DType::kI32).value(), good.lengths), "f32");
  expect_invalid(middle->Run(Tensor::Zeros({2, 4, 32}, DType::kF16).value(), good.lengths), "f32");
  // Wrong rank / hidden size.
  expect_invalid(first->Run(Tensor::Zeros({8}, DType::kI32).value(), good.lengths), "[B, S]");
  expect_invalid(middle->Run(Tensor::Zeros({2, 4, 16}, DType::kF32).value(), good.lengths), "32");
  expect_invalid(middle->Run(Tensor::Zeros({2, 128}, DType::kF32).value(), good.lengths), "32");
  // Hidden states given to the first stage, ids to a later one.
  expect_invalid(first->Run(hidden, good.lengths), "token ids");
  expect_invalid(middle->Run(good.ids, good.lengths), "hidden");
  // Lengths: 0, > S, wrong count, wrong dtype.
  expect_invalid(first->Run(good.ids, lengths({0, 4})), "lengths[0] = 0");
  expect_invalid(first->Run(good.ids, lengths({3, 5})), "lengths[1] = 5");
  expect_invalid(middle->Run(hidden, lengths({-1, 2})), "lengths[0]");
  expect_invalid(first->Run(good.ids, lengths({3})), "lengths");
  expect_invalid(first->Run(good.ids, Tensor::Zeros({2}, DType::kI64).value()), "lengths");
  expect_invalid(first->Run(good.ids, Tensor()), "lengths");
  // Token ids outside the vocabulary (padding included).
  Batch bad_id = MakeBatch({{1, 2, 100}, {1, 2, 3}});
  expect_invalid(first->Run(bad_id.ids, bad_id.lengths), "token id 100");
  bad_id.ids.data_as<int32_t>()[2] = -1;
  expect_invalid(first->Run(bad_id.ids, bad_id.lengths), "token id -1");
  Batch bad_pad = MakeBatch({{1}, {1, 2, 3}});
  bad_pad.ids.data_as<int32_t>()[1] = 1000;  // row 0's padding
  expect_invalid(first->Run(bad_pad.ids, bad_pad.lengths), "token id 1000");
  // S beyond max_positions, S = 0, B = 0.
  Batch long_batch = MakeBatch({std::vector<int32_t>(33, 1)});
  expect_invalid(first->Run(long_batch.ids, long_batch.lengths), "max_positions");
  expect_invalid(first->Run(Tensor::Zeros({1, 0}, DType::kI32).value(), lengths({1})), "S = 0");
  expect_invalid(first->Run(Tensor::Zeros({0, 4}, DType::kI32).value(), lengths({})), "empty");
  expect_invalid(first->Run(Tensor(), good.lengths), "no input");
}

TEST_F(StageModelTest, LoadErrors) {
  EXPECT_FALSE(StageModel::Load(Dir(), {4, 2}, 1).ok());
  EXPECT_FALSE(StageModel::Load(Dir(), {0, 7}, 1).ok());
  EXPECT_FALSE(StageModel::Load((*dir_ / "missing").string(), {}, 1).ok());
  EXPECT_EQ(StageModel::Load(Dir(), {}, -1).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace archi::executor
