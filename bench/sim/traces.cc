#include "bench/sim/traces.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>
#include <string_view>

#include <nlohmann/json.hpp>

namespace archi::sim {

namespace {

using json = nlohmann::json;

Status LineError(const std::string& path, size_t line, const std::string& what) {
  return InvalidArgumentError(path + ":" + std::to_string(line) + ": " + what);
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    size_t p = s.find(sep, start);
    out.push_back(Trim(s.substr(start, p == std::string_view::npos ? p : p - start)));
    if (p == std::string_view::npos) break;
    start = p + 1;
  }
  return out;
}

// Whole-field parses; false on anything but a complete number.
bool ParseInt(std::string_view s, int64_t& out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}
bool ParseDouble(std::string_view s, double& out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size() && std::isfinite(out);
}

// Reads all lines; kNotFound when the file cannot be opened.
Result<std::vector<std::string>> ReadLines(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFoundError(path + ": cannot open");
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(std::move(line));
  return lines;
}

bool Blank(const std::string& line) { return Trim(line).empty(); }

// Applies events to the set of present nodes, checking names. `line` names the row in errors.
class NodeSet {
 public:
  Status Apply(const std::string& path, size_t line, NodeOp op, const std::string& node) {
    if (node.empty()) return LineError(path, line, "empty node name");
    if (op == NodeOp::kAdd) {
      if (!present_.insert(node).second) {
        return LineError(path, line, "node '" + node + "' added while already present");
      }
    } else if (present_.erase(node) == 0) {
      return LineError(path, line, "unknown node '" + node + "' removed (not present)");
    }
    return Status::Ok();
  }

 private:
  std::set<std::string> present_;
};

// Steps of the running count: (time, count after all events at that time).
std::vector<std::pair<int64_t, int>> CountSteps(const std::vector<NodeEvent>& events) {
  std::vector<std::pair<int64_t, int>> steps;
  int n = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    n += events[i].op == NodeOp::kAdd ? 1 : -1;
    if (i + 1 == events.size() || events[i + 1].time_ms != events[i].time_ms) {
      steps.emplace_back(events[i].time_ms, n);
    }
  }
  return steps;
}

// JSON Lines row `[time_ms, op, {...}]`: checks the shape, returns the three parts.
Status ParseJsonRow(const std::string& path, size_t line_no, const std::string& line, json& row,
                    int64_t& time_ms, std::string& op) {
  row = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (row.is_discarded()) return LineError(path, line_no, "not valid JSON");
  if (!row.is_array() || row.size() != 3 || !row[2].is_object()) {
    return LineError(path, line_no, "expected [time_ms, op, {...}]");
  }
  if (!row[0].is_number()) return LineError(path, line_no, "time_ms is not a number");
  double t = row[0].get<double>();
  if (t < 0) return LineError(path, line_no, "negative time " + row[0].dump());
  if (t != std::floor(t)) return LineError(path, line_no, "time_ms is not whole: " + row[0].dump());
  time_ms = static_cast<int64_t>(t);
  if (!row[1].is_string()) return LineError(path, line_no, "op is not a string");
  op = row[1].get<std::string>();
  return Status::Ok();
}

Status ParseNodes(const std::string& path, size_t line_no, const json& obj,
                  std::vector<std::string>& nodes) {
  auto it = obj.find("nodes");
  if (it == obj.end()) return LineError(path, line_no, "missing field 'nodes'");
  if (!it->is_array()) return LineError(path, line_no, "'nodes' is not an array");
  nodes.clear();
  for (const json& n : *it) {
    if (!n.is_string()) return LineError(path, line_no, "a node id is not a string");
    nodes.push_back(n.get<std::string>());
  }
  return Status::Ok();
}

