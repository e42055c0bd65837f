"""Tests for losses.unipercepnet_losses on small synthetic batches.

Parity with the reference is in refparity_losses_test.py.
"""

import numpy as np
import tensorflow as tf

from configs import losses as losses_cfg
from losses import detection_losses
from losses import unipercepnet_losses

_NUM_CLASSES = 3


def _anchors(cells=6, stride=16., sizes=(16., 32.)):
  """`cells x cells` grid, `len(sizes)` square anchors per cell."""
  rows = []
  for y in range(cells):
    for x in range(cells):
      cy, cx = (y + .5) * stride, (x + .5) * stride
      for s in sizes:
        rows.append([cy - s / 2, cx - s / 2, cy + s / 2, cx + s / 2])
  return np.array(rows, np.float32)


def _batch(seed=0, batch_size=2, num_gts=4):
  """Head outputs (near their anchors) and gts (the last rows padded)."""
  rng = np.random.default_rng(seed)
  anchors = _anchors()
  n = len(anchors)
  jitter = rng.normal(0., 3., (batch_size, n, 4)).astype(np.float32)
  outputs = {
      'cls_scores': rng.uniform(0.01, 0.99,
                                (batch_size, n, _NUM_CLASSES)).astype(
                                    np.float32),
      'box_preds': anchors[np.newaxis] + jitter,
      'anchor_boxes': anchors,
  }
  gt_boxes = np.zeros((batch_size, num_gts, 4), np.float32)
  gt_classes = np.zeros((batch_size, num_gts), np.int32)
  for b in range(batch_size):
    for m in range(num_gts - 1 - b):
      y, x = rng.uniform(8., 60., 2)
      h, w = rng.uniform(12., 36., 2)
      gt_boxes[b, m] = [y, x, y + h, x + w]
      gt_classes[b, m] = rng.integers(1, _NUM_CLASSES + 1)
  return outputs, gt_boxes, gt_classes


# The registered assigner stages.
_STAGES = ('uniform', 'task_aligned')


def _pseudo_params():
  params = losses_cfg.Losses()
  params.anchor_sampler.num_samples = 0
  return params


