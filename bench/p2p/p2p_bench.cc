#include "bench/p2p/p2p_bench.h"

#include <sched.h>
#include <signal.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "bench/p2p/backend_check.h"
#include "bench/p2p/mpi_job.h"
#include "bench/p2p/p2p_patterns.h"
#include "bench/p2p/p2p_transport.h"
#include "runtime/core/deadline.h"
#include "runtime/core/device_buffer.h"
#include "runtime/core/logging.h"
#include "runtime/core/tensor.h"
#include "world/store_client.h"
#include "world/store_server.h"
#include "world/world_manager.h"

namespace archi::bench {
namespace {

// Rank 1 sends, rank 0 receives (and echoes / acks).
constexpr int kSender = 1;
constexpr int kReceiver = 0;
constexpr uint32_t kTagPing = 1;
constexpr uint32_t kTagPong = 2;
constexpr uint32_t kTagData = 3;
constexpr uint32_t kTagAck = 4;
// Bandwidth windows: at most this many messages in flight, and at most this many bytes.
constexpr int kMaxWindow = 16;
constexpr size_t kWindowBytes = size_t{64} << 20;
constexpr const char* kMainWorld = "p2p";
constexpr const char* kShmWorld = "p2p-shm";

// kSingle/kMulti: the world on Gloo TCP (shared-memory fast path off); kShm/kShmMulti: the same
// over the same-host shared-memory fast path (docs/fastpath.md).
enum Variant : int { kSingle = 0, kMulti = 1, kMpi = 2, kShm = 3, kShmMulti = 4 };
constexpr int kVariants = 5;
bool IsMulti(int v) { return v == kMulti || v == kShmMulti; }

struct Sample {
  double latency_us = 0;
  double gbps = 0;
  double lat_iters = 0;
  double bw_msgs = 0;
};

struct SizeResult {
  int64_t elems = 0;
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
  // (max - min) / median of the latency repetitions: the run-to-run noise of variant v.
  double LatSpread(int v) const {
    std::vector<double> x;
    for (const auto& s : samples[v]) x.push_back(s.latency_us);
    if (x.size() < 2) return 0;
    auto [lo, hi] = std::minmax_element(x.begin(), x.end());
    return (*hi - *lo) / Median(x);
  }
};

// The CPUs this process may run on, e.g. "0" or "0-1" (mpirun binds ranks by default).
std::string AllowedCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) != 0) return "?";
  std::string out;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (!CPU_ISSET(c, &set)) continue;
    int e = c;
    while (e + 1 < CPU_SETSIZE && CPU_ISSET(e + 1, &set)) ++e;
    out += (out.empty() ? "" : ",") + (e == c ? std::to_string(c) : Fmt("%d-%d", c, e));
    c = e;
  }
  return out;
}

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Writes the pattern into the first `elems` floats of `buf` (host or GPU memory).
Status FillPattern(DeviceBuffer& buf, int64_t elems, int stamp) {
  std::vector<float> host(static_cast<size_t>(elems));
  for (int64_t i = 0; i < elems; ++i) host[i] = static_cast<float>((i % 1021) + stamp);
  return buf.CopyFromHost(host.data(), host.size() * sizeof(float));
}

// Checks `elems` floats at `p` (host memory) against the pattern.
Status CheckPattern(const float* p, int64_t elems, int stamp, const std::string& what) {
  for (int64_t i = 0; i < elems; ++i) {
    float want = static_cast<float>((i % 1021) + stamp);
    if (p[i] != want) {
      return Status(StatusCode::kDataLoss, Fmt("wrong data in %s of %lld floats: element %lld is %g, expected %g",
                               what.c_str(), static_cast<long long>(elems),
                               static_cast<long long>(i), static_cast<double>(p[i]),
                               static_cast<double>(want)));
    }
  }
  return Status::Ok();
}

class P2PBench {
 public:
  P2PBench(P2POptions o, MpiJob& job)
      : o_(std::move(o)), job_(job), rank_(job.rank()), nccl_(o_.backend == "nccl") {}

  int Run();

 private:
  // Both ranks call the same sequence; `rank_` picks the role inside.
  Status Setup();
  Status MeasureLatency(P2PTransport& tr, int64_t elems, int stamp, Sample& out);
  Status MeasureBandwidth(P2PTransport& tr, int64_t elems, int stamp, Sample& out);
  Status CreateIdleWorlds();
  Status RemoveIdleWorlds();
  int Iterations(double seconds_per_iter) const;
  static int Window(size_t bytes) {
    return static_cast<int>(std::clamp<size_t>(kWindowBytes / std::max<size_t>(bytes, 1), 1,
                                               kMaxWindow));
  }
  static int WarmIters(size_t bytes) {
    return static_cast<int>(std::clamp<size_t>((size_t{8} << 20) / std::max<size_t>(bytes, 1), 2, 10));
  }
  Tensor View(const DeviceBuffer& region, int64_t elems, int64_t offset = 0) const {
    return Tensor::View(static_cast<float*>(region.data()) + offset, {elems}, DType::kF32,
                        region.device())
        .value();
  }
  // The first `elems` floats of `buf` readable on the host: the buffer itself on the CPU, a copy
  // (into host_scratch_) of GPU memory.
  Result<const float*> HostFloats(const DeviceBuffer& buf, int64_t elems);
  // The variants this backend runs: all five on Gloo; 1 world and N worlds on NCCL.
  bool Runs(int v) const { return !nccl_ || v == kSingle || v == kMulti; }
  [[noreturn]] void Fail(const std::string& what, const Status& st);
  void Report(const std::vector<SizeResult>& results, double total_s);
  void ReportNccl(const std::vector<SizeResult>& results, double total_s);

