#include "runtime/executor/wire.h"

#include <chrono>
#include <cstring>

namespace archi::executor {
namespace {

constexpr uint32_t kMagic = 0x50435241;  // "ARCP"
constexpr uint16_t kVersion = 1;

struct RawHeader {
  uint32_t magic;
  uint16_t version;
  uint8_t kind;
  uint8_t payload_kind;
  uint8_t payload_dtype;
  uint8_t num_requests;
  uint8_t payload_rank;
  uint8_t reserved0;
  int32_t stage;
  uint32_t attempt;
  uint64_t batch_id;
  uint64_t hop_seq;
  int64_t deadline_unix_ms;
  uint64_t payload_bytes;
  int64_t shape[3];
  uint64_t request_ids[kMaxBatch];
  int32_t lengths[kMaxBatch];
};
static_assert(sizeof(RawHeader) <= kHeaderBytes);
static_assert(std::is_trivially_copyable_v<RawHeader>);

Status Bad(const std::string& what) {
  return Status(StatusCode::kDataLoss, "pipeline header: " + what);
}

}  // namespace

std::string_view MsgKindName(MsgKind kind) {
  switch (kind) {
    case MsgKind::kBatch:
      return "batch";
    case MsgKind::kAck:
      return "ack";
    case MsgKind::kClose:
      return "close";
  }
  return "?";
}

int64_t UnixMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Result<Tensor> EncodeHeader(MsgKind kind, uint64_t hop_seq, const Batch* batch) {
  RawHeader h{};
  h.magic = kMagic;
  h.version = kVersion;
  h.kind = static_cast<uint8_t>(kind);
  h.hop_seq = hop_seq;
  if (kind == MsgKind::kBatch) {
    if (batch == nullptr) return InvalidArgumentError("EncodeHeader: batch message without batch");
    const size_t b = batch->request_ids.size();
    if (b == 0 || b > static_cast<size_t>(kMaxBatch) || batch->lengths.size() != b) {
      return InvalidArgumentError("EncodeHeader: " + std::to_string(b) + " requests with " +
                                  std::to_string(batch->lengths.size()) + " lengths (1.." +
                                  std::to_string(kMaxBatch) + " allowed)");
    }
    const auto& shape = batch->payload.shape();
    if (shape.empty() || shape.size() > 3 || shape[0] != static_cast<int64_t>(b)) {
      return InvalidArgumentError("EncodeHeader: payload shape does not start with the batch size");
    }
    h.payload_kind = static_cast<uint8_t>(batch->kind);
    h.payload_dtype = static_cast<uint8_t>(batch->payload.dtype());
    h.num_requests = static_cast<uint8_t>(b);
    h.payload_rank = static_cast<uint8_t>(shape.size());
    h.stage = batch->stage;
    h.attempt = batch->attempt;
    h.batch_id = batch->batch_id;
    h.deadline_unix_ms = batch->deadline_unix_ms;
    h.payload_bytes = batch->payload.nbytes();
    for (size_t i = 0; i < shape.size(); ++i) h.shape[i] = shape[i];
    for (size_t i = 0; i < b; ++i) {
      h.request_ids[i] = batch->request_ids[i];
      h.lengths[i] = batch->lengths[i];
    }
  }
  ARCHI_ASSIGN_OR_RETURN(Tensor out,
                         Tensor::Zeros({static_cast<int64_t>(kHeaderBytes)}, DType::kU8));
  std::memcpy(out.data(), &h, sizeof(h));
  return out;
}

Result<Message> DecodeHeader(const Tensor& header) {
  if (header.dtype() != DType::kU8 || header.nbytes() != kHeaderBytes) {
    return Bad("expected " + std::to_string(kHeaderBytes) + " bytes");
  }
  RawHeader h;
  std::memcpy(&h, header.data(), sizeof(h));
  if (h.magic != kMagic) return Bad("bad magic (not an Archipelago pipeline message)");
  if (h.version != kVersion) return Bad("unsupported version " + std::to_string(h.version));
  Message m;
  if (h.kind < 1 || h.kind > 3) return Bad("unknown message kind " + std::to_string(h.kind));
  m.kind = static_cast<MsgKind>(h.kind);
  m.hop_seq = h.hop_seq;
  if (m.kind != MsgKind::kBatch) return m;

  const int b = h.num_requests;
  if (b < 1 || b > kMaxBatch) return Bad("batch of " + std::to_string(b) + " requests");
  if (h.payload_kind < 1 || h.payload_kind > 3) {
    return Bad("unknown payload kind " + std::to_string(h.payload_kind));
  }
  if (h.payload_dtype > static_cast<uint8_t>(DType::kU8)) {
    return Bad("unknown payload dtype " + std::to_string(h.payload_dtype));
  }
  const auto kind = static_cast<PayloadKind>(h.payload_kind);
  const size_t want_rank = kind == PayloadKind::kTokenIds ? 2
                           : kind == PayloadKind::kHidden ? 3
                                                          : 2;
  if (h.payload_rank != want_rank) {
    return Bad(std::string(PayloadKindName(kind)) + " payload of rank " +
               std::to_string(h.payload_rank));
  }
  if (h.shape[0] != b) return Bad("payload rows differ from the request count");
  int64_t numel = 1;
  for (size_t i = 0; i < want_rank; ++i) {
    if (h.shape[i] < 1 || h.shape[i] > (int64_t{1} << 24)) {
      return Bad("payload dimension " + std::to_string(i) + " = " + std::to_string(h.shape[i]));
    }
    numel *= h.shape[i];
    if (numel > (int64_t{1} << 32)) return Bad("payload too large");
    m.payload_shape.push_back(h.shape[i]);
  }
  m.payload_dtype = static_cast<DType>(h.payload_dtype);
  if (h.payload_bytes != static_cast<uint64_t>(numel) * DTypeSize(m.payload_dtype)) {
    return Bad("payload_bytes " + std::to_string(h.payload_bytes) + " does not match its shape");
  }
  m.payload_bytes = h.payload_bytes;
  const int64_t seq = kind == PayloadKind::kEmbeddings ? INT32_MAX : h.shape[1];
  Batch& batch = m.batch;
  batch.batch_id = h.batch_id;
  batch.attempt = h.attempt;
  batch.stage = h.stage;
  batch.deadline_unix_ms = h.deadline_unix_ms;
  batch.kind = kind;
  batch.request_ids.assign(h.request_ids, h.request_ids + b);
  batch.lengths.assign(h.lengths, h.lengths + b);
  for (int i = 0; i < b; ++i) {
    if (batch.lengths[i] < 1 || batch.lengths[i] > seq) {
      return Bad("request " + std::to_string(i) + " has length " +
                 std::to_string(batch.lengths[i]));
    }
  }
  return m;
}

}  // namespace archi::executor
