"""Post-processing for dense detectors whose boxes are already decoded.

Model Garden's detection generators decode anchor deltas themselves; a head
that refines its boxes after decoding (TOOD's deformable sampling) needs one
that takes boxes as they are. This one follows mmdet's dense-head test path:
the top `pre_nms_top_k` (box, class) pairs over all anchors and classes, a
score threshold (scores must exceed it), the removal of empty boxes (width
or height <= 0), class-wise NMS and the best `max_num_detections`, batched
and with static output shapes.
"""

from typing import Any, Dict, Mapping

import tensorflow as tf
import tf_keras


@tf_keras.utils.register_keras_serializable(package='Vision')
class DecodedBoxDetectionGenerator(tf_keras.layers.Layer):
  """Top-k over (anchor, class), score threshold, class-wise NMS."""

  def __init__(self,
               pre_nms_top_k: int = 1000,
               pre_nms_score_threshold: float = 0.,
               nms_iou_threshold: float = 0.6,
               max_num_detections: int = 100,
               **kwargs):
    super().__init__(**kwargs)
    self._config_dict = {
        'pre_nms_top_k': pre_nms_top_k,
        'pre_nms_score_threshold': pre_nms_score_threshold,
        'nms_iou_threshold': nms_iou_threshold,
        'max_num_detections': max_num_detections,
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
    # One candidate per row: its score in its own class column, zero elsewhere,
    # so that the per-class NMS below sees each (box, class) pair once.
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
    num = tf.cast(nmsed.valid_detections, tf.int32)
    valid = tf.range(c['max_num_detections'])[None, :] < num[:, None]
    return {
        'detection_boxes': nmsed.nmsed_boxes,
        'detection_scores': tf.where(valid, nmsed.nmsed_scores, 0.),
        'detection_classes': tf.where(
            valid, tf.cast(nmsed.nmsed_classes, tf.int32), 0),
        'num_detections': num,
    }

  def get_config(self) -> Mapping[str, Any]:
    return dict(list(super().get_config().items()) +
                list(self._config_dict.items()))
