#!/usr/bin/env bash
# Creates .venv at the repository root when missing, installs the
# requirements into it (pip skips what is already there) and installs this
# repository in editable mode, so its packages import from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" -r requirements.txt
# -I: without the current directory on sys.path, so only an install of this
# very checkout passes.
if ! .venv/bin/python -I -c "import os, sys, tasks
sys.exit(os.path.dirname(os.path.dirname(os.path.abspath(tasks.__file__)))
         != os.path.abspath('.'))" 2>/dev/null; then
  "${pip[@]}" --no-deps -e .
fi
