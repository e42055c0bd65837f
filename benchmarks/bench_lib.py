"""Helpers of the speed benchmarks: models, inputs, timing, conv peak.

The benchmarks compare UniPercepNet-S with Model Garden's Mask R-CNN
(`maskrcnn_resnetfpn_coco`, ResNet-50-FPN) in one process, on the same
inputs, with the same TensorFlow threads. Timings of compared callables are
interleaved repetition by repetition (A, B, A, B, ...) and summarised by
their medians, so that background load on a shared machine hits every model
alike and the ratios stay fair.

Both detectors get the same treatment: random weights, float32, a score
threshold of 0 in their detection generators (random weights score below
the usual 0.05), so each really keeps `max_num_detections` (100) boxes and
computes a mask for every one of them.
"""

import contextlib
import copy
import dataclasses
import os
import statistics
import tempfile
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from official.core import exp_factory
from official.core import task_factory
from official.modeling import optimization
from official.vision.dataloaders import maskrcnn_input
import registry_imports  # pylint: disable=unused-import
from dataloaders import unipercepnet_input
from tools import model_stats

# The experiments the benchmarks compare.
OURS_REGNET = 'unipercepnet_coco'
OURS_R50 = 'unipercepnet_r50_coco'
MASKRCNN = 'maskrcnn_resnetfpn_coco'
MODEL_NAMES = {
    OURS_REGNET: 'UniPercepNet-S RegNetX-4GF',
    OURS_R50: 'UniPercepNet-S R50',
    MASKRCNN: 'MG Mask R-CNN R50-FPN',
}


# ------------------------------------------------------------------ set-up.
def set_threads(intra_op: int = 0, inter_op: int = 0) -> None:
  """Sets TF's thread pools (0: TF's default); call before any op runs."""
  if intra_op:
    tf.config.threading.set_intra_op_parallelism_threads(intra_op)
  if inter_op:
    tf.config.threading.set_inter_op_parallelism_threads(inter_op)


def machine_info() -> Dict[str, Any]:
  """CPU, cores, threads and versions, for the report."""
  model = ''
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          model = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass
  return {
      'cpu': model,
      'cores': os.cpu_count(),
      'gpus': len(tf.config.list_physical_devices('GPU')),
      'intra_op_threads': (
          tf.config.threading.get_intra_op_parallelism_threads() or 'default'),
      'inter_op_threads': (
          tf.config.threading.get_inter_op_parallelism_threads() or 'default'),
      'tensorflow': tf.__version__,
      'onednn': os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'default'),
  }


def parse_sizes(text: str) -> List[List[int]]:
  """'640x640,800x1344' -> [[640, 640], [800, 1344]]."""
  sizes = []
  for item in filter(None, (t.strip() for t in text.split(','))):
    height, _, width = item.partition('x')
    if not height.isdigit() or not width.isdigit():
      raise ValueError(f'Size {item!r} is not HEIGHTxWIDTH.')
    sizes.append([int(height), int(width)])
  return sizes


def unipercepnet_params(experiment: str,
                        input_size: Sequence[int],
                        score_threshold: float = 0.,
                        overrides: Optional[Mapping[str, Any]] = None):
  """One of our experiments at `input_size` [h, w], thresholds lowered."""
  params = exp_factory.get_exp_config(experiment)
  params.override({'task': {'model': {
      'input_size': [int(input_size[0]), int(input_size[1]), 3],
      'detection_generator': {'pre_nms_score_threshold': score_threshold},
  }}}, is_strict=True)
  if overrides:
    params.override(dict(overrides), is_strict=True)
  params.validate()
  return params


def maskrcnn_params(input_size: Sequence[int], score_threshold: float = 0.,
                    overrides: Optional[Mapping[str, Any]] = None):
  """Model Garden's `maskrcnn_resnetfpn_coco` at `input_size`, float32."""
  params = exp_factory.get_exp_config(MASKRCNN)
  params.override({
      'runtime': {'mixed_precision_dtype': 'float32'},
      'task': {
          'init_checkpoint': None,
          'model': {
              'input_size': [int(input_size[0]), int(input_size[1]), 3],
              'include_mask': True,
              'detection_generator': {
                  'pre_nms_score_threshold': score_threshold},
              'roi_generator': {
                  'test_pre_nms_score_threshold': score_threshold},
          }},
  }, is_strict=True)
  if overrides:
    params.override(dict(overrides), is_strict=True)
  params.validate()
  return params


