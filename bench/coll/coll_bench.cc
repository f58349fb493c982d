#include "bench/coll/coll_bench.h"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "bench/p2p/backend_check.h"
#include "bench/p2p/mpi_job.h"
#include "runtime/core/deadline.h"
#include "runtime/core/device_buffer.h"
#include "runtime/core/logging.h"
#include "runtime/core/tensor.h"
#include "world/store_client.h"
#include "world/store_server.h"
#include "world/world_manager.h"

namespace archi::bench {
namespace {

constexpr const char* kWorld = "coll";

enum class Op { kAllReduce, kAllGather, kReduceScatter, kBroadcast };
constexpr Op kAllOps[] = {Op::kAllReduce, Op::kAllGather, Op::kReduceScatter, Op::kBroadcast};

const char* OpName(Op op) {
  switch (op) {
    case Op::kAllReduce: return "all_reduce";
    case Op::kAllGather: return "all_gather";
    case Op::kReduceScatter: return "reduce_scatter";
    case Op::kBroadcast: return "broadcast";
  }
  return "?";
}

// nccl-tests' bus bandwidth factor for n ranks.
double BusFactor(Op op, int n) {
  const double nn = n;
  switch (op) {
    case Op::kAllReduce: return 2 * (nn - 1) / nn;
    case Op::kAllGather:
    case Op::kReduceScatter: return (nn - 1) / nn;
    case Op::kBroadcast: return 1;
  }
  return 1;
}

struct Row {
  Op op;
  size_t bytes = 0;       // the larger buffer (nccl-tests' "size")
  int64_t count = 0;      // float32 elements of the per-rank buffer (the smaller one)
  int iters = 0;
  double time_us = 0;     // median over repetitions
  double spread = 0;      // (max - min) / median of the repetitions
  double algbw = 0, busbw = 0;  // GB/s (1e9 bytes/s)
};

class CollBench {
 public:
  CollBench(CollOptions o, MpiJob& job, BackendKind kind)
      : o_(std::move(o)), job_(job), kind_(kind), rank_(job.rank()), n_(job.size()) {}
  int Run();

 private:
  Status Setup();
  Status Measure(Op op, size_t bytes, Row& row);
  std::shared_ptr<Work> Issue(Op op, Tensor& big, Tensor& small);
  Status WaitOp(const std::shared_ptr<Work>& w) {
    return w->Wait(Deadline::AfterMs(o_.wait_timeout_ms));
  }
  Status Check(Op op, int64_t count, Tensor& big, Tensor& small);
  void Report(const std::vector<Row>& rows, double total_s);
  [[noreturn]] void Fail(const std::string& what, const Status& st) {
    std::fprintf(stderr, "archi-bench coll: rank %d: %s: %s\n", rank_, what.c_str(),
                 st.ToString().c_str());
    std::fflush(stderr);
    job_.Abort(3);
    std::abort();  // not reached: Abort does not return
  }

