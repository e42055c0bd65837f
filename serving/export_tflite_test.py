"""TFLite export: builtin ops only, the SavedModel's detections, int8."""

import io
import os
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from serving import conftest
from serving import export_saved_model_lib
from serving import export_tflite
from serving import predict

_KEYS = ('num_detections', 'detection_boxes', 'detection_scores',
         'detection_classes', 'detection_masks')


def _write_records(path, images):
  with tf.io.TFRecordWriter(path) as writer:
    for image in images:
      buffer = io.BytesIO()
      Image.fromarray(image).save(buffer, format='PNG')
      feature = {'image/encoded': tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[buffer.getvalue()]))}
      writer.write(tf.train.Example(features=tf.train.Features(
          feature=feature)).SerializeToString())


@pytest.fixture(scope='module')
def exported(small_checkpoint, tmp_path_factory):
  """float32 and int8 models of `small_checkpoint` (int8 calibrated on 3
  random training images)."""
  params, run_dir, _, _ = small_checkpoint
  data = tmp_path_factory.mktemp('calibration')
  _write_records(str(data / 'train-0.tfrecord'),
                 [conftest.random_image(40 + 8 * i, 64, seed=i)
                  for i in range(3)])
  output_dir = str(tmp_path_factory.mktemp('tflite'))
  paths = export_tflite.export(
      params, run_dir, output_dir, ['float32', 'int8'],
      num_calibration_images=3,
      calibration_data=str(data / 'train-*'), log=lambda _: None)
  return output_dir, paths


def test_files_params_and_builtin_ops_only(exported):
  output_dir, paths = exported
  assert sorted(os.listdir(output_dir)) == [
      'params.yaml', 'unipercepnet_float32.tflite', 'unipercepnet_int8.tflite']
  params = export_saved_model_lib.load_params(
      None, [os.path.join(output_dir, 'params.yaml')])
  assert params.task.model.detection_generator.nms_version == 'offset'
  assert params.task.category_ids == conftest.CATEGORY_IDS
  for path in paths.values():
    with open(path, 'rb') as f:
      content = f.read()
    # Select TF ops would appear as custom ops named Flex...
    assert b'Flex' not in content
  # int8 weights: far smaller than float32's.
  assert (os.path.getsize(paths['int8']) <
          0.4 * os.path.getsize(paths['float32']))


def _network_input(module, seed):
  image = conftest.random_image(48, 64, seed=seed)
  network_input, _ = module.preprocess(tf.constant(image[None]))
  return network_input


def test_float32_gives_the_modules_detections(exported, small_module):
  _, paths = exported
  runner = export_tflite.TFLiteRunner(paths['float32'], num_threads=1)
  assert runner.input_size == [conftest.INPUT_SIZE] * 2
  for seed in range(2):
    network_input = _network_input(small_module, seed)
    expected = small_module.inference_for_tflite(network_input)
    got = runner(network_input.numpy())
    assert sorted(got) == sorted(_KEYS)
    n = int(expected['num_detections'][0])
    assert n > 0 and int(got['num_detections'][0]) == n
    np.testing.assert_array_equal(got['detection_classes'][0, :n],
                                  expected['detection_classes'][0, :n])
    np.testing.assert_allclose(got['detection_boxes'][0, :n],
                               expected['detection_boxes'][0, :n], atol=2e-3)
    np.testing.assert_allclose(got['detection_scores'][0, :n],
                               expected['detection_scores'][0, :n],
                               atol=1e-4)
    np.testing.assert_allclose(got['detection_masks'][0, :n],
                               expected['detection_masks'][0, :n], atol=1e-3)
  with pytest.raises(ValueError, match=r'takes float32 \[1, 64, 64, 3\]'):
    runner(np.zeros([1, 32, 32, 3], np.float32))


def test_int8_is_quantized_and_detects(exported, small_module):
  _, paths = exported
  runner = export_tflite.TFLiteRunner(paths['int8'], num_threads=1)
  # pylint: disable=protected-access
  dtypes = [d['dtype'] for d in runner._interpreter.get_tensor_details()]
  # pylint: enable=protected-access
  assert dtypes.count(np.int8) > 100
  network_input = _network_input(small_module, 0)
  got = runner(network_input.numpy())
  expected = small_module.inference_for_tflite(network_input)
  assert got['detection_masks'].shape == expected['detection_masks'].shape
  # Random weights: the best score, not the ranking, survives quantization.
  np.testing.assert_allclose(got['detection_scores'][0, 0],
                             expected['detection_scores'][0, 0], atol=0.1)


