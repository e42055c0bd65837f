"""Shared fixtures of the serving tests: a small checkpoint and its module."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from official.core import exp_factory
from official.core import task_factory
from official.core import train_utils
import registry_imports  # pylint: disable=unused-import
from dataloaders.ops import preprocess_ops
from serving import export_saved_model_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INPUT_SIZE = 64
CATEGORY_IDS = [1, 2, 4]


def _small_params():
  params = exp_factory.get_exp_config('unipercepnet_shapes')
  params.override({
      'task': {
          'model': {'input_size': [INPUT_SIZE, INPUT_SIZE, 3],
                    # Boxes clipped to the image, as serving users may
                    # want (the reference leaves them as predicted).
                    'detection_generator': {'clip_boxes': True}},
          'annotation_file': '',
          'category_ids': CATEGORY_IDS,
      },
  }, is_strict=True)
  return params


def add_noise_to_averages(optimizer, seed: int = 0, stddev: float = 0.05):
  """Sets the EMA averages of `optimizer` (after `shadow_copy`) to their
  weights plus Gaussian noise: an export must then carry the averages, and
  the detection scores of a random model differ instead of all tying."""
  rng = np.random.default_rng(seed)
  # pylint: disable=protected-access
  for average, weight in zip(optimizer._average_weights,
                             optimizer._model_weights):
    noise = rng.normal(0., stddev, weight.shape).astype(np.float32)
    average.assign(weight.numpy() + noise * (weight.dtype == tf.float32))
  # pylint: enable=protected-access


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
  add_noise_to_averages(optimizer)
  # pylint: disable=protected-access
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


def run_command(args, expect_status=0, **kwargs):
  """Runs a command; asserts its exit status; returns (stdout, stderr)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run(args, capture_output=True, text=True, env=env,
                          timeout=600, check=False, **kwargs)
  assert result.returncode == expect_status, (
      result.stdout + result.stderr[-3000:])
  return result.stdout, result.stderr


@pytest.fixture(scope='session')
def export_dir(small_checkpoint, tmp_path_factory):
  """`small_checkpoint` exported by the command, with all three inputs."""
  _, run_dir, _, _ = small_checkpoint
  path = str(tmp_path_factory.mktemp('export'))
  run_command([
      sys.executable, os.path.join(ROOT, 'serving', 'export_saved_model.py'),
      '--experiment=unipercepnet_shapes',
      f'--config_file={os.path.join(run_dir, "params.yaml")}',
      f'--checkpoint_path={run_dir}', f'--export_dir={path}',
      '--function_keys=image_tensor:serving_default,'
      'image_bytes:serving_bytes,tf_example:serving_examples'])
  return path


def random_image(height, width, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, [height, width, 3], dtype=np.uint8)


def assert_predictor_matches_saved_model(predictor, export_dir,
                                         score_atol: float):
  """A predictor of another format gives the SavedModel's detections in
  image pixels (predict.py's outputs), in one order (NMS may order nearly
  equal scores of a random model either way)."""
  from serving import predict  # pylint: disable=g-import-not-at-top
  # 32 x 32 fills the 64 x 64 input at scale 2 (the boxes are clipped to
  # the valid image, the input here).
  image = random_image(32, 32, seed=5)
  got, expected = predictor(image), predict.saved_model_predictor(
      export_dir)(image)
  assert len(expected.scores) > 0 and len(got.scores) == len(expected.scores)
  got, expected = predict.sorted_detections(got), predict.sorted_detections(
      expected)
  np.testing.assert_array_equal(got.classes, expected.classes)
  np.testing.assert_allclose(got.boxes, expected.boxes, atol=1e-3)
  np.testing.assert_allclose(got.scores, expected.scores, atol=score_atol)
  assert got.masks.shape == (len(got.scores), 32, 32)
  assert (got.masks != expected.masks).mean() < 1e-3


def network_inputs(params, sizes, seed=0) -> np.ndarray:
  """float32 [len(sizes), H, W, 3]: random images of `sizes` (image i of
  seed + i) preprocessed as evaluation does for `params`' model: resized
  into its input size H x W, padded with pad_value, normalised."""
  parser = params.task.validation_data.parser
  input_size = list(params.task.model.input_size[:2])
  images = []
  for i, (height, width) in enumerate(sizes):
    image, _, _ = preprocess_ops.preprocess_for_inference(
        tf.constant(random_image(height, width, seed + i)), input_size,
        parser.pad_value, parser.test_scale)
    images.append(image.numpy())
  return np.stack(images).astype(np.float32)
