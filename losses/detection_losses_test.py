"""Tests for detection_losses."""

import math

import numpy as np
import tensorflow as tf

from losses import detection_losses

_EPS = 1e-6


def _np_focal(probs, targets, alpha=0.25, gamma=2.0, weights=None):
  p = np.clip(probs.astype(np.float64), _EPS, 1.0 - _EPS)
  t = targets.astype(np.float64)
  losses = (t * -alpha * (1.0 - p)**gamma * np.log(p) +
            (1.0 - t) * -(1.0 - alpha) * p**gamma * np.log(1.0 - p))
  if weights is not None:
    losses = losses * weights
  return losses.sum()


def _np_bce(p, y):
  return -(y * np.log(p) + (1.0 - y) * np.log(1.0 - p))


def _np_qfl(probs, labels, quality, beta=2.0, weights=None):
  p = np.clip(probs.astype(np.float64), _EPS, 1.0 - _EPS)
  losses = _np_bce(p, 0.0) * p**beta
  # Explicit per-anchor loop: an independent reference for the vectorised op.
  flat_losses = losses.reshape(-1, p.shape[-1])
  flat_p = p.reshape(-1, p.shape[-1])
  for i, (label, q) in enumerate(zip(labels.reshape(-1), quality.reshape(-1))):
    if label >= 0:
      pi = flat_p[i, label]
      flat_losses[i, label] = _np_bce(pi, q) * abs(q - pi)**beta
  losses = flat_losses.reshape(p.shape)
  if weights is not None:
    losses = losses * weights[..., None]
  return losses.sum()


def _np_mask_bce(logits, targets, weights):
  x = logits.astype(np.float64)
  z = targets.astype(np.float64)
  pixel = np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))
  return (pixel.mean(axis=(-2, -1)) * weights).sum()


class FocalLossTest(tf.test.TestCase):

  def test_positive_element(self):
    loss = detection_losses.focal_loss(
        tf.constant([[0.9]]), tf.constant([[1.0]]))
    expected = 0.25 * 0.01 * -math.log(0.9)
    self.assertAllClose(expected, 0.000263401, atol=1e-9)
    self.assertAllClose(loss, expected, rtol=1e-5)

  def test_negative_element(self):
    loss = detection_losses.focal_loss(
        tf.constant([[0.3]]), tf.constant([[0.0]]))
    expected = 0.75 * 0.09 * -math.log(0.7)
    self.assertAllClose(expected, 0.024076, atol=1e-6)
    self.assertAllClose(loss, expected, rtol=1e-5)

  def test_weights_zero_an_element(self):
    probs = tf.constant([[0.9, 0.1], [0.3, 0.6]])
    targets = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    weights = tf.constant([[1.0], [0.0]])
    loss = detection_losses.focal_loss(probs, targets, weights=weights)
    expected = (0.25 * 0.1**2 * -math.log(0.9) +
                0.75 * 0.1**2 * -math.log(0.9))
    self.assertAllClose(loss, expected, rtol=1e-5)

  def test_matches_numpy_reference(self):
    rng = np.random.RandomState(0)
    probs = rng.uniform(0.0, 1.0, size=(2, 7, 5)).astype(np.float32)
    labels = rng.randint(-1, 5, size=(2, 7))
    targets = np.eye(5, dtype=np.float32)[labels] * (labels >= 0)[..., None]
    weights = rng.randint(0, 2, size=(2, 7, 1)).astype(np.float32)
    loss = detection_losses.focal_loss(
        probs, targets, alpha=0.3, gamma=1.5, weights=weights)
    expected = _np_focal(probs, targets, 0.3, 1.5, weights)
    self.assertAllClose(loss, expected, rtol=1e-5)


