#!/usr/bin/env bash
# Creates .venv and installs the project in the one order that works on a CPU machine:
#   1. torch (the local CPU build; anything else pulls a multi-GB CUDA build),
#   2. deepspeed, source-only, built against that torch (--no-build-isolation, no ops),
#   3. the project and its pinned dependencies, editable.
#   4. Debian's chromium package (headless browser for the report test), when root and apt-get are there.
#   5. Debian's prometheus package (a real scrape of the job's metrics in the online-loop test), likewise.
# A second run with unchanged pyproject.toml and setup script is a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
VENV=.venv
STAMP=$VENV/.installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

step() { echo "[setup] $1"; }
fail() { echo "[setup] FAILED at step: $1" >&2; echo "[setup] see the pip output above; rerun 'make test' after fixing" >&2; exit 1; }
pipq() { "$VENV/bin/pip" install --disable-pip-version-check -q "$@" 2>&1 | grep -v "is ignored: it is neither" || true; return "${PIPESTATUS[0]}"; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV with $PY"
  command -v "$PY" >/dev/null || fail "find $PY (set PYTHON=/path/to/python3.11)"
  "$PY" -m venv "$VENV" || fail "create virtual environment"
fi

step "1/5 torch 2.13.0 (CPU build)"
pipq "torch==2.13.0" || fail "1/5 torch"
step "2/5 deepspeed 0.19.8 (no ops, no build isolation)"
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('deepspeed') != '0.19.8')" 2>/dev/null; then
  pipq setuptools wheel || fail "2/5 build tools"
  DS_BUILD_OPS=0 pipq --no-build-isolation "deepspeed==0.19.8" || fail "2/5 deepspeed"
fi
step "3/5 project and pinned dependencies"
pipq -e ".[dev]" || fail "3/5 project"
if "$VENV/bin/pip" list 2>/dev/null | grep -qiE '^(torchvision|nvidia-)'; then
  fail "check: torchvision or nvidia-* got installed; they break this CPU environment"
fi
step "4/5 Chromium (Debian package: the report test renders report.html headless)"
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    (apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }) \
      || echo "[setup] warning: 'apt-get install chromium' failed; the report rendering test will be skipped" >&2
  else
    echo "[setup] warning: no chromium and no root apt-get; install the 'chromium' package for the report test" >&2
  fi
fi
step "5/5 Prometheus (Debian package: the online-loop test scrapes the job's metrics with it)"
if ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    (apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1; }) \
      || echo "[setup] warning: 'apt-get install prometheus' failed; the Prometheus scrape check will be skipped" >&2
  else
    echo "[setup] warning: no prometheus and no root apt-get; install the 'prometheus' package for the scrape check" >&2
  fi
fi
echo "$want" > "$STAMP"
step "done"
