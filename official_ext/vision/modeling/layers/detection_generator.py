"""Post-processing for dense detectors whose boxes are already decoded.

Model Garden's detection generators decode anchor deltas themselves; a head
that refines its boxes after decoding (TOOD's deformable sampling) needs one
that takes boxes as they are. This one follows mmdet's dense-head test path:
the top `pre_nms_top_k` (box, class) pairs over all anchors and classes, a
score threshold (scores must exceed it), the removal of empty boxes (width
or height <= 0), class-wise NMS and the best `max_num_detections`, batched
and with static output shapes.

Three implementations of the class-wise NMS give the same detections
(`nms_version`):

  'combined': `tf.image.combined_non_max_suppression`, a C++ kernel (CPU and
      GPU); XLA cannot compile it, so neither TPUs nor `jit_compile` can.
  'static': `static_nms` below, greedy NMS written with static shapes (an
      IoU matrix of the candidates and a fixed-point loop), which XLA
      compiles.
  'offset': one class-agnostic NMS per image (`NonMaxSuppressionV5`, which
      TFLite runs as its builtin NON_MAX_SUPPRESSION_V5) over boxes moved
      apart by class, the trick of the reference's `batched_nms`, so that
      boxes of different classes never overlap. TFLite exports use it: the
      other two are a Flex op and a while loop (which TFLite's int8
      calibration crashes on). The shift is class * (the image's coordinate
      span + 1), not mmcv's class * (max coordinate + 1), which lets boxes
      with negative coordinates overlap a neighbouring class's; IoUs differ
      from the others' by the rounding of the shifted coordinates.

All keep, per class, the candidates scoring above the threshold, best
first, each unless a kept one of its class overlaps it with an IoU above
the threshold (IoU as the C++ kernel computes it), and then the best
`max_num_detections` over all classes. They may order candidates of exactly
equal score differently (the C++ kernel's heap and sort are not stable;
`static_nms` takes them in top-k order).
"""

from typing import Any, Dict, Mapping, Optional, Tuple

import tensorflow as tf
import tf_keras

from official_ext.vision.ops import xla_utils

NMS_VERSIONS = ('combined', 'static', 'offset')


def pairwise_iou(boxes: tf.Tensor) -> tf.Tensor:
  """`[B, k, k]` IoU of every pair of `[B, k, 4]` boxes.

  As `combined_non_max_suppression`'s kernel computes it, operation for
  operation: coordinates put in order (min, max) per box, IoU 0 when either
  box has no area, intersection / (area_a + area_b - intersection).
  """
  y1, x1, y2, x2 = tf.unstack(tf.cast(boxes, tf.float32), axis=-1)
  ymin, ymax = tf.minimum(y1, y2), tf.maximum(y1, y2)
  xmin, xmax = tf.minimum(x1, x2), tf.maximum(x1, x2)
  area = (ymax - ymin) * (xmax - xmin)
  a = lambda t: t[:, :, None]  # The row box.
  b = lambda t: t[:, None, :]  # The column box.
  intersection = (
      tf.maximum(tf.minimum(a(ymax), b(ymax)) - tf.maximum(a(ymin), b(ymin)),
                 0.) *
      tf.maximum(tf.minimum(a(xmax), b(xmax)) - tf.maximum(a(xmin), b(xmin)),
                 0.))
  union = a(area) + b(area) - intersection
  empty = (a(area) <= 0.) | (b(area) <= 0.)
  return tf.where(empty, 0., intersection / tf.where(empty, 1., union))


