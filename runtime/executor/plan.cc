// PipelinePlan parsing. YAML and JSON share one schema walker: the YAML document is first turned
// into a JSON tree (remembering the line of every key and which scalars were plain), then the
// same code checks keys, types and ranges for both. yaml-cpp and nlohmann throw; every throw is
// caught here and turned into a Status.
#include "runtime/executor/plan.h"

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <system_error>
#include <utility>

namespace archi::executor {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kIntMax = std::numeric_limits<int>::max();
constexpr int kMaxNameLength = 32;
// Deeper YAML/JSON than this cannot be a plan; refusing it keeps the conversion's recursion small.
constexpr int kMaxDepth = 16;

// Where a tree came from, for error messages: the source's name, the 1-based YAML line of each
// key path ("batching.max_batch", "stages[1].layers") and the paths holding plain (unquoted) YAML
// scalars, which may be read as integers. A JSON source has neither.
struct Source {
  explicit Source(std::string source_name) : name(std::move(source_name)) {}

  std::string name;
  std::map<std::string, int> lines;
  std::set<std::string> plain;

  Status Error(const std::string& key, const std::string& what) const {
    std::string msg = "pipeline plan " + name + ": ";
    if (!key.empty()) {
      msg += "key '" + key + "'";
      if (auto it = lines.find(key); it != lines.end()) {
        msg += " (line " + std::to_string(it->second) + ")";
      }
      msg += ": ";
    }
    return InvalidArgumentError(msg + what);
  }
};

std::string Describe(const json& v) {
  if (v.is_null()) return "nothing";
  std::string text = v.dump();
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return std::string(v.type_name()) + " " + text;
}

std::string Join(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// ---- YAML -> JSON tree --------------------------------------------------------------------------

bool IsYamlNull(const std::string& s) {
  return s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL";
}

Status YamlToJson(const YAML::Node& node, const std::string& path, int depth, Source& src,
                  json& out) {
  if (depth > kMaxDepth) return src.Error(path, "nested deeper than " + std::to_string(kMaxDepth));
  switch (node.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      out = nullptr;
      return Status::Ok();
    case YAML::NodeType::Scalar: {
      const std::string& text = node.Scalar();
      const bool quoted = node.Tag() == "!";
      if (!quoted && IsYamlNull(text)) {
        out = nullptr;
      } else {
        out = text;
        if (!quoted) src.plain.insert(path);
      }
      return Status::Ok();
    }
    case YAML::NodeType::Sequence: {
      out = json::array();
      size_t i = 0;
      for (const YAML::Node& item : node) {
        const std::string item_path = path + "[" + std::to_string(i++) + "]";
        if (item.Mark().line >= 0) src.lines.emplace(item_path, item.Mark().line + 1);
        json child;
        ARCHI_RETURN_IF_ERROR(YamlToJson(item, item_path, depth + 1, src, child));
        out.push_back(std::move(child));
      }
      return Status::Ok();
    }
    case YAML::NodeType::Map: {
      out = json::object();
      for (const auto& kv : node) {
        if (!kv.first.IsScalar()) {
          return src.Error("", "line " + std::to_string(kv.first.Mark().line + 1) +
                                   ": a mapping key must be a plain name");
        }
        const std::string& key = kv.first.Scalar();
        const std::string key_path = path.empty() ? key : path + "." + key;
        if (kv.first.Mark().line >= 0) src.lines[key_path] = kv.first.Mark().line + 1;
        if (out.contains(key)) return src.Error(key_path, "duplicate key");
        json child;
        ARCHI_RETURN_IF_ERROR(YamlToJson(kv.second, key_path, depth + 1, src, child));
        out[key] = std::move(child);
      }
      return Status::Ok();
    }
  }
  return src.Error(path, "unsupported YAML node");
}

// ---- the schema ---------------------------------------------------------------------------------

// An integer field of a section (batching, routing, request) with its inclusive limits.
struct IntField {
  const char* section;
  const char* key;
  int64_t min;
  int64_t max;
  int64_t (*get)(const PipelinePlan&);
  void (*set)(PipelinePlan&, int64_t);
};

#define ARCHI_PLAN_INT_FIELD(section, member, lo, hi)                                    \
  IntField {                                                                             \
    section, #member, lo, hi, [](const PipelinePlan& p) -> int64_t { return p.member; }, \
        [](PipelinePlan& p, int64_t v) {                                                 \
          p.member = static_cast<decltype(PipelinePlan::member)>(v);                     \
        }                                                                                \
  }

// One day: a longer default deadline is a mistake, and it keeps deadline arithmetic in
// nanoseconds far from int64 overflow.
constexpr int64_t kMaxTimeoutMs = int64_t{24} * 3600 * 1000;

const std::vector<IntField>& IntFields() {
  static const std::vector<IntField> fields = {
      ARCHI_PLAN_INT_FIELD("batching", max_batch, 1, kMaxBatch),
      ARCHI_PLAN_INT_FIELD("batching", max_wait_ms, 0, 60'000),
      ARCHI_PLAN_INT_FIELD("batching", max_queue, 1, kIntMax),
      ARCHI_PLAN_INT_FIELD("batching", max_tokens, 0, kIntMax),
      ARCHI_PLAN_INT_FIELD("routing", max_inflight_per_link, 1, 1024),
      ARCHI_PLAN_INT_FIELD("request", default_timeout_ms, 1, kMaxTimeoutMs),
  };
  return fields;
}

#undef ARCHI_PLAN_INT_FIELD

const std::vector<std::string>& Sections() {
  static const std::vector<std::string> sections = {"batching", "routing", "request"};
  return sections;
}

const std::vector<std::string>& TopLevelKeys() {
  static const std::vector<std::string> keys = {"pipeline", "model",   "stages",
                                                "batching", "routing", "request"};
  return keys;
}

std::string Range(int64_t lo, int64_t hi) {
  if (hi == kInt64Max || hi == kIntMax) return ">= " + std::to_string(lo);
  return std::to_string(lo) + ".." + std::to_string(hi);
}

// An integer at `path` within [lo, hi]. A plain YAML scalar arrives as a string and is parsed
// here (decimal only); a quoted one is a string and rejected.
Result<int64_t> GetInt(const json& v, const std::string& path, int64_t lo, int64_t hi,
                       const Source& src) {
  int64_t value = 0;
  const std::string want = "must be an integer " + Range(lo, hi);
  if (v.is_string() && src.plain.count(path)) {
    const std::string& text = v.get_ref<const std::string&>();
    const char* end = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (ec == std::errc::result_out_of_range) return src.Error(path, want + ", got " + text);
    if (ec != std::errc() || ptr != end) return src.Error(path, want + ", got '" + text + "'");
  } else if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(kInt64Max)) {
      return src.Error(path, want + ", got " + v.dump());
    }
    value = v.get<int64_t>();
  } else {
    return src.Error(path, want + ", got " + Describe(v));
  }
  if (value < lo || value > hi) {
    return src.Error(path, want + ", got " + std::to_string(value));
  }
  return value;
}

Result<std::string> GetString(const json& v, const std::string& path, const Source& src) {
  if (!v.is_string()) return src.Error(path, "must be a string, got " + Describe(v));
  return v.get<std::string>();
}

Status CheckKeys(const json& object, const std::string& path, const std::vector<std::string>& known,
                 const Source& src) {
  for (const auto& [key, value] : object.items()) {
    bool found = false;
    for (const std::string& k : known) found = found || k == key;
    if (!found) {
      return src.Error(path.empty() ? key : path + "." + key,
                       "unknown key; expected one of: " + Join(known));
    }
  }
  return Status::Ok();
}

Status CheckName(const std::string& name, const Source& src) {
  bool ok = !name.empty() && name.size() <= static_cast<size_t>(kMaxNameLength);
  for (char c : name) {
    ok = ok && ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                c == '_' || c == '-');
  }
  if (!ok) {
    return src.Error("pipeline", "must match [A-Za-z0-9_-]{1," + std::to_string(kMaxNameLength) +
                                     "}, got '" + name + "'");
  }
  return Status::Ok();
}