class QualityFocalLossTest(tf.test.TestCase):

  def test_single_positive(self):
    loss = detection_losses.quality_focal_loss(
        tf.constant([[0.6]]), tf.constant([0]), tf.constant([0.8]))
    bce = -(0.8 * math.log(0.6) + 0.2 * math.log(0.4))
    expected = bce * 0.2**2
    self.assertAllClose(loss, expected, rtol=1e-5)

  def test_single_negative(self):
    loss = detection_losses.quality_focal_loss(
        tf.constant([[0.2]]), tf.constant([-1]), tf.constant([0.9]))
    self.assertAllClose(loss, -math.log(0.8) * 0.04, rtol=1e-5)

  def test_background_row_has_only_negative_terms(self):
    probs = tf.constant([[0.2, 0.5, 0.7]])
    loss = detection_losses.quality_focal_loss(
        probs, tf.constant([-1]), tf.constant([1.0]))
    expected = sum(-math.log(1.0 - p) * p**2 for p in (0.2, 0.5, 0.7))
    self.assertAllClose(loss, expected, rtol=1e-5)

  def test_positive_other_channels_are_negatives(self):
    probs = tf.constant([[0.2, 0.6, 0.7]])
    loss = detection_losses.quality_focal_loss(
        probs, tf.constant([1]), tf.constant([0.8]))
    pos = -(0.8 * math.log(0.6) + 0.2 * math.log(0.4)) * 0.2**2
    neg = sum(-math.log(1.0 - p) * p**2 for p in (0.2, 0.7))
    self.assertAllClose(loss, pos + neg, rtol=1e-5)

  def test_perfect_prediction_is_zero(self):
    loss = detection_losses.quality_focal_loss(
        tf.constant([[0.75], [1.0]]), tf.constant([0, 0]),
        tf.constant([0.75, 1.0]))
    self.assertAllClose(loss, 0.0, atol=1e-9)

  def test_per_anchor_weights(self):
    probs = tf.constant([[0.6, 0.2], [0.3, 0.4]])
    labels = tf.constant([0, -1])
    quality = tf.constant([0.8, 0.0])
    full = detection_losses.quality_focal_loss(probs, labels, quality)
    first_only = detection_losses.quality_focal_loss(
        probs[:1], labels[:1], quality[:1])
    for weights in (tf.constant([1.0, 0.0]), tf.constant([[1.0], [0.0]])):
      weighted = detection_losses.quality_focal_loss(
          probs, labels, quality, weights=weights)
      self.assertAllClose(weighted, first_only, rtol=1e-6)
    self.assertGreater(float(full), float(first_only))

  def test_matches_numpy_reference(self):
    rng = np.random.RandomState(42)
    probs = rng.uniform(0.0, 1.0, size=(3, 11, 4)).astype(np.float32)
    labels = rng.randint(-1, 4, size=(3, 11)).astype(np.int32)
    quality = rng.uniform(0.0, 1.0, size=(3, 11)).astype(np.float32)
    weights = rng.uniform(0.0, 2.0, size=(3, 11)).astype(np.float32)
    loss = detection_losses.quality_focal_loss(
        probs, labels, quality, beta=2.0, weights=weights)
    expected = _np_qfl(probs, labels, quality, 2.0, weights)
    self.assertAllClose(loss, expected, rtol=1e-5)


