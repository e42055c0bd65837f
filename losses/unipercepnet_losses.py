"""UniPercepNet-S training losses: assignment, sampling, classification, boxes.

The detection losses are those of the reference (UniPercepNet-S on mmdet 3.3,
TOODHead + YOLOF's targets):

  'uniform' (the recipe's first epochs): YOLOF's uniform assignment
      (`UniformAssigner` on the head's decoded boxes), random anchor
      sampling, focal loss on the probabilities weighted by the sampler's
      label weights, GIoU on the sampled positives; both normalised by the
      number of sampled positives
  'task_aligned' (afterwards): TOOD's task-aligned assignment, the same
      sampling, Quality Focal Loss against the normalised alignment metric
      t-hat (normalised over each gt's sampled positives), GIoU weighted by
      t-hat; both normalised by the sum of t-hat
  masks: BCE on the gt class's channel, mean over fg RoIs

GIoU is taken in stride units (boxes / stride), as the reference: it only
matters through GIoU's 1e-6 clamps. Normalisers are summed over replicas
and clamped at 1 (see `_normaliser`), so that the loss and gradients do not
depend on how the batch is split; mmdet's extra division by
(1 + FLT_EPSILON) is left out.

Both stages are registered in `assigner_stages` under those names; the
schedule (`Losses.assigner_schedule`) says which one trains when. The pieces
compose as `detection_losses_fn` does: a stage's targets (`uniform_targets`
or `aligned_targets`: assignment and sampling), then its loss sums
(`uniform_loss_sums` or `aligned_loss_sums`), then `normalise_losses`. Tests
can give a stage's targets other inputs (stored candidates, stored sampler
output).
"""

from typing import Callable, Dict, Mapping, Optional

import tensorflow as tf

from configs import losses as losses_cfg
from losses import assigner_stages
from losses import detection_losses
from official_ext.vision.ops import anchor_sampler
from official_ext.vision.ops import assigners

# Takes mmdet-style `assigned_gt_inds` [B, N] (0 negative, k >= 1 positive,
# -1 ignored) and returns {'positive', 'negative'}: [B, N] bool, the sampled
# anchors of each kind.
SampleFn = Callable[[tf.Tensor], Mapping[str, tf.Tensor]]


def _replica_sum(x: tf.Tensor) -> tf.Tensor:
  """`x` summed over the replicas in sync (itself outside a replica)."""
  context = tf.distribute.get_replica_context()
  if context is None or context.num_replicas_in_sync == 1:
    return x
  return context.all_reduce(tf.distribute.ReduceOp.SUM, x)


def _normaliser(x: tf.Tensor) -> tf.Tensor:
  """A replica's divisor: max(sum of `x` over replicas, 1) / replicas.

  Each replica's loss is its own sum over this divisor; the Task scales
  each by 1 / replicas and the gradients are summed, so the step divides
  the global sum by max(global `x`, 1), however the batch is split.
  (mmdet's `reduce_mean(x).clamp(min=1)` clamps the mean instead, which
  differs once the global `x` is under the number of devices.)
  """
  context = tf.distribute.get_replica_context()
  replicas = 1 if context is None else context.num_replicas_in_sync
  total = _replica_sum(tf.stop_gradient(x))
  return tf.maximum(total, 1.) / float(replicas)


def sampler_from_config(params: losses_cfg.AnchorSampler) -> SampleFn:
  """The `SampleFn` of an `AnchorSampler` config."""
  def sample(assigned_gt_inds: tf.Tensor) -> Dict[str, tf.Tensor]:
    return anchor_sampler.sample_anchors(
        assigned_gt_inds, num_samples=params.num_samples,
        positive_fraction=params.positive_fraction, seed=params.seed)
  return sample