def static_nms(boxes: tf.Tensor,
               scores: tf.Tensor,
               max_output_size: int,
               iou_threshold: float,
               score_threshold: float = float('-inf'),
               classes: Optional[tf.Tensor] = None
               ) -> Tuple[tf.Tensor, tf.Tensor]:
  """Greedy NMS of sorted candidates with static shapes (XLA compiles it).

  Candidate j is kept when its score exceeds `score_threshold` and no kept
  candidate i < j (of its class, when `classes` is given) has an IoU with it
  above `iou_threshold`; as `combined_non_max_suppression` selects, given
  candidates in its order of selection.

  That rule has one solution, built from the first candidate on; iterating
  it from "every valid candidate kept" reaches it (after round t the first
  t candidates are settled), and the loop stops at the first round that
  changes nothing: a solution of the rule, so the solution.

  Args:
    boxes: `[B, k, 4]` candidate boxes.
    scores: `[B, k]` their scores, in decreasing order (equal scores: the
      earlier one is preferred).
    max_output_size: D, the most candidates kept (the first D kept).
    iou_threshold: IoU above which a kept candidate suppresses a later one.
    score_threshold: candidates must score above it.
    classes: optional `[B, k]` int classes: candidates suppress only their
      own class (class-wise NMS); None: class-agnostic.

  Returns:
    `[B, D]` int32 indices of the kept candidates in order (0 after the
    valid ones) and `[B]` int32 their number (at most D).
  """
  k = boxes.shape[1]
  if k is None:
    raise ValueError(f'static_nms needs a static number of candidates, got '
                     f'boxes {boxes.shape}.')
  valid = scores > score_threshold
  earlier = tf.range(k)[:, None] < tf.range(k)[None, :]
  suppresses = (pairwise_iou(boxes) > iou_threshold) & earlier[None]
  if classes is not None:
    suppresses &= tf.equal(classes[:, :, None], classes[:, None, :])
  # As 0/1 floats, "suppressed by a kept candidate" is one batched
  # matrix-vector product per round (exact: counts below 2**24).
  suppresses = tf.cast(suppresses, tf.float32)

  def one_round(keep, unused_changed):
    hits = tf.einsum('bij,bi->bj', suppresses, tf.cast(keep, tf.float32))
    new_keep = valid & (hits < 0.5)
    return new_keep, tf.reduce_any(tf.not_equal(new_keep, keep))

  keep, _ = tf.while_loop(lambda unused_keep, changed: changed, one_round,
                          (valid, tf.constant(True)),
                          maximum_iterations=k + 1)
  num = tf.minimum(tf.reduce_sum(tf.cast(keep, tf.int32), axis=1),
                   max_output_size)
  # The first D kept, in order: kept candidates rank k, k - 1, ..., 1 by
  # position, the others 0.
  rank = tf.where(keep, tf.range(k, 0, -1)[None, :], 0)
  _, selected = tf.math.top_k(rank, k=min(max_output_size, k), sorted=True)
  if max_output_size > k:
    selected = tf.pad(selected, [[0, 0], [0, max_output_size - k]])
  slots = tf.range(max_output_size)[None, :]
  return tf.where(slots < num[:, None], selected, 0), num


