r"""Prints parameter counts and multiply-adds of an experiment's model.

  python tools/model_stats.py --experiment=unipercepnet_coco \
      [--config_file=F] [--params_override=S] [--input_size=800,1344] \
      [--num_rois=100]

One JSON line: trainable and total parameters, and GMACs of the inference
graph at that size: the dense part (backbone, decoder, head), the mask head
per RoI, a panoptic model's semantic head, and their total with `num_rois`
mask RoIs (the panoptic fusion's pasting and comparisons are not counted). MACs are half the float
operations TensorFlow's profiler counts in the frozen graphs (convolutions,
matmuls and the few element-wise ops it knows; gathers, NMS and RoIAlign
count as zero).
"""

import contextlib
import json
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging

import tensorflow as tf
import tf_keras
from tensorflow.python.framework import convert_to_constants

from official.core import exp_factory
from official.core import task_factory
from official.modeling import hyperparams
import registry_imports  # pylint: disable=unused-import

_EXPERIMENT = flags.DEFINE_string('experiment', None, 'Registered experiment.')
_CONFIG_FILE = flags.DEFINE_multi_string(
    'config_file', None, 'YAML files overriding the experiment, in order.')
_PARAMS_OVERRIDE = flags.DEFINE_string(
    'params_override', None, 'A YAML/JSON string or file overriding params.')
_INPUT_SIZE = flags.DEFINE_list(
    'input_size', None, 'height,width to measure at (default: the model\'s).')
_NUM_ROIS = flags.DEFINE_integer('num_rois', 100, 'Mask RoIs per image.')


def load_experiment(experiment: str, config_files: Sequence[str] = (),
                    params_override: str = ''):
  """The experiment config with YAML files and overrides applied."""
  params = exp_factory.get_exp_config(experiment)
  for path in config_files or ():
    if not tf.io.gfile.exists(path):
      raise FileNotFoundError(f'--config_file {path} does not exist.')
    params = hyperparams.override_params_dict(params, path, is_strict=True)
  if params_override:
    params = hyperparams.override_params_dict(
        params, params_override, is_strict=True)
  params.validate()
  params.lock()
  return params


@contextlib.contextmanager
def inline_grouped_convs(model: tf.Module):
  """Traces grouped convs as plain Conv2D ops the profiler can count.

  On CPU, tf_keras runs a grouped conv through an XLA-compiled function,
  which the profiler sees as an opaque call. Tracing it inline gives the same
  math; the graph is only profiled, never run.
  """
  patched = [layer for layer in model.submodules
             if isinstance(layer, tf_keras.layers.Conv2D) and layer.groups > 1]
  for layer in patched:
    layer._jit_compiled_convolution_op = layer.convolution_op  # pylint: disable=protected-access
  try:
    yield
  finally:
    for layer in patched:
      del layer._jit_compiled_convolution_op  # pylint: disable=protected-access


def count_macs(fn: Callable[..., object], *specs: tf.TensorSpec) -> int:
  """Multiply-adds of `fn` traced on `specs`: half the profiler's flops."""
  concrete = tf.function(fn, autograph=False).get_concrete_function(*specs)
  frozen, _ = convert_to_constants.convert_variables_to_constants_v2_as_graph(
      concrete)
  opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  opts['output'] = 'none'
  profile = tf.compat.v1.profiler.profile(
      graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(), options=opts)
  return profile.total_float_ops // 2


def build_model(params, input_size=None):
  """The experiment's model, built, at `input_size` (height, width) if given."""
  model_cfg = params.task.model
  if input_size:
    height, width = (int(v) for v in input_size)
    if height % 32 or width % 32:
      raise ValueError(f'--input_size must be multiples of 32, got '
                       f'{height},{width}.')
    model_cfg.override({'input_size': [height, width, 3]}, is_strict=True)
  return task_factory.get_task(params.task).build_model()


def param_counts(model: tf.Module) -> dict:
  return {
      'trainable_params': int(sum(v.shape.num_elements()
                                  for v in model.trainable_variables)),
      'total_params': int(sum(v.shape.num_elements()
                              for v in model.variables)),
  }


def mac_counts(model, model_cfg, num_rois: int = 100) -> dict:
  """GMACs of the dense part, per mask RoI, and in all with `num_rois`."""
  height, width, channels = model_cfg.input_size

  def dense(images):
    return model.head(model.features(images, training=False), training=False)

  image_spec = tf.TensorSpec([1, height, width, channels], tf.float32)
  with inline_grouped_convs(model):
    dense_macs = count_macs(dense, image_spec)
  stats = {'dense_gmacs': round(dense_macs / 1e9, 3)}
  if not model.include_mask:
    stats['total_gmacs'] = stats['dense_gmacs']
    return stats
  crop = model_cfg.mask_roi_aligner.crop_size
  rois = 10
  roi_spec = tf.TensorSpec([1, rois, crop, crop, model.feature_shape[-1]],
                           tf.float32)
  class_spec = tf.TensorSpec([1, rois], tf.int32)
  per_roi = count_macs(model.mask_head, roi_spec, class_spec) / rois
  stats['mask_gmacs_per_roi'] = round(per_roi / 1e9, 4)
  stats['num_rois'] = num_rois
  total = dense_macs + num_rois * per_roi
  if model.include_panoptic:
    feature_spec = tf.TensorSpec([1] + model.feature_shape[1:].as_list(),
                                 tf.float32)
    semantic = count_macs(model.semantic_head, feature_spec)
    stats['semantic_gmacs'] = round(semantic / 1e9, 3)
    total += semantic
  stats['total_gmacs'] = round(total / 1e9, 3)
  return stats


def model_stats(params, input_size=None, num_rois: int = 100) -> dict:
  """Parameter counts and GMACs; see the module docstring."""
  model = build_model(params, input_size)
  stats = {'input_size': list(params.task.model.input_size[:2])}
  stats.update(param_counts(model))
  stats.update(mac_counts(model, params.task.model, num_rois))
  return stats


def main(_):
  # The profiler's deprecation notices would bury the one JSON line.
  tf.get_logger().setLevel('ERROR')
  logging.set_verbosity(logging.ERROR)
  if not _EXPERIMENT.value:
    raise app.UsageError('--experiment is required.')
  params = load_experiment(_EXPERIMENT.value, _CONFIG_FILE.value,
                           _PARAMS_OVERRIDE.value)
  stats = {'experiment': _EXPERIMENT.value}
  stats.update(model_stats(params, _INPUT_SIZE.value, _NUM_ROIS.value))
  print(json.dumps(stats))


if __name__ == '__main__':
  app.run(main)