Result<std::vector<model::LayerRange>> GetStages(const json& v, const Source& src) {
  if (!v.is_array() || v.empty()) {
    return src.Error("stages",
                     "must be a non-empty list of {layers: [begin, end]}, got " + Describe(v));
  }
  std::vector<model::LayerRange> stages;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string path = "stages[" + std::to_string(i) + "]";
    const json& stage = v[i];
    if (!stage.is_object()) {
      return src.Error(path, "must be a mapping {layers: [begin, end]}, got " + Describe(stage));
    }
    ARCHI_RETURN_IF_ERROR(CheckKeys(stage, path, {"layers"}, src));
    const std::string layers_path = path + ".layers";
    if (!stage.contains("layers")) return src.Error(path, "missing required key 'layers'");
    const json& layers = stage["layers"];
    if (!layers.is_array() || layers.size() != 2) {
      return src.Error(layers_path, "must be [begin, end] (two integers), got " + Describe(layers));
    }
    model::LayerRange r;
    ARCHI_ASSIGN_OR_RETURN(r.begin, GetInt(layers[0], layers_path + "[0]", 0, kIntMax, src));
    ARCHI_ASSIGN_OR_RETURN(r.end, GetInt(layers[1], layers_path + "[1]", -1, kIntMax, src));
    stages.push_back(r);
  }
  return stages;
}

