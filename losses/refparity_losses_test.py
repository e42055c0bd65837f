"""Parity of the detection losses with the reference (mmdet 3.3) fixture.

The fixture (`shared/refparity/unipercepnet_regnetx4gf_ca_sam/losses.npz`,
see its README, section 7) holds a two-image batch: the head's outputs in
eval and train mode, the ground truth, and what the reference's assigners,
sampler and losses made of them at epoch 0 (`e0.*`, uniform assignment) and
epoch 4 (`e4.*`, task-aligned). Its conventions are converted here: boxes
xyxy -> yxyx, `bbox_pred` stride units -> pixels (x 32), labels 0-based ->
1-based `gt_classes`, `cls_score` channels `a * K + c` -> `[N, K]` rows.

The reference's random sampler (torch's RNG) cannot be reproduced: the loss
checks take its stored sample (`labels` / `label_weights`) through the
`sample_fn` hook, and the pseudo-sampler variants run our own sampler with
`num_samples: 0`. The uniform assigner is fed the reference's candidates
(torch.topk orders exact ties its own way) and the boxes it matched (the
reference decodes the head's boxes a second time; training does not).
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from configs import losses as losses_cfg
from losses import unipercepnet_losses
from official_ext.vision.ops import anchor_sampler
from official_ext.vision.ops import assigners

_STRIDE = 32.
_NUM_CLASSES = 80
_MAX_GTS = 6
# Relative tolerance of the losses and normalised targets.
_RTOL = 1e-5


def _yxyx(boxes):
  return np.asarray(boxes)[..., [1, 0, 3, 2]]


def _scores(cls_score):
  """`[B, A*K, H, W]` -> `[B, H*W*A, K]`."""
  b = cls_score.shape[0]
  return cls_score.transpose(0, 2, 3, 1).reshape(b, -1, _NUM_CLASSES)


def _pixel_boxes(bbox_pred):
  """`[B, A*4, H, W]` xyxy stride units -> `[B, H*W*A, 4]` yxyx pixels."""
  b = bbox_pred.shape[0]
  return _yxyx(bbox_pred.transpose(0, 2, 3, 1).reshape(b, -1, 4) * _STRIDE)


def _per_gt(data, key, fill=0):
  """Stacks per-image `[..., n_i]` arrays into `[B, ..., M]`, padded."""
  arrays = [data[key.format(i)] for i in range(2)]
  out = np.full((2,) + arrays[0].shape[:-1] + (_MAX_GTS,), fill,
                arrays[0].dtype)
  for i, a in enumerate(arrays):
    out[i, ..., :a.shape[-1]] = a
  return out


def _rel(ours, ref):
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  return np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30)


@pytest.fixture(scope='module')
def fx(refparity_dir):
  with np.load(os.path.join(refparity_dir, 'losses.npz')) as stored:
    data = {k: stored[k] for k in stored.files}
  gt_boxes = np.zeros((2, _MAX_GTS, 4), np.float32)
  gt_classes = np.zeros((2, _MAX_GTS), np.int32)
  for i in range(2):
    boxes = data[f'gt_bboxes_img{i}']
    gt_boxes[i, :len(boxes)] = _yxyx(boxes)
    gt_classes[i, :len(boxes)] = data[f'gt_labels_img{i}'] + 1
  data['_gt_boxes'] = gt_boxes
  data['_gt_classes'] = gt_classes
  data['_gt_valid'] = gt_classes > 0
  data['_gt_labels'] = np.where(gt_classes > 0, gt_classes - 1, -1)
  data['_anchors'] = _yxyx(data['anchors'])
  for mode in ('', 'train.'):
    data[f'_{mode}scores'] = _scores(data[f'{mode}cls_score'])
    data[f'_{mode}boxes'] = _pixel_boxes(data[f'{mode}bbox_pred'])
  return data


def _stored_sampler(fx, prefix):
  """The reference's sample, from its stored labels and label weights."""
  labels, weights = fx[prefix + 'labels'], fx[prefix + 'label_weights']
  positive = tf.constant((labels < _NUM_CLASSES) & (weights > 0))
  negative = tf.constant((labels == _NUM_CLASSES) & (weights > 0))
  return lambda assigned: {'positive': positive, 'negative': negative}


def _outputs(fx, mode=''):
  return {'cls_scores': fx[f'_{mode}scores'],
          'box_preds': fx[f'_{mode}boxes'],
          'anchor_boxes': fx['_anchors']}