Status ParseStrategy(const std::string& path, size_t line_no, const json& obj, const char* key,
                     Strategy& s) {
  auto it = obj.find(key);
  if (it == obj.end()) return LineError(path, line_no, std::string("missing field '") + key + "'");
  if (!it->is_array() || it->size() != 2 || !(*it)[0].is_number_integer() ||
      !(*it)[1].is_number_integer()) {
    return LineError(path, line_no, std::string("'") + key + "' is not [dp, pp]");
  }
  s.dp = (*it)[0].get<int>();
  s.pp = (*it)[1].get<int>();
  if (s.dp < 0 || s.pp < 0) return LineError(path, line_no, std::string("negative ") + key);
  return Status::Ok();
}

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
int64_t DaysFromCivil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

bool ParseFixed(std::string_view s, char sep, int n, int64_t* out) {
  auto parts = Split(s, sep);
  if (static_cast<int>(parts.size()) != n) return false;
  for (int i = 0; i < n; ++i) {
    if (!ParseInt(parts[i], out[i])) return false;
  }
  return true;
}

Status FinishCounts(CountSeries& series, const LoadOptions& options,
                    const std::vector<size_t>& line_of) {
  for (size_t i = 1; i < series.points.size(); ++i) {
    if (series.points[i].time_ms < series.points[i - 1].time_ms) {
      if (!options.tolerate_backwards_time) {
        return LineError(series.source, line_of[i],
                         "time goes backwards (" + std::to_string(series.points[i].time_ms) +
                             " ms after " + std::to_string(series.points[i - 1].time_ms) +
                             " ms); LoadOptions::tolerate_backwards_time / "
                             "--tolerate-quirks sorts instead");
      }
      ++series.reordered;
    }
  }
  std::stable_sort(series.points.begin(), series.points.end(),
                   [](const CountPoint& a, const CountPoint& b) { return a.time_ms < b.time_ms; });
  return Status::Ok();
}

}  // namespace

// ---------------------------------------------------------------------------------------------

int NodeTrace::CountAt(int64_t t_ms) const {
  int n = 0;
  for (const NodeEvent& e : events) {
    if (e.time_ms > t_ms) break;
    n += e.op == NodeOp::kAdd ? 1 : -1;
  }
  return n;
}

int NodeTrace::MaxCount() const {
  int m = 0;
  for (auto [t, n] : CountSteps(events)) m = std::max(m, n);
  return m;
}

int NodeTrace::MinCount() const {
  auto steps = CountSteps(events);
  if (steps.empty()) return 0;
  int m = steps.front().second;
  for (auto [t, n] : steps) m = std::min(m, n);
  return m;
}

double NodeTrace::MeanCount() const {
  auto steps = CountSteps(events);
  if (steps.empty() || end_ms <= steps.front().first) return steps.empty() ? 0 : steps.back().second;
  double area = 0;
  for (size_t i = 0; i < steps.size(); ++i) {
    int64_t until = i + 1 < steps.size() ? steps[i + 1].first : end_ms;
    area += static_cast<double>(steps[i].second) * static_cast<double>(until - steps[i].first);
  }
  return area / static_cast<double>(end_ms - steps.front().first);
}

size_t NodeTrace::Adds() const {
  return std::count_if(events.begin(), events.end(),
                       [](const NodeEvent& e) { return e.op == NodeOp::kAdd; });
}
size_t NodeTrace::Removes() const { return events.size() - Adds(); }

std::vector<CountPoint> CountSeries::Steps() const {
  std::vector<CountPoint> out;
  for (size_t i = 0; i < points.size(); ++i) {
    if (i + 1 == points.size() || points[i + 1].time_ms != points[i].time_ms) {
      out.push_back(points[i]);
    }
  }
  return out;
}

