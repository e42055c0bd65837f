"""Batched label assigners: YOLOF's uniform matching and TOOD's task alignment.

Both assigners work on whole batches with static shapes: every step is a
dense op over `[B, M, N]` (gts x anchors) tensors, so they run eagerly, under
`tf.function` and under XLA (`jit_compile=True`).

Conventions shared by both functions:
  * boxes are `[ymin, xmin, ymax, xmax]` in pixels;
  * `anchors` is `[N, 4]` (shared by the batch) or `[B, N, 4]`;
  * `gt_boxes` is `[B, M, 4]`, `gt_classes` `[B, M]` int and `gt_valid`
    `[B, M]` bool; rows with `gt_valid == False` are padding and never match
    anything, whatever their box or class;
  * predictions pass through `tf.stop_gradient`: the outputs are targets;
  * the output is a dict with
      'matched_gt': `[B, N]` int32, index in `[0, M)` of the assigned gt, -1
        for negatives and ignored anchors;
      'labels': `[B, N]` int32, class of the assigned gt, -1 otherwise;
      'positive': `[B, N]` bool;
      'ignored': `[B, N]` bool, never True where 'positive' is;
      'box_targets': `[B, N, 4]`, the assigned gt box, zeros elsewhere;
    plus 'alignment' `[B, N]` for `task_aligned_assign`.
"""

from typing import Dict

import tensorflow as tf

from official.vision.ops import box_ops

# Distance given to padded gts so that they never rank among the nearest.
_LARGE_DISTANCE = 1e8


