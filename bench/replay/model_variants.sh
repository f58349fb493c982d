#!/bin/bash
# Re-runs archi-sim on one archi-bench replay output directory with three performance models and
# prints each one's throughput / p50 / p99 error against the live run (error = (sim - live) / live):
#   run    the replay's own command: stage service from the workers' compute timings sampled
#          during the replay (replay_stage_compute_run.csv), overhead from the calibration
#   calib  stage service from the workers' compute timings of the 2 s calibration only
#   fit    the earlier model: the calibration's whole end-to-end latency fitted and split evenly
#          over the stages (no overhead outside them)
# usage: bench/replay/model_variants.sh DIR   (writes DIR/sim_calib and DIR/sim_fit)
set -euo pipefail
d=$1
cmd=$(grep -m1 -- "--perf " "$d/replay.md")
run_sim() {  # $1 = perf spec (may include --overhead-ms), $2 = out dir
  local c
  c=$(echo "$cmd" | sed -E "s#--perf [^ ]+( --overhead-ms [0-9.]+)?#--perf $1#; s#--out [^ ]+#--out $2#")
  eval "$c" > /dev/null
}
run_sim "stages:$d/replay_stage_compute.csv,$d/replay_calibration.csv" "$d/sim_calib"
run_sim "fit:$d/replay_calibration.csv" "$d/sim_fit"
col() { awk -F, -v k="$2" 'NR==1{for(i=1;i<=NF;i++) if($i==k) c=i} NR==2{print $c}' "$1"; }
live_s=$(col "$d/sim_summary.csv" served); live_50=$(col "$d/sim_summary.csv" p50_ms); live_99=$(col "$d/sim_summary.csv" p99_ms)
printf "%-6s %10s %9s %9s %8s %8s %8s\n" model served p50_ms p99_ms thr_err p50_err p99_err
printf "%-6s %10s %9s %9s\n" live "$live_s" "$live_50" "$live_99"
for v in sim sim_calib sim_fit; do
  s=$(col "$d/$v/sim_summary.csv" served); p50=$(col "$d/$v/sim_summary.csv" p50_ms); p99=$(col "$d/$v/sim_summary.csv" p99_ms)
  name=${v#sim_}; [ "$name" = sim ] && name=run
  awk -v n="$name" -v s="$s" -v a="$p50" -v b="$p99" -v ls="$live_s" -v la="$live_50" -v lb="$live_99" \
    'BEGIN{printf "%-6s %10s %9.1f %9.1f %+7.1f%% %+7.1f%% %+7.1f%%\n", n, s, a, b, 100*(s-ls)/ls, 100*(a-la)/la, 100*(b-lb)/lb}'
done
