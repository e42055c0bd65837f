"""Detection and instance segmentation losses.

Conventions shared by every loss in this module:

  * Boxes are [ymin, xmin, ymax, xmax] (any unit: the caller picks it, e.g.
    stride units as the reference).
  * Class scores are PROBABILITIES in [0, 1], not logits (the head already
    applies its activation, e.g. score = sqrt(sigmoid(a) * sigmoid(b))).
    Cross-entropy is torch's `binary_cross_entropy`: each logarithm is
    clamped below at -100 (not the probabilities), and its gradient is
    torch's, `(p - y) / max(p (1 - p), 1e-12)`, finite for p = 0 or 1.
  * GIoU (and the IoU inside it) is mmdet's `bbox_overlaps`: areas are not
    clamped, the union and the enclosing area are clamped below at 1e-6.
  * Every loss returns the weighted SUM over its elements as a float32 scalar.
    Nothing is normalised here (no division by the number of positives or by
    the sum of weights); normalisation is the caller's job.

All functions are batched, contain no Python loops over boxes, and can be used
inside `tf.function`, including with `jit_compile=True`.
"""

from typing import Optional

import tensorflow as tf

# torch's binary_cross_entropy clamps each log at this value.
_LOG_CLAMP = -100.
# ... and its gradient's denominator p (1 - p) at this one.
_BCE_GRAD_EPSILON = 1e-12
# mmdet's bbox_overlaps clamps the union (and GIoU's enclosing area) here.
_BOX_EPSILON = 1e-6


def _binary_cross_entropy(probs: tf.Tensor, targets) -> tf.Tensor:
  """Elementwise BCE of probabilities with (soft) targets, as torch's.

  `-(y max(log p, -100) + (1 - y) max(log(1 - p), -100))`, `log(1 - p)`
  taken as `log1p(-p)`. The gradient with respect to `probs` is torch's;
  `targets` get none (they are targets).

  Args:
    probs: A float32 tensor of probabilities in [0, 1].
    targets: A float32 tensor broadcastable to `probs`, values in [0, 1].

  Returns:
    A tensor of the broadcast shape.
  """
  targets = tf.stop_gradient(tf.convert_to_tensor(targets, probs.dtype))
  targets = tf.broadcast_to(targets, tf.broadcast_dynamic_shape(
      tf.shape(probs), tf.shape(targets)))

  @tf.custom_gradient
  def bce(p):
    # Logs of 0 are -inf before the clamp; the safe branches keep -inf and
    # NaN out of every gradient.
    log_p = tf.where(p > 0., tf.math.log(tf.where(p > 0., p, 1.)), _LOG_CLAMP)
    log_1mp = tf.where(p < 1., tf.math.log1p(-tf.where(p < 1., p, 0.)),
                       _LOG_CLAMP)
    loss = ((targets - 1.) * tf.maximum(log_1mp, _LOG_CLAMP) -
            targets * tf.maximum(log_p, _LOG_CLAMP))

    def grad(upstream):
      return upstream * (p - targets) / tf.maximum(p * (1. - p),
                                                   _BCE_GRAD_EPSILON)

    return loss, grad

  return bce(tf.broadcast_to(probs, tf.shape(targets)))


def _power(x: tf.Tensor, exponent: float) -> tf.Tensor:
  """`x ** exponent`, exactly `x * x` for 2 (as torch's pow)."""
  if exponent == 2:
    return x * x
  return tf.pow(x, exponent)


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
  """Sigmoid focal loss (Lin et al., 2017) on probabilities, as mmdet's.

  mmdet's `FocalLoss(activated=True)`: per element, with p the probability
  and t the binary target,
    BCE(p, t) * (alpha t + (1 - alpha)(1 - t)) * pt^gamma,
    pt = (1 - p) t + p (1 - t).

  Args:
    probs: A float tensor of shape [..., K] with class probabilities in [0, 1].
    targets: A tensor of the same shape as `probs` with values in {0, 1}
      (one-hot for positives, all zeros for background).
    alpha: Weight of the positive term; (1 - alpha) weighs the negative term.
    gamma: Focusing parameter.
    weights: Optional tensor of shape [...] (per anchor, e.g. the sampler's
      label weights) or broadcastable to [..., K].

  Returns:
    A float32 scalar: the weighted sum over all elements (unnormalised).
  """
  probs = tf.cast(probs, tf.float32)
  targets = tf.cast(targets, tf.float32)
  pt = (1. - probs) * targets + probs * (1. - targets)
  focal_weight = ((alpha * targets + (1. - alpha) * (1. - targets)) *
                  _power(pt, gamma))
  losses = _binary_cross_entropy(probs, targets) * focal_weight
  return tf.reduce_sum(_apply_weights(losses, weights))