Result<NodeTrace> LoadEventLog(const std::string& path) {
  ARCHI_ASSIGN_OR_RETURN(std::vector<std::string> lines, ReadLines(path));
  NodeTrace trace;
  trace.source = path;
  NodeSet nodes;
  for (size_t i = 0; i < lines.size(); ++i) {
    const size_t ln = i + 1;
    if (Blank(lines[i])) continue;
    auto f = Split(lines[i], ',');
    if (f.size() != 3) {
      return LineError(path, ln, "expected 3 fields time_ms,add|remove,node, got " +
                                     std::to_string(f.size()));
    }
    NodeEvent e;
    if (!ParseInt(f[0], e.time_ms)) {
      return LineError(path, ln, "time_ms '" + std::string(f[0]) + "' is not an integer");
    }
    if (e.time_ms < 0) return LineError(path, ln, "negative time " + std::string(f[0]));
    if (!trace.events.empty() && e.time_ms < trace.events.back().time_ms) {
      return LineError(path, ln, "time " + std::string(f[0]) + " ms is before the previous row's " +
                                     std::to_string(trace.events.back().time_ms) + " ms");
    }
    if (f[1] == "add") {
      e.op = NodeOp::kAdd;
    } else if (f[1] == "remove") {
      e.op = NodeOp::kRemove;
    } else {
      return LineError(path, ln, "event '" + std::string(f[1]) + "' is neither add nor remove");
    }
    e.node = std::string(f[2]);
    ARCHI_RETURN_IF_ERROR(nodes.Apply(path, ln, e.op, e.node));
    trace.events.push_back(std::move(e));
  }
  if (trace.events.empty()) return InvalidArgumentError(path + ": no events");
  trace.end_ms = trace.events.back().time_ms;
  return trace;
}

Result<CountSeries> LoadCountCsv(const std::string& path, const LoadOptions& options) {
  ARCHI_ASSIGN_OR_RETURN(std::vector<std::string> lines, ReadLines(path));
  CountSeries series;
  series.source = path;
  std::vector<size_t> line_of;
  for (size_t i = 0; i < lines.size(); ++i) {
    const size_t ln = i + 1;
    if (Blank(lines[i])) continue;
    auto f = Split(lines[i], ',');
    if (f.size() != 2) return LineError(path, ln, "expected 2 fields time_ms,node_count");
    int64_t t = 0, c = 0;
    if (!ParseInt(f[0], t)) return LineError(path, ln, "time_ms '" + std::string(f[0]) + "' is not an integer");
    if (!ParseInt(f[1], c)) return LineError(path, ln, "node_count '" + std::string(f[1]) + "' is not an integer");
    if (t < 0) return LineError(path, ln, "negative time " + std::string(f[0]));
    if (c < 0) return LineError(path, ln, "negative node count " + std::string(f[1]));
    series.points.push_back({t, static_cast<int>(c)});
    line_of.push_back(ln);
  }
  if (series.points.empty()) return InvalidArgumentError(path + ": no rows");
  ARCHI_RETURN_IF_ERROR(FinishCounts(series, options, line_of));
  return series;
}

Result<CountSeries> LoadGcpCounts(const std::string& path, const LoadOptions& options) {
  ARCHI_ASSIGN_OR_RETURN(std::vector<std::string> lines, ReadLines(path));
  CountSeries series;
  series.source = path;
  std::vector<size_t> line_of;
  std::vector<int64_t> abs_s;
  for (size_t i = 0; i < lines.size(); ++i) {
    const size_t ln = i + 1;
    if (Blank(lines[i])) continue;
    auto f = Split(lines[i], ',');
    if (f.size() != 3) return LineError(path, ln, "expected 3 fields 'YYYY-MM-DD, HH:MM:SS, count'");
    int64_t ymd[3], hms[3], c = 0;
    if (!ParseFixed(f[0], '-', 3, ymd) || ymd[1] < 1 || ymd[1] > 12 || ymd[2] < 1 || ymd[2] > 31) {
      return LineError(path, ln, "date '" + std::string(f[0]) + "' is not YYYY-MM-DD");
    }
    if (!ParseFixed(f[1], ':', 3, hms) || hms[0] < 0 || hms[0] > 23 || hms[1] < 0 ||
        hms[1] > 59 || hms[2] < 0 || hms[2] > 60) {
      return LineError(path, ln, "time '" + std::string(f[1]) + "' is not HH:MM:SS");
    }
    if (!ParseInt(f[2], c)) return LineError(path, ln, "count '" + std::string(f[2]) + "' is not an integer");
    if (c < 0) return LineError(path, ln, "negative count " + std::string(f[2]));
    abs_s.push_back(DaysFromCivil(ymd[0], ymd[1], ymd[2]) * 86400 + hms[0] * 3600 + hms[1] * 60 +
                    hms[2]);
    series.points.push_back({0, static_cast<int>(c)});
    line_of.push_back(ln);
  }
  if (series.points.empty()) return InvalidArgumentError(path + ": no rows");
  // Time zero is the earliest row (the first row, unless the file starts by stepping back).
  const int64_t t0 = *std::min_element(abs_s.begin(), abs_s.end());
  for (size_t i = 0; i < abs_s.size(); ++i) series.points[i].time_ms = (abs_s[i] - t0) * 1000;
  ARCHI_RETURN_IF_ERROR(FinishCounts(series, options, line_of));
  return series;
}

