"""Tests for official_ext.vision.ops.assigners."""

import numpy as np
import tensorflow as tf

from official_ext.vision.ops import assigners


def _row_anchors():
  """Six 32x32 anchors in a row: x centres 16, 48, ..., 176; y centre 16."""
  return np.array([[0., 32. * i, 32., 32. * i + 32.] for i in range(6)],
                  np.float32)


def _grid_anchors():
  """4x4 grid of 16x16 anchors; index r * 4 + c, centre (8+16r, 8+16c)."""
  return np.array([[16. * r, 16. * c, 16. * r + 16., 16. * c + 16.]
                   for r in range(4) for c in range(4)], np.float32)


def _batch(*arrays):
  return [np.asarray(a)[np.newaxis] for a in arrays]


class UniformAssignTest(tf.test.TestCase):

  def _assign(self, anchors, pred_boxes, gt_boxes, gt_valid, gt_classes,
              **kwargs):
    out = assigners.uniform_assign(
        tf.constant(anchors, tf.float32), tf.constant(pred_boxes, tf.float32),
        tf.constant(gt_boxes, tf.float32), tf.constant(gt_valid, tf.bool),
        tf.constant(gt_classes, tf.int32), **kwargs)
    out = {k: v.numpy() for k, v in out.items()}
    self.assertFalse(np.any(out['positive'] & out['ignored']))
    return out

  def test_prediction_candidate_needs_its_anchor_to_overlap(self):
    anchors = _row_anchors()
    # Every prediction is its anchor shifted right by 30: prediction 1
    # (cx 78) is the nearest prediction to the gt (cx 82), anchor 2 (cx 80)
    # the nearest anchor. Anchor 1 (x 32..64) does not overlap the gt, so
    # the candidacy of prediction 1 is dropped and anchor 1 ignored, although
    # the predicted box itself overlaps the gt (IoU 0.78).
    preds = anchors + np.array([0., 30., 0., 30.], np.float32)
    gt = [[0., 66., 32., 98.]]
    out = self._assign(anchors, *_batch(preds, gt, [True], [3]),
                       num_nearest=1)
    self.assertAllEqual(out['positive'][0], [0, 0, 1, 0, 0, 0])
    self.assertAllEqual(out['ignored'][0], [0, 1, 0, 0, 0, 0])
    self.assertAllEqual(out['matched_gt'][0], [-1, -1, 0, -1, -1, -1])
    self.assertAllEqual(out['labels'][0], [-1, -1, 3, -1, -1, -1])
    expected_boxes = np.zeros((6, 4), np.float32)
    expected_boxes[2] = gt[0]
    self.assertAllEqual(out['box_targets'][0], expected_boxes)

  def test_prediction_candidate_and_high_iou_ignore(self):
    anchors = _row_anchors()
    # The gt (cx 96) straddles anchors 2 and 3 (anchor IoU 1/3 each).
    gt = [[0., 80., 32., 112.]]
    preds = anchors.copy()
    preds[3] = [0., 82., 32., 114.]   # cx 98: the nearest prediction.
    preds[4] = [0., 84., 32., 116.]   # cx 100: IoU 0.78, not a candidate.
    out = self._assign(anchors, *_batch(preds, gt, [True], [1]),
                       num_nearest=1)
    # Anchor 2 is the nearest anchor (tied with 3: lower index), anchor 3
    # comes in through its prediction; its prediction's IoU 0.88 > 0.7 does
    # not make a positive ignored. Anchor 4 is not positive and its
    # prediction overlaps the gt by more than 0.7: ignored.
    self.assertAllEqual(out['positive'][0], [0, 0, 1, 1, 0, 0])
    self.assertAllEqual(out['ignored'][0], [0, 0, 0, 0, 1, 0])
    self.assertAllEqual(out['matched_gt'][0], [-1, -1, 0, 0, -1, -1])
    self.assertAllEqual(out['labels'][0], [-1, -1, 1, 1, -1, -1])
    self.assertAllEqual(out['box_targets'][0, 4], [0., 0., 0., 0.])

  def test_far_gt_candidates_are_ignored(self):
    anchors = _row_anchors()
    gt = [[200., 400., 232., 432.]]
    out = self._assign(anchors, *_batch(anchors, gt, [True], [0]),
                       num_nearest=4)
    # Its 4 nearest anchors (and predictions) 2..5 have IoU 0: ignored.
    self.assertAllEqual(out['positive'][0], [0] * 6)
    self.assertAllEqual(out['ignored'][0], [0, 0, 1, 1, 1, 1])
    self.assertAllEqual(out['matched_gt'][0], [-1] * 6)
    self.assertAllEqual(out['labels'][0], [-1] * 6)
    self.assertAllEqual(out['box_targets'], np.zeros((1, 6, 4)))

  def test_low_iou_candidates_are_ignored(self):
    anchors = _row_anchors()
    preds = anchors.copy()
    preds[3] = [10., 74., 22., 86.]  # 12x12 on the gt centre: IoU 64/144.
    gt = [[12., 76., 20., 84.]]      # 8x8 inside anchor 2: IoU 64/1024.
    out = self._assign(anchors, *_batch(preds, gt, [True], [4]),
                       num_nearest=1)
    # Anchor 2's IoU 0.0625 and anchor 3's IoU 0 are below 0.15.
    self.assertAllEqual(out['positive'][0], [0] * 6)
    self.assertAllEqual(out['ignored'][0], [0, 0, 1, 1, 0, 0])
    self.assertAllEqual(out['matched_gt'][0], [-1] * 6)

    out = self._assign(anchors, *_batch(preds, gt, [True], [4]),
                       num_nearest=1, pos_ignore_iou=0.05)
    self.assertAllEqual(out['positive'][0], [0, 0, 1, 0, 0, 0])
    self.assertAllEqual(out['ignored'][0], [0, 0, 0, 1, 0, 0])

  def test_shared_candidate_goes_to_the_last_write(self):
    anchors = _row_anchors()
    # Predictions far below, but a prediction candidacy is judged by its
    # ANCHOR's IoU: anchor 2 is the nearest prediction and the nearest anchor
    # of both gts. As in mmdet, the writes go [pred rank 0 of gts 0, 1; prior
    # rank 0 of gts 0, 1] and the last one (gt 1) wins, however near gt 0 is.
    preds = anchors + np.array([200., 0., 200., 0.], np.float32)
    gt_near = [0., 66., 32., 98.]  # Distance 2 to anchor 2.
    gt_far = [0., 60., 32., 92.]   # Distance 4 to anchor 2.
    for gts, classes in [([gt_near, gt_far], [1, 2]),
                         ([gt_far, gt_near], [2, 1])]:
      out = self._assign(anchors, *_batch(preds, gts, [True, True], classes),
                         num_nearest=1)
      self.assertAllEqual(out['positive'][0], [0, 0, 1, 0, 0, 0])
      self.assertEqual(out['matched_gt'][0, 2], 1)
      self.assertEqual(out['assigned_gt_inds'][0, 2], 2)
      self.assertEqual(out['labels'][0, 2], classes[1])
      self.assertAllEqual(out['box_targets'][0, 2], gts[1])

  def test_later_low_iou_write_overrides_a_positive(self):
    anchors = _row_anchors()
    preds = anchors + np.array([200., 0., 200., 0.], np.float32)
    # Gt 0 fits anchor 2 (IoU 1); gt 1 (8x8 inside anchor 2, IoU 1/16 <
    # 0.15) is written later: its -1 overwrites gt 0's positive.
    gts = [[0., 64., 32., 96.], [12., 76., 20., 84.]]
    out = self._assign(anchors, *_batch(preds, gts, [True, True], [1, 2]),
                       num_nearest=1)
    self.assertAllEqual(out['assigned_gt_inds'][0], [0, 0, -1, 0, 0, 0])
    self.assertAllEqual(out['ignored'][0], [0, 0, 1, 0, 0, 0])
    # Without the later gt, anchor 2 is gt 0's.
    out = self._assign(anchors, *_batch(preds, gts[:1], [True], [1]),
                       num_nearest=1)
    self.assertAllEqual(out['assigned_gt_inds'][0], [0, 0, 1, 0, 0, 0])
    # A padded gt writes nothing.
    out = self._assign(anchors, *_batch(preds, gts, [True, False], [1, -1]),
                       num_nearest=1)
    self.assertAllEqual(out['assigned_gt_inds'][0], [0, 0, 1, 0, 0, 0])

  def test_write_order_prediction_before_anchor_per_rank(self):
    anchors = _row_anchors()
    gts = [[0., 64., 32., 96.], [0., 96., 32., 128.]]  # Anchors 2 and 3.
    # Prediction 2 moved onto gt 1 (IoU of anchor 2 with gt 1: 0): gt 1's
    # nearest prediction is anchor 2, written -1 at rank 0 before gt 0's
    # nearest anchor (anchor 2, IoU 1) writes 1.
    preds = anchors + np.array([200., 0., 200., 0.], np.float32)
    preds[2] = gts[1]
    out = self._assign(anchors, *_batch(preds, gts, [True, True], [5, 6]),
                       num_nearest=1)
    self.assertAllEqual(out['assigned_gt_inds'][0], [0, 0, 1, 2, 0, 0])
    # With 2 of each kind the writes are, rank 0: pred g0 -> a2 (1), pred
    # g1 -> a2 (-1), prior g0 -> a2 (1), prior g1 -> a3 (2); rank 1: pred g0
    # -> a1 (-1; a1/a3 tie, lower index), pred g1 -> a3 (2), prior g0 -> a1
    # (-1), prior g1 -> a2 (-1; a2/a4 tie, lower index). So gt
    # 0's perfect anchor 2 ends ignored by gt 1's last rank-1 write.
    out = self._assign(anchors, *_batch(preds, gts, [True, True], [5, 6]),
                       num_nearest=2)
    self.assertAllEqual(out['assigned_gt_inds'][0], [0, -1, -1, 2, 0, 0])
    self.assertAllEqual(out['labels'][0], [-1, -1, -1, 6, -1, -1])

  def test_given_candidates_replace_the_nearest(self):
    anchors = _row_anchors()
    gts = [[0., 64., 32., 96.]]
    preds = anchors + np.array([200., 0., 200., 0.], np.float32)
    # Anchors 3 (IoU 0 with the gt: -1) and 2 (IoU 1: positive).
    out = assigners.uniform_assign(
        anchors, *_batch(preds, gts, [True], [4]),
        pred_candidates=tf.constant([[[3]]]),
        prior_candidates=tf.constant([[[2]]]))
    self.assertAllEqual(out['assigned_gt_inds'][0], [0, 0, 1, -1, 0, 0])
    candidates = assigners.uniform_candidates(
        anchors, *_batch(preds, gts), num_nearest=3)
    self.assertAllEqual(candidates['prior'][0, :, 0], [2, 1, 3])
    # Predictions 200 px below: the same order (ties: lower index).
    self.assertAllEqual(candidates['pred'][0, :, 0], [2, 1, 3])

  def test_padded_gts_never_match(self):
    anchors = _row_anchors()
    preds = anchors + np.array([0., 30., 0., 30.], np.float32)
    preds[5] = anchors[5]
    gts = [[0., 66., 32., 98.],
           [0., 160., 32., 192.],   # Would claim anchor 5 if valid.
           [-1., -1., -1., -1.]]
    out = self._assign(anchors, *_batch(preds, gts, [True, False, False],
                                        [3, 7, -1]), num_nearest=1)
    # Prediction 1's anchor does not overlap gt 0: ignored, not positive.
    self.assertAllEqual(out['positive'][0], [0, 0, 1, 0, 0, 0])
    self.assertAllEqual(out['ignored'][0], [0, 1, 0, 0, 0, 0])
    self.assertAllEqual(out['matched_gt'][0], [-1, -1, 0, -1, -1, -1])
    self.assertAllEqual(out['labels'][0], [-1, -1, 3, -1, -1, -1])

  def test_batch_with_different_gts(self):
    anchors = _row_anchors()
    preds = np.stack([anchors, anchors])
    gts = [[[0., 66., 32., 98.], [0., 0., 0., 0.]],
           [[-1., -1., -1., -1.], [0., 130., 32., 162.]]]
    valid = [[True, False], [False, True]]
    classes = [[3, -1], [-1, 5]]
    out = self._assign(anchors, preds, gts, valid, classes, num_nearest=1)
    self.assertAllEqual(out['positive'],
                        [[0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 0]])
    self.assertAllEqual(out['matched_gt'],
                        [[-1, -1, 0, -1, -1, -1], [-1, -1, -1, -1, 1, -1]])
    self.assertAllEqual(out['labels'],
                        [[-1, -1, 3, -1, -1, -1], [-1, -1, -1, -1, 5, -1]])
    self.assertAllEqual(out['box_targets'][1, 4], gts[1][1])
    # Per-image anchors give the same result.
    out_batched = self._assign(np.stack([anchors, anchors]), preds, gts,
                               valid, classes, num_nearest=1)
    for key in out:
      self.assertAllEqual(out[key], out_batched[key])


