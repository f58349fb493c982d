#!/usr/bin/env bash
# The main demo (`make demo`): a pipeline planned and repaired by its coordinator, with real
# processes. One archi-frontend (embedded coordinator) and five `archi-worker --coordinator`
# processes serve a 3-stage pipeline of the real model (all-MiniLM-L6-v2; a generated model when
# scripts/fetch_model.sh could not fetch it): the coordinator assigns 1-2-1 replicas and keeps one
# worker idle. Under steady load of requests with ids (clients retry with the same id) the frontend
# is killed with SIGKILL at T/4 and restarted on the same port and --state-dir (its admission log
# re-dispatches what was admitted; the coordinator re-plans), a middle replica is killed with
# SIGKILL at T/2 (the coordinator detects it and assigns the idle worker), a new worker joins at
# 3T/4 and `archi scale 1 3` grows the middle stage. Throughput every 500 ms with the coordinator's
# events, then its event timeline,
# the recovery steps, p50/p99 and the requests lost, which must be 0 (the exit status is non-zero
# otherwise). The driver is `archi-bench pipeline --scenario demo` (bench/pipeline/, on
# bench/harness/); `--scenario demo-static` is the earlier demo without a coordinator.
# The earlier MultiWorld demo (leader + workers under mpirun) is scripts/demo_worlds.sh.
# Usage: bash scripts/demo.sh [BUILD_DIR]; ARCHI_DEMO_DURATION_S (default 12) sets T.
set -euo pipefail
BUILD=${1:-build}
BENCH="$BUILD/bench/archi-bench"
DURATION=${ARCHI_DEMO_DURATION_S:-12}
[ -x "$BENCH" ] || { echo "demo: $BENCH not built (run make build)" >&2; exit 1; }

MODEL="$BUILD/models/minilm"
model_args=(--model "$MODEL")
if [ ! -f "$MODEL/model.safetensors" ]; then
  echo "(real model not in $MODEL: the pipeline serves a generated model; run scripts/fetch_model.sh $BUILD)"
  model_args=(--gen-model)
fi

echo "== Archipelago demo: a coordinator plans a 3-stage pipeline; the frontend and then a replica are killed with kill -9 and repaired; the stage is scaled; ${DURATION}s =="
"$BENCH" pipeline --scenario demo "${model_args[@]}" --duration-s "$DURATION" \
  --frontend-bin "$BUILD/runtime/frontend/archi-frontend" \
  --worker-bin "$BUILD/runtime/executor/archi-worker"

# The real model (all-MiniLM-L6-v2, fetched by scripts/fetch_model.sh) on our CPU kernels.
EMBED="$BUILD/examples/archi-embed"
if [ -x "$EMBED" ] && [ -f "$MODEL/model.safetensors" ]; then
  echo
  echo "== all-MiniLM-L6-v2 on Archipelago's CPU kernels: cosine similarity of sentence embeddings =="
  "$EMBED" --model "$MODEL" --similarity "A man is playing a guitar." "Someone plays an instrument." \
    "The stock market fell today."
fi
echo
echo "(the MultiWorld demo, leader + 3 workers under mpirun with a worker killed and rebuilt: bash scripts/demo_worlds.sh $BUILD)"