NodeTrace EventsFromCounts(const CountSeries& counts, const std::string& prefix) {
  NodeTrace trace;
  trace.source = counts.source;
  std::vector<std::string> present;  // in order of arrival
  int next_id = 0;
  for (const CountPoint& p : counts.Steps()) {
    while (static_cast<int>(present.size()) < p.count) {
      present.push_back(prefix + std::to_string(next_id++));
      trace.events.push_back({p.time_ms, NodeOp::kAdd, present.back()});
    }
    while (static_cast<int>(present.size()) > p.count) {
      trace.events.push_back({p.time_ms, NodeOp::kRemove, present.back()});
      present.pop_back();
    }
  }
  trace.end_ms = counts.points.empty() ? 0 : counts.points.back().time_ms;
  return trace;
}

Result<ParcaeSlice> LoadParcaeSlice(const std::string& path) {
  ARCHI_ASSIGN_OR_RETURN(std::vector<std::string> lines, ReadLines(path));
  ParcaeSlice slice;
  slice.trace.source = path;
  NodeSet present;
  for (size_t i = 0; i < lines.size(); ++i) {
    const size_t ln = i + 1;
    if (Blank(lines[i])) continue;
    json row;
    SliceRow r;
    ARCHI_RETURN_IF_ERROR(ParseJsonRow(path, ln, lines[i], row, r.time_ms, r.op));
    if (!slice.rows.empty() && r.time_ms < slice.rows.back().time_ms) {
      return LineError(path, ln, "time " + std::to_string(r.time_ms) +
                                     " ms is before the previous row's " +
                                     std::to_string(slice.rows.back().time_ms) + " ms");
    }
    const json& obj = row[2];
    ARCHI_RETURN_IF_ERROR(ParseNodes(path, ln, obj, r.nodes));
    auto d = obj.find("duration");
    if (d == obj.end()) return LineError(path, ln, "missing field 'duration'");
    if (!d->is_number_integer() || d->get<int64_t>() < 0) {
      return LineError(path, ln, "'duration' is not a non-negative integer");
    }
    r.duration_ms = d->get<int64_t>();
    ARCHI_RETURN_IF_ERROR(ParseStrategy(path, ln, obj, "throughput_opt_strategy", r.throughput_opt));
    ARCHI_RETURN_IF_ERROR(ParseStrategy(path, ln, obj, "liveput_truth_strategy", r.liveput_truth));
    ARCHI_RETURN_IF_ERROR(ParseStrategy(path, ln, obj, "liveput_predict_strategy", r.liveput_predict));
    NodeOp op;
    if (r.op == "add") {
      op = NodeOp::kAdd;
    } else if (r.op == "remove") {
      op = NodeOp::kRemove;
    } else if (r.op == "no-op" || r.op == "migration") {
      if (!r.nodes.empty()) return LineError(path, ln, "'" + r.op + "' row with nodes");
      slice.rows.push_back(std::move(r));
      continue;
    } else {
      return LineError(path, ln, "unknown op '" + r.op + "'");
    }
    for (const std::string& n : r.nodes) {
      ARCHI_RETURN_IF_ERROR(present.Apply(path, ln, op, n));
      slice.trace.events.push_back({r.time_ms, op, n});
    }
    slice.rows.push_back(std::move(r));
  }
  if (slice.rows.empty()) return InvalidArgumentError(path + ": no rows");
  slice.trace.end_ms = slice.rows.back().time_ms + slice.rows.back().duration_ms;
  return slice;
}