class DetectionLossesTest(tf.test.TestCase):

  def test_both_stages_finite_with_gradients(self):
    outputs, gt_boxes, gt_classes = _batch()
    scores = tf.Variable(outputs['cls_scores'])
    boxes = tf.Variable(outputs['box_preds'])
    for stage in _STAGES:
      with tf.GradientTape() as tape:
        losses = unipercepnet_losses.detection_losses_fn(
            {'cls_scores': scores, 'box_preds': boxes,
             'anchor_boxes': outputs['anchor_boxes']},
            gt_boxes, gt_classes, losses_cfg.Losses(), assigner=stage)
        total = losses['cls_loss'] + losses['box_loss']
      grads = tape.gradient(total, [scores, boxes])
      self.assertGreater(float(losses['num_positives']), 0.)
      self.assertGreater(float(losses['box_loss']), 0.)
      for g in grads:
        self.assertTrue(np.all(np.isfinite(g.numpy())))
        self.assertGreater(float(tf.reduce_max(tf.abs(g))), 0.)

  def test_certain_scores_keep_gradients_finite(self):
    outputs, gt_boxes, gt_classes = _batch(seed=1)
    certain = outputs['cls_scores'].copy()
    certain[:, ::3] = 1.
    certain[:, 1::3] = 0.
    scores = tf.Variable(certain)
    for stage in _STAGES:
      with tf.GradientTape() as tape:
        losses = unipercepnet_losses.detection_losses_fn(
            dict(outputs, cls_scores=scores), gt_boxes, gt_classes,
            _pseudo_params(), assigner=stage)
      grad = tape.gradient(losses['cls_loss'], scores)
      self.assertTrue(np.isfinite(float(losses['cls_loss'])))
      self.assertTrue(np.all(np.isfinite(grad.numpy())))

  def test_sampler_weights_num_samples_anchors_per_image(self):
    outputs, gt_boxes, gt_classes = _batch(seed=2)
    params = losses_cfg.Losses()
    params.anchor_sampler.num_samples = 20
    params.anchor_sampler.positive_fraction = 0.25
    valid = gt_classes > 0
    labels = np.where(valid, gt_classes - 1, -1)
    for targets in (
        unipercepnet_losses.uniform_targets(
            outputs['anchor_boxes'], outputs['box_preds'], gt_boxes, valid,
            labels, params),
        unipercepnet_losses.aligned_targets(
            outputs['anchor_boxes'], outputs['box_preds'],
            outputs['cls_scores'], gt_boxes, valid, labels, params)):
      weights = targets['label_weights'].numpy()
      positive = targets['sampled_positive'].numpy()
      assigned = targets['assigned_gt_inds'].numpy()
      self.assertAllEqual(weights.sum(1), [20, 20])
      self.assertTrue(np.all(positive.sum(1) <= 5))
      self.assertTrue(np.all(assigned[positive] >= 1))
      self.assertTrue(np.all(assigned[(weights > 0) & ~positive] == 0))
      # Labels and box targets only at sampled positives.
      self.assertAllEqual(targets['labels'].numpy() >= 0, positive)
      self.assertAllEqual(targets['box_weights'].numpy() > 0, positive)

  def test_stage_normalisers(self):
    outputs, gt_boxes, gt_classes = _batch(seed=3)
    params = _pseudo_params()
    valid = gt_classes > 0
    labels = np.where(valid, gt_classes - 1, -1)
    uniform = unipercepnet_losses.uniform_targets(
        outputs['anchor_boxes'], outputs['box_preds'], gt_boxes, valid,
        labels, params)
    sums = unipercepnet_losses.uniform_loss_sums(
        outputs['cls_scores'], outputs['box_preds'], uniform, params)
    self.assertEqual(float(sums['norm']), float(sums['num_positives']))
    aligned = unipercepnet_losses.aligned_targets(
        outputs['anchor_boxes'], outputs['box_preds'], outputs['cls_scores'],
        gt_boxes, valid, labels, params)
    sums = unipercepnet_losses.aligned_loss_sums(
        outputs['cls_scores'], outputs['box_preds'], aligned, params)
    self.assertAllClose(sums['norm'],
                        tf.reduce_sum(aligned['box_weights']))
    self.assertLess(float(sums['norm']), float(sums['num_positives']))
    # GIoU is taken on boxes / stride: the same up to its 1e-6 clamps.
    for stride in (1., 8.):
      other = unipercepnet_losses.aligned_loss_sums(
          outputs['cls_scores'], outputs['box_preds'], aligned, params,
          stride=stride)
      self.assertAllClose(other['box_sum'], sums['box_sum'], rtol=1e-5)
      box_preds = outputs['box_preds'] / 32.
      expected = detection_losses.giou_loss(
          box_preds, np.where(aligned['sampled_positive'].numpy()[..., None],
                              aligned['box_targets'].numpy() / 32.,
                              box_preds),
          aligned['box_weights'])
      self.assertAllClose(sums['box_sum'], expected, rtol=1e-6)

  def test_no_gts_gives_background_only(self):
    outputs, gt_boxes, gt_classes = _batch(seed=4)
    gt_classes = np.zeros_like(gt_classes)
    for stage in _STAGES:
      losses = unipercepnet_losses.detection_losses_fn(
          outputs, gt_boxes, gt_classes, _pseudo_params(), assigner=stage)
      self.assertEqual(float(losses['num_positives']), 0.)
      self.assertEqual(float(losses['box_loss']), 0.)
      self.assertGreater(float(losses['cls_loss']), 0.)

  def test_padded_gts_change_nothing(self):
    outputs, gt_boxes, gt_classes = _batch(seed=5, num_gts=4)
    more_boxes = np.concatenate(
        [gt_boxes, np.tile([[[10., 10., 40., 40.]]], [2, 3, 1])], axis=1)
    more_classes = np.concatenate(
        [gt_classes, np.full((2, 3), -1, np.int32)], axis=1)
    for stage in _STAGES:
      a = unipercepnet_losses.detection_losses_fn(
          outputs, gt_boxes, gt_classes, _pseudo_params(), assigner=stage)
      b = unipercepnet_losses.detection_losses_fn(
          outputs, more_boxes, more_classes, _pseudo_params(),
          assigner=stage)
      for key in a:
        self.assertAllClose(a[key], b[key], rtol=1e-6)

  def test_sample_fn_hook_replaces_the_sampler(self):
    outputs, gt_boxes, gt_classes = _batch(seed=6)
    calls = []

    def only_positives(assigned):
      calls.append(assigned.shape)
      return {'positive': assigned > 0,
              'negative': tf.zeros_like(assigned, tf.bool)}

    params = losses_cfg.Losses()
    valid = gt_classes > 0
    labels = np.where(valid, gt_classes - 1, -1)
    targets = unipercepnet_losses.aligned_targets(
        outputs['anchor_boxes'], outputs['box_preds'], outputs['cls_scores'],
        gt_boxes, valid, labels, params, sample_fn=only_positives)
    self.assertEqual(calls, [(2, len(outputs['anchor_boxes']))])
    self.assertAllEqual(targets['label_weights'].numpy() > 0,
                        targets['assigned_gt_inds'].numpy() > 0)

  def test_xla_matches_eager(self):
    outputs, gt_boxes, gt_classes = _batch(seed=7)
    params = _pseudo_params()

    def fn(epoch):
      return unipercepnet_losses.detection_losses_fn(
          outputs, gt_boxes, gt_classes, params, epoch=epoch)

    compiled = tf.function(fn, jit_compile=True)
    for epoch in (0, 4):  # The default schedule's two stages.
      eager = fn(tf.constant(epoch))
      xla = compiled(tf.constant(epoch))
      for key in eager:
        self.assertAllClose(xla[key], eager[key], rtol=1e-5)
    # The random sampler compiles too.
    sampled = tf.function(
        lambda e: unipercepnet_losses.detection_losses_fn(
            outputs, gt_boxes, gt_classes, losses_cfg.Losses(), epoch=e),
        jit_compile=True)(tf.constant(4))
    self.assertTrue(np.isfinite(float(sampled['cls_loss'])))


class MaskLossTest(tf.test.TestCase):

  def test_mean_over_foreground_rois(self):
    logits = tf.zeros([1, 3, 4, 4])
    targets = tf.ones([1, 3, 4, 4])
    loss = unipercepnet_losses.mask_loss_fn(logits, targets,
                                            tf.constant([[1., 1., 0.]]))
    self.assertAllClose(loss, np.log(2.), rtol=1e-6)


if __name__ == '__main__':
  tf.test.main()
