r"""Where UniPercepNet-S's inference time goes, piece by piece.

  python benchmarks/profile_unipercepnet.py [--exp=unipercepnet_coco] \
      [--size=640x640] [--runs=10] [--xla] [--pieces=backbone,head,...] \
      [--overrides='{"task": {...}}'] [--json_out=F]

Times, interleaved and batch 1, the backbone, the decoder (neck), the
head (with box decoding and deformable resampling), the post-processing
(clipping, top-k, class-wise NMS), the mask RoIAlign (ours, and Model
Garden's `MultilevelROIAligner` for comparison), the mask head and the
whole model (also as it was before the speed work: per-group convs and
Model Garden's RoIAlign), each as its own graph-mode function on the previous piece's
(precomputed) outputs. With `--xla` every piece is also timed compiled with
XLA (`jit_compile=True`); pieces XLA cannot compile are reported as such.
"""

import json

from absl import app
from absl import flags
from absl import logging

import tensorflow as tf

from benchmarks import bench_lib
from official.vision.modeling.layers import roi_aligner
from official.vision.ops import box_ops
from official_ext.vision.modeling.layers import nn_layers
from official_ext.vision.ops import sampling_ops

# (tools/model_stats.py, imported by bench_lib, owns --experiment.)
_EXPERIMENT = flags.DEFINE_string('exp', bench_lib.OURS_REGNET,
                                  'Our experiment.')
_SIZE = flags.DEFINE_string('size', '640x640', 'HEIGHTxWIDTH.')
_RUNS = flags.DEFINE_integer('runs', 10, 'Timed runs of each piece.')
_XLA = flags.DEFINE_bool('xla', False, 'Also time each piece under XLA.')
_OVERRIDES = flags.DEFINE_string(
    'overrides', None, 'JSON dict overriding the experiment.')
_PIECES = flags.DEFINE_list('pieces', None,
                            'Only these pieces (default: all).')
_JSON_OUT = flags.DEFINE_string('json_out', None, 'Write results here.')


def piece_fns(model, images: tf.Tensor, jit_compile: bool = False):
  """name -> a no-argument function running that piece on fixed inputs.

  The pieces' inputs are computed once, without XLA; with `jit_compile`
  the timed functions are XLA-compiled (on their first call).
  """
  level = model._config_dict['level']  # pylint: disable=protected-access

  def plain(fn):
    return tf.function(fn, autograph=False)

  def compiled(fn):
    return tf.function(fn, jit_compile=jit_compile or None, autograph=False)

  def post(box_preds, cls_scores):
    shape = tf.cast(tf.shape(images)[1:3], tf.float32)[None, None, :]
    return model.detection_generator(box_ops.clip_boxes(box_preds, shape),
                                     cls_scores)

  mg_aligner = roi_aligner.MultilevelROIAligner(
      **model.mask_roi_aligner.get_config())
  fns = {
      'backbone': lambda x: model.backbone(x, training=False)[level],
      'decoder': lambda x: model.decoder({level: x}, training=False)[level],
      'head': lambda x: model.head(x, training=False),
      'deformable_resample': sampling_ops.deformable_resample,
      'post_processing': post,
      'mask_roi_align': lambda f, b: model.mask_roi_aligner({level: f}, b),
      'mask_roi_align_mg': lambda f, b: mg_aligner({level: f}, b),
      'mask_head': model.mask_head,
      'full_model': lambda x: model(x, training=False),
  }

  c5 = plain(fns['backbone'])(images)
  features = plain(fns['decoder'])(c5)
  head_out = plain(fns['head'])(features)
  detections = plain(post)(head_out['box_preds'], head_out['cls_scores'])
  boxes = detections['detection_boxes']
  classes = detections['detection_classes'] + 1
  rois = plain(fns['mask_roi_align'])(features, boxes)
  # The head's deformable resampling alone, on maps of the head's shape.
  num_channels = model.head.num_anchors * 4
  rng = tf.random.Generator.from_seed(0)
  box_map = rng.uniform(tf.concat([tf.shape(features)[:3], [num_channels]],
                                  0), 0., 640.)
  offsets = rng.normal(tf.concat([tf.shape(box_map), [2]], 0))
  args = {
      'backbone': (images,),
      'decoder': (c5,),
      'head': (features,),
      'deformable_resample': (box_map, offsets),
      'post_processing': (head_out['box_preds'], head_out['cls_scores']),
      'mask_roi_align': (features, boxes),
      'mask_roi_align_mg': (features, boxes),
      'mask_head': (rois, classes),
      'full_model': (images,),
  }
  timed = {}
  for name, fn in fns.items():
    fn = compiled(fn)
    timed[name] = lambda fn=fn, a=args[name]: fn(*a)
  if not jit_compile:
    # The whole model once more, traced with Model Garden's RoIAlign.
    full_mg = plain(fns['full_model'])
    ours = model.mask_roi_aligner
    model.mask_roi_aligner = mg_aligner
    full_mg(images)
    model.mask_roi_aligner = ours
    timed['full_model_mg_roi_align'] = lambda: full_mg(images)
    # The backbone once more, traced with per-group convs; and the whole
    # model as it was before the speed work: per-group convs and Model
    # Garden's RoIAlign.
    grouped = [layer for layer in model.submodules
               if isinstance(layer, nn_layers.GroupedConv2D) and
               layer.mode != 'keras']
    modes = [layer.mode for layer in grouped]
    split = plain(fns['backbone'])
    baseline = plain(fns['full_model'])
    # pylint: disable=protected-access
    for layer in grouped:
      layer._mode = 'split'
    split(images)
    model.mask_roi_aligner = mg_aligner
    baseline(images)
    model.mask_roi_aligner = ours
    for layer, mode in zip(grouped, modes):
      layer._mode = mode
    # pylint: enable=protected-access
    if grouped:
      timed['backbone_split_groups'] = lambda: split(images)
    timed['full_model_before'] = lambda: baseline(images)
  return timed


def main(_):
  tf.get_logger().setLevel('ERROR')
  logging.set_verbosity(logging.ERROR)
  size = bench_lib.parse_sizes(_SIZE.value)[0]
  overrides = json.loads(_OVERRIDES.value or '{}')
  params = bench_lib.unipercepnet_params(_EXPERIMENT.value, size,
                                         overrides=overrides)
  _, model = bench_lib.build(params)
  images = bench_lib.random_images(1, *size)
  fns = dict(piece_fns(model, images))
  if _PIECES.value:
    fns = {k: v for k, v in fns.items() if k in _PIECES.value}
  failed = {}
  if _XLA.value:
    xla = piece_fns(model, images, jit_compile=True)
    for name, fn in xla.items():
      if _PIECES.value and name not in _PIECES.value:
        continue
      try:
        fn()
        fns[name + '+xla'] = fn
      except Exception as e:  # pylint: disable=broad-except
        failed[name + '+xla'] = str(e).splitlines()[0][:200]
  times = bench_lib.interleaved_times(fns, _RUNS.value)
  results = {name: bench_lib.summary(t) for name, t in times.items()}
  print(f'{_EXPERIMENT.value} at {size[0]}x{size[1]}, batch 1, median of '
        f'{_RUNS.value} interleaved runs')
  for name, r in results.items():
    print(f'{name:24s} {r["median_ms"]:9.1f} ms (min {r["min_ms"]:.1f})')
  for name, error in failed.items():
    print(f'{name:24s} not compiled: {error}')
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, 'w') as f:
      json.dump({'results': results, 'failed': failed}, f, indent=1)


if __name__ == '__main__':
  app.run(main)