Result<NodeTrace> LoadSpotServeSegment(const std::string& path) {
  ARCHI_ASSIGN_OR_RETURN(std::vector<std::string> lines, ReadLines(path));
  NodeTrace trace;
  trace.source = path;
  NodeSet present;
  bool done = false;
  int64_t last_t = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const size_t ln = i + 1;
    if (Blank(lines[i])) continue;
    if (done) return LineError(path, ln, "row after DONE");
    json row;
    int64_t t = 0;
    std::string op;
    ARCHI_RETURN_IF_ERROR(ParseJsonRow(path, ln, lines[i], row, t, op));
    if (t < last_t) {
      return LineError(path, ln, "time " + std::to_string(t) + " ms is before the previous row's " +
                                     std::to_string(last_t) + " ms");
    }
    last_t = t;
    std::vector<std::string> nodes;
    ARCHI_RETURN_IF_ERROR(ParseNodes(path, ln, row[2], nodes));
    if (auto it = row[2].find("required_tpt"); it != row[2].end()) {
      if (!it->is_number() || it->get<double>() < 0) {
        return LineError(path, ln, "'required_tpt' is not a non-negative number");
      }
      trace.required_tpt.emplace_back(t, it->get<double>());
    }
    if (op == "add" || op == "remove") {
      NodeOp nop = op == "add" ? NodeOp::kAdd : NodeOp::kRemove;
      for (const std::string& n : nodes) {
        ARCHI_RETURN_IF_ERROR(present.Apply(path, ln, nop, n));
        trace.events.push_back({t, nop, n});
      }
    } else if (op == "other" || op == "DONE") {
      if (!nodes.empty()) return LineError(path, ln, "'" + op + "' row with nodes");
      if (op == "DONE") {
        done = true;
        trace.end_ms = t;
      }
    } else {
      return LineError(path, ln, "unknown op '" + op + "'");
    }
  }
  if (!done) return InvalidArgumentError(path + ": no DONE row (end of the replay)");
  return trace;
}

Result<NodeTrace> LoadNodeTrace(const std::string& path, const LoadOptions& options) {
  ARCHI_ASSIGN_OR_RETURN(std::vector<std::string> lines, ReadLines(path));
  auto first = std::find_if(lines.begin(), lines.end(), [](const std::string& l) { return !Blank(l); });
  if (first == lines.end()) return InvalidArgumentError(path + ": empty file");
  std::string_view l = Trim(*first);
  if (l.front() == '[') {
    if (l.find("\"duration\"") != std::string_view::npos) {
      ARCHI_ASSIGN_OR_RETURN(ParcaeSlice slice, LoadParcaeSlice(path));
      return std::move(slice.trace);
    }
    return LoadSpotServeSegment(path);
  }
  auto f = Split(l, ',');
  if (f.size() == 3 && f[0].find('-') != std::string_view::npos && f[1].find(':') != std::string_view::npos) {
    ARCHI_ASSIGN_OR_RETURN(CountSeries c, LoadGcpCounts(path, options));
    return EventsFromCounts(c);
  }
  if (f.size() == 3) return LoadEventLog(path);
  if (f.size() == 2) {
    ARCHI_ASSIGN_OR_RETURN(CountSeries c, LoadCountCsv(path, options));
    return EventsFromCounts(c);
  }
  return InvalidArgumentError(path + ":" + std::to_string(first - lines.begin() + 1) +
                              ": not a node trace format this loader knows");
}

