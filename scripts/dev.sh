#!/usr/bin/env bash
# Fresh-machine entry point: `scripts/dev.sh demo` or `scripts/dev.sh test`.
# Creates .venv with pinned dependencies (once), then runs the main job or the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CLINSEG_VENV:-.venv}
PY=${PYTHON:-python3}

setup() {
  local stamp="$VENV/.installed-$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # torch first and alone: the pinned CPU wheel, so no other package pulls a CUDA build.
    "$VENV/bin/python" -m pip install -q "$(grep '^torch==' requirements.txt)"
    "$VENV/bin/python" -m pip install -q -r requirements-dev.txt
    "$VENV/bin/python" -m pip install -q --no-deps -e .
    touch "$stamp"
  fi
}

case "${1:-}" in
  demo)
    setup
    out=${2:-demo-output}
    # The phantom's grown trees depend on OpenBLAS's kernels; the AVX2 ones give the README's figures on any x86-64
    # CPU with AVX2 (as bench/same_phantoms.py does for the benches).
    if grep -qw avx2 /proc/cpuinfo 2>/dev/null; then export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}; fi
    "$VENV/bin/clinseg" demo --out "$out"
    ;;
  test)
    setup
    "$VENV/bin/ruff" check .
    "$VENV/bin/python" -m pytest -q "${@:2}"
    ;;
  *)
    echo "usage: scripts/dev.sh demo [OUTDIR] | test [pytest args]" >&2
    exit 2
    ;;
esac
