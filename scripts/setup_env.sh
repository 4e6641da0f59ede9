#!/usr/bin/env bash
# Create .venv and install the project with pinned dependencies. Idempotent: re-running with unchanged
# requirement files does nothing. Usage: scripts/setup_env.sh [dev]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
REQ=requirements.txt
[ "${1:-}" = "dev" ] && REQ=requirements-dev.txt
stamp="$VENV/.installed-$(cat requirements.txt requirements-dev.txt setup.py | sha256sum | cut -c1-16)-${1:-main}"
if [ -f "$stamp" ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check -U pip setuptools wheel
echo "installing $REQ (torch, deepspeed, transformers, ...)"
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
touch "$stamp"