@tf_keras.utils.register_keras_serializable(package='Vision')
class DecodedBoxDetectionGenerator(tf_keras.layers.Layer):
  """Top-k over (anchor, class), score threshold, class-wise NMS."""

  def __init__(self,
               pre_nms_top_k: int = 1000,
               pre_nms_score_threshold: float = 0.,
               nms_iou_threshold: float = 0.6,
               max_num_detections: int = 100,
               nms_version: str = 'combined',
               **kwargs):
    """Initialises the generator.

    Args:
      pre_nms_top_k: (anchor, class) pairs kept by score before NMS.
      pre_nms_score_threshold: scores must exceed it. With a negative one,
        'combined' also keeps each candidate in every other class at score
        0 (the zeros of its one-hot score row); 'static' does not.
      nms_iou_threshold: class-wise NMS IoU threshold.
      max_num_detections: detections per image.
      nms_version: 'combined', 'static' or 'offset' (see the module
        docstring).
      **kwargs: other Keras layer arguments.
    """
    if nms_version not in NMS_VERSIONS:
      raise ValueError(f'nms_version must be one of {NMS_VERSIONS}, got '
                       f'{nms_version!r}.')
    super().__init__(**kwargs)
    self._config_dict = {
        'pre_nms_top_k': pre_nms_top_k,
        'pre_nms_score_threshold': pre_nms_score_threshold,
        'nms_iou_threshold': nms_iou_threshold,
        'max_num_detections': max_num_detections,
        'nms_version': nms_version,
    }

  def call(self, boxes: tf.Tensor, scores: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Selects detections.

    Args:
      boxes: `[B, N, 4]` decoded boxes, `[ymin, xmin, ymax, xmax]`.
      scores: `[B, N, K]` class probabilities.

    Returns:
      `detection_boxes` `[B, D, 4]`, `detection_scores` `[B, D]`,
      `detection_classes` `[B, D]` int32 in `[0, K)` (0 also for padding),
      `num_detections` `[B]` int32; D = `max_num_detections`, the valid
      detections first, sorted by score.
    """
    c = self._config_dict
    boxes = tf.cast(boxes, tf.float32)
    scores = tf.cast(scores, tf.float32)
    num_anchors = boxes.shape[1]
    num_classes = scores.shape[2]
    if num_anchors is None or num_classes is None:
      raise ValueError('DecodedBoxDetectionGenerator needs static N and K, '
                       f'got boxes {boxes.shape} and scores {scores.shape}.')
    batch = tf.shape(boxes)[0]
    k = min(c['pre_nms_top_k'], num_anchors * num_classes)
    flat = tf.reshape(scores, [batch, num_anchors * num_classes])
    top_scores, top_index = tf.math.top_k(flat, k=k, sorted=True)
    top_boxes = tf.gather(boxes, top_index // num_classes, batch_dims=1)
    top_classes = top_index % num_classes
    # Empty or inverted boxes are dropped (their score is set below any
    # threshold: NMS keeps scores above it).
    non_empty = ((top_boxes[..., 2] > top_boxes[..., 0]) &
                 (top_boxes[..., 3] > top_boxes[..., 1]))
    top_scores = tf.where(non_empty, top_scores,
                          tf.minimum(c['pre_nms_score_threshold'], 0.) - 1.)
    if c['nms_version'] == 'static':
      nmsed_boxes, nmsed_scores, nmsed_classes, num = self._static_nms(
          top_boxes, top_scores, top_classes)
    elif c['nms_version'] == 'offset':
      nmsed_boxes, nmsed_scores, nmsed_classes, num = self._offset_nms(
          top_boxes, top_scores, top_classes)
    else:
      nmsed_boxes, nmsed_scores, nmsed_classes, num = self._combined_nms(
          top_boxes, top_scores, top_classes, num_classes)
    valid = tf.range(c['max_num_detections'])[None, :] < num[:, None]
    return {
        'detection_boxes': nmsed_boxes,
        'detection_scores': tf.where(valid, nmsed_scores, 0.),
        'detection_classes': tf.where(valid, nmsed_classes, 0),
        'num_detections': num,
    }

  def _combined_nms(self, top_boxes, top_scores, top_classes, num_classes):
    """Boxes, scores, int32 classes and number of `combined_nms`'s output."""
    c = self._config_dict
    if xla_utils.in_xla_context():
      raise ValueError(
          'combined_non_max_suppression has no XLA kernel (jit_compile, '
          'TPU): give the detection generator nms_version=\'static\' '
          '(task.model.detection_generator.nms_version: static).')
    # One candidate per row: its score in its own class column, zero
    # elsewhere, so that the per-class NMS sees each (box, class) pair once.
    per_class_scores = (
        tf.one_hot(top_classes, num_classes, dtype=tf.float32) *
        top_scores[..., None])
    nmsed = tf.image.combined_non_max_suppression(
        boxes=top_boxes[:, :, None, :],
        scores=per_class_scores,
        max_output_size_per_class=c['max_num_detections'],
        max_total_size=c['max_num_detections'],
        iou_threshold=c['nms_iou_threshold'],
        score_threshold=c['pre_nms_score_threshold'],
        pad_per_class=False,
        clip_boxes=False)
    return (nmsed.nmsed_boxes, nmsed.nmsed_scores,
            tf.cast(nmsed.nmsed_classes, tf.int32),
            tf.cast(nmsed.valid_detections, tf.int32))

  def _static_nms(self, top_boxes, top_scores, top_classes):
    """The same from `static_nms` (class-wise) on the sorted candidates.

    A class keeps at most `max_num_detections` candidates in 'combined' too,
    but its later ones could never be among the best `max_num_detections`
    overall: the first kept over all classes are those.
    """
    c = self._config_dict
    selected, num = static_nms(
        top_boxes, top_scores, c['max_num_detections'],
        iou_threshold=c['nms_iou_threshold'],
        score_threshold=c['pre_nms_score_threshold'], classes=top_classes)
    valid = tf.range(c['max_num_detections'])[None, :] < num[:, None]
    boxes = tf.gather(top_boxes, selected, batch_dims=1)
    return (tf.where(valid[..., None], boxes, 0.),
            tf.gather(top_scores, selected, batch_dims=1),
            tf.gather(top_classes, selected, batch_dims=1), num)

  def _offset_nms(self, top_boxes, top_scores, top_classes):
    """The same from one NMS per image over boxes shifted by class.

    Each image's NMS runs in its own op (a Python loop when the batch size
    is static, as in TFLite exports; `tf.map_fn` otherwise).
    """
    c = self._config_dict
    d = c['max_num_detections']

    def one_image(args):
      boxes, scores, classes = args
      span = tf.reduce_max(boxes) - tf.reduce_min(boxes) + 1.
      shifted = boxes + tf.cast(classes, tf.float32)[:, None] * span
      selected, _, num = tf.raw_ops.NonMaxSuppressionV5(
          boxes=shifted, scores=scores, max_output_size=d,
          iou_threshold=c['nms_iou_threshold'],
          score_threshold=c['pre_nms_score_threshold'], soft_nms_sigma=0.,
          pad_to_max_output_size=True)
      valid = tf.range(d) < num
      selected = tf.where(valid, selected, 0)
      return (tf.where(valid[:, None], tf.gather(boxes, selected), 0.),
              tf.gather(scores, selected), tf.gather(classes, selected),
              tf.cast(num, tf.int32))

    args = (top_boxes, top_scores, top_classes)
    batch = top_boxes.shape[0]
    if batch is not None:
      per_image = [one_image([a[i] for a in args]) for i in range(batch)]
      return tuple(tf.stack(t) for t in zip(*per_image))
    return tf.map_fn(one_image, args, fn_output_signature=(
        tf.TensorSpec([d, 4], tf.float32), tf.TensorSpec([d], tf.float32),
        tf.TensorSpec([d], top_classes.dtype), tf.TensorSpec([], tf.int32)))

  def get_config(self) -> Mapping[str, Any]:
    return dict(list(super().get_config().items()) +
                list(self._config_dict.items()))