def params_for(experiment: str, input_size: Sequence[int],
               score_threshold: float = 0.,
               overrides: Optional[Mapping[str, Any]] = None):
  if experiment == MASKRCNN:
    return maskrcnn_params(input_size, score_threshold, overrides)
  return unipercepnet_params(experiment, input_size, score_threshold,
                             overrides)


def build(params):
  """(task, model) of an experiment, the model built (random weights)."""
  task = task_factory.get_task(params.task)
  return task, task.build_model()


def is_maskrcnn(params) -> bool:
  return hasattr(params.task.model, 'rpn_head')


# --------------------------------------------------------------- inference.
def inference_fn(model, params, jit_compile: bool = False
                 ) -> Callable[[tf.Tensor], Dict[str, tf.Tensor]]:
  """A graph-mode function: normalised images -> detections with masks."""
  maskrcnn = is_maskrcnn(params)
  keys = ('num_detections', 'detection_boxes', 'detection_scores',
          'detection_classes', 'detection_masks')

  @tf.function(jit_compile=jit_compile or None)
  def run(images):
    if maskrcnn:
      shape = tf.tile(tf.constant([images.shape[1:3].as_list()], tf.float32),
                      [tf.shape(images)[0], 1])
      outputs = model(images, image_shape=shape, training=False)
    else:
      outputs = model(images, training=False)
    return {k: outputs[k] for k in keys}

  return run


def random_images(batch: int, height: int, width: int,
                  seed: int = 0) -> tf.Tensor:
  """Normalised-looking float32 images (the models take normalised input)."""
  rng = np.random.default_rng(seed)
  return tf.constant(rng.standard_normal([batch, height, width, 3]),
                     tf.float32)


def check_detections(outputs: Mapping[str, tf.Tensor],
                     expected: int = 100) -> Dict[str, Any]:
  """Detections and mask shapes of one output, checked to be `expected`."""
  num = np.asarray(outputs['num_detections'])
  masks = outputs['detection_masks']
  info = {'num_detections': num.tolist(),
          'mask_shape': list(masks.shape)}
  if (num < expected).any() or masks.shape[1] < expected:
    raise RuntimeError(f'Expected {expected} detections with masks, got '
                       f'{info}.')
  return info


# ------------------------------------------------------------------ timing.
# Outputs up to this many elements are copied out after each timed call.
_COPY_LIMIT = 1 << 18


def _block(result) -> None:
  """Waits for `result`.

  TF's eager executor is synchronous on CPU (a call returns when its
  outputs exist); outputs up to `_COPY_LIMIT` elements (detections, masks)
  are also copied to numpy, as a user would, larger ones (intermediate maps
  of the profile) are not, so that their timing is the computation's.
  """
  for t in tf.nest.flatten(result):
    if hasattr(t, 'numpy') and t.shape.num_elements() <= _COPY_LIMIT:
      t.numpy()


def interleaved_times(fns: Mapping[str, Callable[[], Any]],
                      runs: int,
                      warmup: int = 2) -> Dict[str, List[float]]:
  """Seconds per call of each function, timed A, B, A, B, ... after warm-up.

  Args:
    fns: name -> a callable without arguments (its result is waited for).
    runs: timed calls of each.
    warmup: untimed calls of each first (tracing, allocations).

  Returns:
    name -> the `runs` durations in seconds, in order.
  """
  for fn in fns.values():
    for _ in range(warmup):
      _block(fn())
  times = {name: [] for name in fns}
  for _ in range(runs):
    for name, fn in fns.items():
      start = time.perf_counter()
      _block(fn())
      times[name].append(time.perf_counter() - start)
  return times


def summary(times: Sequence[float]) -> Dict[str, float]:
  """Median, min and max in milliseconds."""
  return {
      'median_ms': 1e3 * statistics.median(times),
      'min_ms': 1e3 * min(times),
      'max_ms': 1e3 * max(times),
      'runs': len(times),
  }