  P2POptions o_;
  MpiJob& job_;
  int rank_;
  const bool nccl_;
  std::vector<int64_t> sizes_;
  std::unique_ptr<StoreServer> server_;
  std::shared_ptr<Store> store_;
  std::unique_ptr<WorldManager> mgr_;
  std::atomic<bool> main_world_broken_{false};
  std::atomic<bool> tearing_down_{false};
  int idle_generation_ = 0;
  bool idle_shm_ = false;  // the idle worlds use the fast path too (kShmMulti)
  std::string IdleName(int k) const {
    return "p2p-idle-" + std::to_string(idle_generation_) + "-" + std::to_string(k);
  }
  WorldOptions wopts_;       // Gloo TCP worlds (fast path off)
  WorldOptions wopts_shm_;   // fast-path worlds
  // Message memory: host for Gloo, the rank's GPU for NCCL.
  DeviceBuffer send_region_, pong_region_, recv_region_, ack_region_;
  Tensor ack_;
  std::vector<float> host_scratch_;
  std::vector<double> idle_init_ms_, idle_remove_ms_;
  double main_init_ms_ = 0;
  double shm_init_ms_ = 0;
  std::string cpus_;
  std::string load_start_;  // "rank 0: cpus 0; rank 1: cpus 1"
};

void P2PBench::Fail(const std::string& what, const Status& st) {
  std::fprintf(stderr, "archi-bench p2p: rank %d: %s: %s\n", rank_, what.c_str(),
               st.ToString().c_str());
  std::fflush(stderr);
  job_.Abort(3);
  std::abort();  // not reached: Abort does not return
}

int P2PBench::Iterations(double seconds_per_iter) const {
  double n = std::ceil(o_.target_s / std::max(seconds_per_iter, 1e-9));
  return static_cast<int>(std::clamp<double>(n, o_.min_iters, o_.max_iters));
}

Status P2PBench::Setup() {
  // Sizes: 3^0 .. 3^11 float32 elements, then 1, 4 and 16 MiB.
  if (!o_.sizes.empty()) {
    for (int64_t b : o_.sizes) sizes_.push_back(std::max<int64_t>(b / 4, 1));
  } else if (o_.quick) {
    sizes_ = {1, 243, (1 << 20) / 4};
  } else {
    int64_t e = 1;
    for (int i = 0; i <= 11; ++i, e *= 3) sizes_.push_back(e);
    for (int64_t mib : {1, 4, 16}) sizes_.push_back(mib * (1 << 20) / 4);
  }
  int64_t max_elems = *std::max_element(sizes_.begin(), sizes_.end());
  const Device dev =
      BenchDevice(nccl_ ? BackendKind::kNccl : BackendKind::kGloo, job_.local_rank());
  auto alloc = [&](int64_t elems) -> Result<DeviceBuffer> {
    ARCHI_ASSIGN_OR_RETURN(auto b, DeviceBuffer::Allocate(static_cast<size_t>(elems) * 4, dev));
    ARCHI_RETURN_IF_ERROR(b.Fill(0));
    return b;
  };
  ARCHI_ASSIGN_OR_RETURN(send_region_, alloc(max_elems));
  ARCHI_ASSIGN_OR_RETURN(pong_region_, alloc(max_elems));
  int64_t recv_elems = 0;
  for (int64_t s : sizes_) recv_elems = std::max<int64_t>(recv_elems, s * Window(s * 4));
  ARCHI_ASSIGN_OR_RETURN(recv_region_, alloc(recv_elems));
  ARCHI_ASSIGN_OR_RETURN(ack_region_, alloc(1));
  ack_ = View(ack_region_, 1);

  ARCHI_ASSIGN_OR_RETURN(store_, JobStore(job_, &server_));  // rank 0 hosts it
  wopts_ = WorldOptions::FromEnv();
  wopts_.shm = ShmMode::kOff;
  if (nccl_) {
    wopts_.backend = BackendKind::kNccl;
    wopts_.device_index = job_.local_rank();
  }
  wopts_shm_ = wopts_;
  wopts_shm_.shm = ShmMode::kOn;
  mgr_ = std::make_unique<WorldManager>();
  mgr_->AddStateCallback([this](const WorldInfo& info) {
    if ((info.name == kMainWorld || info.name == kShmWorld) &&
        info.state == WorldState::kBroken && !tearing_down_) {
      main_world_broken_ = true;
      std::fprintf(stderr, "archi-bench p2p: rank %d: world '%s' BROKEN: %s\n", rank_,
                   info.name.c_str(), info.error.ToString().c_str());
    }
  });
  ARCHI_RETURN_IF_ERROR(mgr_->InitializeWorld(kMainWorld, rank_, 2, store_, wopts_));
  main_init_ms_ = mgr_->GetWorld(kMainWorld).value().init_ms;
  if (!nccl_) {
    ARCHI_RETURN_IF_ERROR(mgr_->InitializeWorld(kShmWorld, rank_, 2, store_, wopts_shm_));
    shm_init_ms_ = mgr_->GetWorld(kShmWorld).value().init_ms;
  }
  char peer_cpus[128] = {0};
  std::snprintf(peer_cpus, sizeof(peer_cpus), "%s", AllowedCpus().c_str());
  job_.Broadcast(peer_cpus, sizeof(peer_cpus), kSender);
  cpus_ = "rank 0 may run on cpus " + AllowedCpus() + ", rank 1 on cpus " + peer_cpus;
  return Status::Ok();
}

