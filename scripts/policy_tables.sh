#!/usr/bin/env bash
# Issue 9 comparison tables: archi-sim with reactive, parcae (naive and arima110 forecasts) and
# static on the shared p3 and g4dn traces, same arrivals / perf model / seed per scenario.
# Writes one folder per run under $OUT and prints one markdown table per (scenario, trace).
#   scripts/policy_tables.sh [BUILD_DIR] [OUT]     (defaults: build-pol, bench-out/policy_tables)
#   ONLY=opt6.7b scripts/policy_tables.sh           (one scenario)
#   TABLES=research scripts/policy_tables.sh        (only the issue 9 research-policy tables below)
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
[[ ${TABLES:-all} == research ]] && SCEN=()
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

# ---------------------------------------------------------------------------------------------
# Issue 9 research policies (cost-capacity, harmony, combined) against reactive, on node kinds
# and applications with their own SLOs (docs/policies.md, "Research policies in the simulator").
[[ ${TABLES:-all} == classic ]] && exit 0
H=$D/harmonybatch/conf/model.json
# Kinds: AWS on-demand prices (us-east-1 list prices per hour: p3.2xlarge 3.06, g4dn.xlarge
# 0.526, g5.xlarge 1.006); spot at 30% of on-demand (an assumption); throughput relative to the
# performance model's device: T4 = 0.364 of a V100 (SpotServe's OPT-6.7B profiles, unloaded
# pipeline at batch 1: 903.7 ms V100 vs 2479.7 ms T4), A10G = the HarmonyBatch A10 model (1.0).
KOPT="g4dn-spot:0.158:0.364:0:2,g4dn:0.526:0.364:0:1,p3:3.06:1.0:0:1"
KVGG="g5-spot:0.302:1:0:2,g5:1.006:1:0:1,g4dn:0.526:0.364:0:1"
APPS="a:1:50,b:2:100,c:3:200,d:4:400"
RSCEN=(
  "hetero|--requests 100000 --perf profile:$OPT --tp 1 --max-batch 8 --output-len 8 --slo-ms 5000 --seed 1 --node-kinds $KOPT|reactive;cost-capacity;cost-only"
  "hetero-vanish|--requests 100000 --perf profile:$OPT --tp 1 --max-batch 8 --output-len 8 --slo-ms 5000 --seed 1 --node-kinds $KOPT --vanish-kind g4dn-spot --vanish-at-s 14400|reactive;cost-capacity;cost-only"
  "multi-slo|--perf harmony:$H --stages 1 --max-batch 32 --rate 100 --duration-ms 7200000 --seed 1 --apps $APPS --slo-ms 400|reactive;harmony-per-app;harmony"
  "multi-slo-300|--perf harmony:$H --stages 1 --max-batch 32 --rate 300 --duration-ms 7200000 --seed 1 --apps $APPS --slo-ms 400|reactive;harmony-per-app;harmony"
  "combined|--perf harmony:$H --stages 1 --max-batch 32 --rate 300 --duration-ms 7200000 --seed 1 --apps $APPS --slo-ms 400 --node-kinds $KVGG --vanish-kind g5-spot --vanish-at-s 3600|reactive;parcae;cost-capacity;harmony;combined"
)
declare -A RPOL=(
  [reactive]="--policy reactive" [parcae]="--policy parcae --forecast naive"
  [cost-capacity]="--policy cost-capacity" [cost-only]="--policy cost-capacity --cost-only"
  [harmony]="--policy harmony" [harmony-per-app]="--policy harmony --harmony-per-app"
  [combined]="--policy combined --forecast naive")
for sc in "${RSCEN[@]}"; do
  IFS='|' read -r sname sflags spols <<< "$sc"
  [[ -n ${ONLY:-} && $sname != "$ONLY" ]] && continue
  vanish=$(sed -n 's/.*--vanish-at-s \([0-9]*\).*/\1/p' <<< "$sflags")
  for tr in p3:$P3 g4dn:$G4; do
    tname=${tr%%:*}; tfile=${tr#*:}
    echo
    echo "#### $sname, $tname"
    echo
    echo "| policy | served | throughput req/s | p99 ms | SLO attainment | ${vanish:+after vanish | }per app (a/b/c/d) | cost (node price-h) | usage cost | lost | timed out | reconfigurations (add+drain / route / batch) |"
    echo "|---|---:|---:|---:|---:|${vanish:+---:|}---|---:|---:|---:|---:|---|"
    IFS=';' read -ra pols <<< "$spols"
    for pname in "${pols[@]}"; do
      dir=$OUT/${sname}_${tname}_${pname}
      # shellcheck disable=SC2086
      $S --trace "$tfile" $sflags ${RPOL[$pname]} --quiet --out "$dir" > "$dir.log" 2>&1 || { echo "| $pname | failed: see $dir.log |"; continue; }
      python3 - "$dir" "$pname" "${vanish:-}" <<'PY'
import csv, os, sys
d, name, vanish = sys.argv[1], sys.argv[2], sys.argv[3]
r = next(csv.DictReader(open(d + "/sim_summary.csv")))
p = next(csv.DictReader(open(d + "/sim_policy.csv")))
g = lambda k: float(r[k])
arr = g("arrived"); served = g("served")
lost = g("lost_admission") + g("lost_preempted")
after = ""
if vanish:
    w = e = 0.0
    for row in csv.DictReader(open(d + "/sim_timeline.csv")):
        if float(row["t_s"]) > float(vanish):
            n = float(row["served"]) + float(row["timed_out"]) + float(row["lost"])
            w += float(row["slo_attainment"]) * n; e += n
    after = f" {w / e * 100:.2f}% |" if e else " - |"
apps = "-"
if os.path.exists(d + "/sim_apps.csv"):
    apps = " / ".join(f"{float(a['slo_attainment'])*100:.1f}" for a in csv.DictReader(open(d + "/sim_apps.csv")))
print(f"| {name} | {served/arr*100:.2f}% | {served/g('sim_end_s'):.2f} | {g('p99_ms'):.0f} | "
      f"{g('slo_attainment')*100:.2f}% |{after} {apps} | {g('cost'):.1f} | {float(p['usage_cost']):.3f} | "
      f"{lost:.0f} | {g('timed_out'):.0f} | {g('adds')+g('drains'):.0f} / {p['route_changes']} / {p['batch_changes']} |")
PY
    done
  done
done