def test_predict_runs_tflite_as_the_saved_model(exported, export_dir):
  """One command, any format: the same detections in image pixels."""
  _, paths = exported
  conftest.assert_predictor_matches_saved_model(
      predict.tflite_predictor(paths['float32']), export_dir, score_atol=1e-4)


def test_command_and_its_errors(small_checkpoint, tmp_path):
  _, run_dir, _, _ = small_checkpoint
  command = [sys.executable,
             os.path.join(conftest.ROOT, 'serving', 'export_tflite.py'),
             f'--config_file={os.path.join(run_dir, "params.yaml")}',
             f'--checkpoint_path={run_dir}']
  _, err = conftest.run_command(
      command + [f'--output_dir={tmp_path}/a', '--quantization=float32,int4'],
      expect_status=1)
  assert "'float32,int4': give one or more of float32" in err
  _, err = conftest.run_command(
      command + [f'--output_dir={tmp_path}/b', '--quantization=int8',
                 f'--calibration_data={tmp_path}/none-*'], expect_status=1)
  assert f"The calibration data '{tmp_path}/none-*' matches no file" in err
  assert not os.path.exists(f'{tmp_path}/b')
  out, _ = conftest.run_command(
      command + [f'--output_dir={tmp_path}/c', '--quantization=float16',
                 '--input_image_size=32,32'])
  assert f'float16: {tmp_path}/c/unipercepnet_float16.tflite' in out
  runner = export_tflite.TFLiteRunner(
      f'{tmp_path}/c/unipercepnet_float16.tflite')
  assert runner.input_size == [32, 32]


def test_post_processing_stays_float_in_int8(exported):
  _, paths = exported
  # pylint: disable=protected-access
  interpreter = export_tflite.TFLiteRunner(paths['int8'])._interpreter
  tensors = {t['index']: t for t in interpreter.get_tensor_details()}
  kinds = {}
  for op in interpreter._get_ops_details():
    # pylint: enable=protected-access
    dtypes = {tensors[i]['dtype'] for i in op['inputs'] if i >= 0}
    kinds.setdefault(op['op_name'], set()).update(dtypes)
  for kind in ('TOPK_V2', 'NON_MAX_SUPPRESSION_V5', 'EXP', 'UNPACK'):
    assert np.int8 not in kinds[kind], kind
  assert np.int8 in kinds['CONV_2D']


def test_empty_calibrated_ranges_are_widened_for_xnnpack():
  """A ReLU unit that is never positive calibrates to [0, 0] (the demo
  model's channel attention has such a one-unit hidden layer): its int8
  scale (about 1e-8) makes XNNPACK refuse the model unless widened."""
  from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  kernel = tf.constant(rng.normal(0, 0.3, [3, 3, 8, 8]), tf.float32)
  reduce = tf.constant(rng.normal(0, 0.3, [1, 1, 8, 1]), tf.float32)
  expand = tf.constant(rng.normal(0, 0.3, [1, 1, 1, 8]), tf.float32)

  @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 8], tf.float32)])
  def network(x):
    features = tf.nn.relu(tf.nn.conv2d(x, kernel, 1, 'SAME'))
    pooled = tf.reduce_mean(features, [1, 2], keepdims=True)
    # The one hidden unit: never positive.
    hidden = tf.nn.relu(tf.nn.conv2d(pooled, reduce, 1, 'SAME') - 100.)
    return features * tf.sigmoid(tf.nn.conv2d(hidden, expand, 1, 'SAME'))

  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [network.get_concrete_function()])
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  converter.representative_dataset = lambda: (
      [rng.normal(0, 1, [1, 16, 16, 8]).astype(np.float32)]
      for _ in range(4))
  converter._experimental_calibrate_only = True  # pylint: disable=protected-access
  calibrated = converter.convert()
  widened, count = export_tflite.widen_degenerate_ranges(calibrated)
  assert count >= 1

  def allocates(model):
    quantized = export_tflite.tflite_convert.mlir_quantize(
        model, input_data_type=tf.float32, output_data_type=tf.float32)
    try:
      litert.Interpreter(model_content=quantized).allocate_tensors()
    except RuntimeError as e:
      assert 'XNNPACK' in str(e)
      return False
    return True

  assert not allocates(calibrated)
  assert allocates(widened)
