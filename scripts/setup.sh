#!/usr/bin/env bash
# Installs the Debian packages Archipelago needs, skipping those already present.
# Used by `make demo` and `make test`; safe to run repeatedly.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libgloo-dev libopenmpi-dev openmpi-bin
  libspdlog-dev libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libyaml-cpp-dev prometheus-cpp-dev
  libopenblas-dev libdnnl-dev libutf8proc-dev clang-14 libclang-rt-14-dev libssl-dev zlib1g-dev openssl
  gnuplot-nox libgsl-dev procps iproute2 python3-venv
  etcd-server
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} Debian packages present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# apt-get update is retried: the mirror is sometimes slow to answer.
for i in 1 2 3; do
  if $SUDO apt-get update -qq; then break; fi
  echo "setup: apt-get update failed (try $i), retrying" >&2
  sleep 5
done
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