def _check_losses(losses, fx, prefix, params):
  """Our normalised losses against the reference's logged values."""
  cls_err = _rel(losses['cls_loss'], fx[prefix + 'loss_cls'])
  # The logged loss_bbox includes the GIoU loss weight (1.5).
  box_err = _rel(params.giou_weight * losses['box_loss'],
                 fx[prefix + 'loss_bbox'])
  assert cls_err < _RTOL, (prefix, cls_err)
  assert box_err < _RTOL, (prefix, box_err)


def _gt_args(fx):
  return (fx['_gt_boxes'], fx['_gt_valid'], fx['_gt_labels'])


# ------------------------------------------------------------- stage 2 (e4)


def test_e4_task_aligned_assignment(fx):
  out = assigners.task_aligned_assign(
      fx['_anchors'], fx['_boxes'], fx['_scores'], *_gt_args(fx), topk=13,
      alpha=1., beta=6.)
  np.testing.assert_array_equal(out['assigned_gt_inds'],
                                fx['e4.assigned_gt_inds'])
  np.testing.assert_array_equal(out['labels'], fx['e4.assigned_labels'])
  np.testing.assert_allclose(out['max_overlaps'], fx['e4.max_overlaps'],
                             rtol=1e-6, atol=1e-6)
  assert _rel(out['assign_metrics'], fx['e4.assign_metrics']) < _RTOL
  # The per-gt matrices the assigner ranks.
  iou = assigners.pairwise_iou(tf.constant(fx['_boxes']),
                               tf.constant(fx['_gt_boxes'])).numpy()
  for i in range(2):
    n = int(fx['_gt_valid'][i].sum())
    ref = fx[f'e4.iou_pred_gt_img{i}']
    np.testing.assert_allclose(iou[i, :n].T, ref, rtol=1e-6, atol=1e-7)


def _check_sampled_targets(targets, fx, prefix):
  """Labels (background = 80), label weights and box targets as stored."""
  np.testing.assert_array_equal(
      np.where(targets['labels'] < 0, _NUM_CLASSES, targets['labels']),
      fx[f'{prefix}labels'])
  np.testing.assert_array_equal(targets['label_weights'],
                                fx[f'{prefix}label_weights'])
  np.testing.assert_array_equal(targets['box_targets'],
                                _yxyx(fx[f'{prefix}bbox_targets']))


def test_e4_losses_with_the_stored_sample(fx):
  params = losses_cfg.Losses()
  sample_fn = _stored_sampler(fx, 'e4.')
  targets = unipercepnet_losses.aligned_targets(
      fx['_anchors'], fx['_boxes'], fx['_scores'], *_gt_args(fx), params,
      sample_fn)
  _check_sampled_targets(targets, fx, 'e4.')
  assert _rel(targets['box_weights'], fx['e4.alignment_targets']) < _RTOL
  assert _rel(tf.reduce_sum(targets['box_weights']),
              fx['e4.cls_avg_factor']) < _RTOL
  # The whole function, with the sampler replaced by the stored sample.
  losses = unipercepnet_losses.detection_losses_fn(
      _outputs(fx), fx['_gt_boxes'], fx['_gt_classes'], params,
      assigner='task_aligned', stride=_STRIDE, sample_fn=sample_fn)
  _check_losses(losses, fx, 'e4.', params)
  assert float(losses['num_positives']) == 25 + 66


def test_e4_pseudo_sampler(fx):
  params = losses_cfg.Losses()
  params.anchor_sampler.num_samples = 0
  targets = unipercepnet_losses.aligned_targets(
      fx['_anchors'], fx['_boxes'], fx['_scores'], *_gt_args(fx), params)
  np.testing.assert_array_equal(targets['label_weights'],
                                fx['e4.pseudo.label_weights'])
  losses = unipercepnet_losses.detection_losses_fn(
      _outputs(fx), fx['_gt_boxes'], fx['_gt_classes'], params,
      assigner='task_aligned')
  _check_losses(losses, fx, 'e4.pseudo.', params)


def test_e4_train_mode_outputs(fx):
  params = losses_cfg.Losses()
  sample_fn = _stored_sampler(fx, 'e4.train.')
  targets = unipercepnet_losses.aligned_targets(
      fx['_anchors'], fx['_train.boxes'], fx['_train.scores'], *_gt_args(fx),
      params, sample_fn)
  # Every positive is sampled (fewer than 128): the stored labels are the
  # assignment.
  np.testing.assert_array_equal(
      np.where(targets['labels'] < 0, _NUM_CLASSES, targets['labels']),
      fx['e4.train.labels'])
  assert _rel(targets['box_weights'], fx['e4.train.alignment_targets']) < _RTOL
  losses = unipercepnet_losses.detection_losses_fn(
      _outputs(fx, 'train.'), fx['_gt_boxes'], fx['_gt_classes'], params,
      assigner='task_aligned', sample_fn=sample_fn)
  _check_losses(losses, fx, 'e4.train.', params)


