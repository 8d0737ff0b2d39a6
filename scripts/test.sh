#!/usr/bin/env bash
# Install (see install.sh) and run the whole test suite, GUI tests under Xvfb.
#   bash scripts/test.sh [pytest arguments]
# Environment: as install.sh (VENV, default .venv, is where the tests run).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export VENV
bash scripts/install.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
mkdir -p test-artifacts
exec "$VENV/bin/python" -m pytest "$@"
