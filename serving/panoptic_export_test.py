"""A panoptic model's exports: the SavedModel's category and instance masks
have dataset ids, agree with its detections and survive save and load; the
float32 TFLite and the ONNX models give TensorFlow's masks."""

import copy
import os

import numpy as np
import pytest
import tensorflow as tf

from official.core import exp_factory
from official.core import task_factory
import registry_imports  # pylint: disable=unused-import
from configs import unipercepnet as unipercepnet_cfg
from serving import conftest
from serving import export_onnx
from serving import export_saved_model_lib
from serving import export_tflite
from serving import predict

_THINGS = [1, 2, 4]
_STUFF = list(unipercepnet_cfg.SHAPES_STUFF_CATEGORY_IDS)


@pytest.fixture(scope='module')
def panoptic_run(tmp_path_factory):
  """(params, run directory with a checkpoint as training writes it)."""
  params = exp_factory.get_exp_config('unipercepnet_panoptic_shapes')
  params.override({'task': {
      'model': {'input_size': [64, 64, 3],
                'panoptic': {'fusion': {'score_threshold': 0.,
                                        'stuff_area_threshold': 1}},
                'detection_generator': {'max_num_detections': 20}},
      'annotation_file': '', 'category_ids': _THINGS}}, is_strict=True)
  # Random weights score everything about 0.01: threshold 0 keeps them.
  # Seeded: the same weights whatever ran before in this process.
  tf.keras.utils.set_random_seed(0)
  task = task_factory.get_task(params.task)
  model = task.build_model()
  optimizer = task.create_optimizer(params.trainer.optimizer_config)
  optimizer.shadow_copy(model)
  conftest.add_noise_to_averages(optimizer)
  run_dir = str(tmp_path_factory.mktemp('panoptic_run'))
  tf.train.Checkpoint(model=model, optimizer=optimizer).save(
      os.path.join(run_dir, 'ckpt'))
  return params, run_dir


@pytest.fixture(scope='module')
def panoptic_module(panoptic_run):
  return export_saved_model_lib.build_module(*panoptic_run)


def _check(outputs, image_height, image_width):
  category = outputs['category_mask'].numpy()
  instance = outputs['instance_mask'].numpy()
  assert category.shape == instance.shape == (1, 64, 64)
  assert category.dtype == instance.dtype == np.int32
  assert set(np.unique(category)) <= {0} | set(_THINGS) | set(_STUFF)
  # The image fills 64 x 38 of the input (48x80 at scale 0.8): the rest is
  # void, and each instance's pixels carry its detection's class.
  scale = outputs['image_info'][0, 2].numpy()
  rows = int(round(image_height * scale[0]))
  cols = int(round(image_width * scale[1]))
  assert not category[0, rows:].any() and not category[0, :, cols:].any()
  classes = outputs['detection_classes'][0].numpy()
  n = int(outputs['num_detections'][0])
  ids = set(np.unique(instance)) - {0}
  assert ids and max(ids) <= n
  for i in ids:
    assert (category[instance == i] == classes[i - 1]).all()
  assert set(np.unique(category[instance == 0])) <= {0} | set(_STUFF)


def test_serving_outputs_panoptic_masks(panoptic_module):
  image = conftest.random_image(48, 80)
  outputs = panoptic_module.serve(tf.constant(image[np.newaxis]))
  _check(outputs, 48, 80)


def test_saved_model_gives_the_same_masks(panoptic_run, panoptic_module,
                                          tmp_path):
  export_dir = str(tmp_path / 'export')
  export_saved_model_lib.export(*panoptic_run, export_dir)
  loaded = tf.saved_model.load(os.path.join(export_dir, 'saved_model'))
  image = conftest.random_image(48, 80, seed=3)
  served = loaded.signatures['serving_default'](
      inputs=tf.constant(image[np.newaxis]))
  _check(served, 48, 80)
  direct = panoptic_module.serve(tf.constant(image[np.newaxis]))
  for key in ('category_mask', 'instance_mask'):
    np.testing.assert_array_equal(served[key].numpy(), direct[key].numpy())
  # predict.py's reading: masks at the image's size.
  predictor = predict.saved_model_predictor(export_dir)
  detections = predictor(image)
  assert detections.category_mask.shape == (48, 80)
  assert set(np.unique(detections.category_mask)) <= (
      {0} | set(_THINGS) | set(_STUFF))


@pytest.mark.parametrize('runtime', ['tflite', 'onnx'])
def test_tflite_and_onnx_give_the_panoptic_masks(panoptic_run, runtime,
                                                 tmp_path):
  params, run_dir = panoptic_run
  # Instances keep only their surest pixels, so that stuff and void show
  # between them: all three paths of the fusion are compared.
  params = copy.deepcopy(params)
  params.task.model.panoptic.fusion.mask_threshold = 0.9
  if runtime == 'tflite':
    path = export_tflite.export(params, run_dir, str(tmp_path),
                                quantizations=['float32'])['float32']
    runner = export_tflite.TFLiteRunner(path)
    predictor = predict.tflite_predictor(path)
  else:
    path = str(tmp_path / 'model.onnx')
    export_onnx.export_onnx(params, run_dir, path)
    runner = export_onnx.OnnxRunner(path)
    predictor = predict.onnx_predictor(path)
  # TensorFlow on the same inputs, with the NMS the TFLite file runs.
  module = export_tflite.build_module(params, run_dir)
  inputs = conftest.network_inputs(params, [(48, 80)], seed=5)
  expected = {k: v.numpy() for k, v in
              module.inference_for_tflite(tf.constant(inputs)).items()}
  actual = runner(inputs)
  for key in ('category_mask', 'instance_mask'):
    assert actual[key].shape == expected[key].shape == (1, 64, 64), key
    assert actual[key].dtype == np.int32, key
  # The same masks, but for pixels that float rounding may move across a
  # threshold (a pasted probability at 0.9, an overlap at 0.5) on another
  # CPU: at most 1% (none differed on an AVX-512 Xeon). The paste itself
  # is compared to 1e-5 in mask_ops_test.
  for key in ('category_mask', 'instance_mask'):
    differ = int((actual[key] != expected[key]).sum())
    assert differ <= 41, f'{key}: {differ} of 4096 pixels differ'
  # Things, stuff and void all appear (the preprocessed input has no
  # valid size: the padding is fused as image).
  ids = set(np.unique(actual['category_mask']))
  assert ids & set(_THINGS) and ids & set(_STUFF) and 0 in ids, ids
  assert len(set(np.unique(actual['instance_mask'])) - {0}) >= 3
  # predict.py's reading: masks cut to the image and resized to it.
  detections = predictor(conftest.random_image(48, 80, seed=5))
  assert detections.category_mask.shape == (48, 80)
  assert set(np.unique(detections.category_mask)) <= ids