def _broadcast_anchors(anchors: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
  """Returns `anchors` ([N, 4] or [B, N, 4]) broadcast to `like` [B, N, 4]."""
  anchors = tf.cast(anchors, like.dtype)
  if anchors.shape.rank == 2:
    anchors = anchors[tf.newaxis]
  return tf.broadcast_to(anchors, tf.shape(like))


def _iou_gt_major(boxes: tf.Tensor, gt_boxes: tf.Tensor,
                  gt_valid: tf.Tensor) -> tf.Tensor:
  """IoU laid out gt-major, with padded gts at zero.

  `box_ops.bbox_overlap` returns -1 for gts (and boxes) whose coordinates
  are all negative; those are clamped to 0 (no overlap), and padded gts are
  zeroed through `gt_valid` whatever their coordinates.

  Args:
    boxes: `[B, N, 4]`.
    gt_boxes: `[B, M, 4]`.
    gt_valid: `[B, M]` bool.

  Returns:
    `[B, M, N]` IoU in `[0, 1]`.
  """
  iou = tf.transpose(box_ops.bbox_overlap(boxes, gt_boxes), [0, 2, 1])
  iou = tf.maximum(iou, 0.)
  return tf.where(gt_valid[:, :, tf.newaxis], iou, tf.zeros_like(iou))


def _l1_distance(boxes: tf.Tensor, gt_boxes: tf.Tensor) -> tf.Tensor:
  """L1 distance of (cy, cx, h, w): `[B, N, 4]`, `[B, M, 4]` -> `[B, M, N]`."""
  a = box_ops.yxyx_to_cycxhw(boxes)[:, tf.newaxis, :, :]
  g = box_ops.yxyx_to_cycxhw(gt_boxes)[:, :, tf.newaxis, :]
  return tf.reduce_sum(tf.abs(a - g), axis=-1)


def _topk_mask(scores: tf.Tensor, k: int) -> tf.Tensor:
  """Marks, along the last axis, the `k` largest entries (ties: lower index).

  Args:
    scores: `[B, M, N]`.
    k: number of entries to keep, `1 <= k <= N`.

  Returns:
    `[B, M, N]` bool, exactly `k` True per row.
  """
  _, indices = tf.math.top_k(scores, k=k, sorted=False)
  one_hot = tf.one_hot(indices, tf.shape(scores)[-1], dtype=tf.int32)
  return tf.reduce_max(one_hot, axis=-2) > 0


def _num_to_keep(k: int, boxes: tf.Tensor):
  """`min(k, N)`, static when N is."""
  n = boxes.shape[1]
  if n is not None:
    return min(k, n)
  return tf.minimum(k, tf.shape(boxes)[1])


def _gather_targets(matched_gt: tf.Tensor, positive: tf.Tensor,
                    gt_boxes: tf.Tensor,
                    gt_classes: tf.Tensor) -> Dict[str, tf.Tensor]:
  """Builds 'matched_gt', 'labels' and 'box_targets' from an assignment.

  Args:
    matched_gt: `[B, N]` int32 gt index, any value where not `positive`.
    positive: `[B, N]` bool.
    gt_boxes: `[B, M, 4]`.
    gt_classes: `[B, M]`.

  Returns:
    Dict with 'matched_gt' `[B, N]`, 'labels' `[B, N]` and 'box_targets'
    `[B, N, 4]`, set to -1 / -1 / 0 where not positive.
  """
  safe = tf.where(positive, matched_gt, tf.zeros_like(matched_gt))
  labels = tf.gather(tf.cast(gt_classes, tf.int32), safe, batch_dims=1)
  boxes = tf.gather(gt_boxes, safe, batch_dims=1)
  minus_one = -tf.ones_like(matched_gt)
  return {
      'matched_gt': tf.where(positive, matched_gt, minus_one),
      'labels': tf.where(positive, labels, minus_one),
      'box_targets': tf.where(positive[..., tf.newaxis], boxes,
                              tf.zeros_like(boxes)),
  }


def uniform_assign(anchors: tf.Tensor,
                   pred_boxes: tf.Tensor,
                   gt_boxes: tf.Tensor,
                   gt_valid: tf.Tensor,
                   gt_classes: tf.Tensor,
                   num_nearest: int = 4,
                   pos_ignore_iou: float = 0.15,
                   neg_ignore_iou: float = 0.7) -> Dict[str, tf.Tensor]:
  """YOLOF's uniform matching.

  For each valid gt, the `num_nearest` anchors and the `num_nearest`
  predicted boxes nearest to it are its candidates; distance is the L1
  distance between the (cx, cy, w, h) of the box and of the gt. As in mmdet's
  `UniformAssigner`, a candidate of either kind is kept only when its *anchor*
  has an IoU of at least `pos_ignore_iou` with that gt; a dropped candidate is
  ignored (neither positive nor negative) unless another gt makes it positive.

  Conflicts: an anchor that is a kept candidate of several gts, or of the
  same gt both as a nearest anchor and as a nearest prediction, is assigned
  to the gt of smallest candidate distance (ties: lowest gt index). So every
  anchor with at least one kept candidacy is positive.

  Anchors that are not positive and whose predicted box has an IoU greater
  than `neg_ignore_iou` with any valid gt are ignored as well; the rest are
  negatives.

  Args:
    anchors: `[N, 4]` or `[B, N, 4]`.
    pred_boxes: `[B, N, 4]` decoded predictions, one per anchor.
    gt_boxes: `[B, M, 4]`.
    gt_valid: `[B, M]` bool, False for padding rows.
    gt_classes: `[B, M]` int class of each gt.
    num_nearest: candidates per gt from anchors and from predictions each
      (capped at N).
    pos_ignore_iou: candidates whose anchor has an IoU below this with the gt
      are dropped (and ignored).
    neg_ignore_iou: non-positive anchors whose predicted box has an IoU above
      this with some gt are ignored.

  Returns:
    Dict with 'matched_gt' `[B, N]` int32, 'labels' `[B, N]` int32,
    'positive' `[B, N]` bool, 'ignored' `[B, N]` bool and 'box_targets'
    `[B, N, 4]` (see the module docstring).
  """
  with tf.name_scope('uniform_assign'):
    pred_boxes = tf.stop_gradient(tf.convert_to_tensor(pred_boxes))
    dtype = pred_boxes.dtype
    gt_boxes = tf.cast(gt_boxes, dtype)
    gt_valid = tf.cast(gt_valid, tf.bool)
    anchors = _broadcast_anchors(anchors, pred_boxes)
    k = _num_to_keep(num_nearest, pred_boxes)
    valid = gt_valid[:, :, tf.newaxis]                          # [B, M, 1]
    inf = tf.constant(float('inf'), dtype)

    anchor_iou = _iou_gt_major(anchors, gt_boxes, gt_valid)     # [B, M, N]
    iou_ok = anchor_iou >= pos_ignore_iou

    def candidate_costs(boxes):
      """[B, M, N] distance of the nearest candidates, +inf elsewhere."""
      dist = _l1_distance(boxes, gt_boxes)
      dist = tf.where(valid, dist, _LARGE_DISTANCE * tf.ones_like(dist))
      nearest = _topk_mask(-dist, k) & valid
      return tf.where(nearest, dist, inf * tf.ones_like(dist))

    candidate = tf.minimum(candidate_costs(anchors),
                           candidate_costs(pred_boxes))         # [B, M, N]
    is_candidate = candidate < inf
    cost = tf.where(iou_ok, candidate, inf * tf.ones_like(candidate))

    positive = tf.reduce_min(cost, axis=1) < inf                # [B, N]
    matched_gt = tf.argmin(cost, axis=1, output_type=tf.int32)  # [B, N]
    outputs = _gather_targets(matched_gt, positive, gt_boxes, gt_classes)

    pred_iou = _iou_gt_major(pred_boxes, gt_boxes, gt_valid)
    max_pred_iou = tf.reduce_max(pred_iou, axis=1)              # [B, N]
    dropped = tf.reduce_any(is_candidate & ~iou_ok, axis=1)     # [B, N]
    outputs['positive'] = positive
    outputs['ignored'] = (~positive) & (dropped |
                                        (max_pred_iou > neg_ignore_iou))
    return outputs


def _centres_inside(anchors: tf.Tensor, gt_boxes: tf.Tensor) -> tf.Tensor:
  """Whether anchor centres lie strictly inside gt boxes.

  Args:
    anchors: `[B, N, 4]`.
    gt_boxes: `[B, M, 4]`.

  Returns:
    `[B, M, N]` bool.
  """
  cy = ((anchors[..., 0] + anchors[..., 2]) / 2.)[:, tf.newaxis, :]
  cx = ((anchors[..., 1] + anchors[..., 3]) / 2.)[:, tf.newaxis, :]
  ymin, xmin, ymax, xmax = [g[:, :, tf.newaxis]
                            for g in tf.unstack(gt_boxes, axis=-1)]
  return (cy > ymin) & (cy < ymax) & (cx > xmin) & (cx < xmax)


def task_aligned_assign(anchors: tf.Tensor,
                        pred_boxes: tf.Tensor,
                        pred_scores: tf.Tensor,
                        gt_boxes: tf.Tensor,
                        gt_valid: tf.Tensor,
                        gt_classes: tf.Tensor,
                        topk: int = 13,
                        alpha: float = 1.0,
                        beta: float = 6.0,
                        eps: float = 1e-9) -> Dict[str, tf.Tensor]:
  """TOOD's task-aligned assignment.

  For gt g and anchor i: `s = pred_scores[i, class(g)]`,
  `u = IoU(pred_boxes[i], g)` and the alignment metric `t = s**alpha *
  u**beta`. Each valid gt takes the `topk` anchors of largest `t` among all
  anchors (capped at N; ties: lower anchor index) and keeps those whose
  anchor centre lies strictly inside the gt box. An anchor kept by several
  gts goes to the one with the largest `u` (ties: lowest gt index). Kept
  anchors are the positives; nothing is ignored.

  The alignment target of a positive i assigned to g is
  `t_i / (max_t(g) + eps) * max_u(g)`, the maxima taken over the positives
  assigned to g; so the best aligned positive of g gets (up to eps) the best
  IoU among them.

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
    eps: added to the per-gt metric maximum before dividing.

  Returns:
    Dict with 'matched_gt' `[B, N]` int32, 'labels' `[B, N]` int32,
    'positive' `[B, N]` bool, 'ignored' `[B, N]` bool (all False),
    'box_targets' `[B, N, 4]` and 'alignment' `[B, N]` (see the module
    docstring).
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
    valid = gt_valid[:, :, tf.newaxis]                          # [B, M, 1]

    iou = _iou_gt_major(pred_boxes, gt_boxes, gt_valid)         # [B, M, N]
    classes = tf.clip_by_value(gt_classes, 0, num_classes - 1)
    scores = tf.gather(pred_scores, classes, axis=2, batch_dims=1)
    scores = tf.transpose(scores, [0, 2, 1])                    # [B, M, N]
    metric = tf.pow(scores, alpha) * tf.pow(iou, beta)
    metric = tf.where(valid, metric, tf.zeros_like(metric))

    k = _num_to_keep(topk, pred_boxes)
    selected = (_topk_mask(metric, k) & _centres_inside(anchors, gt_boxes)
                & valid)                                        # [B, M, N]

    positive = tf.reduce_any(selected, axis=1)                  # [B, N]
    selected_iou = tf.where(selected, iou, -tf.ones_like(iou))
    matched_gt = tf.argmax(selected_iou, axis=1, output_type=tf.int32)
    outputs = _gather_targets(matched_gt, positive, gt_boxes, gt_classes)

    num_gts = tf.shape(gt_boxes)[1]
    assigned = (tf.transpose(tf.one_hot(matched_gt, num_gts, dtype=tf.int32),
                             [0, 2, 1]) > 0) & positive[:, tf.newaxis, :]
    zeros = tf.zeros_like(metric)
    max_metric = tf.reduce_max(tf.where(assigned, metric, zeros), axis=2,
                               keepdims=True)                   # [B, M, 1]
    max_iou = tf.reduce_max(tf.where(assigned, iou, zeros), axis=2,
                            keepdims=True)                      # [B, M, 1]
    normalised = metric / (max_metric + eps) * max_iou
    outputs['alignment'] = tf.reduce_sum(
        tf.where(assigned, normalised, zeros), axis=1)          # [B, N]
    outputs['positive'] = positive
    outputs['ignored'] = tf.zeros_like(positive)
    return outputs