Result<ArrivalTrace> LoadArrivals(const std::string& path) {
  ARCHI_ASSIGN_OR_RETURN(std::vector<std::string> lines, ReadLines(path));
  ArrivalTrace a;
  a.source = path;
  for (size_t i = 0; i < lines.size(); ++i) {
    const size_t ln = i + 1;
    if (Blank(lines[i])) continue;
    auto f = Split(lines[i], ',');
    if (f.size() < 2) return LineError(path, ln, "expected request_id,arrival_time_s[,prompt_len,offset]");
    if (f.size() > 4) return LineError(path, ln, "more than 4 fields");
    int64_t id = 0;
    double t = 0;
    if (!ParseInt(f[0], id)) return LineError(path, ln, "request_id '" + std::string(f[0]) + "' is not an integer");
    if (!ParseDouble(f[1], t)) return LineError(path, ln, "arrival_time_s '" + std::string(f[1]) + "' is not a number");
    if (t < 0) return LineError(path, ln, "negative arrival time " + std::string(f[1]));
    if (!a.time_s.empty() && t <= a.time_s.back()) {
      return LineError(path, ln, "arrival time " + std::string(f[1]) +
                                     " s is not after the previous one");
    }
    int64_t len = 0;
    if (f.size() >= 3) {
      if (!ParseInt(f[2], len) || len < 0) {
        return LineError(path, ln, "prompt_len '" + std::string(f[2]) + "' is not a non-negative integer");
      }
    }
    a.time_s.push_back(t);
    a.prompt_len.push_back(static_cast<int>(len));
  }
  if (a.time_s.empty()) return InvalidArgumentError(path + ": no requests");
  return a;
}

Result<std::vector<double>> LoadCsvColumn(const std::string& path, const std::string& column) {
  ARCHI_ASSIGN_OR_RETURN(std::vector<std::string> lines, ReadLines(path));
  if (lines.empty()) return InvalidArgumentError(path + ": empty file");
  auto head = Split(lines[0], ',');
  auto col = std::find(head.begin(), head.end(), column);
  if (col == head.end()) return LineError(path, 1, "no column '" + column + "' in the header");
  const size_t idx = static_cast<size_t>(col - head.begin());
  std::vector<double> out;
  for (size_t i = 1; i < lines.size(); ++i) {
    if (Blank(lines[i])) continue;
    auto f = Split(lines[i], ',');
    if (f.size() <= idx) return LineError(path, i + 1, "missing field '" + column + "'");
    double v = 0;
    if (!ParseDouble(f[idx], v)) {
      return LineError(path, i + 1, "'" + column + "' = '" + std::string(f[idx]) + "' is not a number");
    }
    out.push_back(v);
  }
  if (out.empty()) return InvalidArgumentError(path + ": no rows");
  return out;
}

Result<std::vector<double>> LoadRates(const std::string& path) {
  ARCHI_ASSIGN_OR_RETURN(std::vector<std::string> lines, ReadLines(path));
  std::vector<double> rates;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (Blank(lines[i])) continue;
    for (std::string_view f : Split(lines[i], ',')) {
      double r = 0;
      if (!ParseDouble(f, r)) return LineError(path, i + 1, "rate '" + std::string(f) + "' is not a number");
      if (r < 0) return LineError(path, i + 1, "negative rate " + std::string(f));
      rates.push_back(r);
    }
  }
  if (rates.empty()) return InvalidArgumentError(path + ": no rates");
  return rates;
}

namespace {

// JSON documents: errors name the file and the key (the line of a key is not known to the
// parser; the key path is more useful anyway), or the line of a syntax error.
Result<json> ReadJson(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFoundError(path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::parse_error& e) {
    // e.byte is the offset of the error: turn it into a line number.
    std::string text = ss.str();
    size_t upto = std::min<size_t>(e.byte, text.size());
    size_t line = 1 + std::count(text.begin(), text.begin() + upto, '\n');
    return InvalidArgumentError(path + ":" + std::to_string(line) + ": not valid JSON (" +
                                e.what() + ")");
  }
}

Result<double> Num(const std::string& path, const json& obj, const std::string& key,
                   const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end()) return InvalidArgumentError(path + ": missing field '" + where + key + "'");
  if (!it->is_number()) {
    return InvalidArgumentError(path + ": field '" + where + key + "' is not a number");
  }
  return it->get<double>();
}