# ------------------------------------------------------------- stage 1 (e0)


def _stored_candidates(fx):
  return (_per_gt(fx, 'e0.uniform_topk_pred_img{}').astype(np.int32),
          _per_gt(fx, 'e0.uniform_topk_prior_img{}').astype(np.int32))


def _stored_uniform_boxes(fx):
  return np.stack([_yxyx(fx[f'e0.uniform_pred_boxes_img{i}'])
                   for i in range(2)])


def test_e0_uniform_assignment(fx):
  pred_candidates, prior_candidates = _stored_candidates(fx)
  boxes = _stored_uniform_boxes(fx)
  out = assigners.uniform_assign(
      fx['_anchors'], boxes, *_gt_args(fx), num_nearest=4,
      pos_ignore_iou=0.15, neg_ignore_iou=0.7,
      pred_candidates=pred_candidates, prior_candidates=prior_candidates)
  np.testing.assert_array_equal(out['assigned_gt_inds'],
                                fx['e0.assigned_gt_inds'])
  np.testing.assert_array_equal(out['labels'], fx['e0.assigned_labels'])
  # Our own candidates: the same costs rank for rank, so they differ only
  # on exact ties (README 7.2, step 3).
  ours = assigners.uniform_candidates(fx['_anchors'], boxes,
                                      fx['_gt_boxes'], num_nearest=4)
  for kind, stored in (('pred', pred_candidates),
                       ('prior', prior_candidates)):
    for i in range(2):
      n = int(fx['_gt_valid'][i].sum())
      cost = fx[f'e0.uniform_cost_{kind}_img{i}']            # [N, n]
      mine = ours[kind].numpy()[i, :, :n]
      cols = np.arange(n)[np.newaxis]
      np.testing.assert_array_equal(cost[mine, cols],
                                    cost[stored[i, :, :n], cols])


def test_e0_losses_with_the_stored_sample(fx):
  params = losses_cfg.Losses()
  pred_candidates, prior_candidates = _stored_candidates(fx)
  targets = unipercepnet_losses.uniform_targets(
      fx['_anchors'], _stored_uniform_boxes(fx), *_gt_args(fx), params,
      _stored_sampler(fx, 'e0.'), pred_candidates, prior_candidates)
  _check_sampled_targets(targets, fx, 'e0.')
  np.testing.assert_array_equal(targets['box_weights'],
                                fx['e0.alignment_targets'])
  sums = unipercepnet_losses.uniform_loss_sums(
      fx['_scores'], fx['_boxes'], targets, params, stride=_STRIDE)
  assert float(sums['norm']) == fx['e0.cls_avg_factor']
  assert _rel(sums['cls_sum'], fx['e0.loss_cls_unnormalised']) < _RTOL
  _check_losses(unipercepnet_losses.normalise_losses(sums), fx, 'e0.',
                params)


def test_e0_pseudo_sampler(fx):
  params = losses_cfg.Losses()
  params.anchor_sampler.num_samples = 0
  pred_candidates, prior_candidates = _stored_candidates(fx)
  targets = unipercepnet_losses.uniform_targets(
      fx['_anchors'], _stored_uniform_boxes(fx), *_gt_args(fx), params,
      pred_candidates=pred_candidates, prior_candidates=prior_candidates)
  np.testing.assert_array_equal(targets['label_weights'],
                                fx['e0.pseudo.label_weights'])
  sums = unipercepnet_losses.uniform_loss_sums(
      fx['_scores'], fx['_boxes'], targets, params)
  _check_losses(unipercepnet_losses.normalise_losses(sums), fx,
                'e0.pseudo.', params)


def _decode_again(pixel_boxes_yxyx, anchors_yxyx):
  """The reference's second decoding (README 7.2, step 1), in float32.

  The pixel boxes, xyxy, are read as DeltaXYWH deltas (dx, dy, dw, dh) on
  the anchors, with YOLOF's centre clamp (32 px) and upper size clamp.
  """
  deltas = _yxyx(pixel_boxes_yxyx).astype(np.float32)
  anchors = _yxyx(anchors_yxyx).astype(np.float32)
  centre = (anchors[:, :2] + anchors[:, 2:]) * np.float32(.5)
  size = anchors[:, 2:] - anchors[:, :2]
  shift = np.clip(size * deltas[..., :2], -32., 32.).astype(np.float32)
  log_size = np.minimum(deltas[..., 2:], np.float32(np.log(1000. / 16.)))
  centre = centre + shift
  size = size * np.exp(log_size)
  half = size * np.float32(.5)
  return _yxyx(np.concatenate([centre - half, centre + half], axis=-1))


