// The `recovery` and `control-plane` subcommands of archi-bench (see recovery_bench.h and
// control_plane_bench.h).
#include <CLI/CLI.hpp>
#include <memory>

#include "bench/recovery/control_plane_bench.h"
#include "bench/recovery/recovery_bench.h"

namespace archi::bench {

std::function<std::optional<int>(const std::vector<std::string>&)> AddRecoveryCommands(
    CLI::App& app) {
  auto rec = std::make_shared<RecoveryOptions>();
  auto* rc = app.add_subcommand(
      "recovery",
      "faults under steady load through a 3-stage pipeline planned by the coordinator (replicas "
      "1-2-1 + 1 idle worker), each on a fresh cluster: kill (-9 of a stage-1 replica), stop "
      "(SIGSTOP, SIGCONT later), frontend (-9 of the frontend with its embedded coordinator, "
      "restarted at once), partition and slow (a stage-1 replica in a network namespace: link "
      "down / tc netem delay; skipped without CAP_NET_ADMIN). Reports detection, time back to "
      "full throughput, requests lost, p99 before/during; one PNG per fault");
  rc->add_option("--out", rec->out_dir,
                 "output directory (recovery.md, recovery.csv, recovery_<fault>.{csv,png})")
      ->capture_default_str();
  rc->add_option("--faults", rec->faults, "subset of: kill stop frontend partition slow (default all)")
      ->check(CLI::IsMember({"kill", "stop", "frontend", "partition", "slow"}));
  rc->add_option("--model", rec->model_dir,
                 "model dir (e.g. build/models/minilm); default: a generated 6-layer model");
  rc->add_option("--duration-s", rec->duration_s, "seconds of load per fault (after a 2.5 s warm-up)")
      ->capture_default_str()
      ->check(CLI::Range(3.0, 600.0));
  rc->add_option("--fault-at-s", rec->fault_at_s, "when the fault is injected, into the load")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 600.0));
  rc->add_option("--stop-s", rec->stop_s, "how long the SIGSTOPped worker stays stopped")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 600.0));
  rc->add_option("--concurrency", rec->concurrency, "closed-loop requests outstanding")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  rc->add_option("--batch", rec->batch, "plan max_batch")->capture_default_str()->check(CLI::Range(1, 64));
  rc->add_option("--extra-compute-ms", rec->extra_compute_ms,
                 "archi-worker --extra-compute-ms per micro-batch (steadies throughput on a busy "
                 "machine; 0: compute only)")
      ->capture_default_str()
      ->check(CLI::Range(0, 10'000));
  rc->add_option("--worker-threads", rec->worker_threads, "archi-worker --threads")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  rc->add_option("--heartbeat-timeout-ms", rec->heartbeat_timeout_ms, "coordinator heartbeat timeout")
      ->capture_default_str()
      ->check(CLI::Range(50, 600'000));
  rc->add_option("--heartbeat-interval-ms", rec->heartbeat_interval_ms, "worker heartbeat interval")
      ->capture_default_str()
      ->check(CLI::Range(10, 60'000));
  rc->add_option("--delay-ms", rec->delay_ms, "slow: tc netem delay each way")
      ->capture_default_str()
      ->check(CLI::Range(1, 10'000));
  rc->add_option("--slow-rate", rec->slow_rate, "slow without netem: tc tbf rate each way")
      ->capture_default_str();
  rc->add_option("--frontend-rate", rec->frontend_rate,
                 "frontend: open-loop rate as a fraction of the warm-up throughput")
      ->capture_default_str()
      ->check(CLI::Range(0.05, 2.0));
  rc->add_flag("--frontend-no-ids", rec->frontend_no_ids,
              "frontend: no request ids, retries or --state-dir (the behaviour before durable "
              "admission: requests held by the killed frontend fail UNAVAILABLE)");
  rc->add_option("--frontend-bin", rec->frontend_bin, "archi-frontend binary");
  rc->add_option("--worker-bin", rec->worker_bin, "archi-worker binary");
  rc->add_option("--log-level", rec->log_level, "ARCHI_LOG_LEVEL of the spawned processes")
      ->capture_default_str();
  rc->add_flag("--keep-logs", rec->keep_logs, "keep the process logs (printed path)");

  auto cp = std::make_shared<ControlPlaneOptions>();
  auto* cc = app.add_subcommand(
      "control-plane",
      "coordinator scale: N simulated workers (one gRPC bidi reactor each, in this process) "
      "register with an archi-coordinator child and heartbeat at 1 Hz; reports its CPU, Status "
      "latency, time to assign everyone, Scale -> assignment latency and the reactive policy's "
      "Decide time at N");
  cc->add_option("--out", cp->out_dir, "output directory (control_plane.md, control_plane.csv)")
      ->capture_default_str();
  cc->add_option("--workers", cp->workers, "N, one run each (e.g. 1000,5000,10000)")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(4, 20'000));
  cc->add_option("--replicas-per-stage", cp->replicas_per_stage,
                 "replicas of each of the 3 stages; every other worker stays idle")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  cc->add_flag("--assign-all", cp->assign_all,
               "fill ceil((N - idle) / 250) stages with all but --idle workers instead");
  cc->add_option("--idle", cp->idle, "--assign-all: workers left idle (the Scale trials take from them)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  cc->add_option("--register-rate", cp->register_rate, "registrations per second")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 1e6));
  cc->add_option("--channels", cp->channels, "gRPC channels (connections) for the sessions")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  cc->add_option("--window-s", cp->window_s, "steady window for the CPU measurement")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 600.0));
  cc->add_option("--scale-trials", cp->scale_trials, "Scale -> assignment trials")
      ->capture_default_str()
      ->check(CLI::Range(0, 100));
  cc->add_option("--heartbeat-interval-ms", cp->heartbeat_interval_ms, "worker heartbeat interval")
      ->capture_default_str()
      ->check(CLI::Range(10, 60'000));
  cc->add_option("--heartbeat-timeout-ms", cp->heartbeat_timeout_ms, "coordinator heartbeat timeout")
      ->capture_default_str()
      ->check(CLI::Range(50, 600'000));
  cc->add_option("--coordinator-bin", cp->coordinator_bin, "archi-coordinator binary");
  cc->add_option("--log-level", cp->log_level, "ARCHI_LOG_LEVEL of the coordinator")
      ->capture_default_str();
  cc->add_flag("--keep-logs", cp->keep_logs, "keep the coordinator's log (printed path)");

  return [rec, rc, cp, cc](const std::vector<std::string>& command) -> std::optional<int> {
    if (*rc) {
      rec->command = command;
      return RunRecovery(*rec);
    }
    if (*cc) {
      cp->command = command;
      return RunControlPlane(*cp);
    }
    return std::nullopt;
  };
}

}  // namespace archi::bench
