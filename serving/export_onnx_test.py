"""Tests of serving/export_onnx.py: tf2onnx conversion and ONNX Runtime."""

import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from configs import unipercepnet as unipercepnet_cfg
from serving import conftest
from serving import export_onnx

# Bounds a few times above the largest differences measured between ONNX
# Runtime and TensorFlow on the small random model: boxes 1.6e-4 px (of 64),
# scores 4.5e-8, masks 1.4e-5 (the trained demo model at 256x256: boxes
# 1.8e-3 px, scores 4.1e-6, masks 3.5e-5).
BOX_TOLERANCE = 1e-3  # Pixels.
SCORE_TOLERANCE = 1e-6
MASK_TOLERANCE = 1e-4


@pytest.fixture(scope='module')
def onnx_export(small_checkpoint, tmp_path_factory):
  """(path, stdout) of `small_checkpoint` converted by the command."""
  _, run_dir, _, _ = small_checkpoint
  path = str(tmp_path_factory.mktemp('onnx') / 'model.onnx')
  stdout, _ = conftest.run_command([
      sys.executable, os.path.join(conftest.ROOT, 'serving', 'export_onnx.py'),
      f'--config_file={os.path.join(run_dir, "params.yaml")}',
      f'--checkpoint_path={run_dir}', f'--output={path}'])
  return path, stdout


def _compare(expected, actual):
  """Matches each detection of TensorFlow to one of ONNX Runtime.

  Detections whose scores differ by float rounding only may come out of NMS
  in either order, so each expected detection is matched to an unused one
  of the same class, box and score within the tolerances.

  Returns:
    The largest differences of matched boxes, scores and masks.
  """
  np.testing.assert_array_equal(actual['num_detections'],
                                expected['num_detections'])
  for name, value in expected.items():
    assert actual[name].shape == value.shape, name
    assert actual[name].dtype == value.dtype, name
  worst = {'boxes': 0., 'scores': 0., 'masks': 0.}
  for b, count in enumerate(expected['num_detections']):
    used = set()
    for i in range(count):
      box_error = np.abs(actual['detection_boxes'][b, :count] -
                         expected['detection_boxes'][b, i]).max(axis=-1)
      score_error = np.abs(actual['detection_scores'][b, :count] -
                           expected['detection_scores'][b, i])
      same = ((actual['detection_classes'][b, :count] ==
               expected['detection_classes'][b, i]) &
              (box_error <= BOX_TOLERANCE) & (score_error <= SCORE_TOLERANCE))
      candidates = [j for j in np.flatnonzero(same) if j not in used]
      assert candidates, (
          f'image {b}: detection {i} (class '
          f'{expected["detection_classes"][b, i]}, score '
          f'{expected["detection_scores"][b, i]}, box '
          f'{expected["detection_boxes"][b, i]}) has no ONNX match')
      j = min(candidates, key=lambda j: (box_error[j], abs(i - j)))
      used.add(j)
      worst['boxes'] = max(worst['boxes'], float(box_error[j]))
      worst['scores'] = max(worst['scores'], float(score_error[j]))
      mask_error = np.abs(actual['detection_masks'][b, j] -
                          expected['detection_masks'][b, i]).max()
      assert mask_error <= MASK_TOLERANCE, (b, i, mask_error)
      worst['masks'] = max(worst['masks'], float(mask_error))
    # The padding slots, in place.
    for name in expected:
      if name != 'num_detections':
        np.testing.assert_allclose(actual[name][b, count:],
                                   expected[name][b, count:], atol=1e-6)
  scores = actual['detection_scores']
  assert (np.diff(scores, axis=1) <= SCORE_TOLERANCE).all()
  return worst


@pytest.mark.parametrize('sizes', [
    [(64, 64)],
    [(48, 64), (64, 40)],  # Padding inside the input.
], ids=['batch1', 'batch2'])
def test_onnx_runtime_matches_tensorflow(onnx_export, small_module, sizes):
  runner = export_onnx.OnnxRunner(onnx_export[0], intra_op_threads=2)
  inputs = conftest.network_inputs(
      conftest._small_params(), sizes)  # pylint: disable=protected-access
  expected = {k: v.numpy() for k, v in
              small_module.inference_for_tflite(tf.constant(inputs)).items()}
  actual = runner(inputs)
  assert sorted(actual) == sorted(export_onnx.OUTPUT_NAMES)
  assert expected['num_detections'].min() > 0  # Something to compare.
  worst = _compare(expected, actual)
  print(f'batch {len(sizes)}: max |ONNX - TF| {worst}')