Result<std::vector<double>> NumArray(const std::string& path, const json& v, const std::string& key) {
  if (!v.is_array()) return InvalidArgumentError(path + ": field '" + key + "' is not an array");
  std::vector<double> out;
  for (const json& x : v) {
    if (!x.is_number()) return InvalidArgumentError(path + ": field '" + key + "' holds a non-number");
    out.push_back(x.get<double>());
  }
  return out;
}

}  // namespace

Result<LatencyProfile> LoadLatencyProfile(const std::string& path) {
  ARCHI_ASSIGN_OR_RETURN(json j, ReadJson(path));
  if (!j.is_object()) return InvalidArgumentError(path + ": not a JSON object");
  LatencyProfile p;
  if (auto it = j.find("name"); it != j.end() && it->is_string()) p.name = it->get<std::string>();
  ARCHI_ASSIGN_OR_RETURN(double layers, Num(path, j, "layer_num", ""));
  if (layers < 1 || layers != std::floor(layers)) {
    return InvalidArgumentError(path + ": 'layer_num' is not a positive integer");
  }
  p.layer_num = static_cast<int>(layers);
  for (auto [key, dst] : {std::pair{"padded_layer_num", &p.padded_layer_num},
                          std::pair{"hidden_size", &p.hidden_size}, std::pair{"max_tp", &p.max_tp}}) {
    if (j.contains(key)) {
      ARCHI_ASSIGN_OR_RETURN(double v, Num(path, j, key, ""));
      *dst = static_cast<int>(v);
    }
  }
  ARCHI_ASSIGN_OR_RETURN(p.pp_init_comm, Num(path, j, "pp_init_comm", ""));
  ARCHI_ASSIGN_OR_RETURN(p.pp_incr_comm, Num(path, j, "pp_incr_comm", ""));
  ARCHI_ASSIGN_OR_RETURN(p.final_fix_factor, Num(path, j, "final_fix_factor", ""));
  if (!j.contains("embed")) return InvalidArgumentError(path + ": missing field 'embed'");
  ARCHI_ASSIGN_OR_RETURN(p.embed, NumArray(path, j["embed"], "embed"));
  for (auto& [key, val] : j.items()) {
    if (key.rfind("tp-", 0) != 0) continue;
    int64_t tp = 0;
    if (!ParseInt(std::string_view(key).substr(3), tp) || tp < 1) {
      return InvalidArgumentError(path + ": bad key '" + key + "'");
    }
    if (!val.is_object()) return InvalidArgumentError(path + ": '" + key + "' is not an object");
    for (auto& [bkey, bval] : val.items()) {
      int64_t b = 0;
      if (bkey.rfind("bsz-", 0) != 0 || !ParseInt(std::string_view(bkey).substr(4), b) || b < 1) {
        return InvalidArgumentError(path + ": bad key '" + key + "." + bkey + "'");
      }
      if (!bval.is_object()) return InvalidArgumentError(path + ": '" + key + "." + bkey + "' is not an object");
      LatencyProfile::Entry e;
      std::string where = key + "." + bkey + ".";
      ARCHI_ASSIGN_OR_RETURN(e.init, Num(path, bval, "init", where));
      ARCHI_ASSIGN_OR_RETURN(e.incr, Num(path, bval, "incr", where));
      if (e.init < 0 || e.incr < 0) return InvalidArgumentError(path + ": negative latency in '" + key + "." + bkey + "'");
      p.tp[static_cast<int>(tp)][static_cast<int>(b)] = e;
    }
  }
  if (p.tp.empty()) return InvalidArgumentError(path + ": no 'tp-<T>' entries");
  return p;
}

double HarmonyModel::CpuMeanS(int batch, double vcpus) const {
  const auto& g = cpu_avg_exp.at(static_cast<size_t>(batch - 1));
  return g[0] * std::exp(-vcpus / g[1]) + g[2];
}