def _sampled_targets(assignment: Mapping[str, tf.Tensor],
                     sample_fn: SampleFn) -> Dict[str, tf.Tensor]:
  """Labels, label weights and box targets of the sampled anchors.

  Args:
    assignment: an assigner's output (`assigners` module).
    sample_fn: picks the sampled anchors.

  Returns:
    Dict with `[B, N]` 'labels' (gt class at sampled positives, -1
    elsewhere), 'label_weights' (1 at sampled anchors, 0 elsewhere),
    'sampled_positive' (bool), 'box_targets' `[B, N, 4]` (gt box at sampled
    positives, 0 elsewhere) and the assignment's 'assigned_gt_inds'.
  """
  assigned = assignment['assigned_gt_inds']
  sampled = sample_fn(assigned)
  positive = sampled['positive'] & (assigned > 0)
  negative = sampled['negative'] & tf.equal(assigned, 0)
  box_targets = assignment['box_targets']
  return {
      'assigned_gt_inds': assigned,
      'sampled_positive': positive,
      'labels': tf.where(positive, assignment['labels'],
                         -tf.ones_like(assignment['labels'])),
      'label_weights': tf.cast(positive | negative, tf.float32),
      'box_targets': tf.where(positive[..., tf.newaxis], box_targets,
                              tf.zeros_like(box_targets)),
  }


def uniform_targets(anchors: tf.Tensor,
                    pred_boxes: tf.Tensor,
                    gt_boxes: tf.Tensor,
                    gt_valid: tf.Tensor,
                    gt_labels: tf.Tensor,
                    params: losses_cfg.Losses,
                    sample_fn: Optional[SampleFn] = None,
                    pred_candidates: Optional[tf.Tensor] = None,
                    prior_candidates: Optional[tf.Tensor] = None
                    ) -> Dict[str, tf.Tensor]:
  """Targets of the 'uniform' stage: uniform assignment, then sampling.

  Args:
    anchors: `[N, 4]` or `[B, N, 4]` (yxyx pixels).
    pred_boxes: `[B, N, 4]` boxes the assigner matches (the head's decoded
      boxes in training).
    gt_boxes: `[B, M, 4]`.
    gt_valid: `[B, M]` bool.
    gt_labels: `[B, M]` 0-based classes.
    params: the `Losses` config.
    sample_fn: the sampler; None: `params.anchor_sampler`'s.
    pred_candidates: optional `[B, k, M]` anchor indices of the nearest
      predictions (see `assigners.uniform_assign`).
    prior_candidates: optional `[B, k, M]`, the same for the nearest anchors.

  Returns:
    `_sampled_targets`'s dict plus 'box_weights' `[B, N]` (1 at sampled
    positives).
  """
  p = params.uniform_assigner
  assignment = assigners.uniform_assign(
      anchors, pred_boxes, gt_boxes, gt_valid, gt_labels,
      num_nearest=p.num_nearest, pos_ignore_iou=p.pos_ignore_iou,
      neg_ignore_iou=p.neg_ignore_iou, pred_candidates=pred_candidates,
      prior_candidates=prior_candidates)
  targets = _sampled_targets(
      assignment, sample_fn or sampler_from_config(params.anchor_sampler))
  targets['box_weights'] = tf.cast(targets['sampled_positive'], tf.float32)
  return targets


