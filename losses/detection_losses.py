"""Detection and instance segmentation losses.

Conventions shared by every loss in this module:

  * Boxes are [ymin, xmin, ymax, xmax] in pixels.
  * Class scores are PROBABILITIES in (0, 1), not logits (the head already
    applies its activation, e.g. score = sqrt(sigmoid(a) * sigmoid(b))).
    Probabilities are clamped to [_PROB_EPSILON, 1 - _PROB_EPSILON] before any
    logarithm is taken.
  * Every loss returns the weighted SUM over its elements as a float32 scalar.
    Nothing is normalised here (no division by the number of positives or by
    the sum of weights); normalisation is the caller's job.

All functions are batched, contain no Python loops over boxes, and can be used
inside `tf.function`, including with `jit_compile=True`.
"""

from typing import Optional

import tensorflow as tf

# Clamp for probabilities inside logarithms.
_PROB_EPSILON = 1e-6
# Guard for divisions by box areas.
_BOX_EPSILON = 1e-7


def _clip_probs(probs: tf.Tensor) -> tf.Tensor:
  """Clamps probabilities to [eps, 1 - eps] so that logs stay finite."""
  return tf.clip_by_value(probs, _PROB_EPSILON, 1.0 - _PROB_EPSILON)


def _binary_cross_entropy(probs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
  """Elementwise BCE on clamped probabilities with (soft) targets.

  Args:
    probs: A float32 tensor of probabilities, already clamped.
    targets: A float32 tensor broadcastable to `probs`, values in [0, 1].

  Returns:
    A tensor of the broadcast shape with -(y log p + (1 - y) log(1 - p)).
  """
  return -(targets * tf.math.log(probs) +
           (1.0 - targets) * tf.math.log(1.0 - probs))


def _apply_weights(losses: tf.Tensor,
                   weights: Optional[tf.Tensor]) -> tf.Tensor:
  """Multiplies `losses` [..., K] by `weights` of shape [...] or [..., 1].

  A `weights` tensor with exactly one rank less than `losses` is treated as a
  per-anchor weight and given a trailing axis; otherwise standard broadcasting
  applies.

  Args:
    losses: A float32 tensor of shape [..., K].
    weights: None, or a tensor of shape [...] or broadcastable to `losses`.

  Returns:
    The weighted losses, same shape as `losses`.
  """
  if weights is None:
    return losses
  weights = tf.cast(weights, tf.float32)
  if (weights.shape.rank is not None and losses.shape.rank is not None and
      weights.shape.rank == losses.shape.rank - 1):
    weights = weights[..., tf.newaxis]
  return losses * weights


def focal_loss(probs: tf.Tensor,
               targets: tf.Tensor,
               alpha: float = 0.25,
               gamma: float = 2.0,
               weights: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Sigmoid focal loss (Lin et al., 2017) on probabilities.

  Per element, with p the clamped probability and t the binary target:
    t = 1:  -alpha * (1 - p)^gamma * log(p)
    t = 0:  -(1 - alpha) * p^gamma * log(1 - p)

  Args:
    probs: A float tensor of shape [..., K] with class probabilities in (0, 1).
    targets: A tensor of the same shape as `probs` with values in {0, 1}
      (one-hot for positives, all zeros for background).
    alpha: Weight of the positive term; (1 - alpha) weighs the negative term.
    gamma: Focusing parameter.
    weights: Optional tensor of shape [...] or broadcastable to [..., K], e.g.
      [..., 1] per-anchor weights with 0 for ignored anchors.

  Returns:
    A float32 scalar: the weighted sum over all elements (unnormalised).
  """
  probs = _clip_probs(tf.cast(probs, tf.float32))
  targets = tf.cast(targets, tf.float32)
  pos_loss = -alpha * tf.pow(1.0 - probs, gamma) * tf.math.log(probs)
  neg_loss = -(1.0 - alpha) * tf.pow(probs, gamma) * tf.math.log(1.0 - probs)
  losses = targets * pos_loss + (1.0 - targets) * neg_loss
  return tf.reduce_sum(_apply_weights(losses, weights))


def quality_focal_loss(probs: tf.Tensor,
                       labels: tf.Tensor,
                       quality: tf.Tensor,
                       beta: float = 2.0,
                       weights: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Quality focal loss (Generalized Focal Loss, Li et al., 2020).

  Operates on probabilities. Every element of `probs` is treated as a
  negative, BCE(p, 0) * p^beta, except the own-class channel of a positive
  anchor, which uses BCE(p, q) * |q - p|^beta with q the quality target.
  BCE(p, y) = -(y log p + (1 - y) log(1 - p)).

  Args:
    probs: A float tensor of shape [..., K] with class probabilities in (0, 1).
    labels: An int tensor of shape [...]: class index in [0, K) for positive
      anchors and -1 for negatives (background).
    quality: A float tensor of shape [...] with quality targets in [0, 1] for
      positive anchors (e.g. normalised alignment metric, or IoU). Ignored for
      negatives.
    beta: Modulating exponent.
    weights: Optional tensor of shape [...] or broadcastable to [..., K].

  Returns:
    A float32 scalar: the weighted sum over all elements (unnormalised).
  """
  probs = _clip_probs(tf.cast(probs, tf.float32))
  num_classes = tf.shape(probs)[-1]
  # tf.one_hot maps -1 to an all-zero row, i.e. pure background.
  positive_mask = tf.one_hot(
      tf.cast(labels, tf.int32), num_classes, dtype=tf.float32) > 0.0
  quality = tf.cast(quality, tf.float32)[..., tf.newaxis]

  neg_loss = _binary_cross_entropy(probs, 0.0) * tf.pow(probs, beta)
  pos_loss = (_binary_cross_entropy(probs, quality) *
              tf.pow(tf.abs(quality - probs), beta))
  losses = tf.where(positive_mask, pos_loss, neg_loss)
  return tf.reduce_sum(_apply_weights(losses, weights))


def _box_area(boxes: tf.Tensor) -> tf.Tensor:
  """Area of [..., 4] boxes, with negative extents clamped to zero."""
  ymin, xmin, ymax, xmax = tf.unstack(boxes, num=4, axis=-1)
  return tf.maximum(ymax - ymin, 0.0) * tf.maximum(xmax - xmin, 0.0)


def _intersection_and_union(boxes_a: tf.Tensor, boxes_b: tf.Tensor):
  """Elementwise intersection and union areas of [..., 4] boxes."""
  a_ymin, a_xmin, a_ymax, a_xmax = tf.unstack(boxes_a, num=4, axis=-1)
  b_ymin, b_xmin, b_ymax, b_xmax = tf.unstack(boxes_b, num=4, axis=-1)
  inter_h = tf.maximum(tf.minimum(a_ymax, b_ymax) - tf.maximum(a_ymin, b_ymin),
                       0.0)
  inter_w = tf.maximum(tf.minimum(a_xmax, b_xmax) - tf.maximum(a_xmin, b_xmin),
                       0.0)
  intersection = inter_h * inter_w
  union = _box_area(boxes_a) + _box_area(boxes_b) - intersection
  return intersection, union


def elementwise_iou(boxes_a: tf.Tensor, boxes_b: tf.Tensor) -> tf.Tensor:
  """Elementwise (not pairwise) IoU.

  Args:
    boxes_a: A float tensor of shape [..., 4], [ymin, xmin, ymax, xmax].
    boxes_b: A float tensor of the same shape as `boxes_a`.

  Returns:
    A float32 tensor of shape [...] with IoU(boxes_a[i], boxes_b[i]). The
    union is clamped below by 1e-7, so degenerate boxes give IoU 0.
  """
  boxes_a = tf.cast(boxes_a, tf.float32)
  boxes_b = tf.cast(boxes_b, tf.float32)
  intersection, union = _intersection_and_union(boxes_a, boxes_b)
  return intersection / tf.maximum(union, _BOX_EPSILON)


def elementwise_giou(boxes_a: tf.Tensor, boxes_b: tf.Tensor) -> tf.Tensor:
  """Elementwise (not pairwise) generalized IoU (Rezatofighi et al., 2019).

  GIoU = IoU - (area(C) - area(union)) / area(C), where C is the smallest box
  enclosing both boxes. Divisions are guarded with a 1e-7 lower bound.

  Args:
    boxes_a: A float tensor of shape [..., 4], [ymin, xmin, ymax, xmax].
    boxes_b: A float tensor of the same shape as `boxes_a`.

  Returns:
    A float32 tensor of shape [...] with values in [-1, 1].
  """
  boxes_a = tf.cast(boxes_a, tf.float32)
  boxes_b = tf.cast(boxes_b, tf.float32)
  intersection, union = _intersection_and_union(boxes_a, boxes_b)
  union = tf.maximum(union, _BOX_EPSILON)
  iou = intersection / union

  a_ymin, a_xmin, a_ymax, a_xmax = tf.unstack(boxes_a, num=4, axis=-1)
  b_ymin, b_xmin, b_ymax, b_xmax = tf.unstack(boxes_b, num=4, axis=-1)
  enclose_h = tf.maximum(
      tf.maximum(a_ymax, b_ymax) - tf.minimum(a_ymin, b_ymin), 0.0)
  enclose_w = tf.maximum(
      tf.maximum(a_xmax, b_xmax) - tf.minimum(a_xmin, b_xmin), 0.0)
  enclose_area = tf.maximum(enclose_h * enclose_w, _BOX_EPSILON)
  return iou - (enclose_area - union) / enclose_area


def giou_loss(pred_boxes: tf.Tensor,
              target_boxes: tf.Tensor,
              weights: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Elementwise GIoU loss, 1 - GIoU.

  Args:
    pred_boxes: A float tensor of shape [..., 4], [ymin, xmin, ymax, xmax].
    target_boxes: A float tensor of the same shape as `pred_boxes`.
    weights: Optional tensor of shape [...] (e.g. 1 for positive anchors and 0
      elsewhere, or per-anchor quality weights).

  Returns:
    A float32 scalar: the weighted sum of (1 - GIoU) (unnormalised).
  """
  losses = 1.0 - elementwise_giou(pred_boxes, target_boxes)
  if weights is not None:
    losses *= tf.cast(weights, tf.float32)
  return tf.reduce_sum(losses)


def sigmoid_bce_mask_loss(mask_logits: tf.Tensor,
                          mask_targets: tf.Tensor,
                          weights: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Per-pixel sigmoid BCE mask loss (Mask R-CNN).

  Each RoI contributes the mean over its M * M pixels of BCE-with-logits; the
  per-RoI means are weighted and summed. The caller divides by the number of
  positive RoIs.

  Args:
    mask_logits: A float tensor of shape [B, R, M, M] with mask logits.
    mask_targets: A float tensor of shape [B, R, M, M] with targets in [0, 1].
    weights: Optional tensor of shape [B, R]: 1 for positive RoIs, 0 otherwise.

  Returns:
    A float32 scalar: sum over RoIs of weight * mean-over-pixels BCE.
  """
  mask_logits = tf.cast(mask_logits, tf.float32)
  mask_targets = tf.cast(mask_targets, tf.float32)
  pixel_losses = tf.nn.sigmoid_cross_entropy_with_logits(
      labels=mask_targets, logits=mask_logits)
  roi_losses = tf.reduce_mean(pixel_losses, axis=[-2, -1])
  if weights is not None:
    roi_losses *= tf.cast(weights, tf.float32)
  return tf.reduce_sum(roi_losses)