# --------------------------------------------------------------- conv peak.
@dataclasses.dataclass
class ConvPeak:
  """A large 3x3 conv (same padding, float32): the machine's conv throughput.

  One call runs `repeats` convs in a chain (each reads the previous one's
  output), so they run one after another with all threads.
  """
  batch: int = 1
  size: int = 80
  channels: int = 256
  repeats: int = 4

  @property
  def name(self) -> str:
    return (f'{self.batch}x{self.size}x{self.size}x{self.channels}->'
            f'{self.channels}')

  @property
  def flops(self) -> float:
    """Float operations of one call (`repeats` convs)."""
    return (2. * self.batch * self.size * self.size * self.channels *
            self.channels * 9 * self.repeats)

  def fn(self) -> Callable[[], tf.Tensor]:
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal(
        [self.batch, self.size, self.size, self.channels]), tf.float32)
    # Variance-preserving weights: the chain neither explodes nor decays
    # into denormals.
    w = tf.constant(rng.standard_normal(
        [3, 3, self.channels, self.channels]) / np.sqrt(9 * self.channels),
                    tf.float32)
    repeats = self.repeats

    @tf.function
    def run():
      y = x
      for _ in range(repeats):
        y = tf.nn.conv2d(y, w, 1, 'SAME')
      return y[0, 0, 0, 0]

    return run

  def gflops(self, seconds: float) -> float:
    return self.flops / seconds / 1e9


# The reference conv, and one of the mask head's shape (100 RoIs of
# 14x14), which oneDNN runs faster: efficiency is reported against both.
DEFAULT_CONV_PEAKS = (ConvPeak(1, 80, 256, 4), ConvPeak(100, 14, 256, 4))


# -------------------------------------------------------------------- MACs.
def unipercepnet_gmacs(model, params, num_rois: int = 100) -> Dict[str, Any]:
  """tools/model_stats.py's counts: dense, per mask RoI, total."""
  return model_stats.mac_counts(model, params.task.model, num_rois)


def maskrcnn_gmacs(model, params) -> float:
  """GMACs the profiler counts in Mask R-CNN's inference graph (batch 1)."""
  height, width, _ = params.task.model.input_size

  def infer(images):
    return model(images, image_shape=tf.constant([[height, width]],
                                                 tf.float32),
                 training=False)

  spec = tf.TensorSpec([1, height, width, 3], tf.float32)
  return model_stats.count_macs(infer, spec) / 1e9


# ---------------------------------------------------------------- training.
def synthetic_decoded_example(height: int, width: int,
                              num_instances: int = 8,
                              num_classes: int = 80,
                              seed: int = 0) -> Dict[str, tf.Tensor]:
  """A decoded example as `TfExampleDecoder(include_mask=True)` gives it.

  Random pixels; `num_instances` boxes of 10%..40% of the image with
  elliptic masks inside them; classes in 1..num_classes.
  """
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 256, [height, width, 3], dtype=np.uint8)
  size = rng.uniform(0.1, 0.4, [num_instances, 2])
  start = rng.uniform(0., 1., [num_instances, 2]) * (1. - size)
  boxes = np.concatenate([start, start + size], axis=-1).astype(np.float32)
  yy = (np.arange(height)[:, None] + 0.5) / height
  xx = (np.arange(width)[None, :] + 0.5) / width
  masks = np.zeros([num_instances, height, width], np.float32)
  for i, (y0, x0, y1, x1) in enumerate(boxes):
    cy, cx, ry, rx = (y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0) / 2, (x1 - x0) / 2
    masks[i] = (((yy - cy) / ry)**2 + ((xx - cx) / rx)**2 <= 1.).astype(
        np.float32)
  classes = rng.integers(1, num_classes + 1, [num_instances])
  area = masks.sum(axis=(1, 2))
  return {
      'source_id': tf.constant(str(seed)),
      'image': tf.constant(image),
      'height': tf.constant(height, tf.int32),
      'width': tf.constant(width, tf.int32),
      'groundtruth_classes': tf.constant(classes, tf.int64),
      'groundtruth_is_crowd': tf.zeros([num_instances], tf.bool),
      'groundtruth_area': tf.constant(area, tf.float32),
      'groundtruth_boxes': tf.constant(boxes),
      'groundtruth_instance_masks': tf.constant(masks),
      'groundtruth_instance_masks_png': tf.zeros([num_instances], tf.string),
  }