class TaskAlignedAssignTest(tf.test.TestCase):

  def _scene(self):
    """One gt [0, 0, 32, 32] (class 2) over anchor centres 0, 1, 4, 5."""
    anchors = _grid_anchors()
    preds = anchors.copy()
    preds[0] = [0., 0., 32., 28.]  # IoU 0.875.
    preds[1] = [0., 0., 32., 16.]  # IoU 0.5.
    preds[4] = [0., 0., 32., 24.]  # IoU 0.75.
    preds[5] = [0., 0., 16., 16.]  # IoU 0.25.
    scores = np.zeros((16, 3), np.float32)
    scores[:, 0] = 1.  # Another class: must not be used.
    scores[[0, 1, 4, 5], 2] = [0.1, 0.9, 0.5, 0.9]
    # t = s * u**6: 0.0449, 0.0141, 0.0890, 0.00022; 0 elsewhere (IoU 0).
    metric = {0: 0.1 * 0.875**6, 1: 0.9 * 0.5**6, 4: 0.5 * 0.75**6,
              5: 0.9 * 0.25**6}
    return anchors, preds, scores, metric

  def _assign(self, anchors, pred_boxes, pred_scores, gt_boxes, gt_valid,
              gt_classes, **kwargs):
    out = assigners.task_aligned_assign(
        tf.constant(anchors, tf.float32), tf.constant(pred_boxes, tf.float32),
        tf.constant(pred_scores, tf.float32),
        tf.constant(gt_boxes, tf.float32), tf.constant(gt_valid, tf.bool),
        tf.constant(gt_classes, tf.int32), **kwargs)
    out = {k: v.numpy() for k, v in out.items()}
    self.assertFalse(np.any(out['ignored']))
    return out

  def _expected_positive(self, indices, n=16):
    positive = np.zeros(n, bool)
    positive[list(indices)] = True
    return positive

  def test_topk_by_alignment_metric(self):
    anchors, preds, scores, metric = self._scene()
    gt = [[0., 0., 32., 32.]]
    out = self._assign(anchors, *_batch(preds, scores, gt, [True], [2]),
                       topk=2)
    self.assertAllEqual(out['positive'][0], self._expected_positive([0, 4]))
    self.assertAllEqual(out['matched_gt'][0],
                        np.where(out['positive'][0], 0, -1))
    self.assertAllEqual(out['labels'][0], np.where(out['positive'][0], 2, -1))
    expected_boxes = np.zeros((16, 4), np.float32)
    expected_boxes[[0, 4]] = gt[0]
    self.assertAllEqual(out['box_targets'][0], expected_boxes)
    # max_t is anchor 4's metric, max_u anchor 0's IoU 0.875.
    expected = np.zeros(16)
    expected[4] = 0.875
    expected[0] = metric[0] / metric[4] * 0.875
    self.assertAllClose(out['alignment'][0], expected, rtol=1e-5)

  def test_high_metric_outside_the_gt_is_not_positive(self):
    anchors, preds, scores, metric = self._scene()
    preds[2] = [0., 0., 32., 32.]  # Centre (8, 40): outside; IoU 1, t 0.9.
    scores[2, 2] = 0.9
    gt = [[0., 0., 32., 32.]]
    # The top 2 by t are anchors 2 and 4; anchor 2 fails the centre test.
    out = self._assign(anchors, *_batch(preds, scores, gt, [True], [2]),
                       topk=2)
    self.assertAllEqual(out['positive'][0], self._expected_positive([4]))
    expected = np.zeros(16)
    expected[4] = 0.75
    self.assertAllClose(out['alignment'][0], expected, rtol=1e-5)
    out = self._assign(anchors, *_batch(preds, scores, gt, [True], [2]),
                       topk=3)
    self.assertAllEqual(out['positive'][0], self._expected_positive([0, 4]))
    self.assertEqual(out['matched_gt'][0, 2], -1)
    self.assertEqual(out['alignment'][0, 2], 0.)

  def test_topk_larger_than_candidates(self):
    anchors, preds, scores, metric = self._scene()
    gt = [[0., 0., 32., 32.]]
    for topk in (13, 100):
      out = self._assign(anchors, *_batch(preds, scores, gt, [True], [2]),
                         topk=topk)
      self.assertAllEqual(out['positive'][0],
                          self._expected_positive([0, 1, 4, 5]))
      expected = np.zeros(16)
      for i, t in metric.items():
        expected[i] = t / metric[4] * 0.875
      self.assertAllClose(out['alignment'][0], expected, rtol=1e-5)

  def test_centre_on_the_gt_border_is_not_a_candidate(self):
    anchors = _grid_anchors()
    gt = [[0., 0., 24., 24.]]  # Centres of anchors 1, 4, 5 on its border.
    preds = np.tile(np.array(gt, np.float32), [16, 1])
    scores = np.ones((16, 1), np.float32)
    out = self._assign(anchors, *_batch(preds, scores, gt, [True], [0]),
                       topk=16)
    self.assertAllEqual(out['positive'][0], self._expected_positive([0]))
    self.assertAllClose(out['alignment'][0], self._expected_positive([0]))

  def test_shared_anchor_goes_to_higher_iou_gt(self):
    anchors = _grid_anchors()
    preds = anchors.copy()
    preds[1] = [0., 12., 32., 44.]
    gt_a = [0., 0., 32., 32.]   # IoU with preds[1]: 640 / 1408 = 5/11.
    gt_b = [0., 16., 32., 48.]  # IoU with preds[1]: 896 / 1152 = 7/9.
    scores = np.zeros((16, 2), np.float32)
    # The metric favours gt_a (0.9 * (5/11)**6 > 0.01 * (7/9)**6); the IoU
    # decides for gt_b.
    scores[1] = [0.9, 0.01]
    for gts, classes, winner in [([gt_a, gt_b], [0, 1], 1),
                                 ([gt_b, gt_a], [1, 0], 0)]:
      out = self._assign(anchors, *_batch(preds, scores, gts, [True, True],
                                          classes), topk=1)
      self.assertAllEqual(out['positive'][0], self._expected_positive([1]))
      self.assertEqual(out['matched_gt'][0, 1], winner)
      self.assertEqual(out['labels'][0, 1], 1)
      self.assertAllEqual(out['box_targets'][0, 1], gt_b)
      # t / (t + 1e-7) * u: mmdet's eps is not negligible for t = 0.0022.
      t = 0.01 * (7. / 9.)**6
      self.assertAllClose(out['assign_metrics'][0, 1], t, rtol=1e-5)
      self.assertAllClose(out['max_overlaps'][0, 1], 7. / 9., rtol=1e-6)
      self.assertAllClose(out['alignment'][0, 1], t / (t + 1e-7) * 7. / 9.,
                          rtol=1e-5)

  def test_padded_gts_are_ignored(self):
    anchors, preds, scores, _ = self._scene()
    gt = [[0., 0., 32., 32.]]
    reference = self._assign(anchors, *_batch(preds, scores, gt, [True], [2]),
                             topk=2)
    gts = [[0., 0., 64., 64.], [0., 0., 32., 32.], [-1., -1., -1., -1.]]
    out = self._assign(anchors, *_batch(preds, scores, gts,
                                        [False, True, False], [0, 2, -1]),
                       topk=2)
    self.assertAllEqual(out['positive'], reference['positive'])
    self.assertAllEqual(out['matched_gt'],
                        np.where(reference['positive'], 1, -1))
    for key in ('labels', 'box_targets', 'alignment'):
      self.assertAllClose(out[key], reference[key])


