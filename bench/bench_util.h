// Helpers shared by the archi-bench subcommands: order statistics, machine description, output
// files (markdown, CSV) and PNG plots through gnuplot.
//
// Nothing here times anything: the measurement procedures live with their subcommands.
// Thread safety: free functions without shared state; MarkdownTable is a value.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "runtime/core/status.h"

namespace archi::bench {

// Order statistics of a sample (nearest-rank percentiles on the sorted values).
struct Summary {
  size_t n = 0;
  double min = 0;
  double median = 0;
  double p90 = 0;
  double max = 0;
};
Summary Summarize(std::vector<double> values);
double Median(std::vector<double> values);

// The machine a result was measured on.
struct MachineInfo {
  int nproc = 0;           // online CPUs (what `nproc` prints without affinity limits)
  std::string cpu_model;   // "model name" of /proc/cpuinfo
  std::string kernel;      // uname -sr
  std::string hostname;
};
MachineInfo GetMachineInfo();
// "nproc=2, CPU: AMD EPYC, kernel Linux 6.1.0"
std::string DescribeMachine(const MachineInfo& m);

// The 1-minute load average (/proc/loadavg), e.g. "0.42"; other processes competing for the
// cores distort every timing, so results record it.
std::string LoadAverage1();

// UTC wall-clock time, "2024-05-01 12:00:00 UTC".
std::string NowUtc();

// The argument vector joined with spaces (arguments with spaces are single-quoted).
std::string JoinArgs(const std::vector<std::string>& args);

// Path of the running executable (/proc/self/exe).
std::string SelfExe();

// "4 B", "1.5 KiB", "16 MiB".
std::string FormatBytes(double bytes);
// printf-style formatting into a std::string.
std::string Fmt(const char* format, ...) __attribute__((format(printf, 1, 2)));

Status MakeDirs(const std::string& dir);
Status WriteFile(const std::string& path, const std::string& content);

// gnuplot's best PNG terminal: "pngcairo" when this gnuplot has it, else "png"; empty when
// gnuplot cannot be run at all.
std::string GnuplotPngTerminal();
// Runs `gnuplot script_path` (in the script's directory); kUnavailable when gnuplot is missing,
// kInternal when it fails (its stderr is left on ours).
Status RunGnuplot(const std::string& script_path);

// A markdown table with columns padded to equal width.
class MarkdownTable {
 public:
  // `right_align[i]` right-aligns column i (numbers); missing entries mean left.
  explicit MarkdownTable(std::vector<std::string> headers, std::vector<bool> right_align = {});
  void AddRow(std::vector<std::string> cells);
  std::string ToString() const;

 private:
  std::vector<std::string> headers_;
  std::vector<bool> right_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace archi::bench