// The schema walker shared by YAML and JSON.
Result<PipelinePlan> PlanFromTree(const json& root, const Source& src) {
  if (!root.is_object()) {
    return src.Error("", "the document must be a mapping of keys, got " + Describe(root));
  }
  ARCHI_RETURN_IF_ERROR(CheckKeys(root, "", TopLevelKeys(), src));
  for (const char* required : {"pipeline", "model", "stages"}) {
    if (!root.contains(required)) {
      return src.Error("", std::string("missing required key '") + required + "'");
    }
  }
  PipelinePlan plan;
  ARCHI_ASSIGN_OR_RETURN(plan.name, GetString(root["pipeline"], "pipeline", src));
  ARCHI_RETURN_IF_ERROR(CheckName(plan.name, src));
  ARCHI_ASSIGN_OR_RETURN(plan.model_dir, GetString(root["model"], "model", src));
  if (plan.model_dir.empty()) return src.Error("model", "must not be empty");
  ARCHI_ASSIGN_OR_RETURN(plan.stages, GetStages(root["stages"], src));

  for (const std::string& section : Sections()) {
    if (!root.contains(section)) continue;
    const json& body = root[section];
    if (body.is_null()) continue;  // `batching:` with every key commented out: all defaults
    if (!body.is_object()) {
      return src.Error(section, "must be a mapping of keys, got " + Describe(body));
    }
    std::vector<std::string> known;
    for (const IntField& f : IntFields()) {
      if (f.section == section) known.emplace_back(f.key);
    }
    ARCHI_RETURN_IF_ERROR(CheckKeys(body, section, known, src));
    for (const IntField& f : IntFields()) {
      if (f.section != section || !body.contains(f.key)) continue;
      ARCHI_ASSIGN_OR_RETURN(int64_t v,
                             GetInt(body[f.key], section + "." + f.key, f.min, f.max, src));
      f.set(plan, v);
    }
  }
  return plan;
}

Result<PipelinePlan> ParseYaml(const std::string& text, const std::string& base_dir, Source src) {
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(text);
  } catch (const YAML::Exception& e) {
    return src.Error("", "YAML syntax error at line " + std::to_string(e.mark.line + 1) +
                             ", column " + std::to_string(e.mark.column + 1) + ": " + e.msg);
  } catch (const std::exception& e) {
    return src.Error("", std::string("cannot parse YAML: ") + e.what());
  }
  if (docs.size() > 1) return src.Error("", "holds more than one YAML document");
  if (docs.empty() || docs[0].IsNull()) return src.Error("", "is empty");

  json root;
  try {
    ARCHI_RETURN_IF_ERROR(YamlToJson(docs[0], "", 0, src, root));
  } catch (const std::exception& e) {
    return src.Error("", std::string("cannot read YAML: ") + e.what());
  }
  ARCHI_ASSIGN_OR_RETURN(PipelinePlan plan, PlanFromTree(root, src));

  // A relative model path is taken from the YAML file's directory when it exists there, else
  // left as it is (relative to the current directory of the process that loads the model).
  const fs::path model(plan.model_dir);
  if (model.is_relative() && !base_dir.empty()) {
    std::error_code ec;
    const fs::path candidate = (fs::path(base_dir) / model).lexically_normal();
    if (fs::exists(candidate, ec)) plan.model_dir = candidate.string();
  }
  return plan;
}

}  // namespace

Result<PipelinePlan> PipelinePlan::FromYamlFile(const std::string& path) {
  Source src(path);
  std::error_code ec;
  if (!fs::exists(path, ec)) return NotFoundError("pipeline plan " + path + ": no such file");
  if (fs::is_directory(path, ec)) return src.Error("", "is a directory, not a YAML file");
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in) return src.Error("", "cannot be read");
  return ParseYaml(text.str(), fs::path(path).parent_path().string(), std::move(src));
}

Result<PipelinePlan> PipelinePlan::FromYaml(const std::string& text, const std::string& base_dir) {
  return ParseYaml(text, base_dir, Source("(YAML text)"));
}

Result<PipelinePlan> PipelinePlan::FromJson(const std::string& text) {
  const Source src("(JSON)");
  json root;
  try {
    root = json::parse(text);
  } catch (const std::exception& e) {
    return src.Error("", std::string("JSON syntax error: ") + e.what());
  }
  return PlanFromTree(root, src);
}

