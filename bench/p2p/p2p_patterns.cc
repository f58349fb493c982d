#include "bench/p2p/p2p_patterns.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "bench/p2p/p2p_transport.h"
#include "runtime/core/deadline.h"
#include "runtime/core/device_buffer.h"
#include "runtime/core/tensor.h"
#include "world/store_client.h"
#include "world/store_server.h"
#include "world/world_manager.h"

namespace archi::bench {
namespace {

constexpr uint32_t kTagPing = 11;
constexpr uint32_t kTagNote = 12;
constexpr uint32_t kTagData = 13;
constexpr uint32_t kTagAck = 14;
constexpr int kMaxWindow = 16;
constexpr size_t kWindowBytes = size_t{64} << 20;

enum Variant : int { kGloo = 0, kShm = 1, kMpi = 2 };
constexpr int kVariants = 3;
const char* kVariantNames[kVariants] = {"gloo", "shm", "MPI"};

struct Sample {
  double latency_us = 0;
  double gbps = 0;
};

struct Row {
  size_t bytes = 0;
  int window = 1;
  std::array<std::vector<Sample>, kVariants> samples;
  double Lat(int v) const {
    std::vector<double> x;
    for (const auto& s : samples[v]) x.push_back(s.latency_us);
    return Median(x);
  }
  double Bw(int v) const {
    std::vector<double> x;
    for (const auto& s : samples[v]) x.push_back(s.gbps);
    return Median(x);
  }
};

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

int Window(size_t bytes) {
  return static_cast<int>(
      std::clamp<size_t>(kWindowBytes / std::max<size_t>(bytes, 1), 1, kMaxWindow));
}

class PatternBench {
 public:
  PatternBench(const P2POptions& o, MpiJob& job)
      : o_(o), job_(job), rank_(job.rank()), chain_(o.pattern == "chain") {}
  int Run();

 private:
  Status Setup();
  Status Latency(P2PTransport& tr, int64_t elems, int stamp, Sample& out);
  Status Bandwidth(P2PTransport& tr, int64_t elems, int stamp, Sample& out);
  int Iterations(double seconds_per_iter) const {
    const double n = std::ceil(o_.target_s / std::max(seconds_per_iter, 1e-9));
    return static_cast<int>(std::clamp<double>(n, o_.min_iters, o_.max_iters));
  }
  // Rank 0 decides a count from its warm-up time; every rank gets it.
  int32_t AgreeOnCount(double seconds_per_iter) {
    int32_t n = rank_ == 0 ? Iterations(seconds_per_iter) : 0;
    job_.Broadcast(&n, sizeof(n), 0);
    return n;
  }
  Tensor View(const DeviceBuffer& region, int64_t elems, int64_t offset = 0) const {
    return Tensor::View(static_cast<float*>(region.data()) + offset, {elems}, DType::kF32,
                        region.device())
        .value();
  }
  void Fill(int64_t elems, int stamp) {
    auto* p = static_cast<float*>(send_region_.data());
    for (int64_t i = 0; i < elems; ++i) p[i] = static_cast<float>((i % 1021) + stamp);
  }
  Status Check(const Tensor& t, int stamp, const char* what) const {
    const auto* p = static_cast<const float*>(t.data());
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (p[i] != static_cast<float>((i % 1021) + stamp)) {
        return Status(StatusCode::kDataLoss,
                      Fmt("rank %d: wrong data in %s: element %lld", rank_, what,
                          static_cast<long long>(i)));
      }
    }
    return Status::Ok();
  }
  [[noreturn]] void Fail(const std::string& what, const Status& st) {
    std::fprintf(stderr, "archi-bench p2p --pattern %s: rank %d: %s: %s\n", o_.pattern.c_str(),
                 rank_, what.c_str(), st.ToString().c_str());
    std::fflush(stderr);
    job_.Abort(3);
    std::abort();  // not reached: Abort does not return
  }
  void Report(const std::vector<Row>& rows, double total_s);