Status P2PBench::CreateIdleWorlds() {
  // Fresh names every time: what is measured is the cost of idle worlds existing, not the
  // re-initialisation of a removed name (that path has its own tests).
  ++idle_generation_;
  for (int k = 1; k <= o_.idle_worlds; ++k) {
    std::string name = IdleName(k);
    ARCHI_RETURN_IF_ERROR(
        mgr_->InitializeWorld(name, rank_, 2, store_, idle_shm_ ? wopts_shm_ : wopts_));
    if (rank_ == 0) idle_init_ms_.push_back(mgr_->GetWorld(name).value().init_ms);
  }
  job_.Barrier();
  // Let every idle world's watchdog tick at least once before traffic starts.
  std::this_thread::sleep_for(Millis(std::min<int64_t>(2 * wopts_.heartbeat_interval_ms, 200)));
  return Status::Ok();
}

Status P2PBench::RemoveIdleWorlds() {
  for (int k = 1; k <= o_.idle_worlds; ++k) {
    auto t0 = Clock::now();
    ARCHI_RETURN_IF_ERROR(mgr_->RemoveWorld(IdleName(k)));
    if (rank_ == 0) idle_remove_ms_.push_back(MsSince(t0));
  }
  job_.Barrier();
  return Status::Ok();
}

// Ping-pong: rank 1 sends `elems` floats, rank 0 receives them and sends the same buffer back.
// One-way latency = round-trip time / 2. Warm-up round trips also calibrate the iteration count
// (rank 1 decides and broadcasts it, so both ranks run the same loop).
Status P2PBench::MeasureLatency(P2PTransport& tr, int64_t elems, int stamp, Sample& out) {
  const size_t bytes = static_cast<size_t>(elems) * 4;
  const int warm = WarmIters(bytes);
  Tensor ping = View(send_region_, elems);
  Tensor pong = View(pong_region_, elems);
  job_.Barrier();
  int32_t iters = 0;
  if (rank_ == kSender) {
    auto t0 = Clock::now();
    for (int i = 0; i < warm; ++i) {
      ARCHI_RETURN_IF_ERROR(tr.Send(ping, kReceiver, kTagPing));
      ARCHI_RETURN_IF_ERROR(tr.Recv(pong, kReceiver, kTagPong));
    }
    double per_iter = Seconds(t0) / warm;
    ARCHI_ASSIGN_OR_RETURN(const float* echo, HostFloats(pong_region_, elems));
    ARCHI_RETURN_IF_ERROR(CheckPattern(echo, elems, stamp, "the echo received by rank 1"));
    iters = Iterations(per_iter);
    job_.Broadcast(&iters, sizeof(iters), kSender);
    t0 = Clock::now();
    for (int i = 0; i < iters; ++i) {
      ARCHI_RETURN_IF_ERROR(tr.Send(ping, kReceiver, kTagPing));
      ARCHI_RETURN_IF_ERROR(tr.Recv(pong, kReceiver, kTagPong));
    }
    double total = Seconds(t0);
    out.latency_us = total / iters / 2 * 1e6;
  } else {
    for (int i = 0; i < warm; ++i) {
      ARCHI_RETURN_IF_ERROR(tr.Recv(pong, kSender, kTagPing));
      ARCHI_RETURN_IF_ERROR(tr.Send(pong, kSender, kTagPong));
      if (i == 0) {
        ARCHI_ASSIGN_OR_RETURN(const float* got, HostFloats(pong_region_, elems));
        ARCHI_RETURN_IF_ERROR(CheckPattern(got, elems, stamp, "the message received by rank 0"));
      }
    }
    job_.Broadcast(&iters, sizeof(iters), kSender);
    for (int i = 0; i < iters; ++i) {
      ARCHI_RETURN_IF_ERROR(tr.Recv(pong, kSender, kTagPing));
      ARCHI_RETURN_IF_ERROR(tr.Send(pong, kSender, kTagPong));
    }
  }
  out.lat_iters = iters;
  return Status::Ok();
}

