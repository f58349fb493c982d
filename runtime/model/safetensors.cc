#include "runtime/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

namespace archi::model {

namespace {

using json = nlohmann::json;

std::string Prefix(std::string_view source) { return std::string(source) + ": "; }

// Quotes a name taken from the file for an error message (bounded, printable).
std::string Quote(std::string_view s) {
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < 120; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    }
  }
  if (s.size() > 120) out += "...";
  return out + "'";
}

Status Invalid(std::string_view source, const std::string& what) {
  return InvalidArgumentError(Prefix(source) + what);
}
Status Truncated(std::string_view source, const std::string& what) {
  return Status(StatusCode::kDataLoss, Prefix(source) + what);
}

// Parses one tensor entry (everything but the data-section bounds, checked by the caller).
Result<SafetensorsEntry> ParseEntry(const std::string& name, const json& v,
                                    std::string_view source) {
  const std::string t = "tensor " + Quote(name) + ": ";
  if (!v.is_object()) return Invalid(source, t + "entry is not a JSON object");
  SafetensorsEntry e;

  auto dt = v.find("dtype");
  if (dt == v.end()) return Invalid(source, t + "missing \"dtype\"");
  if (!dt->is_string()) return Invalid(source, t + "\"dtype\" is not a string");
  auto dtype = ParseSafetensorsDType(dt->get_ref<const std::string&>());
  if (!dtype.ok()) return Invalid(source, t + std::string(dtype.status().message()));
  e.dtype = *dtype;

  auto sh = v.find("shape");
  if (sh == v.end()) return Invalid(source, t + "missing \"shape\"");
  if (!sh->is_array()) return Invalid(source, t + "\"shape\" is not an array");
  if (sh->size() > 16) return Invalid(source, t + "\"shape\" has more than 16 dimensions");
  for (const json& d : *sh) {
    if (!d.is_number_integer()) return Invalid(source, t + "\"shape\" holds a non-integer");
    if (d.is_number_unsigned()) {
      const uint64_t u = d.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Invalid(source, t + "dimension " + std::to_string(u) + " is too large");
      }
      e.shape.push_back(static_cast<int64_t>(u));
    } else {
      const int64_t s = d.get<int64_t>();
      if (s < 0) return Invalid(source, t + "negative dimension " + std::to_string(s));
      e.shape.push_back(s);
    }
  }

  auto off = v.find("data_offsets");
  if (off == v.end()) return Invalid(source, t + "missing \"data_offsets\"");
  if (!off->is_array() || off->size() != 2) {
    return Invalid(source, t + "\"data_offsets\" is not an array of two integers");
  }
  for (const json& o : *off) {
    if (!o.is_number_integer() || (!o.is_number_unsigned() && o.get<int64_t>() < 0)) {
      return Invalid(source, t + "\"data_offsets\" must hold two non-negative integers");
    }
  }
  e.begin = (*off)[0].get<uint64_t>();
  e.end = (*off)[1].get<uint64_t>();
  if (e.end < e.begin) {
    return Invalid(source, t + "data_offsets end " + std::to_string(e.end) + " < begin " +
                               std::to_string(e.begin));
  }

  // numel * dtype size, with overflow detection.
  const uint64_t esize = DTypeSize(e.dtype);
  uint64_t bytes = esize;
  bool zero = false;
  for (int64_t d : e.shape) zero = zero || d == 0;
  if (zero) {
    bytes = 0;
  } else {
    for (int64_t d : e.shape) {
      const uint64_t ud = static_cast<uint64_t>(d);
      if (bytes > std::numeric_limits<uint64_t>::max() / ud) {
        return Invalid(source, t + "shape overflows the byte count");
      }
      bytes *= ud;
    }
  }
  if (bytes != e.end - e.begin) {
    return Invalid(source, t + "byte size " + std::to_string(e.end - e.begin) +
                               " (data_offsets) != " + std::to_string(bytes) +
                               " (shape x dtype size)");
  }
  return e;
}

