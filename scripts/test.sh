#!/usr/bin/env bash
# Install (see install.sh) and run the whole test suite, GUI tests under Xvfb.
#   bash scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
mkdir -p test-artifacts
exec .venv/bin/python -m pytest "$@"
