"""UniPercepNet-S training losses: assignment, classification, boxes, masks.

  first `initial_epochs`: YOLOF uniform assignment, focal loss on the score,
      GIoU on the positives, both normalised by the number of positives
  afterwards: TOOD task-aligned assignment, Quality Focal Loss against the
      normalised alignment metric, GIoU weighted by it, both normalised by
      the sum of the alignment targets
  masks: BCE on the gt class's channel, mean over fg RoIs

Normalisers are averaged over replicas (as mmdet's `reduce_mean`) and
clamped at 1, so every replica's loss is on the same scale.
"""

from typing import Dict, Mapping

import tensorflow as tf

from configs import unipercepnet as exp_cfg
from losses import detection_losses
from official_ext.vision.ops import assigners


def _replica_mean(x: tf.Tensor) -> tf.Tensor:
  context = tf.distribute.get_replica_context()
  if context is None:  # Cross-replica context: already global.
    return x
  return context.all_reduce(tf.distribute.ReduceOp.MEAN, x)


def _normaliser(x: tf.Tensor) -> tf.Tensor:
  return tf.maximum(_replica_mean(tf.stop_gradient(x)), 1.)


def detection_losses_fn(outputs: Mapping[str, tf.Tensor],
                        gt_boxes: tf.Tensor,
                        gt_classes: tf.Tensor,
                        initial_stage: tf.Tensor,
                        params: exp_cfg.Losses) -> Dict[str, tf.Tensor]:
  """Classification and box losses of the head.

  Args:
    outputs: the head's training outputs ('cls_scores' `[B, N, K]`,
      'box_preds' `[B, N, 4]`, 'anchor_boxes' `[N, 4]`).
    gt_boxes: `[B, M, 4]` (yxyx, pixels of the network input).
    gt_classes: `[B, M]` 1-based; padding rows <= 0.
    initial_stage: scalar bool, True during the first `initial_epochs`.
    params: the `Losses` config.

  Returns:
    'cls_loss', 'box_loss' (normalised, unweighted) and 'num_positives'
    (per replica).
  """
  scores = tf.cast(outputs['cls_scores'], tf.float32)
  box_preds = tf.cast(outputs['box_preds'], tf.float32)
  anchors = tf.cast(outputs['anchor_boxes'], tf.float32)
  gt_boxes = tf.cast(gt_boxes, tf.float32)
  gt_valid = gt_classes > 0
  gt_labels = tf.where(gt_valid, tf.cast(gt_classes, tf.int32) - 1, -1)
  num_classes = scores.shape[-1]

  def uniform_stage():
    p = params.uniform_assigner
    a = assigners.uniform_assign(
        anchors, box_preds, gt_boxes, gt_valid, gt_labels,
        num_nearest=p.num_nearest, pos_ignore_iou=p.pos_ignore_iou,
        neg_ignore_iou=p.neg_ignore_iou)
    positive = tf.cast(a['positive'], tf.float32)
    targets = tf.one_hot(a['labels'], num_classes)  # -1 -> all zeros.
    cls_sum = detection_losses.focal_loss(
        scores, targets, alpha=params.focal_alpha, gamma=params.focal_gamma,
        weights=1. - tf.cast(a['ignored'], tf.float32))
    num_pos = tf.reduce_sum(positive)
    return cls_sum, positive, a['box_targets'], num_pos, num_pos, num_pos

  def aligned_stage():
    p = params.task_aligned_assigner
    a = assigners.task_aligned_assign(
        anchors, box_preds, scores, gt_boxes, gt_valid, gt_labels,
        topk=p.topk, alpha=p.alpha, beta=p.beta)
    alignment = tf.where(a['positive'], a['alignment'],
                         tf.zeros_like(a['alignment']))
    cls_sum = detection_losses.quality_focal_loss(
        scores, a['labels'], alignment, beta=params.qfl_beta)
    norm = tf.reduce_sum(alignment)
    num_pos = tf.reduce_sum(tf.cast(a['positive'], tf.float32))
    return cls_sum, alignment, a['box_targets'], norm, norm, num_pos

  cls_sum, box_weights, box_targets, cls_norm, box_norm, num_pos = tf.cond(
      initial_stage, uniform_stage, aligned_stage)
  # Non-positives compare the prediction with itself (loss 0, no NaN).
  positive = box_weights > 0
  box_targets = tf.where(positive[..., tf.newaxis], box_targets,
                         tf.stop_gradient(box_preds))
  box_sum = detection_losses.giou_loss(box_preds, box_targets, box_weights)
  return {
      'cls_loss': cls_sum / _normaliser(cls_norm),
      'box_loss': box_sum / _normaliser(box_norm),
      'num_positives': num_pos,
  }


def mask_loss_fn(mask_logits: tf.Tensor, mask_targets: tf.Tensor,
                 mask_weights: tf.Tensor) -> tf.Tensor:
  """Mean per-pixel BCE over the foreground RoIs (unweighted)."""
  total = detection_losses.sigmoid_bce_mask_loss(mask_logits, mask_targets,
                                                 mask_weights)
  return total / _normaliser(tf.reduce_sum(mask_weights))
