#!/usr/bin/env bash
# The MultiWorld demo (`make demo` before the pipeline demo replaced it; run it directly:
# bash scripts/demo_worlds.sh [BUILD_DIR]): a leader and 3 workers launched by mpirun, one world
# per (leader, worker) pair.
# Midway, worker 2 is killed with SIGKILL: only world w2 breaks, the leader keeps serving w1 and
# w3, and a restarted worker 2 (started outside mpirun) joins again under the same world name.
set -euo pipefail
BUILD=${1:-build}
BIN="$BUILD/examples/archi-leader-workers"
DURATION=${ARCHI_DEMO_DURATION_S:-9}
[ -x "$BIN" ] || { echo "demo: $BIN not built (run make build)" >&2; exit 1; }

export ARCHI_LOG_LEVEL=${ARCHI_LOG_LEVEL:-warn}
tmp=$(mktemp -d)
pids=()
tail_pid=
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [ -n "$tail_pid" ]; then kill "$tail_pid" 2>/dev/null || true; wait "$tail_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }
wait_for() {  # wait_for FILE PATTERN SECONDS
  local deadline=$(( $(date +%s) + $3 ))
  until grep -q "$2" "$1" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then echo "demo: timed out waiting for '$2'" >&2; cat "$1" >&2; exit 1; fi
    sleep 0.1
  done
}

echo "== Archipelago demo: leader + 3 workers (mpirun -np 4), one world per pair, ${DURATION}s =="
mpirun --allow-run-as-root --oversubscribe --enable-recovery --mca orte_abort_on_non_zero_status 0 \
  -x ARCHI_LOG_LEVEL -np 4 "$BIN" --duration-s "$DURATION" --address-file "$tmp/addr" > "$tmp/mpi.log" 2>&1 &
mpi_pid=$!
pids+=("$mpi_pid")
# Show the job's output live (without Open MPI's PMIx notice about the killed rank).
( tail -n +1 -f "$tmp/mpi.log" --pid "$mpi_pid" 2>/dev/null | grep --line-buffered -v -e "^\s*$" -e "PMIX ERROR" ) &
tail_pid=$!

wait_for "$tmp/mpi.log" "\[worker 2\] world w2 ready" 30
sleep 2
victim=$(sed -n 's/^\[worker 2\] pid \([0-9]*\) .*/\1/p' "$tmp/mpi.log" | head -1)
kill_ms=$(now_ms)
kill -9 "$victim"
echo ">> demo: kill -9 worker 2 (pid $victim)"

sleep 1.5
addr=$(cat "$tmp/addr")
echo ">> demo: restarting worker 2 outside mpirun (store $addr)"
"$BIN" --role worker --id 2 --store "$addr" --duration-s "$DURATION" > "$tmp/worker2.log" 2>&1 &
pids+=("$!")
restart_pid=$!

set +e
wait "$mpi_pid"
mpi_rc=$?
wait "$restart_pid"
wait "$tail_pid" 2>/dev/null
tail_pid=
set -e
echo ">> restarted worker 2 said:"
sed 's/^/   /' "$tmp/worker2.log"

broken_ms=$(sed -n 's/^BROKEN_AT w2 \([0-9]*\)/\1/p' "$tmp/mpi.log" | head -1)
rebuilt_ms=$(sed -n 's/^REBUILT_AT w2 \([0-9]*\)/\1/p' "$tmp/mpi.log" | head -1)
echo
echo "== summary =="
if [ -n "$broken_ms" ]; then
  echo "dead-peer detection (kill -9 -> w2 BROKEN at the leader): $((broken_ms - kill_ms)) ms"
  echo "w2 rebuilt under the same name $((rebuilt_ms - kill_ms)) ms after the kill (includes the 1.5 s before the restart)"
else
  echo "w2 never broke: unexpected" >&2; exit 1
fi
grep -q "0 corrupted" "$tmp/mpi.log" || { echo "demo: corrupted replies" >&2; exit 1; }
grep -q "REBUILT_AT w2" "$tmp/mpi.log" || { echo "demo: w2 was not rebuilt" >&2; exit 1; }
echo "mpirun exit code $mpi_rc; leader: $(grep -o '[0-9]* replies verified, [0-9]* corrupted' "$tmp/mpi.log")"

# The real model (all-MiniLM-L6-v2, fetched by scripts/fetch_model.sh) on our CPU kernels.
EMBED="$BUILD/examples/archi-embed"
MODEL="$BUILD/models/minilm"
if [ -x "$EMBED" ] && [ -f "$MODEL/model.safetensors" ]; then
  echo
  echo "== all-MiniLM-L6-v2 on Archipelago's CPU kernels: cosine similarity of sentence embeddings =="
  "$EMBED" --model "$MODEL" --similarity "A man is playing a guitar." "Someone plays an instrument." \
    "The stock market fell today."
else
  echo "(real model not available: skipped the embedding step; run scripts/fetch_model.sh $BUILD)"
fi