def test_dynamic_batch_and_metadata(onnx_export, small_checkpoint):
  path, stdout = onnx_export
  assert f'ONNX model: {path}' in stdout
  assert 'converted in' in stdout
  params = small_checkpoint[0]
  runner = export_onnx.OnnxRunner(path, intra_op_threads=1)
  assert runner.input_name == 'inputs'
  assert runner.input_shape[1:] == [64, 64, 3]
  assert not isinstance(runner.input_shape[0], int)  # Dynamic.
  metadata = runner.metadata
  assert metadata == export_onnx.read_metadata(path)
  assert metadata['input_size'] == [64, 64]
  assert metadata['category_ids'] == conftest.CATEGORY_IDS
  assert metadata['mean_rgb'] == list(unipercepnet_cfg.MEAN_RGB)
  assert metadata['stddev_rgb'] == list(unipercepnet_cfg.STDDEV_RGB)
  assert metadata['pad_value'] == params.task.validation_data.parser.pad_value
  outputs = runner(np.zeros([3, 64, 64, 3], np.float32))  # Batch 3.
  assert outputs['num_detections'].shape == (3,)
  assert outputs['detection_masks'].shape == (
      3, metadata['max_num_detections'], metadata['mask_size'],
      metadata['mask_size'])
  json.dumps(metadata)
  # Wrong inputs are refused with the expected shape.
  with pytest.raises(ValueError, match=r'expected \[batch, 64, 64, 3\]'):
    runner(np.zeros([1, 32, 32, 3], np.float32))
  with pytest.raises(ValueError, match='float32'):
    runner(np.zeros([1, 64, 64, 3], np.uint8))
  # No temporary left beside the model.
  assert os.listdir(os.path.dirname(path)) == ['model.onnx']


def test_bad_checkpoint_is_a_clear_error(small_checkpoint, tmp_path):
  params = small_checkpoint[0]
  output = str(tmp_path / 'model.onnx')
  with pytest.raises(ValueError, match='Cannot read checkpoint .*no_such_ckpt'):
    export_onnx.export_onnx(params, str(tmp_path / 'no_such_ckpt'), output)
  with pytest.raises(ValueError, match='holds no checkpoint'):
    export_onnx.export_onnx(params, str(tmp_path), output)  # Empty.
  assert not os.path.exists(output)


def test_command_bad_checkpoint(tmp_path):
  output = str(tmp_path / 'model.onnx')
  _, stderr = conftest.run_command([
      sys.executable, os.path.join(conftest.ROOT, 'serving', 'export_onnx.py'),
      '--experiment=unipercepnet_shapes',
      f'--checkpoint_path={tmp_path / "no_such_ckpt"}', f'--output={output}'],
      expect_status=1)
  assert 'ERROR: Cannot read checkpoint' in stderr
  assert not os.path.exists(output)


def test_command_line_errors():
  with pytest.raises(SystemExit):
    export_onnx.parse_args(['--output=x.onnx'])  # No --checkpoint_path.
  with pytest.raises(SystemExit):
    export_onnx.parse_args(['--checkpoint_path=c', '--output=x.onnx',
                            '--input_image_size=64'])
  args = export_onnx.parse_args(['--checkpoint_path=c', '--output=x.onnx',
                                 '--input_image_size=64,96',
                                 '--config_file=a', '--config_file=b'])
  assert args.input_image_size == [64, 96]
  assert args.config_file == ['a', 'b']


def test_predict_runs_onnx_as_the_saved_model(onnx_export, export_dir):
  """predict.py's ONNX predictor: the SavedModel's detections in image
  pixels, preprocessing taken from the model's metadata."""
  from serving import predict  # pylint: disable=g-import-not-at-top
  conftest.assert_predictor_matches_saved_model(
      predict.onnx_predictor(onnx_export[0]), export_dir, score_atol=1e-5)