def quality_focal_loss(probs: tf.Tensor,
                       labels: tf.Tensor,
                       quality: tf.Tensor,
                       beta: float = 2.0,
                       weights: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Quality focal loss (Generalized Focal Loss, Li et al., 2020).

  mmdet's `QualityFocalLoss(activated=True)` on probabilities. Every element
  of `probs` is treated as a negative, BCE(p, 0) * p^beta, except the
  own-class channel of a positive anchor, which uses BCE(p, q) * |q - p|^beta
  with q the quality target.

  Args:
    probs: A float tensor of shape [..., K] with class probabilities in [0, 1].
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
  probs = tf.cast(probs, tf.float32)
  num_classes = tf.shape(probs)[-1]
  # tf.one_hot maps -1 to an all-zero row, i.e. pure background.
  positive_mask = tf.one_hot(
      tf.cast(labels, tf.int32), num_classes, dtype=tf.float32) > 0.0
  quality = tf.cast(quality, tf.float32)[..., tf.newaxis]

  neg_loss = _binary_cross_entropy(probs, 0.0) * _power(probs, beta)
  pos_loss = (_binary_cross_entropy(probs, quality) *
              _power(tf.abs(quality - probs), beta))
  losses = tf.where(positive_mask, pos_loss, neg_loss)
  return tf.reduce_sum(_apply_weights(losses, weights))


def _overlaps(boxes_a: tf.Tensor, boxes_b: tf.Tensor):
  """Elementwise intersection, clamped union and extents, as mmdet's.

  Args:
    boxes_a: A float32 tensor of shape [..., 4].
    boxes_b: A float32 tensor of the same shape.

  Returns:
    (intersection, union, enclose_area): intersection with its extents
    clamped at 0; union = max(area_a + area_b - intersection, 1e-6) with
    areas not clamped; the smallest enclosing box's area, extents clamped
    at 0, then clamped below at 1e-6.
  """
  a_ymin, a_xmin, a_ymax, a_xmax = tf.unstack(boxes_a, num=4, axis=-1)
  b_ymin, b_xmin, b_ymax, b_xmax = tf.unstack(boxes_b, num=4, axis=-1)
  area_a = (a_xmax - a_xmin) * (a_ymax - a_ymin)
  area_b = (b_xmax - b_xmin) * (b_ymax - b_ymin)
  inter_w = tf.maximum(tf.minimum(a_xmax, b_xmax) - tf.maximum(a_xmin, b_xmin),
                       0.0)
  inter_h = tf.maximum(tf.minimum(a_ymax, b_ymax) - tf.maximum(a_ymin, b_ymin),
                       0.0)
  intersection = inter_w * inter_h
  union = tf.maximum(area_a + area_b - intersection, _BOX_EPSILON)
  enclose_w = tf.maximum(
      tf.maximum(a_xmax, b_xmax) - tf.minimum(a_xmin, b_xmin), 0.0)
  enclose_h = tf.maximum(
      tf.maximum(a_ymax, b_ymax) - tf.minimum(a_ymin, b_ymin), 0.0)
  enclose_area = tf.maximum(enclose_w * enclose_h, _BOX_EPSILON)
  return intersection, union, enclose_area


def elementwise_giou(boxes_a: tf.Tensor, boxes_b: tf.Tensor) -> tf.Tensor:
  """Elementwise (not pairwise) generalized IoU (Rezatofighi et al., 2019).

  GIoU = IoU - (area(C) - union) / area(C), where C is the smallest box
  enclosing both boxes; mmdet's `bbox_overlaps(mode='giou', eps=1e-6)`.

  Args:
    boxes_a: A float tensor of shape [..., 4], [ymin, xmin, ymax, xmax].
    boxes_b: A float tensor of the same shape as `boxes_a`.

  Returns:
    A float32 tensor of shape [...], in [-1, 1] for proper boxes.
  """
  intersection, union, enclose_area = _overlaps(tf.cast(boxes_a, tf.float32),
                                                tf.cast(boxes_b, tf.float32))
  return intersection / union - (enclose_area - union) / enclose_area


def giou_loss(pred_boxes: tf.Tensor,
              target_boxes: tf.Tensor,
              weights: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Elementwise GIoU loss, 1 - GIoU (mmdet's `giou_loss`, eps 1e-6).

  GIoU is invariant to the boxes' unit except through the 1e-6 clamps; the
  reference applies it in stride units.

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