def aligned_targets(anchors: tf.Tensor,
                    pred_boxes: tf.Tensor,
                    scores: tf.Tensor,
                    gt_boxes: tf.Tensor,
                    gt_valid: tf.Tensor,
                    gt_labels: tf.Tensor,
                    params: losses_cfg.Losses,
                    sample_fn: Optional[SampleFn] = None
                    ) -> Dict[str, tf.Tensor]:
  """Targets of the task-aligned stage: assignment, sampling, t-hat.

  Args:
    anchors: `[N, 4]` or `[B, N, 4]` (yxyx pixels).
    pred_boxes: `[B, N, 4]` the head's decoded boxes (pixels).
    scores: `[B, N, K]` the head's probabilities.
    gt_boxes: `[B, M, 4]`.
    gt_valid: `[B, M]` bool.
    gt_labels: `[B, M]` 0-based classes.
    params: the `Losses` config.
    sample_fn: the sampler; None: `params.anchor_sampler`'s.

  Returns:
    `_sampled_targets`'s dict plus 'box_weights' `[B, N]`: the normalised
    alignment t-hat at sampled positives (0 elsewhere), also the QFL target.
  """
  p = params.task_aligned_assigner
  assignment = assigners.task_aligned_assign(
      anchors, pred_boxes, scores, gt_boxes, gt_valid, gt_labels,
      topk=p.topk, alpha=p.alpha, beta=p.beta)
  targets = _sampled_targets(
      assignment, sample_fn or sampler_from_config(params.anchor_sampler))
  targets['box_weights'] = assigners.normalized_alignment(
      assignment['assign_metrics'], assignment['max_overlaps'],
      assignment['matched_gt'], targets['sampled_positive'],
      tf.shape(gt_boxes)[1])
  return targets


def _loss_sums(cls_sum: tf.Tensor, box_preds: tf.Tensor,
               targets: Mapping[str, tf.Tensor],
               stride: float) -> Dict[str, tf.Tensor]:
  """A stage's sums: its classification sum, the weighted GIoU sum (stride
  units, sampled positives), the normaliser and the positives' count."""
  positive = targets['sampled_positive'][..., tf.newaxis]
  # Elsewhere the prediction is compared with itself (weight 0, finite).
  box_targets = tf.where(positive, targets['box_targets'],
                         tf.stop_gradient(box_preds))
  return {
      'cls_sum': cls_sum,
      'box_sum': detection_losses.giou_loss(
          box_preds / stride, box_targets / stride, targets['box_weights']),
      'norm': tf.reduce_sum(targets['box_weights']),
      'num_positives': tf.reduce_sum(
          tf.cast(targets['sampled_positive'], tf.float32)),
  }


def uniform_loss_sums(scores: tf.Tensor, box_preds: tf.Tensor,
                      targets: Mapping[str, tf.Tensor],
                      params: losses_cfg.Losses,
                      stride: float = 32.) -> Dict[str, tf.Tensor]:
  """Unnormalised 'uniform'-stage losses: focal loss and GIoU.

  Args:
    scores: `[B, N, K]` probabilities.
    box_preds: `[B, N, 4]` decoded boxes (pixels).
    targets: `uniform_targets`'s output.
    params: the `Losses` config.
    stride: the level's stride: GIoU is taken on boxes / stride.

  Returns:
    Dict with scalars 'cls_sum', 'box_sum', 'norm' (sum of the box weights:
    the number of sampled positives) and 'num_positives'.
  """
  one_hot = tf.one_hot(targets['labels'], tf.shape(scores)[-1])  # -1: zeros.
  cls_sum = detection_losses.focal_loss(
      scores, one_hot, alpha=params.focal_alpha, gamma=params.focal_gamma,
      weights=targets['label_weights'])
  return _loss_sums(cls_sum, box_preds, targets, stride)


def aligned_loss_sums(scores: tf.Tensor, box_preds: tf.Tensor,
                      targets: Mapping[str, tf.Tensor],
                      params: losses_cfg.Losses,
                      stride: float = 32.) -> Dict[str, tf.Tensor]:
  """Unnormalised task-aligned losses: QFL against t-hat and weighted GIoU.

  Args:
    scores: `[B, N, K]` probabilities.
    box_preds: `[B, N, 4]` decoded boxes (pixels).
    targets: `aligned_targets`'s output.
    params: the `Losses` config.
    stride: the level's stride: GIoU is taken on boxes / stride.

  Returns:
    Dict with scalars 'cls_sum', 'box_sum', 'norm' (sum of t-hat) and
    'num_positives'.
  """
  cls_sum = detection_losses.quality_focal_loss(
      scores, targets['labels'], targets['box_weights'],
      beta=params.qfl_beta, weights=targets['label_weights'])
  return _loss_sums(cls_sum, box_preds, targets, stride)


