"""Shared test fixtures. The repository is importable as installed by
scripts/setup_venv.sh (`pip install -e .`)."""
import os
import shutil
import tempfile

import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# Fixtures made by running the reference implementation (see its README).
REFPARITY_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'shared',
    'refparity', 'unipercepnet_regnetx4gf_ca_sam')


@pytest.fixture(scope='session')
def refparity_dir() -> str:
  """The reference fixture folder; skips where ../shared is absent.

  CI always has ../shared: there a missing fixture fails the test.
  """
  if not os.path.isdir(REFPARITY_DIR):
    message = f'reference fixture {REFPARITY_DIR} is absent'
    if os.environ.get('CI'):
      pytest.fail(message)
    pytest.skip(message)
  return REFPARITY_DIR


# The suite's peak use of the temporary folder, measured on a whole run
# (18 min, 2 workers; pytest.ini removes a passing test's folder when it
# ends): 0.71 GB. A full disk fails tests far from the cause (a PNG write, a
# checkpoint, AutoGraph unable to write its converted code), so the summary
# says so.
SUITE_TEMP_MB = 800
_FREE_AT_START = pytest.StashKey[int]()


def _free_mb() -> int:
  return shutil.disk_usage(tempfile.gettempdir()).free // 2**20


def pytest_sessionstart(session):
  session.config.stash[_FREE_AT_START] = _free_mb()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
  del exitstatus  # Unused.
  failed = (terminalreporter.stats.get('failed', []) +
            terminalreporter.stats.get('error', []))
  full = [r for r in failed if 'No space left on device' in str(r.longrepr)]
  at_start = config.stash.get(_FREE_AT_START, None)
  if full or (at_start is not None and at_start < SUITE_TEMP_MB):
    terminalreporter.write_line(
        f'The disk of the temporary folder {tempfile.gettempdir()} had '
        f'{at_start} MB free when the tests started ({_free_mb()} MB now); '
        f'the suite needs about {SUITE_TEMP_MB} MB. {len(full)} failing '
        'test(s) ran out of space: free some, or point TMPDIR at a larger '
        'disk.', red=True, bold=True)
