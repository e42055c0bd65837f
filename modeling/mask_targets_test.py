"""Tests for modeling.mask_targets."""

import numpy as np
import tensorflow as tf

from modeling import mask_targets


class SelectProposalsTest(tf.test.TestCase):

  def test_top_k_then_nms_then_padding(self):
    boxes = tf.constant([[[0., 0., 10., 10.],     # score 0.9
                          [0., 1., 10., 11.],     # IoU 0.82 with box 0: gone
                          [20., 20., 30., 30.],   # score 0.5
                          [40., 40., 50., 50.]]])  # score 0.1: not in top 3
    scores = tf.constant([[[0.1, 0.9], [0.8, 0.2], [0.5, 0.], [0.1, 0.]]])
    for nms_version in ('combined', 'static'):
      out = mask_targets.select_proposals(boxes, scores, pre_nms_top_k=3,
                                          iou_threshold=0.7, num_proposals=3,
                                          nms_version=nms_version)
      self.assertAllClose(out[0], [[0., 0., 10., 10.], [20., 20., 30., 30.],
                                   [-1., -1., -1., -1.]])

  def test_both_nms_kernels_give_the_same_proposals(self):
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 256, (4, 256, 2))
    sides = rng.uniform(4, 80, (4, 256, 2))
    boxes = np.concatenate([centres - sides / 2, centres + sides / 2], -1)
    # Boxes wholly above and left of the image (every coordinate negative)
    # stay candidates (TF's non_max_suppression_padded drops them).
    boxes[:, :8] -= 300.
    boxes = tf.constant(boxes, tf.float32)
    scores = tf.constant(rng.uniform(0, 1, (4, 256, 3)), tf.float32)
    combined, static = [
        mask_targets.select_proposals(boxes, scores, 200, 0.7, 128,
                                      nms_version=nms_version)
        for nms_version in ('combined', 'static')]
    # Overlapping boxes were suppressed, and both kept the same ones.
    self.assertLess(int(tf.reduce_sum(tf.cast(combined[..., 0] >= 0,
                                              tf.int32))), 4 * 128)
    self.assertAllEqual(combined, static)
    self.assertTrue(bool(tf.reduce_any(combined[..., 2] < 0)))
    # Compiled by XLA, the default takes the static NMS: the same again.
    compiled = tf.function(
        lambda b, s: mask_targets.select_proposals(b, s, 200, 0.7, 128),
        jit_compile=True)(boxes, scores)
    self.assertAllEqual(compiled, combined)
    with self.assertRaisesRegex(ValueError, 'nms_version'):
      mask_targets.select_proposals(boxes, scores, 200, 0.7, 128,
                                    nms_version='padded')


class MaskTargetSamplerTest(tf.test.TestCase):

  def test_targets_for_a_known_box_and_mask(self):
    gt_boxes = tf.constant([[[8., 8., 40., 40.], [-1., -1., -1., -1.]]])
    gt_classes = tf.constant([[3, -1]])
    crop = np.zeros((112, 112), np.float32)
    crop[:, :56] = 1.  # The left half of the gt box is the object.
    gt_masks = tf.constant(np.stack([crop, -np.ones_like(crop)])[None])
    # Proposal 0 covers the right 20 px of the gt box (IoU 0.625: fg);
    # proposal 1 is far away (background).
    boxes = tf.constant([[[8., 20., 40., 40.], [60., 60., 90., 90.]]])
    scores = tf.constant([[[0., 0., 0.9], [0., 0., 0.8]]])
    sampler = mask_targets.MaskTargetSampler(
        mask_size=28, pre_nms_top_k=10, num_proposals=10, num_sampled_rois=8,
        num_mask_rois=4)
    out = sampler(boxes, scores, gt_boxes, gt_classes, gt_masks)
    self.assertEqual(out['mask_targets'].shape, (1, 4, 28, 28))
    weights = out['mask_weights'][0].numpy()
    rois = out['roi_boxes'][0].numpy()
    self.assertEqual(weights.sum(), 2.)  # The gt box itself and proposal 0.
    self.assertAllEqual(out['roi_classes'][0].numpy() * (weights == 0),
                        np.zeros(4))
    targets = out['mask_targets'][0].numpy()
    for i in np.flatnonzero(weights):
      self.assertEqual(out['roi_classes'][0, i], 3)
      column_mean = targets[i].mean(axis=0)
      if np.allclose(rois[i], [8., 8., 40., 40.]):
        # Columns 0..13 of 28 are object, 14..27 background.
        self.assertAllClose(column_mean[:13], np.ones(13), atol=1e-3)
        self.assertAllClose(column_mean[15:], np.zeros(13), atol=1e-3)
      else:
        self.assertAllClose(rois[i], [8., 20., 40., 40.])
        # x in 20..24 (the first 4/20 of the RoI = 5.6 columns) is object.
        self.assertAllClose(column_mean[:5], np.ones(5), atol=1e-3)
        self.assertAllClose(column_mean[7:], np.zeros(21), atol=1e-3)

  def test_compiles_with_xla(self):
    # Deterministic sampling: every candidate fits the sample (64 slots
    # for 16 proposals and 2 gts), and foreground may fill it.
    rng = np.random.default_rng(1)
    centres = rng.uniform(8, 56, (2, 16, 2))
    boxes = tf.constant(np.concatenate([centres - 10, centres + 10], -1),
                        tf.float32)
    scores = tf.constant(rng.uniform(0, 1, (2, 16, 3)), tf.float32)
    gt_boxes = tf.constant([[[8., 8., 40., 40.], [-1., -1., -1., -1.]],
                            [[20., 10., 60., 50.], [0., 30., 30., 60.]]])
    gt_classes = tf.constant([[3, -1], [1, 2]])
    gt_masks = tf.constant(rng.uniform(0, 1, (2, 2, 112, 112)), tf.float32)
    sampler = mask_targets.MaskTargetSampler(
        mask_size=28, pre_nms_top_k=16, num_proposals=16,
        num_sampled_rois=64, foreground_fraction=1., num_mask_rois=64)
    args = (boxes, scores, gt_boxes, gt_classes, gt_masks)
    plain = tf.function(sampler)(*args)
    compiled = tf.function(sampler, jit_compile=True)(*args)
    self.assertGreater(float(tf.reduce_sum(plain['mask_weights'])), 2.)
    for key in plain:
      self.assertAllClose(compiled[key], plain[key], atol=1e-5, msg=key)
    self.assertIsNone(sampler.get_config()['nms_version'])

  def test_no_gt_gives_no_foreground(self):
    sampler = mask_targets.MaskTargetSampler(
        mask_size=28, pre_nms_top_k=10, num_proposals=10, num_sampled_rois=8,
        num_mask_rois=4)
    out = sampler(tf.constant([[[0., 0., 10., 10.]]]),
                  tf.constant([[[0.5]]]),
                  -tf.ones([1, 2, 4]), -tf.ones([1, 2], tf.int32),
                  -tf.ones([1, 2, 112, 112]))
    self.assertAllEqual(out['mask_weights'], np.zeros((1, 4)))
    self.assertAllEqual(out['roi_classes'], np.zeros((1, 4)))


if __name__ == '__main__':
  tf.test.main()
