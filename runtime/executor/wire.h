// Wire format of the pipeline data plane. Every message between two pipeline members travels on
// their pair world (size 2, rank 0 = upstream) as a fixed 1 KiB header on tag kHeaderTag, followed
// for a micro-batch by its payload on tag kPayloadTag (dtype and byte size announced in the
// header, so the receiver can post a matching Recv).
//
//   kBatch  upstream -> downstream: a micro-batch (request ids, lengths, payload) to process.
//   kAck    downstream -> upstream: the micro-batch sent with `hop_seq` is in safe custody further
//           down (its result reached the frontend), so the upstream may forget it.
//   kClose  upstream -> downstream: no more micro-batches will follow on this link (drain).
//
// The header is host-endian (all members of a pipeline share an architecture); Decode checks the
// magic, version and every size, so a corrupt or foreign message is rejected, never trusted.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/core/status.h"
#include "runtime/core/tensor.h"
#include "runtime/executor/plan.h"
#include "runtime/executor/stage_model.h"

namespace archi::executor {

inline constexpr uint32_t kHeaderTag = 1;
inline constexpr uint32_t kPayloadTag = 2;
inline constexpr size_t kHeaderBytes = 1024;

enum class MsgKind : uint8_t { kBatch = 1, kAck = 2, kClose = 3 };
std::string_view MsgKindName(MsgKind kind);

// A micro-batch as it travels through the pipeline. `payload` owns (shares) its memory.
struct Batch {
  uint64_t batch_id = 0;  // unique per frontend incarnation
  uint32_t attempt = 1;   // 1 + times it was re-sent after a link broke
  int32_t stage = 0;      // stage that processes it next (num_stages: result for the frontend)
  int64_t deadline_unix_ms = 0;  // the latest deadline of its requests
  std::vector<uint64_t> request_ids;
  std::vector<int32_t> lengths;
  PayloadKind kind = PayloadKind::kTokenIds;
  Tensor payload;  // ids i32 [B,S], hidden [B,S,H] or embeddings f32 [B,H]
};

struct Message {
  MsgKind kind = MsgKind::kBatch;
  uint64_t hop_seq = 0;  // kBatch: the sender's id for this transfer; kAck: the id acknowledged
  Batch batch;           // kBatch only (payload not yet received after DecodeHeader)
  uint64_t payload_bytes = 0;
  DType payload_dtype = DType::kF32;
  std::vector<int64_t> payload_shape;
};

// Encodes a header into `out` (kHeaderBytes u8 tensor, allocated here).
Result<Tensor> EncodeHeader(MsgKind kind, uint64_t hop_seq, const Batch* batch);
// Decodes and validates a received header. kDataLoss naming the field on anything inconsistent.
Result<Message> DecodeHeader(const Tensor& header);

int64_t UnixMillis();

}  // namespace archi::executor