class CompiledTest(tf.test.TestCase):

  def test_batched_and_xla_match_eager(self):
    anchors = _grid_anchors()
    rng = np.random.default_rng(0)
    centres = rng.uniform(8., 56., (2, 16, 2))
    sizes = rng.uniform(8., 32., (2, 16, 2))
    preds = np.concatenate([centres - sizes / 2, centres + sizes / 2],
                           -1).astype(np.float32)
    scores = rng.uniform(0., 1., (2, 16, 3)).astype(np.float32)
    gts = np.array([[[0., 0., 32., 32.], [8., 20., 40., 60.], [0.] * 4],
                    [[30., 2., 62., 30.], [-1.] * 4, [-1.] * 4]], np.float32)
    valid = np.array([[True, True, False], [True, False, False]])
    classes = np.array([[2, 0, -1], [1, -1, -1]], np.int32)

    def uniform(a, p, g, v, c):
      return assigners.uniform_assign(a, p, g, v, c, num_nearest=2)

    def task_aligned(a, p, s, g, v, c):
      return assigners.task_aligned_assign(a, p, s, g, v, c, topk=3)

    for fn, args in [(uniform, (anchors, preds, gts, valid, classes)),
                     (task_aligned,
                      (anchors, preds, scores, gts, valid, classes))]:
      eager = fn(*args)
      self.assertTrue(np.any(eager['positive']))
      compiled = tf.function(fn, jit_compile=True)(*args)
      for key, value in eager.items():
        self.assertAllClose(compiled[key], value, rtol=1e-5)
      # Each image alone gives the same rows as the batch.
      for b in range(2):
        single = fn(*[x if x is anchors else x[b:b + 1] for x in args])
        for key, value in single.items():
          self.assertAllClose(eager[key][b:b + 1], value, rtol=1e-5)


if __name__ == '__main__':
  tf.test.main()
