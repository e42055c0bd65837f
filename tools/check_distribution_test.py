"""Tests of tools/check_distribution.py: one device, two mirrored replicas
and two worker processes train the same model."""

import os
import subprocess
import sys

import numpy as np
import pytest

from common import local_workers
from tools import check_distribution

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start(args, log_path, tf_config=None):
  """Starts the tool; its output goes to a file (a full pipe would block
  a worker, and with it its peer)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  env.pop('TF_CONFIG', None)
  if tf_config:
    env['TF_CONFIG'] = tf_config
  with open(log_path, 'w') as log:
    return subprocess.Popen(
        [sys.executable, '-m', 'tools.check_distribution'] + args, cwd=_ROOT,
        env=env, stdout=log, stderr=subprocess.STDOUT)


def _finish(process, log_path, timeout=1200):
  process.wait(timeout=timeout)
  with open(log_path) as f:
    output = f.read()
  assert process.returncode == 0, output[-3000:]
  return output


def test_compare_checks_losses_weights_and_updates(tmp_path):
  before = np.array([1., -2., 3.], np.float32)
  after = before - [1e-2, 2e-2, 0.]
  base = {'before/w': before, 'step0/w': after,
          'step0/total_loss': np.array(2.0, np.float32)}
  np.savez(tmp_path / 'a.npz', **base)
  np.savez(tmp_path / 'same.npz', **base)
  # Within 1e-3 of the weight's magnitude, but its update 5% off.
  np.savez(tmp_path / 'update.npz',
           **dict(base, **{'step0/w': after + [1e-3, 0., 0.]}))
  np.savez(tmp_path / 'loss.npz',
           **dict(base, **{'step0/total_loss': np.array(2.01, np.float32)}))
  paths = [str(tmp_path / n) for n in ('a', 'same', 'update', 'loss')]
  problems = check_distribution.compare(
      [p + '.npz' for p in paths], rtol=1e-3, update_rtol=1e-3)
  assert len(problems) == 2, problems
  assert 'update.npz: update0/w differs by 0.001' in problems[0]
  assert 'loss.npz: step0/total_loss differs' in problems[1]


def test_every_trained_batch_norm_follows_use_sync_bn():
  import tf_keras  # pylint: disable=g-import-not-at-top
  from official.core import task_factory  # pylint: disable=g-import-not-at-top
  for sync in (True, False):
    params = check_distribution.load_params(
        'unipercepnet_shapes',
        f'task.model.norm_activation.use_sync_bn={sync}', 64)
    model = task_factory.get_task(params.task).build_model()
    norms = [layer for layer in model.submodules
             if isinstance(layer, tf_keras.layers.BatchNormalization)]
    # Backbone, neck and head (the mask head has no BatchNorm).
    assert len(norms) > 30
    assert {n.synchronized for n in norms} == {sync}


@pytest.mark.slow
def test_one_device_two_replicas_and_two_workers_train_alike(tmp_path):
  """1 replica of 4 images = 2 mirrored replicas of 2 = 2 workers of 2.

  One SGD step with each assigner stage from the same model: the losses
  and weights agree within 1e-5 of their magnitudes, the weight updates
  within 1e-3 of theirs. The backbone's BatchNorm is frozen, as in the
  paper's recipe (the COCO and BDD100K experiments); the shapes model
  trains it, and then the split changes the backbone's gradients by about
  3e-3 (README, "Training on many devices").
  """
  out = str(tmp_path)
  ports = local_workers.free_ports(2)
  args = ['--results_dir', out,
          '--params_override=task.model.backbone.regnet.norm_eval=true']
  logs = [os.path.join(out, f'{n}.log') for n in ('one', 'w0', 'w1')]
  processes = [_start(args + ['--strategy=one_device,mirrored'], logs[0])]
  processes += [
      _start(args + ['--strategy=multi_worker_mirrored'], logs[i + 1],
             local_workers.tf_config(ports, i)) for i in range(2)]
  try:
    outputs = [_finish(p, log) for p, log in zip(processes, logs)]
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
  assert '(2 replicas)' in outputs[0], outputs[0][-2000:]
  names = ['one_device', 'mirrored', 'multi_worker_mirrored_0',
           'multi_worker_mirrored_1']
  paths = [os.path.join(out, n + '.npz') for n in names]
  problems = check_distribution.compare(paths, rtol=1e-5, update_rtol=1e-3)
  assert not problems, '\n'.join(problems[:20])
  one = np.load(paths[0])
  # Both steps trained: finite losses, every kernel moved.
  for step in ('step0', 'step1'):
    assert np.isfinite(one[step + '/total_loss'])
    kernels = [k for k in one.files
               if k.startswith(step + '/') and 'kernel' in k]
    assert kernels and all(
        np.abs(one[k] - one['before/' + k.partition('/')[2]]).max() > 0
        for k in kernels)
