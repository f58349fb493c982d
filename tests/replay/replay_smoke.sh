#!/bin/bash
# archi-bench replay on a tiny trace (3 trace events in 4 s: an add, a drain + kill -9 of a
# serving worker, with 2 workers at the start) writes archi-sim's three CSVs with their columns,
# acts on every trace event, and conserves requests (arrived == served + timed_out + lost) in the
# summary and the timeline. Usage: replay_smoke.sh ARCHI_BENCH FRONTEND WORKER ARCHI_SIM OUT
set -eu
bench=$1 frontend=$2 worker=$3 sim=$4 out=$5
if [ ! -x "$bench" ] || [ ! -x "$frontend" ] || [ ! -x "$worker" ]; then
  echo "no archi-bench/archi-frontend/archi-worker: skip"; exit 77
fi
rm -rf "$out"; mkdir -p "$out"
printf '0,add,node1\n0,add,node2\n0,add,node3\n1500,add,node4\n2500,remove,node1\n' > "$out/trace.csv"
simargs=(--no-sim)
[ -x "$sim" ] && simargs=(--sim-bin "$sim")
timeout 60 "$bench" replay --trace "$out/trace.csv" --speedup 1 --duration-s 4 --rate 15 \
  --max-workers 4 --stages 2 --warning-ms 300 --calibrate-s 0.5 --extra-compute-ms 5 \
  --timeout-ms 3000 --interval-ms 500 --frontend-bin "$frontend" --worker-bin "$worker" \
  "${simargs[@]}" --out "$out/r"
r=$out/r
expect_header() {
  test "$(head -1 "$1")" = "$2" || { echo "$1: header $(head -1 "$1") != $2"; exit 1; }
}
expect_header "$r/sim_timeline.csv" "t_s,arrived,served,timed_out,lost,throughput_rps,p50_ms,p99_ms,slo_attainment,nodes,ready,joining,draining,idle,in_system,cost"
expect_header "$r/sim_summary.csv" "arrived,served,timed_out,lost_admission,lost_preempted,resent,rerouted,p50_ms,p90_ms,p99_ms,p999_ms,max_ms,mean_ms,slo_ms,slo_attainment,node_hours,cost,decisions,unmet,adds,drains,preemptions,preempt_notices,preempted_idle,repartitions,events,sim_end_s,wall_s"
expect_header "$r/sim_events.csv" "t_s,kind,stage,worker,reason"
# Unscaled (peak 4 = --max-workers): the trace's own events, node1 (a serving worker) drained
# 300 ms before its kill -9.
test "$(cat "$r/replay_trace.csv")" = "$(printf '0,add,node1\n0,add,node2\n0,add,node3\n1500,add,node4\n2500,remove,node1')"
test -s "$r/replay_arrivals.txt"
for k in join preempt_notice preempt ready; do
  grep -q "^[0-9.]*,$k," "$r/sim_events.csv" || { echo "no $k event"; cat "$r/sim_events.csv"; exit 1; }
done
# Summary conservation.
awk -F, 'NR == 2 { if ($1 < 20) { print "only " $1 " arrivals"; exit 1 }
  if ($1 != $2 + $3 + $4 + $5) { print "summary: arrived " $1 " != " $2 "+" $3 "+" $4 "+" $5; exit 1 }
  if ($2 < 1) { print "nothing served"; exit 1 } }' "$r/sim_summary.csv"
# Timeline conservation: the rows add up to the summary, nothing left in the system at the end.
awk -F, 'NR == FNR { if (FNR == 2) arrived = $1; next }
  FNR > 1 { a += $2; e += $3 + $4 + $5; last = $15 }
  END { if (a != arrived || e != arrived || last != 0) {
          print "timeline: arrived " a " ended " e " in_system " last " vs " arrived; exit 1 } }' \
  "$r/sim_summary.csv" "$r/sim_timeline.csv"
echo "replay smoke OK: $(sed -n 2p "$r/sim_summary.csv" | cut -d, -f1-5)"
