#!/usr/bin/env bash
# ctest model_fuzz_smoke: builds tests/model/fuzz/safetensors_fuzz.cc with clang++ + libFuzzer
# (ASan + UBSan) into the build tree and runs it for a bounded time on the committed seed corpus.
# Exits 77 (ctest SKIP_RETURN_CODE) when clang++-14 or libFuzzer is missing.
#   run_fuzz_smoke.sh SOURCE_DIR BUILD_DIR [SECONDS]
set -euo pipefail
src=${1:?source dir}
out=${2:?build dir}/fuzz
secs=${3:-20}
cxx=${ARCHI_FUZZ_CXX:-clang++-14}

if ! command -v "$cxx" >/dev/null 2>&1; then
  echo "SKIP: $cxx not found (apt-get install clang-14 libclang-rt-14-dev)"
  exit 77
fi
mkdir -p "$out"
# Probe libFuzzer (libclang-rt-14-dev) with a trivial target.
printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' \
  >"$out/probe.cc"
if ! "$cxx" -fsanitize=fuzzer "$out/probe.cc" -o "$out/probe" >"$out/probe.log" 2>&1; then
  echo "SKIP: $cxx cannot link libFuzzer (apt-get install libclang-rt-14-dev):"
  cat "$out/probe.log"
  exit 77
fi

bin="$out/safetensors_fuzz"
echo "building $bin"
"$cxx" -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"$src" \
  "$src/tests/model/fuzz/safetensors_fuzz.cc" \
  "$src/runtime/model/safetensors.cc" "$src/runtime/model/model_config.cc" \
  "$src/runtime/core/status.cc" "$src/runtime/core/tensor.cc" \
  -o "$bin"

# libFuzzer writes new inputs into the first corpus directory: a scratch copy, never the source.
work="$out/corpus"
rm -rf "$work" "$out/artifacts"
mkdir -p "$work" "$out/artifacts"
cp "$src"/tests/model/fuzz/corpus/* "$work/"
echo "fuzzing for ${secs}s"
set +e
"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=16384 -print_final_stats=1 \
  -artifact_prefix="$out/artifacts/" "$work" >"$out/fuzz.log" 2>&1
rc=$?
set -e
grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb)" "$out/fuzz.log" || true
if [ $rc -ne 0 ]; then
  echo "FAIL: fuzzer exited with $rc; log $out/fuzz.log, crashing inputs in $out/artifacts/"
  tail -n 60 "$out/fuzz.log"
  exit 1
fi
echo "PASS: no crash in ${secs}s"