double HarmonyModel::GpuMeanS(int batch, double gb) const {
  double l = gpu_l1 * batch + gpu_l2;
  return gb > 0 && gb < gpu_G ? l * gpu_G / gb : l;
}

Result<HarmonyModel> LoadHarmonyModel(const std::string& path, const std::string& model) {
  ARCHI_ASSIGN_OR_RETURN(json j, ReadJson(path));
  if (!j.is_object() || j.empty()) return InvalidArgumentError(path + ": not a non-empty JSON object");
  HarmonyModel m;
  if (model.empty()) {
    if (j.size() != 1) return InvalidArgumentError(path + ": holds several models; name one");
    m.model = j.begin().key();
  } else {
    if (!j.contains(model)) return InvalidArgumentError(path + ": no model '" + model + "'");
    m.model = model;
  }
  const json& mj = j[m.model];
  const std::string w = m.model + ".";
  if (!mj.contains("CPU") || !mj["CPU"].is_object()) return InvalidArgumentError(path + ": missing field '" + w + "CPU'");
  if (!mj.contains("GPU") || !mj["GPU"].is_object()) return InvalidArgumentError(path + ": missing field '" + w + "GPU'");
  const json& cpu = mj["CPU"];
  if (!cpu.contains("mem")) return InvalidArgumentError(path + ": missing field '" + w + "CPU.mem'");
  ARCHI_ASSIGN_OR_RETURN(std::vector<double> mem, NumArray(path, cpu["mem"], w + "CPU.mem"));
  if (mem.size() != 2) return InvalidArgumentError(path + ": '" + w + "CPU.mem' is not [a, b]");
  m.cpu_mem_a = mem[0];
  m.cpu_mem_b = mem[1];
  for (auto [key, dst] : {std::pair{"avg", &m.cpu_avg_exp}, std::pair{"max", &m.cpu_max_exp}}) {
    std::string k = w + "CPU." + key + ".Exponential";
    if (!cpu.contains(key) || !cpu[key].contains("Exponential")) {
      return InvalidArgumentError(path + ": missing field '" + k + "'");
    }
    const json& e = cpu[key]["Exponential"];
    if (!e.is_array() || e.empty()) return InvalidArgumentError(path + ": '" + k + "' is not a non-empty array");
    for (const json& triple : e) {
      ARCHI_ASSIGN_OR_RETURN(std::vector<double> g, NumArray(path, triple, k));
      if (g.size() != 3) return InvalidArgumentError(path + ": '" + k + "' entry is not [g0, g1, g2]");
      if (g[1] <= 0) return InvalidArgumentError(path + ": '" + k + "' has g1 <= 0");
      dst->push_back(g);
    }
  }
  const json& gpu = mj["GPU"];
  ARCHI_ASSIGN_OR_RETURN(m.gpu_mem_mb, Num(path, gpu, "mem", w + "GPU."));
  if (!gpu.contains("gpu_mem")) return InvalidArgumentError(path + ": missing field '" + w + "GPU.gpu_mem'");
  ARCHI_ASSIGN_OR_RETURN(m.gpu_mem_thresholds, NumArray(path, gpu["gpu_mem"], w + "GPU.gpu_mem"));
  for (auto& [key, val] : gpu.items()) {
    if (!val.is_object()) continue;
    m.gpu_kind = key;
    std::string gw = w + "GPU." + key + ".";
    ARCHI_ASSIGN_OR_RETURN(m.gpu_l1, Num(path, val, "l1", gw));
    ARCHI_ASSIGN_OR_RETURN(m.gpu_l2, Num(path, val, "l2", gw));
    ARCHI_ASSIGN_OR_RETURN(m.gpu_t, Num(path, val, "t", gw));
    ARCHI_ASSIGN_OR_RETURN(m.gpu_G, Num(path, val, "G", gw));
    break;
  }
  if (m.gpu_kind.empty()) return InvalidArgumentError(path + ": no GPU kind under '" + w + "GPU'");
  return m;
}

}  // namespace archi::sim
