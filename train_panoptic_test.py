"""The panoptic model end to end on a tiny synthetic panoptic set: its
losses fall when fitting a batch, and an evaluation reports PQ."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from official.core import task_factory
from official.core import train_lib
import registry_imports  # pylint: disable=unused-import
from data import shapes_panoptic
import train_test


@pytest.fixture(scope='module')
def panoptic_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('shapes_panoptic'))
  shapes_panoptic.generate(path, num_train=16, num_val=4, image_size=64,
                           num_train_shards=1)
  return path


def _params(data_dir, train_steps=4):
  return train_test._params(
      data_dir, train_steps, experiment='unipercepnet_panoptic_shapes',
      model={'panoptic': {'fusion': {'stuff_area_threshold': 16}}})


def test_losses_fall_when_fitting_one_batch(panoptic_dir):
  tf_keras.utils.set_random_seed(0)
  params = _params(panoptic_dir, train_steps=30)
  params.trainer.optimizer_config.ema = None
  # Uniform assignment throughout: its targets do not move with the
  # predictions.
  params.task.losses.assigner_schedule[0].until_epoch = 100
  task = task_factory.get_task(params.task)
  model = task.build_model()
  optimizer = task.create_optimizer(params.trainer.optimizer_config)
  images, labels = next(iter(task.build_inputs(params.task.train_data)))
  # The semantic target: things (0), the three stuff classes, some void.
  assert labels['gt_semantic'].shape == (2, 64, 64)
  assert set(np.unique(labels['gt_semantic'])) <= {0, 1, 2, 3, 255}
  assert len(set(np.unique(labels['gt_semantic'])) & {1, 2, 3}) >= 2
  metrics = task.build_metrics(training=True)
  assert 'semantic_loss' in [m.name for m in metrics]
  step = tf.function(
      lambda b: task.train_step(b, model, optimizer, metrics))
  semantic, total = [], []
  for _ in range(30):
    for metric in metrics:
      metric.reset_states()
    logs = step((images, labels))
    total.append(float(logs['loss']))
    semantic.append(float(next(m for m in metrics
                               if m.name == 'semantic_loss').result()))
  assert np.isfinite(total).all()
  # From log(4) = 1.39 (four classes, initial logits near 0) down; measured
  # 1.34 -> 0.81 over the first and last 5 steps (the learning rate decays
  # to 1% of its peak over the 30).
  assert semantic[0] == pytest.approx(np.log(4.), abs=0.1)
  assert np.mean(semantic[-5:]) < 0.75 * np.mean(semantic[:5]), semantic
  assert np.mean(total[-5:]) < 0.8 * np.mean(total[:5]), total


@pytest.mark.slow
def test_train_and_eval_reports_panoptic_quality(panoptic_dir, tmp_path):
  model_dir = str(tmp_path / 'run')
  strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
  params = _params(panoptic_dir)
  with strategy.scope():
    task = task_factory.get_task(params.task, logging_dir=model_dir)
  train_lib.run_experiment(
      distribution_strategy=strategy, task=task, mode='train_and_eval',
      params=params, model_dir=model_dir)
  with open(os.path.join(model_dir, 'eval_metrics.json')) as f:
    metrics = json.load(f)
  for part in ('', '_things', '_stuff'):
    for name in ('PQ', 'SQ', 'RQ'):
      assert 0. <= metrics[name + part] <= 1., (name + part, metrics)
  # PQ = SQ x RQ in each class; the means need not multiply.
  assert metrics['num_things'] + metrics['num_stuff'] == (
      metrics['num_categories'])
  # Box and mask AP are reported beside PQ.
  assert 'AP' in metrics and 'mask_AP' in metrics