// Streaming: rank 1 sends `msgs` messages in windows of W back-to-back sends (all posted, then
// all waited for), rank 0 posts W receives per window; after the last window rank 0 sends one
// 4-byte ack. Bandwidth = msgs * bytes / (time from the first send to the ack, at rank 1).
Status P2PBench::MeasureBandwidth(P2PTransport& tr, int64_t elems, int stamp, Sample& out) {
  const size_t bytes = static_cast<size_t>(elems) * 4;
  const int window = Window(bytes);
  Tensor data = View(send_region_, elems);
  std::vector<Tensor> bufs;
  for (int i = 0; i < window; ++i) bufs.push_back(View(recv_region_, elems, i * elems));
  job_.Barrier();
  int32_t msgs = 0;
  if (rank_ == kSender) {
    // Warm-up and calibration: one window and its ack.
    auto t0 = Clock::now();
    ARCHI_RETURN_IF_ERROR(tr.SendBatch(data, window, kReceiver, kTagData));
    ARCHI_RETURN_IF_ERROR(tr.Recv(ack_, kReceiver, kTagAck));
    double per_msg = Seconds(t0) / window;
    msgs = Iterations(per_msg);
    msgs = (msgs + window - 1) / window * window;
    job_.Broadcast(&msgs, sizeof(msgs), kSender);
    t0 = Clock::now();
    for (int sent = 0; sent < msgs; sent += window) {
      ARCHI_RETURN_IF_ERROR(tr.SendBatch(data, window, kReceiver, kTagData));
    }
    ARCHI_RETURN_IF_ERROR(tr.Recv(ack_, kReceiver, kTagAck));
    double total = Seconds(t0);
    out.gbps = static_cast<double>(msgs) * static_cast<double>(bytes) / total / 1e9;
  } else {
    ARCHI_RETURN_IF_ERROR(tr.RecvBatch(bufs, window, kSender, kTagData));
    ARCHI_RETURN_IF_ERROR(tr.Send(ack_, kSender, kTagAck));
    ARCHI_ASSIGN_OR_RETURN(const float* got, HostFloats(recv_region_, window * elems));
    for (int i = 0; i < window; ++i) {
      ARCHI_RETURN_IF_ERROR(CheckPattern(got + i * elems, elems, stamp,
                                         "a streamed message received by rank 0"));
    }
    job_.Broadcast(&msgs, sizeof(msgs), kSender);
    for (int got = 0; got < msgs; got += window) {
      ARCHI_RETURN_IF_ERROR(tr.RecvBatch(bufs, window, kSender, kTagData));
    }
    ARCHI_RETURN_IF_ERROR(tr.Send(ack_, kSender, kTagAck));
  }
  out.bw_msgs = msgs;
  return Status::Ok();
}

const char* VariantName(int v, int idle) {
  static std::string multi;
  if (v == kSingle) return "1 world";
  if (v == kMpi) return "MPI";
  if (v == kShm) return "1 world (shm)";
  multi = std::to_string(idle + 1) + (v == kShmMulti ? " worlds (shm)" : " worlds");
  return multi.c_str();
}

int P2PBench::Run() {
  if (Status st = Setup(); !st.ok()) Fail("setup", st);
  WorldTransport world_tr(*mgr_, kMainWorld, o_.wait_timeout_ms);
  WorldTransport shm_tr(*mgr_, kShmWorld, o_.wait_timeout_ms);
  auto mpi_tr = job_.Transport();
  const auto t_start = Clock::now();
  load_start_ = LoadAverage1();
  std::vector<SizeResult> results;
  int stamp = 0;
  if (rank_ == 0) {
    std::printf("[p2p] %zu sizes x %d variants x %d repetitions (target %.2f s per measurement, "
                "%d..%d iterations)\n",
                sizes_.size(), kVariants, o_.reps, o_.target_s, o_.min_iters, o_.max_iters);
    std::fflush(stdout);
  }
  for (size_t si = 0; si < sizes_.size(); ++si) {
    SizeResult r;
    r.elems = sizes_[si];
    r.bytes = static_cast<size_t>(r.elems) * 4;
    r.window = Window(r.bytes);
    for (int rep = 0; rep < o_.reps; ++rep) {
      for (int k = 0; k < kVariants; ++k) {
        // Rotate the order per repetition and size so no variant always runs first or last.
        const int v = (k + rep + static_cast<int>(si)) % kVariants;
        ++stamp;
        if (!Runs(v)) continue;
        if (rank_ == kSender) {
          if (Status st = FillPattern(send_region_, r.elems, stamp % 4096); !st.ok()) {
            Fail("writing the message", st);
          }
        }
        if (IsMulti(v)) {
          idle_shm_ = v == kShmMulti;
          if (Status st = CreateIdleWorlds(); !st.ok()) Fail("creating the idle worlds", st);
        }
        P2PTransport& tr = v == kMpi                   ? *mpi_tr
                           : (v == kShm || v == kShmMulti) ? static_cast<P2PTransport&>(shm_tr)
                                                           : static_cast<P2PTransport&>(world_tr);
        Sample s;
        std::string what = Fmt("%s, %zu bytes", VariantName(v, o_.idle_worlds), r.bytes);
        if (Status st = MeasureLatency(tr, r.elems, stamp % 4096, s); !st.ok()) {
          Fail("latency (" + what + ")", st);
        }
        if (Status st = MeasureBandwidth(tr, r.elems, stamp % 4096, s); !st.ok()) {
          Fail("bandwidth (" + what + ")", st);
        }
        if (IsMulti(v)) {
          if (Status st = RemoveIdleWorlds(); !st.ok()) Fail("removing the idle worlds", st);
        }
        if (main_world_broken_) Fail("world '" + std::string(kMainWorld) + "'", AbortedError("broke during the run"));
        // Rank 1 measured; rank 0 keeps the record.
        double vals[4] = {s.latency_us, s.gbps, s.lat_iters, s.bw_msgs};
        job_.Broadcast(vals, sizeof(vals), kSender);
        r.samples[v].push_back({vals[0], vals[1], vals[2], vals[3]});
      }
    }
    if (rank_ == 0 && nccl_) {
      std::printf("[p2p nccl] %2zu/%zu %10zu B (%9s): lat us  1w %9.2f  %dw %9.2f | GB/s  1w "
                  "%8.4f  %dw %8.4f | %dw/1w lat %.3f  GB/s %.3f\n",
                  si + 1, sizes_.size(), r.bytes, FormatBytes(static_cast<double>(r.bytes)).c_str(),
                  r.Lat(kSingle), o_.idle_worlds + 1, r.Lat(kMulti), r.Bw(kSingle),
                  o_.idle_worlds + 1, r.Bw(kMulti), o_.idle_worlds + 1,
                  r.Lat(kMulti) / r.Lat(kSingle), r.Bw(kMulti) / r.Bw(kSingle));
      std::fflush(stdout);
    } else if (rank_ == 0) {
      std::printf("[p2p] %2zu/%zu %10zu B (%9s): lat us  1w %9.1f  %dw %9.1f  shm %7.2f  MPI %8.2f "
                  "| GB/s  1w %7.4f  %dw %7.4f  shm %7.4f  MPI %7.4f | shm/MPI lat %.2f  GB/s %.3f "
                  "| %dw/1w lat %.3f  GB/s %.3f\n",
                  si + 1, sizes_.size(), r.bytes, FormatBytes(static_cast<double>(r.bytes)).c_str(),
                  r.Lat(kSingle), o_.idle_worlds + 1, r.Lat(kMulti), r.Lat(kShm), r.Lat(kMpi),
                  r.Bw(kSingle), o_.idle_worlds + 1, r.Bw(kMulti), r.Bw(kShm), r.Bw(kMpi),
                  r.Lat(kShm) / r.Lat(kMpi), r.Bw(kShm) / r.Bw(kMpi), o_.idle_worlds + 1,
                  r.Lat(kMulti) / r.Lat(kSingle), r.Bw(kMulti) / r.Bw(kSingle));
      std::fflush(stdout);
    }
    results.push_back(std::move(r));
  }
  const double total_s = Seconds(t_start);

  tearing_down_ = true;  // the peer's removal may break the world here: expected
  if (Status st = nccl_ ? Status::Ok() : mgr_->RemoveWorld(kShmWorld); !st.ok()) {
    std::fprintf(stderr, "archi-bench p2p: rank %d: RemoveWorld(%s): %s\n", rank_, kShmWorld,
                 st.ToString().c_str());
  }
  if (Status st = mgr_->RemoveWorld(kMainWorld); !st.ok()) {
    std::fprintf(stderr, "archi-bench p2p: rank %d: RemoveWorld(%s): %s\n", rank_, kMainWorld,
                 st.ToString().c_str());
  }
  job_.Barrier();
  mgr_.reset();
  job_.Barrier();  // rank 1 is done with the store before rank 0 stops serving it
  if (rank_ == 0) {
    if (nccl_) {
      ReportNccl(results, total_s);
    } else {
      Report(results, total_s);
    }
    server_.reset();
  }
  return 0;
}

