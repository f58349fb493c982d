// The pipeline wire header: round trip, and every inconsistent header rejected (never trusted).
#include "runtime/executor/wire.h"

#include <gtest/gtest.h>

#include <cstring>

namespace archi::executor {
namespace {

Batch MakeBatch(int b, int s, int h) {
  Batch batch;
  batch.batch_id = 77;
  batch.attempt = 2;
  batch.stage = 1;
  batch.deadline_unix_ms = 123456789;
  for (int i = 0; i < b; ++i) {
    batch.request_ids.push_back(1000 + static_cast<uint64_t>(i));
    batch.lengths.push_back(1 + i % s);
  }
  batch.kind = PayloadKind::kHidden;
  batch.payload = *Tensor::Zeros({b, s, h}, DType::kF32);
  return batch;
}

TEST(WireTest, BatchRoundTrip) {
  Batch in = MakeBatch(5, 7, 16);
  auto header = EncodeHeader(MsgKind::kBatch, 42, &in);
  ASSERT_TRUE(header.ok()) << header.status();
  ASSERT_EQ(header->nbytes(), kHeaderBytes);
  auto m = DecodeHeader(*header);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->kind, MsgKind::kBatch);
  EXPECT_EQ(m->hop_seq, 42u);
  EXPECT_EQ(m->batch.batch_id, 77u);
  EXPECT_EQ(m->batch.attempt, 2u);
  EXPECT_EQ(m->batch.stage, 1);
  EXPECT_EQ(m->batch.deadline_unix_ms, 123456789);
  EXPECT_EQ(m->batch.request_ids, in.request_ids);
  EXPECT_EQ(m->batch.lengths, in.lengths);
  EXPECT_EQ(m->payload_shape, (std::vector<int64_t>{5, 7, 16}));
  EXPECT_EQ(m->payload_dtype, DType::kF32);
  EXPECT_EQ(m->payload_bytes, 5u * 7 * 16 * 4);
}

TEST(WireTest, AckAndClose) {
  auto ack = EncodeHeader(MsgKind::kAck, 9, nullptr);
  ASSERT_TRUE(ack.ok());
  auto m = DecodeHeader(*ack);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->kind, MsgKind::kAck);
  EXPECT_EQ(m->hop_seq, 9u);
  auto close = DecodeHeader(*EncodeHeader(MsgKind::kClose, 0, nullptr));
  ASSERT_TRUE(close.ok());
  EXPECT_EQ(close->kind, MsgKind::kClose);
}

TEST(WireTest, EncodeRejectsBadBatches) {
  EXPECT_EQ(EncodeHeader(MsgKind::kBatch, 1, nullptr).status().code(),
            StatusCode::kInvalidArgument);
  Batch too_big = MakeBatch(kMaxBatch + 1, 2, 4);
  EXPECT_EQ(EncodeHeader(MsgKind::kBatch, 1, &too_big).status().code(),
            StatusCode::kInvalidArgument);
  Batch mismatch = MakeBatch(3, 2, 4);
  mismatch.lengths.pop_back();
  EXPECT_EQ(EncodeHeader(MsgKind::kBatch, 1, &mismatch).status().code(),
            StatusCode::kInvalidArgument);
}

// Flips fields of a valid header one at a time: each corruption is caught with kDataLoss.
TEST(WireTest, DecodeRejectsCorruptHeaders) {
  Batch in = MakeBatch(3, 4, 8);
  const Tensor good = *EncodeHeader(MsgKind::kBatch, 1, &in);
  auto corrupt = [&](size_t offset, uint8_t value) {
    Tensor t = *Tensor::Zeros({static_cast<int64_t>(kHeaderBytes)}, DType::kU8);
    std::memcpy(t.data(), good.data(), kHeaderBytes);
    static_cast<uint8_t*>(t.data())[offset] = value;
    return DecodeHeader(t).status();
  };
  EXPECT_EQ(corrupt(0, 0x00).code(), StatusCode::kDataLoss);   // magic
  EXPECT_EQ(corrupt(4, 0x07).code(), StatusCode::kDataLoss);   // version
  EXPECT_EQ(corrupt(6, 0x09).code(), StatusCode::kDataLoss);   // kind
  EXPECT_EQ(corrupt(7, 0x09).code(), StatusCode::kDataLoss);   // payload kind
  EXPECT_EQ(corrupt(8, 0x40).code(), StatusCode::kDataLoss);   // dtype
  EXPECT_EQ(corrupt(9, 0).code(), StatusCode::kDataLoss);      // request count 0
  EXPECT_EQ(corrupt(9, 200).code(), StatusCode::kDataLoss);    // request count > 64
  EXPECT_EQ(corrupt(10, 2).code(), StatusCode::kDataLoss);     // rank
  EXPECT_EQ(corrupt(48, 0xff).code(), StatusCode::kDataLoss);  // payload_bytes
  Tensor small = *Tensor::Zeros({16}, DType::kU8);
  EXPECT_EQ(DecodeHeader(small).status().code(), StatusCode::kDataLoss);
  // Lengths outside 1..S.
  Batch bad_len = MakeBatch(3, 4, 8);
  bad_len.lengths[1] = 5;
  EXPECT_EQ(DecodeHeader(*EncodeHeader(MsgKind::kBatch, 1, &bad_len)).status().code(),
            StatusCode::kDataLoss);
  bad_len.lengths[1] = 0;
  EXPECT_EQ(DecodeHeader(*EncodeHeader(MsgKind::kBatch, 1, &bad_len)).status().code(),
            StatusCode::kDataLoss);
}

}  // namespace
}  // namespace archi::executor