def _stack(items):
  return tf.nest.map_structure(lambda *x: tf.stack(x), *items)


def unipercepnet_train_batch(params, decoded: Sequence[Mapping[str, Any]]):
  """(images, labels) of our training parser (stage 2) on `decoded`."""
  task_cfg = params.task
  parser = unipercepnet_input.build_parser(
      task_cfg.train_data, task_cfg.model.input_size[:2])
  parsed = [parser.parse_train(d, stage=2) for d in decoded]
  return _stack(parsed)


def maskrcnn_train_batch(params, decoded: Sequence[Mapping[str, Any]]):
  """(images, labels) of Model Garden's Mask R-CNN training parser."""
  model_cfg = params.task.model
  p = params.task.train_data.parser
  parser = maskrcnn_input.Parser(
      output_size=model_cfg.input_size[:2],
      min_level=model_cfg.min_level,
      max_level=model_cfg.max_level,
      num_scales=model_cfg.anchor.num_scales,
      aspect_ratios=model_cfg.anchor.aspect_ratios,
      anchor_size=model_cfg.anchor.anchor_size,
      rpn_match_threshold=p.rpn_match_threshold,
      rpn_unmatched_threshold=p.rpn_unmatched_threshold,
      rpn_batch_size_per_im=p.rpn_batch_size_per_im,
      rpn_fg_fraction=p.rpn_fg_fraction,
      aug_rand_hflip=p.aug_rand_hflip,
      aug_scale_min=p.aug_scale_min,
      aug_scale_max=p.aug_scale_max,
      skip_crowd_during_training=p.skip_crowd_during_training,
      max_num_instances=p.max_num_instances,
      include_mask=model_cfg.include_mask,
      mask_crop_size=p.mask_crop_size,
      dtype='float32')
  parsed = [parser._parse_train_data(dict(d)) for d in decoded]  # pylint: disable=protected-access
  return _stack(parsed)


def train_step_fn(task, model, params, batch,
                  assigner: Optional[str] = 'task_aligned'
                  ) -> Callable[[], Any]:
  """A tf.function running the task's real `train_step` on `batch`.

  Args:
    task: the experiment's Task.
    model: its model.
    params: the experiment.
    batch: (images, labels) of the right structure.
    assigner: for our model, the assigner stage the steps use (a registered
      name; the default, task-aligned, is the recipe's 32 of 36 epochs);
      None: the schedule's at the optimizer's step (0: the first stage).

  Returns:
    A function without arguments doing one training step.
  """
  optimizer = task.create_optimizer(params.trainer.optimizer_config,
                                    params.runtime)
  if (isinstance(optimizer, optimization.ExponentialMovingAverage) and
      not optimizer.has_shadow_copy):
    optimizer.shadow_copy(model)  # As Model Garden's trainer does.
  metrics = task.build_metrics(training=True)
  kwargs = {} if is_maskrcnn(params) else {'assigner': assigner}
  images, labels = batch

  @tf.function
  def step():
    return task.train_step((images, labels), model, optimizer, metrics,
                           **kwargs)

  return step


# ------------------------------------------------------------- SavedModel.
@contextlib.contextmanager
def exported_saved_model(params, model, batch_size: Optional[int] = 1):
  """Yields (loaded SavedModel, export module) of `model`'s weights.

  The weights are written as a training checkpoint (without EMA) and
  exported by `serving/export_saved_model_lib.py` into a temporary
  directory, removed afterwards.
  """
  # pylint: disable=g-import-not-at-top
  from serving import export_saved_model_lib
  # pylint: enable=g-import-not-at-top
  params = copy.deepcopy(params)
  params.trainer.optimizer_config.ema = None
  params.task.annotation_file = ''
  params.task.category_ids = None
  with tempfile.TemporaryDirectory() as tmp:
    run_dir = os.path.join(tmp, 'run')
    tf.train.Checkpoint(model=model).save(os.path.join(run_dir, 'ckpt'))
    export_dir = os.path.join(tmp, 'export')
    module = export_saved_model_lib.export(
        params, run_dir, export_dir, batch_size=batch_size)
    loaded = tf.saved_model.load(
        os.path.join(export_dir, export_saved_model_lib.SAVED_MODEL_SUBDIR))
    yield loaded, module
