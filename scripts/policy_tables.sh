#!/usr/bin/env bash
# Issue 9 comparison tables: archi-sim with reactive, parcae (naive and arima110 forecasts) and
# static on the shared p3 and g4dn traces, same arrivals / perf model / seed per scenario.
# Writes one folder per run under $OUT and prints one markdown table per (scenario, trace).
#   scripts/policy_tables.sh [BUILD_DIR] [OUT]     (defaults: build-pol, bench-out/policy_tables)
#   ONLY=opt6.7b scripts/policy_tables.sh           (one scenario)
set -euo pipefail
B=${1:-build-pol}; OUT=${2:-bench-out/policy_tables}
S=$B/bench/sim/archi-sim
D=$(cd "$(dirname "$0")/.." && pwd)/../shared/data
P3=$D/bamboo/traces/p3-trace.csv; G4=$D/bamboo/traces/g4dn-trace.csv
OPT=$D/spotserve/elastic-switch/profile/V100-4x/6.7B.json
mkdir -p "$OUT"
# scenario name | extra flags (same for every policy)
SCEN=(
  "light|--requests 1000000 --seed 1"
  "opt6.7b|--requests 1000000 --perf profile:$OPT --tp 1 --max-batch 8 --output-len 8 --slo-ms 5000 --seed 1"
  "opt6.7b-500k|--requests 500000 --perf profile:$OPT --tp 1 --max-batch 8 --output-len 8 --slo-ms 5000 --seed 1"
  "opt6.7b-preempt|--requests 4000000 --perf profile:$OPT --tp 1 --max-batch 8 --output-len 8 --slo-ms 5000 --seed 1 --warning-ms 0 --no-resend --node-scale 4"
)
POL=("reactive|--policy reactive"
     "reactive-tuned|--policy reactive --min-replicas 2 --scale-out-after-ms 2000 --cooldown-ms 5000"
     "reactive-step|--policy reactive --max-adds-per-decision 64"
     "parcae-naive|--policy parcae --forecast naive"
     "parcae-arima110|--policy parcae --forecast arima110" "static|--policy static")
for sc in "${SCEN[@]}"; do
  sname=${sc%%|*}; sflags=${sc#*|}
  [[ -n ${ONLY:-} && $sname != "$ONLY" ]] && continue
  for tr in p3:$P3 g4dn:$G4; do
    tname=${tr%%:*}; tfile=${tr#*:}
    echo
    echo "#### $sname, $tname"
    echo
    echo "| policy | served | throughput req/s | p99 ms | SLO attainment | cost (node-h) | lost | timed out | adds | drains | preempted replicas |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for p in "${POL[@]}"; do
      pname=${p%%|*}; pflags=${p#*|}
      dir=$OUT/${sname}_${tname}_${pname}
      f=$sflags
      # shellcheck disable=SC2086
      $S --trace "$tfile" $f $pflags --quiet --out "$dir" > "$dir.log" 2>&1 || { echo "| $pname | failed: see $dir.log |"; continue; }
      python3 - "$dir/sim_summary.csv" "$pname" <<'PY'
import csv, sys
r = next(csv.DictReader(open(sys.argv[1])))
g = lambda k: float(r[k])
arr = g("arrived"); served = g("served")
lost = g("lost_admission") + g("lost_preempted")
print(f"| {sys.argv[2]} | {served/arr*100:.2f}% | {served/g('sim_end_s'):.2f} | {g('p99_ms'):.0f} | "
      f"{g('slo_attainment')*100:.2f}% | {g('node_hours'):.0f} | {lost:.0f} | {g('timed_out'):.0f} | "
      f"{g('adds'):.0f} | {g('drains'):.0f} | {g('preemptions'):.0f} |")
PY
    done
  done
done