  CollOptions o_;
  MpiJob& job_;
  BackendKind kind_;
  int rank_, n_;
  std::vector<size_t> sizes_;
  std::vector<Op> ops_;
  std::unique_ptr<StoreServer> server_;
  std::shared_ptr<Store> store_;
  std::unique_ptr<WorldManager> mgr_;
  std::shared_ptr<Communicator> comm_;
  DeviceBuffer big_, small_;  // host (Gloo) or GPU (NCCL) memory
  double init_ms_ = 0;
};

Status CollBench::Setup() {
  for (size_t b = o_.min_bytes; b < o_.max_bytes; b *= 4) sizes_.push_back(b);
  sizes_.push_back(o_.max_bytes);
  if (o_.ops.empty()) {
    ops_.assign(std::begin(kAllOps), std::end(kAllOps));
  } else {
    for (Op op : kAllOps) {
      if (std::find(o_.ops.begin(), o_.ops.end(), OpName(op)) != o_.ops.end()) ops_.push_back(op);
    }
  }
  // The largest buffer any op uses: max_bytes rounded up to whole floats per rank.
  const int64_t per_rank = std::max<int64_t>(1, static_cast<int64_t>(o_.max_bytes / 4 / n_));
  const size_t big_bytes = std::max<size_t>(o_.max_bytes, static_cast<size_t>(per_rank) * 4 * n_);
  const Device dev = BenchDevice(kind_, job_.local_rank());
  ARCHI_ASSIGN_OR_RETURN(big_, DeviceBuffer::Allocate((big_bytes + 3) / 4 * 4, dev));
  ARCHI_ASSIGN_OR_RETURN(small_, DeviceBuffer::Allocate(static_cast<size_t>(per_rank) * 4, dev));

  ARCHI_ASSIGN_OR_RETURN(store_, JobStore(job_, &server_));  // rank 0 hosts it
  WorldOptions wo = WorldOptions::FromEnv();
  wo.backend = kind_;
  wo.device_index = kind_ == BackendKind::kNccl ? job_.local_rank() : -1;
  wo.op_timeout_ms = std::max(wo.op_timeout_ms, o_.wait_timeout_ms);
  mgr_ = std::make_unique<WorldManager>();
  ARCHI_RETURN_IF_ERROR(mgr_->InitializeWorld(kWorld, rank_, n_, store_, wo));
  init_ms_ = mgr_->GetWorld(kWorld).value().init_ms;
  ARCHI_ASSIGN_OR_RETURN(comm_, mgr_->GetCommunicator(kWorld));
  return Status::Ok();
}

std::shared_ptr<Work> CollBench::Issue(Op op, Tensor& big, Tensor& small) {
  switch (op) {
    case Op::kAllReduce: return comm_->AllReduce(big, ReduceOp::kSum);
    case Op::kAllGather: return comm_->AllGather(small, big);
    case Op::kReduceScatter: return comm_->ReduceScatter(big, small, ReduceOp::kSum);
    case Op::kBroadcast: return comm_->Broadcast(big, 0);
  }
  return CompletedWork(InternalError("unknown op"));
}

// Runs `op` once on known inputs and checks every output element; leaves the buffers zeroed.
Status CollBench::Check(Op op, int64_t count, Tensor& big, Tensor& small) {
  const float me = static_cast<float>(rank_ + 1);
  const float tri = static_cast<float>(n_ * (n_ + 1) / 2);
  DeviceBuffer* in = op == Op::kAllGather ? &small_ : &big_;
  DeviceBuffer* out = op == Op::kReduceScatter ? &small_ : &big_;
  const size_t in_elems = static_cast<size_t>(op == Op::kAllGather ? small.numel() : big.numel());
  const size_t out_elems =
      static_cast<size_t>(op == Op::kReduceScatter ? small.numel() : big.numel());
  std::vector<float> host(in_elems, op == Op::kBroadcast ? (rank_ == 0 ? 42.f : -1.f) : me);
  ARCHI_RETURN_IF_ERROR(in->CopyFromHost(host.data(), in_elems * 4));
  ARCHI_RETURN_IF_ERROR(WaitOp(Issue(op, big, small)));
  host.assign(out_elems, 0.f);
  ARCHI_RETURN_IF_ERROR(out->CopyToHost(host.data(), out_elems * 4));
  for (size_t i = 0; i < out_elems; ++i) {
    float want = op == Op::kAllReduce || op == Op::kReduceScatter ? tri
                 : op == Op::kBroadcast ? 42.f
                                        : static_cast<float>(i / static_cast<size_t>(count) + 1);
    if (host[i] != want) {
      return Status(StatusCode::kDataLoss,
                    Fmt("%s of %zu floats: element %zu is %g, expected %g", OpName(op), out_elems,
                        i, static_cast<double>(host[i]), static_cast<double>(want)));
    }
  }
  ARCHI_RETURN_IF_ERROR(big_.Fill(0));
  return small_.Fill(0);
}

Status CollBench::Measure(Op op, size_t bytes, Row& row) {
  // all_reduce/broadcast: one buffer of `bytes`; all_gather/reduce_scatter: n blocks of `count`.
  const bool blocks = op == Op::kAllGather || op == Op::kReduceScatter;
  const int64_t count = std::max<int64_t>(1, static_cast<int64_t>(bytes / 4 / (blocks ? n_ : 1)));
  const int64_t big_elems = blocks ? count * n_ : count;
  ARCHI_ASSIGN_OR_RETURN(Tensor big, Tensor::View(big_.data(), {big_elems}, DType::kF32,
                                                  big_.device()));
  ARCHI_ASSIGN_OR_RETURN(Tensor small, Tensor::View(small_.data(), {blocks ? count : 1},
                                                    DType::kF32, small_.device()));
  row.op = op;
  row.bytes = static_cast<size_t>(big_elems) * 4;
  row.count = blocks ? count : big_elems;

  job_.Barrier();
  ARCHI_RETURN_IF_ERROR(Check(op, count, big, small));
  // Warm-up (also calibrates the iteration count; rank 0 decides for everyone).
  auto t0 = Clock::now();
  for (int i = 0; i < o_.warmup; ++i) ARCHI_RETURN_IF_ERROR(WaitOp(Issue(op, big, small)));
  double per_op = job_.Max(std::chrono::duration<double>(Clock::now() - t0).count() /
                           std::max(o_.warmup, 1));
  int32_t iters = static_cast<int32_t>(std::clamp<double>(
      std::ceil(o_.target_s / std::max(per_op, 1e-9)), o_.min_iters, o_.max_iters));
  job_.Broadcast(&iters, sizeof(iters), 0);
  row.iters = iters;

  std::vector<double> times;
  for (int rep = 0; rep < o_.reps; ++rep) {
    job_.Barrier();
    t0 = Clock::now();
    for (int i = 0; i < iters; ++i) ARCHI_RETURN_IF_ERROR(WaitOp(Issue(op, big, small)));
    double t = std::chrono::duration<double>(Clock::now() - t0).count() / iters;
    times.push_back(job_.Max(t));
  }
  const double med = Median(times);
  auto [lo, hi] = std::minmax_element(times.begin(), times.end());
  row.time_us = med * 1e6;
  row.spread = (*hi - *lo) / med;
  row.algbw = static_cast<double>(row.bytes) / med / 1e9;
  row.busbw = row.algbw * BusFactor(op, n_);
  return Status::Ok();
}

int CollBench::Run() {
  if (Status st = Setup(); !st.ok()) Fail("setup", st);
  const std::string be(BackendName(kind_));
  if (rank_ == 0) {
    std::printf("[coll %s] %d ranks, %zu ops x %zu sizes (%s .. %s), %d warm-up, %d repetitions "
                "(median), target %.3f s per repetition\n",
                be.c_str(), n_, ops_.size(), sizes_.size(),
                FormatBytes(static_cast<double>(sizes_.front())).c_str(),
                FormatBytes(static_cast<double>(sizes_.back())).c_str(), o_.warmup, o_.reps,
                o_.target_s);
    std::fflush(stdout);
  }
  const auto t_start = Clock::now();
  std::vector<Row> rows;
  for (Op op : ops_) {
    for (size_t bytes : sizes_) {
      Row row;
      if (Status st = Measure(op, bytes, row); !st.ok()) {
        Fail(Fmt("%s, %zu bytes", OpName(op), bytes), st);
      }
      if (rank_ == 0) {
        std::printf("[coll %s] %-14s %10zu B %10.1f us  algbw %8.4f GB/s  busbw %8.4f GB/s  "
                    "(%d iters, spread %.0f%%)\n",
                    be.c_str(), OpName(op), row.bytes, row.time_us, row.algbw, row.busbw,
                    row.iters, row.spread * 100);
        std::fflush(stdout);
      }
      rows.push_back(row);
    }
  }
  const double total_s = std::chrono::duration<double>(Clock::now() - t_start).count();
  comm_.reset();
  if (Status st = mgr_->RemoveWorld(kWorld); !st.ok()) {
    std::fprintf(stderr, "archi-bench coll: rank %d: RemoveWorld: %s\n", rank_,
                 st.ToString().c_str());
  }
  job_.Barrier();
  mgr_.reset();
  job_.Barrier();  // every rank is done with the store before rank 0 stops serving it
  if (rank_ == 0) {
    Report(rows, total_s);
    server_.reset();
  }
  return 0;
}

void CollBench::Report(const std::vector<Row>& rows, double total_s) {
  const std::string be(BackendName(kind_));
  const std::string stem = kind_ == BackendKind::kNccl ? "coll_nccl" : "coll";
  MarkdownTable table({"op", "bytes", "count/rank", "time us", "algbw GB/s", "busbw GB/s",
                       "iters", "spread"},
                      {false, true, true, true, true, true, true, true});
  std::string csv = "op,bytes,count,iters,time_us,algbw_gbps,busbw_gbps,spread\n";
  std::string dat;  // gnuplot: one block per op
  Op last = rows.empty() ? Op::kAllReduce : rows.front().op;
  for (const Row& r : rows) {
    if (r.op != last) dat += "\n\n";
    last = r.op;
    table.AddRow({OpName(r.op), std::to_string(r.bytes), std::to_string(r.count),
                  Fmt("%.1f", r.time_us), Fmt("%.4f", r.algbw), Fmt("%.4f", r.busbw),
                  std::to_string(r.iters), Fmt("%.0f%%", r.spread * 100)});
    csv += Fmt("%s,%zu,%lld,%d,%.3f,%.6f,%.6f,%.4f\n", OpName(r.op), r.bytes,
               static_cast<long long>(r.count), r.iters, r.time_us, r.algbw, r.busbw, r.spread);
    dat += Fmt("%zu %.6f %.6f\n", r.bytes, r.algbw, r.busbw);
  }
  const MachineInfo m = GetMachineInfo();
  std::string md = "# archi-bench coll --backend " + be + "\n\n";
  md += "- date: " + NowUtc() + "\n";
  md += "- machine: " + DescribeMachine(m) + "\n";
  md += "- load average (1 min) at end: " + LoadAverage1() + "\n";
  md += "- command (rank 0, under `mpirun -np " + std::to_string(n_) + "`): `" +
        JoinArgs(o_.command) + "`\n";
  md += Fmt("- one world of %d ranks on %s (%s), created in %.1f ms; run time %.1f s\n", n_,
            be.c_str(), kind_ == BackendKind::kNccl ? "GPU tensors, device = local rank"
                                                     : "CPU tensors",
            init_ms_, total_s);
  md += Fmt("- per (op, size): %d warm-up ops (the first checked), %d timed repetitions of "
            "`iters` ops each waited for before the next; time = slowest rank's, median over "
            "repetitions; spread = (max - min) / median\n",
            o_.warmup, o_.reps);
  md += "- float32, sum, broadcast root 0; bytes = the larger buffer (all_gather output, "
        "reduce_scatter input); algbw = bytes / time; busbw as nccl-tests: all_reduce x 2(n-1)/n, "
        "all_gather and reduce_scatter x (n-1)/n, broadcast x 1\n\n";
  md += table.ToString();
  std::printf("\n%s", md.c_str());
  std::fflush(stdout);

  const std::string& out = o_.out_dir;
  auto check = [](const Status& st) {
    if (!st.ok()) std::fprintf(stderr, "archi-bench coll: %s\n", st.ToString().c_str());
    return st.ok();
  };
  if (!check(MakeDirs(out))) return;
  check(WriteFile(out + "/" + stem + ".md", md));
  check(WriteFile(out + "/" + stem + ".csv", csv));
  check(WriteFile(out + "/" + stem + ".dat", dat));
  std::string term = GnuplotPngTerminal();
  if (term.empty()) term = "png";
  std::string plot;
  Op prev = rows.empty() ? Op::kAllReduce : rows.front().op;
  int index = 0;
  plot += Fmt("'%s.dat' index 0 using 1:3 with linespoints lw 2 title '%s'", stem.c_str(),
              OpName(prev));
  for (const Row& r : rows) {
    if (r.op == prev) continue;
    prev = r.op;
    plot += Fmt(", \\\n     '' index %d using 1:3 with linespoints lw 2 title '%s'", ++index,
                OpName(r.op));
  }
  std::string gp = Fmt(
      "# Generated by archi-bench coll; regenerate with: gnuplot %s.gp\n"
      "set terminal %s size 960,640\n"
      "set output '%s.png'\n"
      "set logscale xy\n"
      "set format x '10^{%%L}'\n"
      "set grid\n"
      "set key top left\n"
      "set title \"archi-bench coll --backend %s, %d ranks (%s, nproc=%d)\" noenhanced\n"
      "set xlabel 'size (bytes)'\n"
      "set ylabel 'bus bandwidth (GB/s)'\n"
      "plot %s\n",
      stem.c_str(), term.c_str(), stem.c_str(), be.c_str(), n_, m.cpu_model.c_str(), m.nproc,
      plot.c_str());
  if (check(WriteFile(out + "/" + stem + ".gp", gp))) check(RunGnuplot(out + "/" + stem + ".gp"));
  std::printf("\n[coll] wrote %s/%s.{md,csv,png}\n", out.c_str(), stem.c_str());
  std::fflush(stdout);
}

}  // namespace

int RunColl(CollOptions options, int* argc, char*** argv) {
  if (options.quick) {
    options.min_bytes = 8;
    options.max_bytes = 2048;
    options.warmup = 2;
    options.reps = 2;
    options.target_s = 0.005;
    options.max_iters = 20;
  }
  auto job = MpiJob::Init(argc, argv);
  if (!job.ok()) {
    std::fprintf(stderr, "archi-bench coll: %s\n", job.status().ToString().c_str());
    return 2;
  }
  auto kind = ParseBackend(options.backend);
  if (!kind.ok()) {
    std::fprintf(stderr, "archi-bench coll: %s\n", kind.status().ToString().c_str());
    return 2;
  }
  if (std::string why = AgreeOnSkip(**job, BackendUnavailableReason(*kind, (*job)->local_rank()));
      !why.empty()) {
    if ((*job)->rank() == 0) std::printf("%s\n", SkipLine("coll", why).c_str());
    return 0;
  }
  if (options.min_bytes > options.max_bytes) {
    if ((*job)->rank() == 0) std::fprintf(stderr, "archi-bench coll: --min-bytes > --max-bytes\n");
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);
  if (!SetLogLevel(options.log_level)) {
    std::fprintf(stderr, "archi-bench coll: unknown log level '%s'\n", options.log_level.c_str());
    return 2;
  }
  return CollBench(std::move(options), **job, *kind).Run();
}

}  // namespace archi::bench
