"""Helpers for tests of code that writes files."""

import os
from typing import Dict


def files_under(directory: str) -> Dict[str, bytes]:
  """{path relative to `directory`: bytes} of every file under it."""
  out = {}
  for root, _, names in os.walk(directory):
    for name in names:
      with open(os.path.join(root, name), 'rb') as f:
        out[os.path.relpath(os.path.join(root, name), directory)] = f.read()
  return out
