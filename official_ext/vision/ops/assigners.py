"""Batched label assigners: YOLOF's uniform matching and TOOD's task alignment.

Both assigners reproduce mmdet's (`UniformAssigner`, `TaskAlignedAssigner`)
on whole batches with static shapes: every step is a dense op over
`[B, M, N]` (gts x anchors) tensors or a scatter into `[B, N]`, so they run
eagerly, under `tf.function` and under XLA (`jit_compile=True`).

Conventions shared by both functions:
  * boxes are `[ymin, xmin, ymax, xmax]` in pixels;
  * `anchors` is `[N, 4]` (shared by the batch) or `[B, N, 4]`;
  * `gt_boxes` is `[B, M, 4]`, `gt_classes` `[B, M]` int and `gt_valid`
    `[B, M]` bool; rows with `gt_valid == False` are padding and never match
    anything, whatever their box or class;
  * IoUs are mmdet's `bbox_overlaps`: areas are not clamped, the union is
    clamped below at 1e-6;
  * predictions pass through `tf.stop_gradient`: the outputs are targets;
  * the output is a dict with
      'assigned_gt_inds': `[B, N]` int32 in mmdet's convention: 0 negative,
        k >= 1 assigned to gt k - 1, -1 ignored;
      'matched_gt': `[B, N]` int32, index in `[0, M)` of the assigned gt, -1
        for negatives and ignored anchors;
      'labels': `[B, N]` int32, class of the assigned gt, -1 otherwise;
      'positive': `[B, N]` bool (`assigned_gt_inds > 0`);
      'ignored': `[B, N]` bool (`assigned_gt_inds < 0`);
      'box_targets': `[B, N, 4]`, the assigned gt box, zeros elsewhere;
    plus 'assign_metrics', 'max_overlaps' and 'alignment' `[B, N]` for
    `task_aligned_assign`.

Ignored gts (crowds): mmdet's two assigners accept `gt_instances_ignore` but
never read it, so there is no such argument here; the data pipeline drops
crowd annotations in training, and crowd regions are plain background.
"""

from typing import Dict, Optional

import tensorflow as tf

# mmdet's `bbox_overlaps` clamps the union below at this value.
IOU_EPS = 1e-6
# mmdet's TaskAlignedAssigner marks non-positives' max overlap with -INF.
_NEG_INF_OVERLAP = -1e8


