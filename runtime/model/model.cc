// Model::Load (config.json + model.safetensors, memory-mapped), UploadToDevice, WriteRandomModel.
#include "runtime/model/model.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <utility>

#include "kernels/common/numeric.h"
#include "runtime/model/model_check.h"
#include "runtime/model/safetensors.h"

namespace archi::model {

namespace fs = std::filesystem;

namespace {

Result<std::string> ReadTextFile(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return NotFoundError(path + ": no such file");
  if (!fs::is_regular_file(path, ec)) return InvalidArgumentError(path + ": not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) return UnavailableError(path + ": cannot open: " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return UnavailableError(path + ": read failed");
  return ss.str();
}

}  // namespace

// Builds Models (the only friend of Model).
class ModelLoader {
 public:
  static Result<std::shared_ptr<const Model>> Load(const std::string& dir, LayerRange range) {
    const std::string config_path = (fs::path(dir) / "config.json").string();
    const std::string weights_path = (fs::path(dir) / "model.safetensors").string();
    ARCHI_ASSIGN_OR_RETURN(std::string text, ReadTextFile(config_path));
    auto config = ModelConfig::FromJson(text);
    if (!config.ok()) {
      return Status(config.status().code(),
                    config_path + ": " + std::string(config.status().message()));
    }
    auto resolved = ResolveLayerRange(*config, range);
    if (!resolved.ok()) {
      return Status(resolved.status().code(),
                    dir + ": " + std::string(resolved.status().message()));
    }
    auto file = SafetensorsFile::Open(weights_path);
    if (!file.ok()) return file.status();
    ARCHI_RETURN_IF_ERROR(
        CheckTensorsAgainstConfig(file->header(), *config, *resolved, weights_path));

    std::shared_ptr<Model> model(new Model());
    model->config_ = *config;
    model->range_ = *resolved;
    model->mapping_ = std::const_pointer_cast<MappedFile>(file->mapping());  // only kept alive
    ARCHI_ASSIGN_OR_RETURN(auto mine, ExpectedTensors(*config, *resolved));
    const size_t align = DTypeSize(config->dtype);
    for (const auto& [name, shape] : mine) {
      const SafetensorsEntry& e = file->header().tensors.at(name);
      const uint8_t* p = file->DataOf(e);
      if (reinterpret_cast<uintptr_t>(p) % align != 0) {
        return InvalidArgumentError(weights_path + ": tensor '" + name + "' at data offset " +
                                    std::to_string(e.begin) + " is not aligned to " +
                                    std::to_string(align) + " bytes");
      }
      ARCHI_ASSIGN_OR_RETURN(Tensor t, file->Get(name));
      model->tensors_.emplace(name, std::move(t));
    }
    return std::shared_ptr<const Model>(std::move(model));
  }
};

Model::~Model() = default;

Result<std::shared_ptr<const Model>> Model::Load(const std::string& dir, LayerRange range) {
  return ModelLoader::Load(dir, range);
}

Result<Tensor> Model::Get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return NotFoundError("tensor '" + name + "' is not part of the loaded layer range [" +
                         std::to_string(range_.begin) + ", " + std::to_string(range_.end) + ")");
  }
  return it->second;
}

Result<std::map<std::string, DeviceBuffer>> UploadToDevice(const Model& model, Device device) {
  std::map<std::string, DeviceBuffer> out;
  for (const auto& [name, t] : model.tensors()) {
    auto buf = DeviceBuffer::Allocate(t.nbytes(), device);
    if (!buf.ok()) {
      return Status(buf.status().code(), "uploading tensor '" + name + "' to " +
                                             device.ToString() + ": " +
                                             std::string(buf.status().message()));
    }
    if (t.nbytes()) ARCHI_RETURN_IF_ERROR(buf->CopyFromHost(t.data(), t.nbytes()));
    out.emplace(name, std::move(buf).value());
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// WriteRandomModel

namespace {

uint64_t Fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

enum class Init { kWeight, kEmbedding, kBias, kOnes, kZeros };

Init InitFor(const std::string& name) {
  auto ends_with = [&](std::string_view suffix) {
    return name.size() >= suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  const bool norm = name.find("norm") != std::string::npos;
  if (norm) return ends_with(".bias") ? Init::kZeros : Init::kOnes;
  if (name.rfind("embed.", 0) == 0) return Init::kEmbedding;
  if (ends_with(".bias")) return Init::kBias;
  return Init::kWeight;
}

// Values in f32, computed by a fixed formula from a 64-bit stream: u = top 53 bits / 2^53 in
// [0, 1), value = (2u - 1) * scale. Every step is exactly specified IEEE arithmetic.
std::vector<float> RandomValues(uint64_t seed, const std::string& name,
                                const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  const Init init = InitFor(name);
  if (init == Init::kOnes || init == Init::kZeros) {
    std::fill(v.begin(), v.end(), init == Init::kOnes ? 1.0f : 0.0f);
    return v;
  }
  double scale = 0.02;
  if (init == Init::kEmbedding) scale = 0.1;
  if (init == Init::kWeight) scale = 1.0 / std::sqrt(static_cast<double>(shape.back()));
  std::mt19937_64 rng(seed ^ Fnv1a(name));
  for (auto& x : v) {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    x = static_cast<float>((2.0 * u - 1.0) * scale);
  }
  return v;
}

}  // namespace

Status WriteRandomModel(const std::string& dir, const ModelConfig& config, uint64_t seed) {
  // Validate through the same parser Load uses.
  const std::string config_text = config.ToJson();
  auto reparsed = ModelConfig::FromJson(config_text);
  if (!reparsed.ok()) return reparsed.status();
  ARCHI_ASSIGN_OR_RETURN(auto expected, ExpectedTensors(config, LayerRange{0, -1}));

  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return UnavailableError(dir + ": cannot create directory: " + ec.message());

  const size_t esize = DTypeSize(config.dtype);
  std::vector<std::vector<uint8_t>> storage;
  storage.reserve(expected.size());
  std::vector<SafetensorsWriteEntry> entries;
  for (const auto& [name, shape] : expected) {
    const std::vector<float> v = RandomValues(seed, name, shape);
    std::vector<uint8_t> bytes(v.size() * esize);
    for (size_t i = 0; i < v.size(); ++i) {
      if (config.dtype == DType::kF32) {
        std::memcpy(&bytes[i * 4], &v[i], 4);
      } else {
        const uint16_t h = config.dtype == DType::kF16 ? kernels::FloatToHalf(v[i])
                                                       : kernels::FloatToBf16(v[i]);
        bytes[i * 2] = static_cast<uint8_t>(h & 0xff);  // little-endian
        bytes[i * 2 + 1] = static_cast<uint8_t>(h >> 8);
      }
    }
    storage.push_back(std::move(bytes));
    entries.push_back({name, config.dtype, shape, storage.back().data()});
  }
  ARCHI_RETURN_IF_ERROR(WriteSafetensors(
      (fs::path(dir) / "model.safetensors").string(), std::move(entries),
      {{"format", "archipelago"}, {"generator", "WriteRandomModel"},
       {"seed", std::to_string(seed)}}));

  const std::string config_path = (fs::path(dir) / "config.json").string();
  std::ofstream out(config_path, std::ios::binary | std::ios::trunc);
  if (!out) return UnavailableError(config_path + ": cannot open for writing");
  out << config_text;
  out.flush();
  if (!out) return UnavailableError(config_path + ": write failed");
  return Status::Ok();
}

}  // namespace archi::model