def normalise_losses(sums: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  """Divides both loss sums by `_normaliser` of 'norm'.

  'num_positives' is the global batch's count (summed over replicas).
  """
  norm = _normaliser(sums['norm'])
  return {
      'cls_loss': sums['cls_sum'] / norm,
      'box_loss': sums['box_sum'] / norm,
      'num_positives': _replica_sum(sums['num_positives']),
  }


def detection_losses_fn(outputs: Mapping[str, tf.Tensor],
                        gt_boxes: tf.Tensor,
                        gt_classes: tf.Tensor,
                        params: losses_cfg.Losses,
                        epoch=None,
                        assigner: Optional[str] = None,
                        stride: float = 32.,
                        sample_fn: Optional[SampleFn] = None
                        ) -> Dict[str, tf.Tensor]:
  """Classification and box losses of the head.

  Args:
    outputs: the head's training outputs ('cls_scores' `[B, N, K]`
      probabilities, 'box_preds' `[B, N, 4]` decoded pixel boxes,
      'anchor_boxes' `[N, 4]`).
    gt_boxes: `[B, M, 4]` (yxyx, pixels of the network input).
    gt_classes: `[B, M]` 1-based; padding rows <= 0.
    params: the `Losses` config.
    epoch: scalar, the training epoch: `params.assigner_schedule` picks the
      assigner.
    assigner: a registered assigner name: that stage, whatever the epoch.
    stride: the head level's stride (GIoU is taken in stride units).
    sample_fn: replaces the configured anchor sampler (e.g. with a stored
      sample in parity tests).

  Returns:
    'cls_loss', 'box_loss' (normalised, unweighted) and 'num_positives'
    (sampled, in the global batch).
  """
  scores = tf.cast(outputs['cls_scores'], tf.float32)
  box_preds = tf.cast(outputs['box_preds'], tf.float32)
  anchors = tf.cast(outputs['anchor_boxes'], tf.float32)
  gt_boxes = tf.cast(gt_boxes, tf.float32)
  gt_valid = gt_classes > 0
  gt_labels = tf.where(gt_valid, tf.cast(gt_classes, tf.int32) - 1, -1)

  def stage_sums(stage: assigner_stages.Assigner) -> Dict[str, tf.Tensor]:
    targets = stage.targets_fn(anchors, box_preds, scores, gt_boxes, gt_valid,
                               gt_labels, params, sample_fn)
    return stage.loss_sums_fn(scores, box_preds, targets, params, stride)

  sums = assigner_stages.run_stage(stage_sums, params.assigner_schedule,
                                   epoch=epoch, assigner=assigner)
  return normalise_losses(sums)


def mask_loss_fn(mask_logits: tf.Tensor, mask_targets: tf.Tensor,
                 mask_weights: tf.Tensor) -> tf.Tensor:
  """Mean per-pixel BCE over the foreground RoIs (unweighted)."""
  total = detection_losses.sigmoid_bce_mask_loss(mask_logits, mask_targets,
                                                 mask_weights)
  return total / _normaliser(tf.reduce_sum(mask_weights))


def _uniform_stage_targets(anchors, pred_boxes, scores, gt_boxes, gt_valid,
                           gt_labels, params, sample_fn=None):
  """`uniform_targets` as a stage's targets function (scores unused)."""
  del scores  # Uniform assignment matches boxes only.
  return uniform_targets(anchors, pred_boxes, gt_boxes, gt_valid, gt_labels,
                         params, sample_fn)


assigner_stages.register('uniform', _uniform_stage_targets, uniform_loss_sums)
assigner_stages.register('task_aligned', aligned_targets, aligned_loss_sums)