Result<const float*> P2PBench::HostFloats(const DeviceBuffer& buf, int64_t elems) {
  if (buf.device().is_cpu()) return static_cast<const float*>(buf.data());
  host_scratch_.resize(static_cast<size_t>(elems));
  ARCHI_RETURN_IF_ERROR(buf.CopyToHost(host_scratch_.data(), host_scratch_.size() * sizeof(float)));
  return static_cast<const float*>(host_scratch_.data());
}

// The NCCL run's report: 1 world vs N worlds, both on NCCL with GPU tensors.
void P2PBench::ReportNccl(const std::vector<SizeResult>& results, double total_s) {
  const int nw = o_.idle_worlds + 1;
  const std::string multi = std::to_string(nw) + "w";
  MarkdownTable table({"bytes", "1w lat us", "1w GB/s", multi + " lat us", multi + " GB/s",
                       multi + "/1w lat", multi + "/1w GB/s"},
                      std::vector<bool>(7, true));
  std::string csv = "bytes,elems,single_lat_us,single_gbps,multi_lat_us,multi_gbps,window,reps\n";
  for (const auto& r : results) {
    double l1 = r.Lat(kSingle), lm = r.Lat(kMulti), b1 = r.Bw(kSingle), bm = r.Bw(kMulti);
    table.AddRow({std::to_string(r.bytes), Fmt("%.2f", l1), Fmt("%.4f", b1), Fmt("%.2f", lm),
                  Fmt("%.4f", bm), Fmt("%.3f", lm / l1), Fmt("%.3f", bm / b1)});
    csv += Fmt("%zu,%lld,%.3f,%.6f,%.3f,%.6f,%d,%zu\n", r.bytes, static_cast<long long>(r.elems),
               l1, b1, lm, bm, r.window, r.samples[kSingle].size());
  }
  const MachineInfo m = GetMachineInfo();
  std::string md = "# archi-bench p2p --backend nccl\n\n";
  md += "- date: " + NowUtc() + "\n";
  md += "- machine: " + DescribeMachine(m) + "\n";
  md += "- command (rank 0, under `mpirun -np 2`): `" + JoinArgs(o_.command) + "`\n";
  md += Fmt("- run time: %.1f s; %d repetitions per measurement (median reported)\n", total_s,
            o_.reps);
  md += "- worlds on NCCL, tensors on the GPU of each rank's local rank; `" + multi +
        "` = the measured world plus " + std::to_string(o_.idle_worlds) +
        " idle NCCL worlds; latency = ping-pong round trip / 2; every op waited for on the "
        "host\n\n";
  md += table.ToString();
  std::printf("\n%s", md.c_str());
  std::fflush(stdout);
  const std::string& out = o_.out_dir;
  for (const Status& st : {MakeDirs(out), WriteFile(out + "/p2p_nccl.md", md),
                           WriteFile(out + "/p2p_nccl.csv", csv)}) {
    if (!st.ok()) std::fprintf(stderr, "archi-bench p2p: %s\n", st.ToString().c_str());
  }
  std::printf("\n[p2p] wrote %s/{p2p_nccl.md,p2p_nccl.csv}\n", out.c_str());
  std::fflush(stdout);
}