Result<SafetensorsHeader> ParseHeaderImpl(const uint8_t* data, size_t size,
                                          std::string_view source) {
  if (size < 8) {
    return Truncated(source, "file is " + std::to_string(size) +
                                 " bytes, shorter than the 8-byte header length (truncated)");
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > size - 8) {
    return Truncated(source, "header length " + std::to_string(n) + " runs past the end of the " +
                                 std::to_string(size) + "-byte file (truncated)");
  }
  if (n > kMaxSafetensorsHeaderBytes) {
    return Invalid(source, "header length " + std::to_string(n) + " exceeds the limit of " +
                               std::to_string(kMaxSafetensorsHeaderBytes) + " bytes");
  }
  if (n < 2) return Invalid(source, "header of " + std::to_string(n) + " bytes is not a JSON object");

  json header;
  try {
    header = json::parse(data + 8, data + 8 + n);
  } catch (const json::exception& e) {
    return Invalid(source, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) {
    return Invalid(source, std::string("header is a JSON ") + header.type_name() +
                               ", not an object");
  }

  SafetensorsHeader out;
  out.data_offset = 8 + n;
  out.data_size = size - out.data_offset;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      if (!it->is_object()) return Invalid(source, "\"__metadata__\" is not a JSON object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) {
          return Invalid(source, "\"__metadata__\" value for " + Quote(m.key()) +
                                     " is not a string");
        }
        out.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    if (name.empty()) return Invalid(source, "a tensor has an empty name");
    ARCHI_ASSIGN_OR_RETURN(SafetensorsEntry e, ParseEntry(name, *it, source));
    if (e.end > out.data_size) {
      return Truncated(source, "tensor " + Quote(name) + ": data_offsets [" +
                                   std::to_string(e.begin) + ", " + std::to_string(e.end) +
                                   ") run past the end of the " + std::to_string(out.data_size) +
                                   "-byte data section (truncated or offsets out of range)");
    }
    out.tensors.emplace(name, std::move(e));
  }

  // Overlap: sort the non-empty ranges by begin; each must start at or after the previous end.
  std::vector<std::pair<const std::string*, const SafetensorsEntry*>> order;
  for (const auto& [name, e] : out.tensors) {
    if (e.end > e.begin) order.emplace_back(&name, &e);
  }
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return a.second->begin < b.second->begin;
  });
  for (size_t i = 1; i < order.size(); ++i) {
    if (order[i].second->begin < order[i - 1].second->end) {
      return Invalid(source, "tensors " + Quote(*order[i - 1].first) + " [" +
                                 std::to_string(order[i - 1].second->begin) + ", " +
                                 std::to_string(order[i - 1].second->end) + ") and " +
                                 Quote(*order[i].first) + " [" +
                                 std::to_string(order[i].second->begin) + ", " +
                                 std::to_string(order[i].second->end) + ") overlap");
    }
  }
  return out;
}

}  // namespace

std::string_view SafetensorsDTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
    case DType::kU8: return "U8";
  }
  return "?";
}

Result<DType> ParseSafetensorsDType(std::string_view name) {
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16, DType::kI32, DType::kI64, DType::kU8}) {
    if (SafetensorsDTypeName(d) == name) return d;
  }
  static const std::set<std::string_view> kKnownUnsupported = {
      "F64", "I8", "I16", "U16", "U32", "U64", "BOOL", "F8_E4M3", "F8_E5M2", "C64"};
  if (kKnownUnsupported.count(name)) {
    return InvalidArgumentError("unsupported dtype " + Quote(name) +
                                " (supported: F32, F16, BF16, I32, I64, U8)");
  }
  return InvalidArgumentError("unknown dtype " + Quote(name) +
                              " (supported: F32, F16, BF16, I32, I64, U8)");
}

Result<SafetensorsHeader> ParseSafetensorsHeader(const uint8_t* data, size_t size,
                                                 std::string_view source) {
  // nlohmann_json throws (parse, type and out-of-range errors, bad_alloc); nothing crosses this
  // boundary.
  try {
    return ParseHeaderImpl(data, size, source);
  } catch (const std::exception& e) {
    return Invalid(source, std::string("malformed header: ") + e.what());
  }
}

// ---------------------------------------------------------------------------------------------
// MappedFile