  const P2POptions& o_;
  MpiJob& job_;
  const int rank_;
  const bool chain_;
  std::vector<int64_t> sizes_;  // in floats
  std::unique_ptr<StoreServer> server_;
  std::shared_ptr<Store> store_;
  std::unique_ptr<WorldManager> mgr_;
  std::string gloo_world_, shm_world_;
  DeviceBuffer send_region_, recv_region_, note_region_;
  Tensor note_;
  std::string load_start_;
};

Status PatternBench::Setup() {
  if (!o_.sizes.empty()) {
    for (int64_t b : o_.sizes) sizes_.push_back(std::max<int64_t>(b / 4, 1));
  } else if (o_.quick) {
    sizes_ = {1, (64 << 10) / 4, (1 << 20) / 4};
  } else {
    for (int64_t b : {int64_t{4}, int64_t{64}, int64_t{1024}, int64_t{8192}, int64_t{65536},
                      int64_t{262144}, int64_t{708588}, int64_t{1} << 20, int64_t{4} << 20,
                      int64_t{16} << 20}) {
      sizes_.push_back(std::max<int64_t>(b / 4, 1));
    }
  }
  const int64_t max_elems = *std::max_element(sizes_.begin(), sizes_.end());
  int64_t recv_elems = 0;
  for (int64_t s : sizes_) recv_elems = std::max<int64_t>(recv_elems, s * Window(s * 4));
  auto alloc = [](int64_t elems) -> Result<DeviceBuffer> {
    ARCHI_ASSIGN_OR_RETURN(auto b,
                           DeviceBuffer::Allocate(static_cast<size_t>(elems) * 4, Device::Cpu()));
    ARCHI_RETURN_IF_ERROR(b.Fill(0));
    return b;
  };
  ARCHI_ASSIGN_OR_RETURN(send_region_, alloc(max_elems));
  ARCHI_ASSIGN_OR_RETURN(recv_region_, alloc(recv_elems));
  ARCHI_ASSIGN_OR_RETURN(note_region_, alloc(2));
  note_ = View(note_region_, 1);

  ARCHI_ASSIGN_OR_RETURN(store_, JobStore(job_, &server_));  // rank 0 hosts it
  WorldOptions gloo = WorldOptions::FromEnv();
  gloo.shm = ShmMode::kOff;
  WorldOptions shm = gloo;
  shm.shm = ShmMode::kOn;
  gloo_world_ = "p2p-" + o_.pattern;
  shm_world_ = "p2p-" + o_.pattern + "-shm";
  mgr_ = std::make_unique<WorldManager>();
  ARCHI_RETURN_IF_ERROR(mgr_->InitializeWorld(gloo_world_, rank_, job_.size(), store_, gloo));
  ARCHI_RETURN_IF_ERROR(mgr_->InitializeWorld(shm_world_, rank_, job_.size(), store_, shm));
  return Status::Ok();
}

Status PatternBench::Latency(P2PTransport& tr, int64_t elems, int stamp, Sample& out) {
  const size_t bytes = static_cast<size_t>(elems) * 4;
  const int warm = static_cast<int>(std::clamp<size_t>((size_t{8} << 20) / bytes, 2, 10));
  Tensor msg = View(send_region_, elems);
  std::vector<Tensor> in = {View(recv_region_, elems)};
  Tensor note_in = View(note_region_, 1, 1);
  // One iteration of the pattern, the same on every rank.
  auto once = [&]() -> Status {
    if (!chain_) return tr.Exchange(msg, in, 1, 1 - rank_, kTagPing);
    if (rank_ == 0) {
      ARCHI_RETURN_IF_ERROR(tr.Send(msg, 1, kTagPing));
      return tr.Recv(note_in, 2, kTagNote);
    }
    if (rank_ == 1) {
      ARCHI_RETURN_IF_ERROR(tr.Recv(in[0], 0, kTagPing));
      return tr.Send(in[0], 2, kTagPing);
    }
    ARCHI_RETURN_IF_ERROR(tr.Recv(in[0], 1, kTagPing));
    return tr.Send(note_, 0, kTagNote);
  };
  job_.Barrier();
  auto t0 = Clock::now();
  for (int i = 0; i < warm; ++i) ARCHI_RETURN_IF_ERROR(once());
  if (!chain_ || rank_ != 0) ARCHI_RETURN_IF_ERROR(Check(in[0], stamp, "a latency message"));
  const int32_t iters = AgreeOnCount(Seconds(t0) / warm);
  job_.Barrier();
  t0 = Clock::now();
  for (int i = 0; i < iters; ++i) ARCHI_RETURN_IF_ERROR(once());
  const double mine = Seconds(t0);
  // Chain: rank 0's clock spans the whole path; bidir: the slower rank.
  double total = chain_ ? mine : job_.Max(mine);
  if (chain_) job_.Broadcast(&total, sizeof(total), 0);
  out.latency_us = total / iters * 1e6;
  return Status::Ok();
}

Status PatternBench::Bandwidth(P2PTransport& tr, int64_t elems, int stamp, Sample& out) {
  const size_t bytes = static_cast<size_t>(elems) * 4;
  const int window = Window(bytes);
  Tensor data = View(send_region_, elems);
  std::vector<Tensor> bufs;
  for (int i = 0; i < window; ++i) bufs.push_back(View(recv_region_, elems, i * elems));
  std::vector<Tensor> note_in = {View(note_region_, 1, 1)};
  auto windows = [&](int count) -> Status {
    for (int w = 0; w < count; ++w) {
      if (!chain_) {
        ARCHI_RETURN_IF_ERROR(tr.Exchange(data, bufs, window, 1 - rank_, kTagData));
      } else if (rank_ == 0) {
        ARCHI_RETURN_IF_ERROR(tr.SendBatch(data, window, 1, kTagData));
      } else if (rank_ == 1) {
        ARCHI_RETURN_IF_ERROR(tr.Forward(bufs, window, 0, 2, kTagData));
      } else {
        ARCHI_RETURN_IF_ERROR(tr.RecvBatch(bufs, window, 1, kTagData));
      }
    }
    // The closing 4-byte message: an exchange (bidir), rank 2 -> rank 0 (chain).
    if (!chain_) return tr.Exchange(note_, note_in, 1, 1 - rank_, kTagAck);
    if (rank_ == 0) return tr.Recv(note_in[0], 2, kTagAck);
    if (rank_ == 2) return tr.Send(note_, 0, kTagAck);
    return Status::Ok();
  };
  job_.Barrier();
  auto t0 = Clock::now();
  ARCHI_RETURN_IF_ERROR(windows(1));
  if (!chain_ || rank_ == 2) {
    for (int i = 0; i < window; ++i) {
      ARCHI_RETURN_IF_ERROR(Check(bufs[i], stamp, "a streamed message"));
    }
  }
  int32_t msgs = AgreeOnCount(Seconds(t0) / window);
  msgs = (msgs + window - 1) / window * window;
  job_.Barrier();
  t0 = Clock::now();
  ARCHI_RETURN_IF_ERROR(windows(msgs / window));
  const double mine = Seconds(t0);
  double total = chain_ ? mine : job_.Max(mine);
  if (chain_) job_.Broadcast(&total, sizeof(total), 0);
  const double moved = static_cast<double>(msgs) * static_cast<double>(bytes) * (chain_ ? 1 : 2);
  out.gbps = moved / total / 1e9;
  return Status::Ok();
}

int PatternBench::Run() {
  if (Status st = Setup(); !st.ok()) Fail("setup", st);
  WorldTransport gloo(*mgr_, gloo_world_, o_.wait_timeout_ms);
  WorldTransport shm(*mgr_, shm_world_, o_.wait_timeout_ms);
  auto mpi = job_.Transport();
  P2PTransport* trs[kVariants] = {&gloo, &shm, mpi.get()};
  load_start_ = LoadAverage1();
  const auto t_start = Clock::now();
  std::vector<Row> rows;
  int stamp = 0;
  if (rank_ == 0) {
    std::printf("[p2p %s] %zu sizes x %d transports x %d repetitions (target %.2f s per "
                "measurement)\n",
                o_.pattern.c_str(), sizes_.size(), kVariants, o_.reps, o_.target_s);
    std::fflush(stdout);
  }
  for (size_t si = 0; si < sizes_.size(); ++si) {
    Row row;
    row.bytes = static_cast<size_t>(sizes_[si]) * 4;
    row.window = Window(row.bytes);
    for (int rep = 0; rep < o_.reps; ++rep) {
      for (int k = 0; k < kVariants; ++k) {
        const int v = (k + rep + static_cast<int>(si)) % kVariants;  // rotate the order
        stamp = (stamp + 1) % 4096;
        Fill(sizes_[si], stamp);
        Sample s;
        const std::string what = Fmt("%s, %zu bytes", kVariantNames[v], row.bytes);
        if (Status st = Latency(*trs[v], sizes_[si], stamp, s); !st.ok()) Fail("latency, " + what, st);
        if (Status st = Bandwidth(*trs[v], sizes_[si], stamp, s); !st.ok()) {
          Fail("bandwidth, " + what, st);
        }
        row.samples[v].push_back(s);
      }
    }
    if (rank_ == 0) {
      std::printf("[p2p %s] %2zu/%zu %10zu B: lat us gloo %9.1f shm %8.2f MPI %8.2f | GB/s gloo "
                  "%7.3f shm %7.3f MPI %7.3f | shm/MPI lat %.2f GB/s %.3f\n",
                  o_.pattern.c_str(), si + 1, sizes_.size(), row.bytes, row.Lat(kGloo),
                  row.Lat(kShm), row.Lat(kMpi), row.Bw(kGloo), row.Bw(kShm), row.Bw(kMpi),
                  row.Lat(kShm) / row.Lat(kMpi), row.Bw(kShm) / row.Bw(kMpi));
      std::fflush(stdout);
    }
    rows.push_back(std::move(row));
  }
  const double total_s = Seconds(t_start);
  (void)mgr_->RemoveWorld(shm_world_);
  (void)mgr_->RemoveWorld(gloo_world_);
  job_.Barrier();
  mgr_.reset();
  job_.Barrier();  // every rank is done with the store before rank 0 stops serving it
  if (rank_ == 0) {
    Report(rows, total_s);
    server_.reset();
  }
  return 0;
}

void PatternBench::Report(const std::vector<Row>& rows, double total_s) {
  MarkdownTable table({"bytes", "gloo lat us", "shm lat us", "MPI lat us", "shm/MPI lat",
                       "gloo GB/s", "shm GB/s", "MPI GB/s", "shm/MPI GB/s", "gloo/MPI GB/s"},
                      std::vector<bool>(10, true));
  std::string csv =
      "bytes,window,gloo_lat_us,shm_lat_us,mpi_lat_us,gloo_gbps,shm_gbps,mpi_gbps,shm_mpi_lat,"
      "shm_mpi_gbps,reps\n";
  for (const auto& r : rows) {
    const double lg = r.Lat(kGloo), ls = r.Lat(kShm), lm = r.Lat(kMpi);
    const double bg = r.Bw(kGloo), bs = r.Bw(kShm), bm = r.Bw(kMpi);
    table.AddRow({std::to_string(r.bytes), Fmt("%.1f", lg), Fmt("%.2f", ls), Fmt("%.2f", lm),
                  Fmt("%.2f", ls / lm), Fmt("%.4f", bg), Fmt("%.4f", bs), Fmt("%.4f", bm),
                  Fmt("%.3f", bs / bm), Fmt("%.3f", bg / bm)});
    csv += Fmt("%zu,%d,%.3f,%.3f,%.3f,%.6f,%.6f,%.6f,%.4f,%.4f,%zu\n", r.bytes, r.window, lg, ls,
               lm, bg, bs, bm, ls / lm, bs / bm, r.samples[kShm].size());
  }
  const MachineInfo m = GetMachineInfo();
  std::string md = "# archi-bench p2p --pattern " + o_.pattern + "\n\n";
  md += "- date: " + NowUtc() + "\n";
  md += "- machine: " + DescribeMachine(m) + "\n";
  md += "- load average (1 min) at start / end: " + load_start_ + " / " + LoadAverage1() + "\n";
  md += "- MPI: " + job_.library_version() + "\n";
  md += Fmt("- command (rank 0, under `mpirun -np %d`): `", job_.size()) + JoinArgs(o_.command) +
        "`\n";
  md += Fmt("- run time: %.1f s; %d repetitions per measurement (median reported), target %.2f s "
            "per measurement; the three transports interleaved in this run\n",
            total_s, o_.reps, o_.target_s);
  if (chain_) {
    md += "- chain: rank 0 -> rank 1 -> rank 2 (rank 1 forwards each message as it arrives). "
          "lat = per message from rank 0's send to rank 2's 4-byte notice back at rank 0 (two "
          "hops of the size + one 4-byte hop); GB/s = bytes delivered at rank 2 per second of a "
          "windowed stream\n\n";
  } else {
    md += "- bidir: both ranks send at once. lat = time per exchange (each rank sends and "
          "receives one message of the size); GB/s = bytes moved in both directions per second "
          "of windowed streams (slower rank's time)\n\n";
  }
  md += table.ToString();
  std::printf("\n%s", md.c_str());
  std::fflush(stdout);
  const std::string base = o_.out_dir + "/p2p_" + o_.pattern;
  auto check = [](const Status& st) {
    if (!st.ok()) std::fprintf(stderr, "archi-bench p2p: %s\n", st.ToString().c_str());
    return st.ok();
  };
  if (!check(MakeDirs(o_.out_dir))) return;
  check(WriteFile(base + ".md", md));
  check(WriteFile(base + ".csv", csv));
  std::string term = GnuplotPngTerminal();
  if (term.empty()) term = "png";
  const std::string name = "p2p_" + o_.pattern;
  const std::string gp = Fmt(
      "# Generated by archi-bench p2p --pattern %s; regenerate with: gnuplot %s.gp\n"
      "set terminal %s size 960,640\n"
      "set output '%s.png'\n"
      "set datafile separator ','\n"
      "set logscale xy\n"
      "set grid\n"
      "set key top left\n"
      "set title \"archi-bench p2p --pattern %s (%s, nproc=%d)\" noenhanced\n"
      "set xlabel 'message size (bytes)'\n"
      "set ylabel 'bandwidth (GB/s)'\n"
      "plot '%s.csv' every ::1 using 1:6 with linespoints lw 2 title 'Gloo TCP', \\\n"
      "     '' every ::1 using 1:7 with linespoints lw 2 title 'shared-memory fast path', \\\n"
      "     '' every ::1 using 1:8 with linespoints lw 2 title 'Open MPI'\n",
      o_.pattern.c_str(), name.c_str(), term.c_str(), name.c_str(), o_.pattern.c_str(),
      m.cpu_model.c_str(), m.nproc, name.c_str());
  if (check(WriteFile(base + ".gp", gp))) check(RunGnuplot(base + ".gp"));
  std::printf("\n[p2p %s] wrote %s.{md,csv,png}\n", o_.pattern.c_str(), base.c_str());
}

}  // namespace

int RunP2PPattern(const P2POptions& options, MpiJob& job) {
  const int want = options.pattern == "chain" ? 3 : 2;
  if (options.backend != "gloo") {
    if (job.rank() == 0) {
      std::fprintf(stderr, "archi-bench p2p: --pattern %s runs on the gloo backend only\n",
                   options.pattern.c_str());
    }
    return 2;
  }
  if (job.size() != want) {
    if (job.rank() == 0) {
      std::fprintf(stderr,
                   "archi-bench p2p --pattern %s: needs exactly %d MPI ranks, got %d; run it as\n"
                   "  mpirun --allow-run-as-root --oversubscribe -np %d archi-bench p2p "
                   "--pattern %s ...\n",
                   options.pattern.c_str(), want, job.size(), want, options.pattern.c_str());
    }
    return 2;
  }
  return PatternBench(options, job).Run();
}

}  // namespace archi::bench
