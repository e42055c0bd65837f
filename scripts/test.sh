#!/usr/bin/env bash
# Sets up .venv (see setup_venv.sh) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
export TF_CPP_MIN_LOG_LEVEL=2
# One worker process per core (2 here), a test file per worker at a time.
exec .venv/bin/python -m pytest -q -n auto --dist loadfile "$@"