std::string PipelinePlan::ToJson() const {
  json j = json::object();
  j["pipeline"] = name;
  j["model"] = model_dir;
  json stage_list = json::array();
  for (const model::LayerRange& r : stages) {
    stage_list.push_back(json{{"layers", json::array({r.begin, r.end})}});
  }
  j["stages"] = std::move(stage_list);
  for (const std::string& section : Sections()) {
    json body = json::object();
    for (const IntField& f : IntFields()) {
      if (f.section == section) body[f.key] = f.get(*this);
    }
    j[section] = std::move(body);
  }
  return j.dump();
}

Status PipelinePlan::Validate(const model::ModelConfig& config) {
  // A plan built in code skipped the parser's checks: repeat them.
  const Source src("'" + name + "'");
  ARCHI_RETURN_IF_ERROR(CheckName(name, src));
  if (model_dir.empty()) return src.Error("model", "must not be empty");
  for (const IntField& f : IntFields()) {
    const int64_t v = f.get(*this);
    if (v < f.min || v > f.max) {
      return src.Error(std::string(f.section) + "." + f.key,
                       "must be an integer " + Range(f.min, f.max) + ", got " + std::to_string(v));
    }
  }
  const std::string where = "pipeline plan '" + name + "': ";
  const int64_t n = config.num_layers;
  if (stages.empty()) return InvalidArgumentError(where + "no stages");
  std::vector<model::LayerRange> resolved = stages;
  int64_t next = 0;  // the first layer no earlier stage covers
  for (size_t i = 0; i < resolved.size(); ++i) {
    model::LayerRange& r = resolved[i];
    const std::string stage = "stage " + std::to_string(i) + " ";
    if (r.end == -1) r.end = n;
    const std::string layers =
        "layers [" + std::to_string(r.begin) + ", " + std::to_string(r.end) + ")";
    if (r.begin < 0 || r.end < 0)
      return InvalidArgumentError(where + stage + layers + ": negative");
    if (r.end > n) {
      return InvalidArgumentError(where + stage + layers + " go past the model's " +
                                  std::to_string(n) + " layers");
    }
    if (r.begin >= r.end) return InvalidArgumentError(where + stage + layers + " are empty");
    if (r.begin > next) {
      return InvalidArgumentError(where + stage + layers + " leave a gap: layers [" +
                                  std::to_string(next) + ", " + std::to_string(r.begin) +
                                  ") are in no stage");
    }
    if (r.begin < next) {
      return InvalidArgumentError(where + stage + layers + " overlap the previous stage, which " +
                                  "ends at layer " + std::to_string(next));
    }
    next = r.end;
  }
  if (next != n) {
    return InvalidArgumentError(where + "layers [" + std::to_string(next) + ", " +
                                std::to_string(n) + ") of the model are in no stage");
  }
  int tokens = max_tokens;
  if (tokens == 0) {
    if (config.max_positions > kIntMax) {
      return InvalidArgumentError(where + "the model's max_positions does not fit an int");
    }
    tokens = static_cast<int>(config.max_positions);
  }
  if (tokens > config.max_positions) {
    return InvalidArgumentError(where + "batching.max_tokens " + std::to_string(tokens) +
                                " exceeds the model's max_positions " +
                                std::to_string(config.max_positions));
  }
  stages = std::move(resolved);
  max_tokens = tokens;
  return Status::Ok();
}

bool operator==(const PipelinePlan& a, const PipelinePlan& b) {
  if (a.stages.size() != b.stages.size()) return false;
  for (size_t i = 0; i < a.stages.size(); ++i) {
    if (a.stages[i].begin != b.stages[i].begin || a.stages[i].end != b.stages[i].end) return false;
  }
  return a.name == b.name && a.model_dir == b.model_dir && a.max_batch == b.max_batch &&
         a.max_wait_ms == b.max_wait_ms && a.max_queue == b.max_queue &&
         a.max_tokens == b.max_tokens && a.max_inflight_per_link == b.max_inflight_per_link &&
         a.default_timeout_ms == b.default_timeout_ms;
}

Result<ServingPlan> LoadServingPlan(const std::string& path) {
  ServingPlan out;
  ARCHI_ASSIGN_OR_RETURN(out.plan, PipelinePlan::FromYamlFile(path));
  out.plan.model_dir =
      std::filesystem::absolute(out.plan.model_dir).lexically_normal().string();
  const std::string cfg_path = out.plan.model_dir + "/config.json";
  std::ifstream f(cfg_path);
  if (!f) return NotFoundError("model config " + cfg_path + " not found (plan " + path + ")");
  std::stringstream ss;
  ss << f.rdbuf();
  ARCHI_ASSIGN_OR_RETURN(out.config, model::ModelConfig::FromJson(ss.str()));
  ARCHI_RETURN_IF_ERROR(out.plan.Validate(out.config));
  return out;
}

}  // namespace archi::executor
