"""Shared fixtures of the serving tests: a small checkpoint and its module."""

import os

import numpy as np
import pytest
import tensorflow as tf

from official.core import exp_factory
from official.core import task_factory
from official.core import train_utils
import registry_imports  # pylint: disable=unused-import
from serving import export_saved_model_lib

INPUT_SIZE = 64
CATEGORY_IDS = [1, 2, 4]


def _small_params():
  params = exp_factory.get_exp_config('unipercepnet_shapes')
  params.override({
      'task': {
          'model': {'input_size': [INPUT_SIZE, INPUT_SIZE, 3],
                    # Untrained scores sit near the prior: keep them all.
                    'detection_generator': {'pre_nms_score_threshold': 0.0}},
          'annotation_file': '',
          'category_ids': CATEGORY_IDS,
      },
  }, is_strict=True)
  return params


@pytest.fixture(scope='session')
def small_checkpoint(tmp_path_factory):
  """(params, run dir with params.yaml and ckpt-1, raw weights, averages).

  A random model whose EMA averages are its weights plus noise, saved as
  training saves it (model and optimizer), so an export can be checked to
  carry the averages.
  """
  run_dir = str(tmp_path_factory.mktemp('small_run'))
  params = _small_params()
  task = task_factory.get_task(params.task)
  model = task.build_model()
  optimizer = task.create_optimizer(params.trainer.optimizer_config)
  optimizer.shadow_copy(model)
  rng = np.random.default_rng(0)
  # pylint: disable=protected-access
  for average, weight in zip(optimizer._average_weights,
                             optimizer._model_weights):
    noise = rng.normal(0., 0.05, weight.shape).astype(np.float32)
    average.assign(weight.numpy() + noise * (weight.dtype == tf.float32))
  averages = [a.numpy() for a in optimizer._average_weights]
  raw = [w.numpy() for w in optimizer._model_weights]
  # pylint: enable=protected-access
  tf.train.Checkpoint(model=model, optimizer=optimizer).save(
      os.path.join(run_dir, 'ckpt'))
  train_utils.serialize_config(params, run_dir)
  return params, run_dir, raw, averages


@pytest.fixture(scope='session')
def small_module(small_checkpoint):
  """The in-process export module of `small_checkpoint` (dynamic batch)."""
  params, run_dir, _, _ = small_checkpoint
  return export_saved_model_lib.build_module(params, run_dir)


def random_image(height, width, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, [height, width, 3], dtype=np.uint8)
