#!/usr/bin/env bash
# Creates .venv at the repository root when missing and installs the
# requirements into it (pip skips what is already there).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
