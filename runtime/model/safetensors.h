// safetensors: reader (memory-mapped, zero-copy) and writer.
//
// File layout: an 8-byte little-endian u64 N, then N bytes of a UTF-8 JSON object (the header),
// then the data section. Each header key names a tensor:
//   "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
// with offsets in bytes relative to the start of the data section; the optional key
// "__metadata__" maps strings to strings. Supported dtypes: F32 F16 BF16 I32 I64 U8.
//
// Validation (ParseSafetensorsHeader): every error names the source (file path) and the reason.
//   kDataLoss        the file is shorter than 8 bytes, the header length runs past the end of the
//                    file, or a tensor's data runs past the end of the data section (truncation)
//   kInvalidArgument the header is not JSON / not an object / too large, an entry is malformed,
//                    an unknown or unsupported dtype, end < begin, byte size != numel * dtype
//                    size, two tensors' byte ranges overlap
// Dependencies are kept to runtime/core/{status,tensor} and nlohmann_json (header only, hidden in
// the .cc) so that the libFuzzer target can compile this file on its own.
//
// Ownership: MappedFile owns a read-only mapping (munmap in the destructor). SafetensorsFile
// shares it; tensor views returned by Get() point into it and stay valid only while some
// shared_ptr to the MappedFile is alive (SafetensorsFile::mapping()). The mapping is PROT_READ:
// writing through a view faults.
// Thread safety: all objects here are immutable after construction; reads from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/status.h"
#include "runtime/core/tensor.h"

namespace archi::model {

// "F32" <-> DType::kF32 etc. Parse fails with kInvalidArgument for unknown names and for valid
// safetensors dtypes this runtime does not support (F64, I8, BOOL, ...).
std::string_view SafetensorsDTypeName(DType dtype);
Result<DType> ParseSafetensorsDType(std::string_view name);

struct SafetensorsEntry {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // relative to the data section
  uint64_t end = 0;    // exclusive
};

struct SafetensorsHeader {
  std::map<std::string, SafetensorsEntry> tensors;
  std::map<std::string, std::string> metadata;  // "__metadata__"
  uint64_t data_offset = 0;                     // absolute offset of the data section
  uint64_t data_size = 0;                       // bytes in the data section
};

// Largest accepted JSON header (as in the reference implementation).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100u << 20;

// Parses and validates the header of a safetensors image held in [data, data + size). `source`
// (usually the file path) prefixes every error message. Never throws.
Result<SafetensorsHeader> ParseSafetensorsHeader(const uint8_t* data, size_t size,
                                                 std::string_view source);

// A read-only memory mapping of a whole file.
class MappedFile {
 public:
  // kNotFound when the file does not exist, kInvalidArgument when it is not a regular file,
  // kUnavailable / kPermissionDenied for other open/mmap failures. An empty file maps to
  // data() == nullptr, size() == 0.
  static Result<std::shared_ptr<const MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

// A parsed, validated safetensors file.
class SafetensorsFile {
 public:
  static Result<SafetensorsFile> Open(const std::string& path);

  const SafetensorsHeader& header() const { return header_; }
  const std::string& path() const { return mapping_->path(); }
  const std::shared_ptr<const MappedFile>& mapping() const { return mapping_; }
  // A zero-copy CPU view into the mapping (valid while mapping() is alive); kNotFound naming the
  // tensor and the file when absent.
  Result<Tensor> Get(const std::string& name) const;
  // Pointer to a tensor's first byte inside the mapping.
  const uint8_t* DataOf(const SafetensorsEntry& entry) const {
    return mapping_->data() + header_.data_offset + entry.begin;
  }

 private:
  std::shared_ptr<const MappedFile> mapping_;
  SafetensorsHeader header_;
};

// One tensor to write: `data` points to numel(shape) * DTypeSize(dtype) bytes.
struct SafetensorsWriteEntry {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};

// Serialises tensors (in name order, contiguous, no gaps, as the reference implementation
// requires) into a safetensors image. The header is padded with spaces so that the data section
// starts at a multiple of 64 bytes; a file mapped at a page boundary then keeps every tensor
// aligned to its dtype size when all tensors share one dtype. Output is a pure function of the
// input (byte-identical across runs). kInvalidArgument for duplicate names, the reserved name
// "__metadata__", or a bad shape.
Result<std::string> SerializeSafetensors(std::vector<SafetensorsWriteEntry> tensors,
                                         const std::map<std::string, std::string>& metadata = {});
// SerializeSafetensors + write to `path` (via a temporary file renamed into place).
Status WriteSafetensors(const std::string& path, std::vector<SafetensorsWriteEntry> tensors,
                        const std::map<std::string, std::string>& metadata = {});

}  // namespace archi::model