def test_e0_train_mode_outputs(fx):
  params = losses_cfg.Losses()
  # The stored boxes of the eval-mode pass are the second decoding.
  np.testing.assert_allclose(
      _decode_again(fx['_boxes'], fx['_anchors']), _stored_uniform_boxes(fx),
      rtol=1e-6)
  # Train mode: the anchor candidates are the same (same anchors and gts);
  # the prediction candidates come from our top-k.
  _, prior_candidates = _stored_candidates(fx)
  sample_fn = _stored_sampler(fx, 'e0.train.')
  targets = unipercepnet_losses.uniform_targets(
      fx['_anchors'], _decode_again(fx['_train.boxes'], fx['_anchors']),
      *_gt_args(fx), params, sample_fn, prior_candidates=prior_candidates)
  np.testing.assert_array_equal(
      np.where(targets['labels'] < 0, _NUM_CLASSES, targets['labels']),
      fx['e0.train.labels'])
  np.testing.assert_array_equal(targets['label_weights'],
                                fx['e0.train.label_weights'])
  np.testing.assert_array_equal(targets['box_weights'],
                                fx['e0.train.alignment_targets'])
  sums = unipercepnet_losses.uniform_loss_sums(
      fx['_train.scores'], fx['_train.boxes'], targets, params)
  _check_losses(unipercepnet_losses.normalise_losses(sums), fx, 'e0.train.',
                params)


# ------------------------------------------------------------------ sampler


@pytest.mark.parametrize('stage,positives,negatives',
                         [('e0', [11, 20], [245, 236]),
                          ('e4', [25, 66], [231, 190])])
def test_sampler_counts(fx, stage, positives, negatives):
  assigned = fx[f'{stage}.assigned_gt_inds']
  np.testing.assert_array_equal(fx[f'{stage}.sampled_pos'].sum(1), positives)
  np.testing.assert_array_equal(fx[f'{stage}.sampled_neg'].sum(1), negatives)
  for seed in (0, 1):
    out = anchor_sampler.sample_anchors(assigned, num_samples=256,
                                        positive_fraction=0.5, seed=seed)
    pos, neg = out['positive'].numpy(), out['negative'].numpy()
    np.testing.assert_array_equal(pos.sum(1), positives)
    np.testing.assert_array_equal(neg.sum(1), negatives)
    assert np.all(assigned[pos] >= 1) and np.all(assigned[neg] == 0)
    # Fewer than 128 positives: all of them.
    np.testing.assert_array_equal(pos, fx[f'{stage}.sampled_pos'])


# --------------------------------------------------------------- full path


def test_full_path_both_stages_in_a_graph(fx):
  """`detection_losses_fn` under tf.function: the epoch is a tensor."""
  params = losses_cfg.Losses()
  sample_fn = _stored_sampler(fx, 'e4.')

  @tf.function
  def losses(epoch):
    return unipercepnet_losses.detection_losses_fn(
        _outputs(fx), fx['_gt_boxes'], fx['_gt_classes'], params,
        epoch=epoch, stride=_STRIDE, sample_fn=sample_fn)

  # Epoch 4: the default schedule's task-aligned stage.
  _check_losses(losses(tf.constant(4)), fx, 'e4.', params)
  # Stage 1 matches the head's own boxes (no second decoding): the same as
  # the pieces given those boxes.
  params.anchor_sampler.num_samples = 0
  pseudo = unipercepnet_losses.sampler_from_config(params.anchor_sampler)
  stage1 = unipercepnet_losses.detection_losses_fn(
      _outputs(fx), fx['_gt_boxes'], fx['_gt_classes'], params,
      epoch=tf.constant(0), sample_fn=pseudo)
  targets = unipercepnet_losses.uniform_targets(
      fx['_anchors'], fx['_boxes'], *_gt_args(fx), params, pseudo)
  pieces = unipercepnet_losses.normalise_losses(
      unipercepnet_losses.uniform_loss_sums(fx['_scores'], fx['_boxes'],
                                            targets, params))
  for key in ('cls_loss', 'box_loss', 'num_positives'):
    np.testing.assert_allclose(stage1[key], pieces[key], rtol=1e-6)
  assert float(stage1['num_positives']) > 0
