"""The suite's own hooks (conftest.py), run in an inner pytest."""
import errno
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))


def _run_inner(tmp_path, tests: str, needed_mb: int) -> str:
  """Runs `tests` under this suite's hooks with SUITE_TEMP_MB=needed_mb."""
  (tmp_path / 'conftest.py').write_text(
      'import importlib.util\n'
      f'spec = importlib.util.spec_from_file_location("outer", '
      f'{os.path.join(ROOT, "conftest.py")!r})\n'
      'outer = importlib.util.module_from_spec(spec)\n'
      'spec.loader.exec_module(outer)\n'
      f'outer.SUITE_TEMP_MB = {needed_mb}\n'
      'pytest_sessionstart = outer.pytest_sessionstart\n'
      'pytest_terminal_summary = outer.pytest_terminal_summary\n')
  (tmp_path / 'inner_test.py').write_text(tests)
  result = subprocess.run(
      [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
       '-p', 'no:xdist', 'inner_test.py'], cwd=tmp_path, capture_output=True,
      text=True, check=False)
  assert result.returncode == 1, result.stdout
  return result.stdout


def test_summary_names_a_full_disk(tmp_path):
  out = _run_inner(tmp_path, (
      'def test_full():\n'
      f'  raise OSError({errno.ENOSPC}, "No space left on device")\n\n'
      'def test_other():\n'
      '  assert 1 + 1 == 3\n'), needed_mb=0)
  assert '1 failing test(s) ran out of space' in out
  assert 'point TMPDIR at a larger disk' in out


def test_summary_warns_when_the_disk_starts_too_full(tmp_path):
  out = _run_inner(tmp_path, 'def test_other():\n  assert 1 + 1 == 3\n',
                   needed_mb=10**9)
  assert '0 failing test(s) ran out of space' in out
  assert f'needs about {10**9} MB' in out


def test_summary_is_silent_when_space_is_not_the_cause(tmp_path):
  out = _run_inner(tmp_path, 'def test_other():\n  assert 1 + 1 == 3\n',
                   needed_mb=0)
  assert 'ran out of space' not in out