def _broadcast_anchors(anchors: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
  """Returns `anchors` ([N, 4] or [B, N, 4]) broadcast to `like` [B, N, 4]."""
  anchors = tf.cast(anchors, like.dtype)
  if anchors.shape.rank == 2:
    anchors = anchors[tf.newaxis]
  return tf.broadcast_to(anchors, tf.shape(like))


def pairwise_iou(boxes: tf.Tensor, gt_boxes: tf.Tensor,
                 eps: float = IOU_EPS) -> tf.Tensor:
  """IoU of every box with every gt, laid out gt-major, as mmdet computes it.

  `area(box) + area(gt) - intersection`, clamped below at `eps`, divides the
  intersection; areas are not clamped (an inverted box has a non-positive or
  positive "area" as its extents' product gives), the intersection's extents
  are clamped at 0.

  Args:
    boxes: `[B, N, 4]`.
    gt_boxes: `[B, M, 4]`.
    eps: lower bound of the union.

  Returns:
    `[B, M, N]` IoU.
  """
  b = [x[:, tf.newaxis, :] for x in tf.unstack(boxes, axis=-1)]
  g = [x[:, :, tf.newaxis] for x in tf.unstack(gt_boxes, axis=-1)]
  box_area = (b[2] - b[0]) * (b[3] - b[1])
  gt_area = (g[2] - g[0]) * (g[3] - g[1])
  inter_h = tf.maximum(tf.minimum(b[2], g[2]) - tf.maximum(b[0], g[0]), 0.)
  inter_w = tf.maximum(tf.minimum(b[3], g[3]) - tf.maximum(b[1], g[1]), 0.)
  overlap = inter_w * inter_h
  union = tf.maximum(box_area + gt_area - overlap, eps)
  return overlap / union


def _l1_cost(boxes: tf.Tensor, gt_boxes: tf.Tensor) -> tf.Tensor:
  """L1 distance in (cx, cy, w, h), summed in that order (as torch.cdist).

  Args:
    boxes: `[B, N, 4]`.
    gt_boxes: `[B, M, 4]`.

  Returns:
    `[B, M, N]` distances.
  """
  def cxcywh(x, axis):
    ymin, xmin, ymax, xmax = [tf.expand_dims(c, axis)
                              for c in tf.unstack(x, axis=-1)]
    return ((xmin + xmax) / 2., (ymin + ymax) / 2., xmax - xmin, ymax - ymin)

  cost = tf.zeros([], boxes.dtype)
  for a, g in zip(cxcywh(boxes, 1), cxcywh(gt_boxes, 2)):
    cost = cost + tf.abs(a - g)
  return cost


def _indices_to_mask(indices: tf.Tensor, depth) -> tf.Tensor:
  """Marks `indices` `[B, R, k]` (along the last axis) in a `[B, R, depth]`."""
  indices = tf.cast(indices, tf.int32)
  shape = tf.shape(indices)
  batch = tf.broadcast_to(tf.range(shape[0])[:, tf.newaxis, tf.newaxis],
                          shape)
  rows = tf.broadcast_to(tf.range(shape[1])[tf.newaxis, :, tf.newaxis], shape)
  counts = tf.scatter_nd(tf.stack([batch, rows, indices], axis=-1),
                         tf.ones_like(indices),
                         tf.stack([shape[0], shape[1], depth]))
  return counts > 0


def _num_to_keep(k: int, boxes: tf.Tensor):
  """`min(k, N)`, static when N is."""
  n = boxes.shape[1]
  if n is not None:
    return min(k, n)
  return tf.minimum(k, tf.shape(boxes)[1])


def _targets_from_inds(assigned_gt_inds: tf.Tensor, gt_boxes: tf.Tensor,
                       gt_classes: tf.Tensor) -> Dict[str, tf.Tensor]:
  """Builds the common outputs from mmdet-style `assigned_gt_inds` `[B, N]`."""
  positive = assigned_gt_inds > 0
  safe = tf.maximum(assigned_gt_inds - 1, 0)
  labels = tf.gather(tf.cast(gt_classes, tf.int32), safe, batch_dims=1)
  boxes = tf.gather(gt_boxes, safe, batch_dims=1)
  minus_one = -tf.ones_like(assigned_gt_inds)
  return {
      'assigned_gt_inds': assigned_gt_inds,
      'matched_gt': tf.where(positive, assigned_gt_inds - 1, minus_one),
      'labels': tf.where(positive, labels, minus_one),
      'positive': positive,
      'ignored': assigned_gt_inds < 0,
      'box_targets': tf.where(positive[..., tf.newaxis], boxes,
                              tf.zeros_like(boxes)),
  }


def uniform_candidates(anchors: tf.Tensor,
                       pred_boxes: tf.Tensor,
                       gt_boxes: tf.Tensor,
                       num_nearest: int = 4) -> Dict[str, tf.Tensor]:
  """Candidates of YOLOF's uniform matching: the nearest boxes to each gt.

  Distance is the L1 distance between the (cx, cy, w, h) of a box and of the
  gt. Exact ties go to the lower anchor index (torch.topk, which mmdet uses,
  does not promise any order, so the reference may differ on exact ties).

  Args:
    anchors: `[N, 4]` or `[B, N, 4]`.
    pred_boxes: `[B, N, 4]` decoded predictions, one per anchor.
    gt_boxes: `[B, M, 4]`.
    num_nearest: candidates per gt of each kind (capped at N).

  Returns:
    Dict with 'pred' and 'prior', each `[B, k, M]` int32: anchor indices of
    the k predictions / anchors nearest to each gt, nearest first.
  """
  with tf.name_scope('uniform_candidates'):
    pred_boxes = tf.stop_gradient(tf.convert_to_tensor(pred_boxes))
    gt_boxes = tf.cast(gt_boxes, pred_boxes.dtype)
    anchors = _broadcast_anchors(anchors, pred_boxes)
    k = _num_to_keep(num_nearest, pred_boxes)

    def nearest(boxes):
      _, indices = tf.math.top_k(-_l1_cost(boxes, gt_boxes), k=k)
      return tf.transpose(indices, [0, 2, 1])                   # [B, k, M]

    return {'pred': nearest(pred_boxes), 'prior': nearest(anchors)}


def uniform_assign(anchors: tf.Tensor,
                   pred_boxes: tf.Tensor,
                   gt_boxes: tf.Tensor,
                   gt_valid: tf.Tensor,
                   gt_classes: tf.Tensor,
                   num_nearest: int = 4,
                   pos_ignore_iou: float = 0.15,
                   neg_ignore_iou: float = 0.7,
                   pred_candidates: Optional[tf.Tensor] = None,
                   prior_candidates: Optional[tf.Tensor] = None
                   ) -> Dict[str, tf.Tensor]:
  """YOLOF's uniform matching, as mmdet's `UniformAssigner`.

  1. Every anchor starts negative (0); an anchor whose predicted box has an
     IoU above `neg_ignore_iou` with some valid gt is ignored (-1).
  2. Each valid gt has `2 * num_nearest` candidacies: the anchors of its
     `num_nearest` nearest predicted boxes and its `num_nearest` nearest
     anchors (see `uniform_candidates`). A candidacy writes gt + 1 to its
     anchor, or -1 when the ANCHOR's IoU with that gt is below
     `pos_ignore_iou` (whichever kind the candidacy is).
  3. The writes happen in the order [prediction rank 0 of gts 0..M-1, anchor
     rank 0 of gts 0..M-1, prediction rank 1 of gts 0..M-1, ...], and the
     last write to an anchor wins; so an anchor that is a candidate of
     several gts does not necessarily go to the nearest.

  Args:
    anchors: `[N, 4]` or `[B, N, 4]`.
    pred_boxes: `[B, N, 4]` decoded predictions, one per anchor.
    gt_boxes: `[B, M, 4]`.
    gt_valid: `[B, M]` bool, False for padding rows.
    gt_classes: `[B, M]` int class of each gt.
    num_nearest: candidates per gt from anchors and from predictions each
      (capped at N); ignored for a kind whose candidates are given.
    pos_ignore_iou: candidacies whose anchor has an IoU below this with the
      gt write -1 (ignore) instead of the gt.
    neg_ignore_iou: anchors whose predicted box has an IoU above this with
      some gt start ignored instead of negative.
    pred_candidates: optional `[B, k, M]` int anchor indices replacing the
      nearest predictions (e.g. the reference's own top-k on exact ties).
    prior_candidates: optional `[B, k, M]`, the same for the nearest anchors;
      both kinds must have the same k.

  Returns:
    Dict with 'assigned_gt_inds', 'matched_gt', 'labels', 'positive',
    'ignored' and 'box_targets' (see the module docstring).
  """
  with tf.name_scope('uniform_assign'):
    pred_boxes = tf.stop_gradient(tf.convert_to_tensor(pred_boxes))
    dtype = pred_boxes.dtype
    gt_boxes = tf.cast(gt_boxes, dtype)
    gt_valid = tf.cast(gt_valid, tf.bool)
    anchors = _broadcast_anchors(anchors, pred_boxes)
    if pred_candidates is None or prior_candidates is None:
      nearest = uniform_candidates(anchors, pred_boxes, gt_boxes, num_nearest)
      if pred_candidates is None:
        pred_candidates = nearest['pred']
      if prior_candidates is None:
        prior_candidates = nearest['prior']
    valid = gt_valid[:, :, tf.newaxis]                          # [B, M, 1]

    # 1. Negatives, and ignores by the predicted boxes' IoU.
    pred_iou = tf.where(valid, pairwise_iou(pred_boxes, gt_boxes), 0.)
    start = tf.where(tf.reduce_max(pred_iou, axis=1) > neg_ignore_iou,
                     -1, 0)                                     # [B, N]

    # 2. Candidacies in write order: [rank, kind, gt] flattened.
    candidates = tf.stack([tf.cast(pred_candidates, tf.int32),
                           tf.cast(prior_candidates, tf.int32)],
                          axis=2)                               # [B,k,2,M]
    shape = tf.shape(candidates)
    batch_size, num_gts = shape[0], shape[3]
    num_writes = shape[1] * shape[2] * num_gts
    anchor_index = tf.reshape(candidates, [batch_size, num_writes])
    gt_index = tf.broadcast_to(tf.range(num_gts), shape)
    gt_index = tf.reshape(gt_index, [batch_size, num_writes])
    anchor_iou = pairwise_iou(anchors, gt_boxes)                # [B, M, N]
    iou = tf.gather_nd(anchor_iou, tf.stack(
        [gt_index, anchor_index], axis=-1), batch_dims=1)       # [B, W]
    value = tf.where(iou < pos_ignore_iou, -1, gt_index + 1)
    write_valid = tf.gather(gt_valid, gt_index, batch_dims=1)   # [B, W]

    # 3. The last valid write to each anchor wins.
    order = tf.broadcast_to(tf.range(num_writes)[tf.newaxis],
                            [batch_size, num_writes])
    order = tf.where(write_valid, order, -1)
    batch_index = tf.broadcast_to(tf.range(batch_size)[:, tf.newaxis],
                                  [batch_size, num_writes])
    last = tf.tensor_scatter_nd_max(
        -tf.ones_like(start), tf.stack([batch_index, anchor_index], axis=-1),
        order)                                                  # [B, N]
    written = tf.gather(value, tf.maximum(last, 0), batch_dims=1)
    assigned = tf.where(last >= 0, written, start)
    return _targets_from_inds(assigned, gt_boxes, gt_classes)


def _centres_inside(anchors: tf.Tensor, gt_boxes: tf.Tensor,
                    margin: float = 0.01) -> tf.Tensor:
  """Whether anchor centres lie inside gt boxes by more than `margin`.

  Args:
    anchors: `[B, N, 4]`.
    gt_boxes: `[B, M, 4]`.
    margin: smallest distance (pixels) to every side, exclusive.

  Returns:
    `[B, M, N]` bool.
  """
  cy = ((anchors[..., 0] + anchors[..., 2]) / 2.)[:, tf.newaxis, :]
  cx = ((anchors[..., 1] + anchors[..., 3]) / 2.)[:, tf.newaxis, :]
  ymin, xmin, ymax, xmax = [g[:, :, tf.newaxis]
                            for g in tf.unstack(gt_boxes, axis=-1)]
  distance = tf.minimum(tf.minimum(cx - xmin, cy - ymin),
                        tf.minimum(xmax - cx, ymax - cy))
  return distance > margin


def _power(x: tf.Tensor, exponent: float) -> tf.Tensor:
  """`x ** exponent`, exact for the exponents 1 and 2 (as torch's pow)."""
  if exponent == 1:
    return x
  if exponent == 2:
    return x * x
  return tf.pow(x, exponent)


def normalized_alignment(assign_metrics: tf.Tensor,
                         max_overlaps: tf.Tensor,
                         matched_gt: tf.Tensor,
                         positive: tf.Tensor,
                         num_gts,
                         eps: float = 1e-7) -> tf.Tensor:
  """TOOD's normalised alignment targets over a set of positives.

  For a positive i assigned to gt g: `t_i / (max t + eps) * max u`, the
  maxima taken over the positives (in `positive`) assigned to g; 0 for every
  other anchor. mmdet takes them over the sampled positives.

  Args:
    assign_metrics: `[B, N]` alignment metric t of each anchor with its gt.
    max_overlaps: `[B, N]` IoU u of each anchor's prediction with its gt.
    matched_gt: `[B, N]` int gt index (any value where not `positive`).
    positive: `[B, N]` bool.
    num_gts: M.
    eps: added to the per-gt metric maximum (mmdet's 10e-8).

  Returns:
    `[B, N]` normalised targets.
  """
  zeros = tf.zeros_like(assign_metrics)
  metrics = tf.where(positive, assign_metrics, zeros)
  overlaps = tf.where(positive, max_overlaps, zeros)
  safe_gt = tf.where(positive, matched_gt, -tf.ones_like(matched_gt))
  member = tf.one_hot(safe_gt, num_gts, dtype=metrics.dtype)   # [B, N, M]
  max_metric = tf.reduce_max(member * metrics[..., tf.newaxis], axis=1)
  max_overlap = tf.reduce_max(member * overlaps[..., tf.newaxis], axis=1)
  safe_gt = tf.maximum(safe_gt, 0)
  max_metric = tf.gather(max_metric, safe_gt, batch_dims=1)     # [B, N]
  max_overlap = tf.gather(max_overlap, safe_gt, batch_dims=1)
  return tf.where(positive, metrics / (max_metric + eps) * max_overlap, zeros)


def task_aligned_assign(anchors: tf.Tensor,
                        pred_boxes: tf.Tensor,
                        pred_scores: tf.Tensor,
                        gt_boxes: tf.Tensor,
                        gt_valid: tf.Tensor,
                        gt_classes: tf.Tensor,
                        topk: int = 13,
                        alpha: float = 1.0,
                        beta: float = 6.0,
                        eps: float = 1e-7) -> Dict[str, tf.Tensor]:
  """TOOD's task-aligned assignment, as mmdet's `TaskAlignedAssigner`.

  For gt g and anchor i: `s = pred_scores[i, class(g)]`,
  `u = IoU(pred_boxes[i], g)` and the alignment metric `t = s**alpha *
  u**beta`. Each valid gt takes the `topk` anchors of largest `t` among all
  anchors (capped at N; ties: lower anchor index) and keeps those with
  `t > 0` whose anchor centre lies inside the gt box by more than 0.01 px on
  every side. An anchor kept by several gts goes to the one with the largest
  `u` (ties: lowest gt index). Kept anchors are the positives; nothing is
  ignored.

  'alignment' is `normalized_alignment` over all positives; mmdet normalises
  over the sampled positives only, which is the same whenever the sampler
  keeps every positive.

  Args:
    anchors: `[N, 4]` or `[B, N, 4]`.
    pred_boxes: `[B, N, 4]` decoded predictions, one per anchor.
    pred_scores: `[B, N, K]` class probabilities.
    gt_boxes: `[B, M, 4]`.
    gt_valid: `[B, M]` bool, False for padding rows.
    gt_classes: `[B, M]` int class in `[0, K)` of each valid gt.
    topk: anchors taken per gt before the centre test.
    alpha: exponent of the score in the metric.
    beta: exponent of the IoU in the metric.
    eps: added to the per-gt metric maximum in 'alignment'.

  Returns:
    Dict with 'assigned_gt_inds', 'matched_gt', 'labels', 'positive',
    'ignored' (all False), 'box_targets' (see the module docstring), and
    `[B, N]` 'assign_metrics' (t with the assigned gt, 0 elsewhere),
    'max_overlaps' (u with the assigned gt, -1e8 elsewhere, as mmdet) and
    'alignment'.
  """
  with tf.name_scope('task_aligned_assign'):
    pred_boxes = tf.stop_gradient(tf.convert_to_tensor(pred_boxes))
    dtype = pred_boxes.dtype
    pred_scores = tf.stop_gradient(tf.cast(pred_scores, dtype))
    gt_boxes = tf.cast(gt_boxes, dtype)
    gt_valid = tf.cast(gt_valid, tf.bool)
    gt_classes = tf.cast(gt_classes, tf.int32)
    anchors = _broadcast_anchors(anchors, pred_boxes)
    num_classes = tf.shape(pred_scores)[-1]
    num_anchors = tf.shape(pred_boxes)[1]
    num_gts = tf.shape(gt_boxes)[1]
    valid = gt_valid[:, :, tf.newaxis]                          # [B, M, 1]

    iou = pairwise_iou(pred_boxes, gt_boxes)                    # [B, M, N]
    classes = tf.clip_by_value(gt_classes, 0, num_classes - 1)
    scores = tf.gather(pred_scores, classes, axis=2, batch_dims=1)
    scores = tf.transpose(scores, [0, 2, 1])                    # [B, M, N]
    metric = _power(scores, alpha) * _power(iou, beta)
    metric = tf.where(valid, metric, tf.zeros_like(metric))

    _, top = tf.math.top_k(metric, k=_num_to_keep(topk, pred_boxes))
    selected = (_indices_to_mask(top, num_anchors) & (metric > 0.) &
                _centres_inside(anchors, gt_boxes) & valid)     # [B, M, N]

    positive = tf.reduce_any(selected, axis=1)                  # [B, N]
    selected_iou = tf.where(selected, iou, _NEG_INF_OVERLAP)
    matched_gt = tf.argmax(selected_iou, axis=1, output_type=tf.int32)
    assigned = tf.where(positive, matched_gt + 1, 0)
    outputs = _targets_from_inds(assigned, gt_boxes, gt_classes)

    at_gt = (tf.range(num_gts)[tf.newaxis, :, tf.newaxis] ==
             matched_gt[:, tf.newaxis, :])                      # [B, M, N]
    pick = lambda x: tf.reduce_sum(  # pylint: disable=g-long-lambda
        tf.where(at_gt, x, tf.zeros_like(x)), axis=1)
    assign_metrics = tf.where(positive, pick(metric), 0.)
    max_overlaps = tf.where(positive, pick(iou), _NEG_INF_OVERLAP)
    outputs['assign_metrics'] = assign_metrics
    outputs['max_overlaps'] = max_overlaps
    outputs['alignment'] = normalized_alignment(
        assign_metrics, max_overlaps, matched_gt, positive, num_gts, eps)
    return outputs