Result<std::shared_ptr<const MappedFile>> MappedFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string msg = path + ": cannot open: " + std::strerror(err);
    if (err == ENOENT || err == ENOTDIR) return NotFoundError(msg);
    if (err == EACCES || err == EPERM) return PermissionDeniedError(msg);
    return UnavailableError(msg);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return UnavailableError(path + ": fstat failed: " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return InvalidArgumentError(path + ": not a regular file");
  }
  std::shared_ptr<MappedFile> f(new MappedFile());
  f->path_ = path;
  f->size_ = static_cast<size_t>(st.st_size);
  if (f->size_ > 0) {
    void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      f->size_ = 0;
      return UnavailableError(path + ": mmap failed: " + std::strerror(err));
    }
    f->data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);  // the mapping keeps its own reference to the file
  return std::shared_ptr<const MappedFile>(std::move(f));
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

Result<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  ARCHI_ASSIGN_OR_RETURN(std::shared_ptr<const MappedFile> m, MappedFile::Open(path));
  auto header = ParseSafetensorsHeader(m->data(), m->size(), path);
  if (!header.ok()) return header.status();
  SafetensorsFile f;
  f.mapping_ = std::move(m);
  f.header_ = std::move(header).value();
  return f;
}

Result<Tensor> SafetensorsFile::Get(const std::string& name) const {
  auto it = header_.tensors.find(name);
  if (it == header_.tensors.end()) {
    return NotFoundError(path() + ": no tensor " + Quote(name));
  }
  // Tensor::View takes a mutable pointer; the mapping is read-only (see the header comment).
  return Tensor::View(const_cast<uint8_t*>(DataOf(it->second)), it->second.shape,
                      it->second.dtype);
}

// ---------------------------------------------------------------------------------------------
// Writer

Result<std::string> SerializeSafetensors(std::vector<SafetensorsWriteEntry> tensors,
                                         const std::map<std::string, std::string>& metadata) {
  std::sort(tensors.begin(), tensors.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  json header = json::object();
  if (!metadata.empty()) {
    json m = json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  uint64_t offset = 0;
  std::vector<uint64_t> sizes;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    if (t.name.empty() || t.name == "__metadata__") {
      return InvalidArgumentError("safetensors writer: invalid tensor name " + Quote(t.name));
    }
    if (i > 0 && tensors[i - 1].name == t.name) {
      return InvalidArgumentError("safetensors writer: duplicate tensor " + Quote(t.name));
    }
    // Validate the shape (and get the byte count) the same way Tensor does.
    ARCHI_ASSIGN_OR_RETURN(Tensor view, Tensor::View(const_cast<void*>(t.data), t.shape, t.dtype));
    const uint64_t bytes = view.nbytes();
    json shape = json::array();
    for (int64_t d : t.shape) shape.push_back(d);
    header[t.name] = {{"dtype", std::string(SafetensorsDTypeName(t.dtype))},
                      {"shape", std::move(shape)},
                      {"data_offsets", {offset, offset + bytes}}};
    sizes.push_back(bytes);
    offset += bytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {  // invalid UTF-8 in a name
    return InvalidArgumentError(std::string("safetensors writer: ") + e.what());
  }
  // Pad with spaces so that 8 + header length is a multiple of 64.
  while ((8 + text.size()) % 64 != 0) text.push_back(' ');
  std::string out;
  out.reserve(8 + text.size() + offset);
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += text;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (sizes[i]) out.append(static_cast<const char*>(tensors[i].data), sizes[i]);
  }
  return out;
}

Status WriteSafetensors(const std::string& path, std::vector<SafetensorsWriteEntry> tensors,
                        const std::map<std::string, std::string>& metadata) {
  ARCHI_ASSIGN_OR_RETURN(std::string bytes, SerializeSafetensors(std::move(tensors), metadata));
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return UnavailableError(tmp + ": cannot open for writing: " + std::strerror(errno));
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) return UnavailableError(tmp + ": write failed: " + std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    return UnavailableError(path + ": rename failed: " + std::strerror(err));
  }
  return Status::Ok();
}

}  // namespace archi::model