void P2PBench::Report(const std::vector<SizeResult>& results, double total_s) {
  const int nw = o_.idle_worlds + 1;
  const std::string multi = std::to_string(nw) + "w";
  MarkdownTable table({"bytes", "1w lat us", "1w GB/s", multi + " lat us", multi + " GB/s",
                       "shm lat us", "shm GB/s", "MPI lat us", "MPI GB/s", "ours/MPI lat",
                       "ours/MPI GB/s", "shm/MPI lat", "shm/MPI GB/s", multi + "/1w lat",
                       multi + "/1w GB/s", "shm " + multi + "/1w lat",
                       "shm " + multi + "/1w GB/s"},
                      std::vector<bool>(17, true));
  std::string csv =
      "bytes,elems,single_lat_us,single_gbps,multi_lat_us,multi_gbps,mpi_lat_us,mpi_gbps,"
      "ours_mpi_lat_ratio,ours_mpi_gbps_ratio,multi_single_lat_ratio,multi_single_gbps_ratio,"
      "window,reps,single_lat_spread,multi_lat_spread,mpi_lat_spread,shm_lat_us,shm_gbps,"
      "shm_multi_lat_us,shm_multi_gbps,shm_mpi_lat_ratio,shm_mpi_gbps_ratio\n";
  std::string raw = "bytes,elems,variant,rep,latency_us,gbps,lat_iters,bw_msgs,window\n";
  double log_lat = 0, log_bw = 0, log_mpi_lat = 0, log_mpi_bw = 0;
  double log_slat = 0, log_sbw = 0, log_smpi_lat = 0, log_smpi_bw = 0;
  double worst_smpi_bw = 1e9;  // lowest shm/MPI bandwidth ratio at >= 64 KiB
  double small_smpi_lat = 0;   // shm/MPI latency at the smallest size
  std::vector<double> spread1, spreadm;
  for (const auto& r : results) {
    double l1 = r.Lat(kSingle), lm = r.Lat(kMulti), lp = r.Lat(kMpi);
    double b1 = r.Bw(kSingle), bm = r.Bw(kMulti), bp = r.Bw(kMpi);
    double ls = r.Lat(kShm), lsm = r.Lat(kShmMulti), bs = r.Bw(kShm), bsm = r.Bw(kShmMulti);
    log_slat += std::log(lsm / ls);
    log_sbw += std::log(bsm / bs);
    log_smpi_lat += std::log(ls / lp);
    log_smpi_bw += std::log(bs / bp);
    if (r.bytes >= (64u << 10)) worst_smpi_bw = std::min(worst_smpi_bw, bs / bp);
    if (&r == &results.front()) small_smpi_lat = ls / lp;
    log_lat += std::log(lm / l1);
    log_bw += std::log(bm / b1);
    log_mpi_lat += std::log(l1 / lp);
    log_mpi_bw += std::log(b1 / bp);
    table.AddRow({std::to_string(r.bytes), Fmt("%.1f", l1), Fmt("%.4f", b1), Fmt("%.1f", lm),
                  Fmt("%.4f", bm), Fmt("%.2f", ls), Fmt("%.4f", bs), Fmt("%.2f", lp),
                  Fmt("%.4f", bp), Fmt("%.1f", l1 / lp), Fmt("%.3f", b1 / bp),
                  Fmt("%.2f", ls / lp), Fmt("%.3f", bs / bp), Fmt("%.3f", lm / l1),
                  Fmt("%.3f", bm / b1), Fmt("%.3f", lsm / ls), Fmt("%.3f", bsm / bs)});
    csv += Fmt("%zu,%lld,%.3f,%.6f,%.3f,%.6f,%.3f,%.6f,%.4f,%.5f,%.4f,%.4f,%d,%zu,%.4f,%.4f,%.4f,"
               "%.3f,%.6f,%.3f,%.6f,%.4f,%.5f\n",
               r.bytes, static_cast<long long>(r.elems), l1, b1, lm, bm, lp, bp, l1 / lp, b1 / bp,
               lm / l1, bm / b1, r.window, r.samples[kSingle].size(), r.LatSpread(kSingle),
               r.LatSpread(kMulti), r.LatSpread(kMpi), ls, bs, lsm, bsm, ls / lp, bs / bp);
    spread1.push_back(r.LatSpread(kSingle));
    spreadm.push_back(r.LatSpread(kMulti));
    for (int v = 0; v < kVariants; ++v) {
      for (size_t i = 0; i < r.samples[v].size(); ++i) {
        const Sample& s = r.samples[v][i];
        raw += Fmt("%zu,%lld,%s,%zu,%.3f,%.6f,%.0f,%.0f,%d\n", r.bytes,
                   static_cast<long long>(r.elems),
                   v == kSingle ? "single" : v == kMulti ? "multi" : v == kMpi ? "mpi"
                                           : v == kShm ? "shm" : "shm_multi",
                   i, s.latency_us, s.gbps, s.lat_iters, s.bw_msgs, r.window);
      }
    }
  }
  const double n = static_cast<double>(results.size());
  const double gm_lat = std::exp(log_lat / n), gm_bw = std::exp(log_bw / n);
  const double gm_mpi_lat = std::exp(log_mpi_lat / n), gm_mpi_bw = std::exp(log_mpi_bw / n);
  const double gm_slat = std::exp(log_slat / n), gm_sbw = std::exp(log_sbw / n);
  const double gm_smpi_lat = std::exp(log_smpi_lat / n), gm_smpi_bw = std::exp(log_smpi_bw / n);
  double worst_lat = 0, worst_bw = 1e9;
  for (const auto& r : results) {
    worst_lat = std::max(worst_lat, r.Lat(kMulti) / r.Lat(kSingle));
    worst_bw = std::min(worst_bw, r.Bw(kMulti) / r.Bw(kSingle));
  }
  const auto idle_init = Summarize(idle_init_ms_);
  const auto idle_rm = Summarize(idle_remove_ms_);
  const MachineInfo m = GetMachineInfo();

  std::string md;
  md += "# archi-bench p2p\n\n";
  md += "- date: " + NowUtc() + "\n";
  md += "- machine: " + DescribeMachine(m) + "\n";
  md += "- load average (1 min) at start / end: " + load_start_ + " / " + LoadAverage1() +
        " (2 ranks busy count for about 1-2)\n";
  md += "- MPI: " + job_.library_version() + "\n";
  md += "- command (rank 0, under `mpirun -np 2`): `" + JoinArgs(o_.command) + "`\n";
  md += "- CPU binding: " + cpus_ + "\n";
  md += Fmt("- run time: %.1f s; %d repetitions per measurement (median reported), target %.2f s "
            "per measurement, %d..%d iterations\n",
            total_s, o_.reps, o_.target_s, o_.min_iters, o_.max_iters);
  md += "- columns `1w`, `" + multi + "`: worlds on Gloo TCP (fast path off); `shm`: the same "
        "world API over the same-host shared-memory fast path (`WorldOptions::shm = kOn`, "
        "docs/fastpath.md); `MPI`: Open MPI send/recv; all measured in this run, interleaved\n";
  md += Fmt("- worlds: Gloo TCP on loopback, heartbeat every %lld ms (timeout %lld ms); "
            "`%dw` = the measured world plus %d idle worlds of the same WorldManager\n",
            static_cast<long long>(wopts_.heartbeat_interval_ms),
            static_cast<long long>(wopts_.heartbeat_timeout_ms), nw, o_.idle_worlds);
  md += "- latency: one-way, = ping-pong round trip / 2, the echo has the message's size; "
        "GB/s = 1e9 bytes/s of a stream of windows of back-to-back sends closed by one 4-byte ack\n";
  md += "- ratios: ours/MPI lat = 1w latency / MPI latency; ours/MPI GB/s = 1w GB/s / MPI GB/s; "
        + multi + "/1w = multi-world / single world (1.000 = no overhead)\n\n";
  md += table.ToString();
  md += "\n";
  md += Fmt("Multi-world overhead (%s vs 1w, geometric mean over %zu sizes): latency x%.4f "
            "(%+.2f%%), bandwidth x%.4f (%+.2f%%); worst size: latency x%.3f, bandwidth x%.3f. "
            "Target: <= 1%% overhead.\n\n",
            multi.c_str(), results.size(), gm_lat, (gm_lat - 1) * 100, gm_bw, (gm_bw - 1) * 100,
            worst_lat, worst_bw);
  // Paired estimate: each repetition's multi-world measurement against the single-world one of
  // the same repetition (run next to each other), log-ratios pooled over sizes and repetitions.
  auto paired = [&](bool latency) {
    std::vector<double> logs;
    for (const auto& r : results) {
      size_t n = std::min(r.samples[kSingle].size(), r.samples[kMulti].size());
      for (size_t j = 0; j < n; ++j) {
        double a = latency ? r.samples[kSingle][j].latency_us : r.samples[kSingle][j].gbps;
        double b = latency ? r.samples[kMulti][j].latency_us : r.samples[kMulti][j].gbps;
        if (a > 0 && b > 0) logs.push_back(std::log(b / a));
      }
    }
    double mean = 0, var = 0;
    for (double x : logs) mean += x;
    mean /= std::max<size_t>(logs.size(), 1);
    for (double x : logs) var += (x - mean) * (x - mean);
    var /= std::max<size_t>(logs.size(), 2) - 1;
    double half = 1.96 * std::sqrt(var / std::max<size_t>(logs.size(), 1));
    return Fmt("x%.4f (95%% CI x%.4f .. x%.4f, n=%zu)", std::exp(mean), std::exp(mean - half),
               std::exp(mean + half), logs.size());
  };
  md += "Paired estimate (" + multi + "/1w of the same repetition, geometric mean over all sizes "
        "and repetitions): latency " + paired(true) + ", bandwidth " + paired(false) + ".\n\n";
  if (o_.reps > 1) {
    md += Fmt("Run-to-run noise: the %d repetitions of a latency measurement differ by a median "
              "of %.1f%% (1w) and %.1f%% (%s) of their median ((max - min) / median, median over "
              "sizes); overheads smaller than that are not resolved by this run.\n\n",
              o_.reps, Median(spread1) * 100, Median(spreadm) * 100, multi.c_str());
  }
  md += Fmt("Gap to Open MPI (1w vs MPI, geometric mean): latency x%.1f, bandwidth x%.3f.\n\n",
            gm_mpi_lat, gm_mpi_bw);
  md += Fmt("Shared-memory fast path vs Open MPI: latency at %zu B x%.2f (target <= 1.5), geometric "
            "mean latency x%.2f, bandwidth x%.3f; lowest bandwidth ratio at >= 64 KiB x%.3f "
            "(target >= 0.7). Multi-world overhead on the fast path (shm %s vs shm 1w): latency "
            "x%.4f (%+.2f%%), bandwidth x%.4f (%+.2f%%).\n\n",
            results.front().bytes, small_smpi_lat, gm_smpi_lat, gm_smpi_bw, worst_smpi_bw,
            multi.c_str(), gm_slat, (gm_slat - 1) * 100, gm_sbw, (gm_sbw - 1) * 100);
  md += Fmt("Fast-path world creation (rank 0): %.1f ms.\n", shm_init_ms_);
  md += Fmt("World creation during the run (rank 0, 2 ranks, loopback): main world %.1f ms; idle "
            "worlds n=%zu median %.1f ms, p90 %.1f ms, max %.1f ms; RemoveWorld (healthy) median "
            "%.2f ms, max %.2f ms.\n",
            main_init_ms_, idle_init.n, idle_init.median, idle_init.p90, idle_init.max,
            idle_rm.median, idle_rm.max);

  std::printf("\n%s", md.c_str());
  std::fflush(stdout);

  const std::string& out = o_.out_dir;
  auto check = [](const Status& st) {
    if (!st.ok()) std::fprintf(stderr, "archi-bench p2p: %s\n", st.ToString().c_str());
    return st.ok();
  };
  if (!check(MakeDirs(out))) return;
  check(WriteFile(out + "/p2p.md", md));
  check(WriteFile(out + "/p2p.csv", csv));
  check(WriteFile(out + "/p2p_raw.csv", raw));

  std::string term = GnuplotPngTerminal();
  if (term.empty()) term = "png";
  std::string title = Fmt("archi-bench p2p, 2 processes on one host (%s, nproc=%d)",
                          m.cpu_model.c_str(), m.nproc);
  auto script = [&](const std::string& png, const std::string& ylabel, int c1, int cm, int cs,
                    int cp) {
    return Fmt(
        "# Generated by archi-bench p2p; regenerate with: gnuplot %s.gp\n"
        "set terminal %s size 960,640\n"
        "set output '%s'\n"
        "set datafile separator ','\n"
        "set logscale xy\n"
        "set format x '10^{%%L}'\n"
        "set format y '10^{%%L}'\n"
        "set grid\n"
        "set key top left\n"
        "set title \"%s\" noenhanced\n"
        "set xlabel 'message size (bytes)'\n"
        "set ylabel '%s'\n"
        "plot 'p2p.csv' every ::1 using 1:%d with linespoints lw 2 title '1 world (Gloo TCP)', \\\n"
        "     '' every ::1 using 1:%d with linespoints lw 2 title '%d worlds (%d idle)', \\\n"
        "     '' every ::1 using 1:%d with linespoints lw 2 title '1 world (shared memory)', \\\n"
        "     '' every ::1 using 1:%d with linespoints lw 2 title 'Open MPI send/recv'\n",
        png.substr(0, png.size() - 4).c_str(), term.c_str(), png.c_str(), title.c_str(),
        ylabel.c_str(), c1, cm, nw, o_.idle_worlds, cs, cp);
  };
  if (check(WriteFile(out + "/p2p.gp", script("p2p.png", "bandwidth (GB/s)", 4, 6, 19, 8)))) {
    check(RunGnuplot(out + "/p2p.gp"));
  }
  if (check(WriteFile(out + "/p2p_latency.gp",
                      script("p2p_latency.png", "one-way latency (us)", 3, 5, 18, 7)))) {
    check(RunGnuplot(out + "/p2p_latency.gp"));
  }
  std::printf("\n[p2p] wrote %s/{p2p.md,p2p.csv,p2p_raw.csv,p2p.png,p2p_latency.png}\n",
              out.c_str());
  std::fflush(stdout);
}

}  // namespace