class GiouLossTest(tf.test.TestCase):

  def test_identical_boxes(self):
    boxes = tf.constant([[10.0, 20.0, 50.0, 80.0], [0.0, 0.0, 1.0, 1.0]])
    self.assertAllClose(detection_losses.giou_loss(boxes, boxes), 0.0,
                        atol=1e-6)
    # IoU 1 and the enclosing box is the union: GIoU 1.
    self.assertAllClose(detection_losses.elementwise_giou(boxes, boxes),
                        [1.0, 1.0])

  def test_disjoint_boxes(self):
    a = tf.constant([[0.0, 0.0, 1.0, 1.0]])
    b = tf.constant([[2.0, 2.0, 3.0, 3.0]])
    # IoU 0, union 1 + 1 = 2, enclosing 3x3 = 9: GIoU = 0 - (9 - 2) / 9.
    self.assertAllClose(detection_losses.elementwise_giou(a, b), [-7.0 / 9.0])
    self.assertAllClose(detection_losses.giou_loss(a, b), 1.0 + 7.0 / 9.0)

  def test_partial_overlap(self):
    # Intersection 1x1 = 1, union 4 + 4 - 1 = 7, enclosing 3x3 = 9.
    a = tf.constant([[0.0, 0.0, 2.0, 2.0]])
    b = tf.constant([[1.0, 1.0, 3.0, 3.0]])
    # GIoU = IoU - (9 - 7) / 9 with IoU = 1 / 7.
    giou = 1.0 / 7.0 - 2.0 / 9.0
    self.assertAllClose(detection_losses.elementwise_giou(a, b), [giou])
    self.assertAllClose(detection_losses.giou_loss(a, b), 1.0 - giou)

  def test_rectangular_overlap(self):
    # a: 4 tall x 2 wide; b: 2 tall x 4 wide, centred on the same point.
    # Intersection 2x2 = 4, union 8 + 8 - 4 = 12, enclosing 4x4 = 16.
    a = tf.constant([[[0.0, 1.0, 4.0, 3.0]]])
    b = tf.constant([[[1.0, 0.0, 3.0, 4.0]]])
    giou = 4.0 / 12.0 - 4.0 / 16.0
    self.assertAllClose(detection_losses.elementwise_giou(a, b), [[giou]])

  def test_weights(self):
    a = tf.constant([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = tf.constant([[1.0, 1.0, 3.0, 3.0], [2.0, 2.0, 3.0, 3.0]])
    loss = detection_losses.giou_loss(a, b, weights=tf.constant([2.0, 0.0]))
    self.assertAllClose(loss, 2.0 * (1.0 - (1.0 / 7.0 - 2.0 / 9.0)))

  def test_gradients_finite(self):
    target = tf.constant([[0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 5.0, 5.0],
                          [1.0, 1.0, 1.0, 4.0]])
    for pred_init in (target,
                      tf.constant([[0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 5.0, 5.0],
                                   [3.0, 3.0, 3.0, 3.0]])):
      pred = tf.Variable(pred_init)
      with tf.GradientTape() as tape:
        loss = detection_losses.giou_loss(pred, target)
      grad = tape.gradient(loss, pred)
      self.assertTrue(np.all(np.isfinite(grad.numpy())))
      self.assertTrue(np.isfinite(loss.numpy()))


class TorchSemanticsTest(tf.test.TestCase):
  """Where torch/mmdet's definitions differ from a naive one."""

  def test_logs_are_clamped_at_minus_100_not_the_probabilities(self):
    # Certain and wrong: BCE is 100 (torch), not -log(1e-6) = 13.8.
    focal = detection_losses.focal_loss(
        tf.constant([[0.0, 1.0]]), tf.constant([[1.0, 0.0]]))
    self.assertAllClose(focal, 0.25 * 100. + 0.75 * 100., rtol=1e-6)
    qfl = detection_losses.quality_focal_loss(
        tf.constant([[1.0, 0.0]]), tf.constant([1]), tf.constant([1.0]))
    # Channel 0: BCE(1, 0) * 1^2 = 100; channel 1: BCE(0, 1) * |1 - 0|^2.
    self.assertAllClose(qfl, 200., rtol=1e-6)
    # Certain and right: exactly 0.
    self.assertAllClose(detection_losses.focal_loss(
        tf.constant([[1.0, 0.0]]), tf.constant([[1.0, 0.0]])), 0., atol=0)

  def test_small_probabilities_use_log1p(self):
    p = np.array([[1e-9, 3e-5, 0.02]], np.float32)
    loss = detection_losses.focal_loss(p, np.zeros_like(p))
    expected = (0.75 * p.astype(np.float64)**2 *
                -np.log1p(-p.astype(np.float64))).sum()
    self.assertAllClose(loss, expected, rtol=1e-6)

  def test_gradients_are_torchs_and_finite_at_0_and_1(self):
    probs = tf.Variable([[0.0, 1.0, 0.3, 1.0, 0.0]])
    targets = tf.constant([[1.0, 0.0, 1.0, 1.0, 0.0]])
    quality = tf.constant([0.6])
    for loss_fn in (
        lambda p: detection_losses.focal_loss(p, targets),
        lambda p: detection_losses.quality_focal_loss(p, tf.constant([2]),
                                                      quality)):
      with tf.GradientTape() as tape:
        loss = loss_fn(probs)
      grad = tape.gradient(loss, probs).numpy()
      self.assertTrue(np.all(np.isfinite(grad)), grad)
      self.assertTrue(np.isfinite(loss.numpy()))
    # d BCE(p, y) / dp = (p - y) / max(p (1 - p), 1e-12) (torch's backward).
    p = tf.Variable([0.0, 1.0, 0.25])
    y = tf.constant([1.0, 0.0, 0.5])
    bce_fn = detection_losses._binary_cross_entropy  # pylint: disable=protected-access
    with tf.GradientTape() as tape:
      bce = bce_fn(p, y)
    grad = tape.gradient(bce, p).numpy()
    self.assertAllClose(grad, [-1e12, 1e12, -0.25 / 0.1875], rtol=1e-6)

  def test_giou_areas_are_not_clamped(self):
    # mmdet's bbox_overlaps: an inverted box's "area" is its extents'
    # product: (-2) * (-2) = 4 here, so an upside-down copy of the target
    # has union 8, enclosing 4: GIoU 1, loss 0.
    target = tf.constant([[0.0, 0.0, 2.0, 2.0]])
    flipped = tf.constant([[2.0, 2.0, 0.0, 0.0]])
    self.assertAllClose(detection_losses.elementwise_giou(flipped, target),
                        [1.0])
    # Inverted on one axis: area -4, union max(0, 1e-6).
    half = tf.constant([[0.0, 2.0, 2.0, 0.0]])
    self.assertAllClose(detection_losses.elementwise_giou(half, target),
                        [-(4.0 - 1e-6) / 4.0], rtol=1e-6)

  def test_giou_eps_is_mmdets(self):
    # Two points: union and enclosing area 0 -> 1e-6 each.
    a = tf.constant([[1.0, 1.0, 1.0, 1.0]])
    self.assertAllClose(detection_losses.elementwise_giou(a, a), [0.0])
    # Tiny boxes (1e-4 squared = 1e-8 area, below eps): IoU = 1e-8 / 1e-6;
    # union and enclosing area are both clamped to 1e-6, so GIoU = IoU.
    b = tf.constant([[0.0, 0.0, 1e-4, 1e-4]])
    self.assertAllClose(detection_losses.elementwise_giou(b, b), [0.01],
                        rtol=1e-3)


class MaskLossTest(tf.test.TestCase):

  def test_zero_logits_give_log2_per_roi(self):
    rng = np.random.RandomState(1)
    targets = rng.uniform(size=(2, 3, 4, 4)).astype(np.float32)
    loss = detection_losses.sigmoid_bce_mask_loss(
        tf.zeros_like(targets), targets, weights=tf.ones([2, 3]))
    self.assertAllClose(loss, 6.0 * math.log(2.0), rtol=1e-5)

  def test_zero_weight_roi_contributes_nothing(self):
    rng = np.random.RandomState(2)
    logits = rng.normal(size=(1, 2, 4, 4)).astype(np.float32)
    targets = (rng.uniform(size=(1, 2, 4, 4)) > 0.5).astype(np.float32)
    masked = detection_losses.sigmoid_bce_mask_loss(
        logits, targets, weights=tf.constant([[1.0, 0.0]]))
    first = detection_losses.sigmoid_bce_mask_loss(
        logits[:, :1], targets[:, :1])
    self.assertAllClose(masked, first, rtol=1e-6)

  def test_matches_numpy_reference(self):
    rng = np.random.RandomState(3)
    logits = (3.0 * rng.normal(size=(2, 5, 7, 7))).astype(np.float32)
    targets = (rng.uniform(size=(2, 5, 7, 7)) > 0.5).astype(np.float32)
    weights = rng.randint(0, 2, size=(2, 5)).astype(np.float32)
    loss = detection_losses.sigmoid_bce_mask_loss(logits, targets, weights)
    self.assertAllClose(loss, _np_mask_bce(logits, targets, weights),
                        rtol=1e-5)


class XlaTest(tf.test.TestCase):

  def test_all_losses_under_jit_compile(self):
    rng = np.random.RandomState(7)
    probs = rng.uniform(size=(2, 6, 3)).astype(np.float32)
    labels = rng.randint(-1, 3, size=(2, 6)).astype(np.int32)
    targets = (np.eye(3, dtype=np.float32)[labels] *
               (labels >= 0)[..., None])
    quality = rng.uniform(size=(2, 6)).astype(np.float32)
    anchor_weights = (labels >= 0).astype(np.float32)
    a = np.array([[[0.0, 0.0, 2.0, 2.0]] * 6] * 2, np.float32)
    b = np.array([[[1.0, 1.0, 3.0, 3.0]] * 6] * 2, np.float32)
    logits = rng.normal(size=(2, 4, 5, 5)).astype(np.float32)
    mask_targets = (rng.uniform(size=(2, 4, 5, 5)) > 0.5).astype(np.float32)
    roi_weights = np.ones((2, 4), np.float32)

    @tf.function(jit_compile=True)
    def compute():
      return (
          detection_losses.focal_loss(
              probs, targets, weights=anchor_weights[..., None]),
          detection_losses.quality_focal_loss(
              probs, labels, quality, weights=anchor_weights),
          detection_losses.giou_loss(a, b, weights=anchor_weights),
          detection_losses.elementwise_giou(a, b),
          detection_losses.sigmoid_bce_mask_loss(
              logits, mask_targets, roi_weights),
      )

    focal, qfl, giou_loss, giou, mask = compute()
    self.assertAllClose(
        focal, _np_focal(probs, targets, weights=anchor_weights[..., None]),
        rtol=1e-5)
    self.assertAllClose(
        qfl, _np_qfl(probs, labels, quality, weights=anchor_weights),
        rtol=1e-5)
    self.assertAllClose(
        giou_loss, anchor_weights.sum() * (1.0 - (1.0 / 7.0 - 2.0 / 9.0)),
        rtol=1e-5)
    self.assertAllClose(giou, np.full((2, 6), 1.0 / 7.0 - 2.0 / 9.0))
    self.assertAllClose(
        mask, _np_mask_bce(logits, mask_targets, roi_weights), rtol=1e-5)


if __name__ == '__main__':
  tf.test.main()
