"""Tests for common/local_workers.py: N local workers with their TF_CONFIG."""

import io
import json
import signal

from common import local_workers

# Prints its TF_CONFIG's task index; worker 1 fails with exit code 3.
_PROGRAM = """
import json, os, sys
index = json.loads(os.environ['TF_CONFIG'])['task']['index']
print('hello from', index)
sys.exit(3 if index == 1 else 0)
"""


def test_workers_get_their_tf_config_and_their_output_is_prefixed():
  out = io.StringIO()
  workers = local_workers.Workers(['-c', _PROGRAM], num_workers=3, out=out)
  codes = workers.wait(timeout=60)
  assert codes == [0, 3, 0]
  assert local_workers.first_failure(codes) == 3
  for i in range(3):
    assert workers.log(i) == f'hello from {i}\n'
    assert f'[worker {i}] hello from {i}\n' in out.getvalue()
  assert len(set(workers.ports)) == 3
  config = json.loads(local_workers.tf_config(workers.ports, 2))
  assert config == {
      'cluster': {'worker': [f'127.0.0.1:{p}' for p in workers.ports]},
      'task': {'type': 'worker', 'index': 2}}


def test_the_others_are_killed_a_grace_period_after_a_failure():
  program = ('import os, sys, time\n'
             'if os.environ["TF_CONFIG"].endswith(\'"index": 0}}\'): '
             'sys.exit(1)\n'
             'print("waiting", flush=True)\n'
             'time.sleep(60)\n')
  workers = local_workers.Workers(['-c', program], num_workers=2, out=None)
  assert workers.wait_for(1, 'waiting', timeout=30)
  codes = workers.wait(grace_seconds=0.5)
  assert codes == [1, -signal.SIGKILL]
  assert local_workers.first_failure([0, -9]) == 128 + 9


def test_main_exits_with_the_first_failure(capsys):
  code = local_workers.main(['--num_workers=2', '--grace_seconds=5', '--',
                             '-c', _PROGRAM])
  assert code == 3
  out = capsys.readouterr().out
  assert '[worker 0] hello from 0' in out
  assert '[local_workers] worker 1 exited with 3' in out