int RunP2P(P2POptions options, int* argc, char*** argv) {
  if (options.quick) {
    options.reps = 1;
    options.target_s = 0.02;
    options.min_iters = 5;
    options.max_iters = 50;
  }
  auto job = MpiJob::Init(argc, argv);
  if (!job.ok()) {
    std::fprintf(stderr, "archi-bench p2p: %s\n", job.status().ToString().c_str());
    return 2;
  }
  auto kind = ParseBackend(options.backend);
  if (!kind.ok()) {
    std::fprintf(stderr, "archi-bench p2p: %s\n", kind.status().ToString().c_str());
    return 2;
  }
  if (std::string why = AgreeOnSkip(**job, BackendUnavailableReason(*kind, (*job)->local_rank()));
      !why.empty()) {
    if ((*job)->rank() == 0) std::printf("%s\n", SkipLine("p2p", why).c_str());
    return 0;
  }
  if (options.pattern != "pingpong") {
    ::signal(SIGPIPE, SIG_IGN);
    if (!SetLogLevel(options.log_level)) return 2;
    return RunP2PPattern(options, **job);
  }
  if ((*job)->size() != 2) {
    if ((*job)->rank() == 0) {
      std::fprintf(stderr,
                   "archi-bench p2p: needs exactly 2 MPI ranks, got %d; run it as\n"
                   "  mpirun --allow-run-as-root --oversubscribe -np 2 archi-bench p2p ...\n",
                   (*job)->size());
    }
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);
  if (!SetLogLevel(options.log_level)) {
    std::fprintf(stderr, "archi-bench p2p: unknown log level '%s'\n", options.log_level.c_str());
    return 2;
  }
  int rc = P2PBench(std::move(options), **job).Run();
  return rc;
}

}  // namespace archi::bench
