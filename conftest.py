"""Shared test fixtures. The repository is importable as installed by
scripts/setup_venv.sh (`pip install -e .`)."""
import os

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
