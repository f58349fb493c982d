#include "bench/bench_util.h"

#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>

namespace archi::bench {

namespace {

// Nearest-rank percentile of sorted values, p in [0, 100].
double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

std::string Trim(std::string s) {
  auto not_space = [](unsigned char c) { return !std::isspace(c); };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_space));
  s.erase(std::find_if(s.rbegin(), s.rend(), not_space).base(), s.end());
  return s;
}

// Runs a shell command line and returns its exit status (-1 when it could not be run).
int System(const std::string& command) {
  int rc = std::system(command.c_str());
  if (rc == -1) return -1;
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

}  // namespace

Summary Summarize(std::vector<double> values) {
  Summary s;
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  s.n = values.size();
  s.min = values.front();
  s.max = values.back();
  s.p90 = Percentile(values, 90);
  s.median = Median(values);
  return s;
}

double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

MachineInfo GetMachineInfo() {
  MachineInfo m;
  m.nproc = static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN));
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      if (colon != std::string::npos) m.cpu_model = Trim(line.substr(colon + 1));
      break;
    }
  }
  if (m.cpu_model.empty()) m.cpu_model = "unknown";
  utsname u{};
  if (::uname(&u) == 0) {
    m.kernel = std::string(u.sysname) + " " + u.release;
    m.hostname = u.nodename;
  }
  return m;
}

std::string DescribeMachine(const MachineInfo& m) {
  return "nproc=" + std::to_string(m.nproc) + ", CPU: " + m.cpu_model + ", kernel " + m.kernel;
}

std::string LoadAverage1() {
  std::ifstream f("/proc/loadavg");
  std::string first;
  if (!(f >> first)) return "?";
  return first;
}

std::string NowUtc() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

std::string JoinArgs(const std::vector<std::string>& args) {
  std::string out;
  for (const auto& a : args) {
    if (!out.empty()) out += ' ';
    if (a.find_first_of(" \t\"'$") != std::string::npos) {
      out += "'" + a + "'";
    } else {
      out += a;
    }
  }
  return out;
}

std::string SelfExe() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return {};
  return std::string(buf, static_cast<size_t>(n));
}

std::string FormatBytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB"};
  int u = 0;
  while (bytes >= 1024 && u < 3) {
    bytes /= 1024;
    ++u;
  }
  if (u == 0 || bytes == std::floor(bytes)) return Fmt("%.0f %s", bytes, units[u]);
  return Fmt("%.1f %s", bytes, units[u]);
}

std::string Fmt(const char* format, ...) {
  va_list ap;
  va_start(ap, format);
  va_list ap2;
  va_copy(ap2, ap);
  int n = std::vsnprintf(nullptr, 0, format, ap);
  va_end(ap);
  std::string out(n > 0 ? static_cast<size_t>(n) : 0, '\0');
  if (n > 0) std::vsnprintf(out.data(), out.size() + 1, format, ap2);
  va_end(ap2);
  return out;
}

Status MakeDirs(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return InvalidArgumentError("cannot create directory " + dir + ": " + ec.message());
  return Status::Ok();
}

Status WriteFile(const std::string& path, const std::string& content) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return InvalidArgumentError("cannot write " + path + ": " + std::strerror(errno));
  f << content;
  f.close();
  if (!f) return InternalError("error writing " + path);
  return Status::Ok();
}

std::string GnuplotPngTerminal() {
  if (System("gnuplot -e 'set terminal pngcairo' >/dev/null 2>&1 </dev/null") == 0) {
    return "pngcairo";
  }
  if (System("gnuplot -e 'set terminal png' >/dev/null 2>&1 </dev/null") == 0) return "png";
  return {};
}

Status RunGnuplot(const std::string& script_path) {
  if (System("command -v gnuplot >/dev/null 2>&1") != 0) {
    return UnavailableError("gnuplot not found (install gnuplot-nox); no PNG written");
  }
  std::filesystem::path p(script_path);
  std::string dir = p.parent_path().empty() ? "." : p.parent_path().string();
  std::string cmd = "cd '" + dir + "' && gnuplot '" + p.filename().string() + "' </dev/null";
  int rc = System(cmd);
  if (rc != 0) return InternalError("gnuplot " + script_path + " failed (exit " + std::to_string(rc) + ")");
  return Status::Ok();
}

MarkdownTable::MarkdownTable(std::vector<std::string> headers, std::vector<bool> right_align)
    : headers_(std::move(headers)), right_(std::move(right_align)) {
  right_.resize(headers_.size(), false);
}

void MarkdownTable::AddRow(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  rows_.push_back(std::move(cells));
}

std::string MarkdownTable::ToString() const {
  std::vector<size_t> width(headers_.size(), 3);
  for (size_t c = 0; c < headers_.size(); ++c) {
    width[c] = std::max(width[c], headers_[c].size());
    for (const auto& r : rows_) width[c] = std::max(width[c], r[c].size());
  }
  auto cell = [&](const std::string& s, size_t c) {
    std::string pad(width[c] - s.size(), ' ');
    return right_[c] ? pad + s : s + pad;
  };
  std::string out = "|";
  for (size_t c = 0; c < headers_.size(); ++c) out += " " + cell(headers_[c], c) + " |";
  out += "\n|";
  for (size_t c = 0; c < headers_.size(); ++c) {
    out += right_[c] ? " " + std::string(width[c] - 1, '-') + ": |"
                     : " " + std::string(width[c], '-') + " |";
  }
  out += "\n";
  for (const auto& r : rows_) {
    out += "|";
    for (size_t c = 0; c < headers_.size(); ++c) out += " " + cell(r[c], c) + " |";
    out += "\n";
  }
  return out;
}

}  // namespace archi::bench
