"""Tests for official_ext.vision.ops.box_ops."""

import math

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from official.vision.ops import box_ops as mg_box_ops
from official_ext.vision.ops import box_ops

_CLIP = math.log(1000. / 16.)


def _centre_size(box):
  box = np.asarray(box, np.float64)
  h, w = box[..., 2] - box[..., 0], box[..., 3] - box[..., 1]
  return box[..., 0] + h / 2, box[..., 1] + w / 2, h, w


def _np_encode(boxes, anchors):
  """Reference delta-XYWH encoding (the module docstring's formulas)."""
  cy, cx, h, w = _centre_size(boxes)
  acy, acx, ah, aw = _centre_size(anchors)
  return np.stack([(cy - acy) / ah, (cx - acx) / aw, np.log(h / ah),
                   np.log(w / aw)], axis=-1)


def _random_boxes_and_anchors():
  """[3, 5, 4] yxyx boxes and anchors with sides of 10 to 200 px."""
  rng = np.random.default_rng(0)
  anchors = np.concatenate([rng.uniform(0, 100, (3, 5, 2)),
                            rng.uniform(110, 200, (3, 5, 2))], axis=-1)
  boxes = np.concatenate([rng.uniform(0, 100, (3, 5, 2)),
                          rng.uniform(110, 200, (3, 5, 2))], axis=-1)
  return boxes, anchors


class BoxOpsTest(tf.test.TestCase, parameterized.TestCase):

  def test_clip_constant(self):
    self.assertAlmostEqual(box_ops.BBOX_XFORM_CLIP, math.log(62.5))

  def test_decode_hand_computed(self):
    anchor = tf.constant([[0., 0., 32., 32.]])
    box = [[8., 4., 40., 68.]]
    # Anchor centre (16, 16), 32 x 32; box centre (24, 36), h 32, w 64:
    # dy = 8 / 32, dx = 20 / 32, dh = log(32 / 32), dw = log(64 / 32).
    deltas = tf.constant([[0.25, 0.625, 0., math.log(2.)]])
    self.assertAllClose(box_ops.decode_boxes_xywh(deltas, anchor), box,
                        atol=1e-5)
    # Shifts of 8 and 20 px are inside a 32 px clamp: same box.
    self.assertAllClose(
        box_ops.decode_boxes_xywh(deltas, anchor, ctr_clamp=32.), box,
        atol=1e-5)

  def test_reference_encoding_is_model_gardens(self):
    # The reference encoder the tests below decode from is Model Garden's
    # `encode_boxes` without weights (which adds 1e-8 to the sizes).
    boxes, anchors = _random_boxes_and_anchors()
    self.assertAllClose(
        mg_box_ops.encode_boxes(tf.constant(boxes), tf.constant(anchors)),
        _np_encode(boxes, anchors), atol=1e-6)

  def test_decode_inverts_reference_encoding(self):
    boxes, anchors = _random_boxes_and_anchors()
    deltas = tf.constant(_np_encode(boxes, anchors), tf.float32)
    anchors = tf.constant(anchors, tf.float32)
    decoded = box_ops.decode_boxes_xywh(deltas, anchors)
    self.assertEqual(decoded.shape.as_list(), [3, 5, 4])
    self.assertAllClose(decoded, boxes, atol=1e-3)
    # Size ratios here are below 20 (< exp(BBOX_XFORM_CLIP) = 62.5), so no
    # clipping: Model Garden's decoder gives the same boxes.
    self.assertAllClose(decoded, mg_box_ops.decode_boxes(deltas, anchors),
                        atol=1e-3)

  @parameterized.parameters(None, 32.)
  def test_round_trip(self, ctr_clamp):
    rng = np.random.default_rng(1)
    n = 50
    acy, acx = rng.uniform(50, 500, n), rng.uniform(50, 500, n)
    ah, aw = rng.uniform(16, 256, n), rng.uniform(16, 256, n)
    anchors = np.stack([acy - ah / 2, acx - aw / 2, acy + ah / 2,
                        acx + aw / 2], -1)
    # Centre shifts within +-32 px (the clamp), sizes within 1/8 .. 8 x.
    cy = acy + rng.uniform(-32, 32, n)
    cx = acx + rng.uniform(-32, 32, n)
    h = ah * np.exp(rng.uniform(-2, 2, n))
    w = aw * np.exp(rng.uniform(-2, 2, n))
    boxes = np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], -1)
    deltas = tf.constant(_np_encode(boxes, anchors), tf.float32)
    decoded = box_ops.decode_boxes_xywh(
        deltas, tf.constant(anchors, tf.float32), ctr_clamp=ctr_clamp)
    self.assertAllClose(decoded, boxes, atol=1e-3, rtol=1e-5)

  def test_decode_broadcasts_anchors(self):
    anchors = tf.constant([[0., 0., 10., 20.], [10., 10., 30., 30.]])
    deltas = tf.zeros([3, 2, 4])
    decoded = box_ops.decode_boxes_xywh(deltas, anchors)
    self.assertEqual(decoded.shape.as_list(), [3, 2, 4])
    self.assertAllClose(decoded, tf.broadcast_to(anchors, [3, 2, 4]))

  def test_centre_clamp(self):
    anchor = tf.constant([[100., 200., 132., 232.]])  # Centre (116, 216).
    # Box centre 100 px below and 100 px left of the anchor's (60 px after
    # clamping it is still only 32), size 48 x 16.
    box = [[216. - 24., 116. - 8., 216. + 24., 116. + 8.]]
    # Its deltas on the 32 x 32 anchor: dy = 100 / 32, dx = -100 / 32,
    # dh = log(48 / 32), dw = log(16 / 32).
    deltas = tf.constant([[100. / 32., -100. / 32., math.log(1.5),
                           math.log(0.5)]])
    clamped = box_ops.decode_boxes_xywh(deltas, anchor, ctr_clamp=32.)
    cy, cx, h, w = _centre_size(clamped.numpy()[0])
    self.assertAllClose([cy, cx], [116. + 32., 216. - 32.], atol=1e-4)
    self.assertAllClose([h, w], [48., 16.], atol=1e-4)
    self.assertAllClose(clamped, [[148. - 24., 184. - 8., 148. + 24.,
                                   184. + 8.]], atol=1e-4)
    # No clamp: the box comes back where it was.
    self.assertAllClose(box_ops.decode_boxes_xywh(deltas, anchor), box,
                        atol=1e-4)

  @parameterized.parameters(None, 32.)
  def test_upper_size_clip(self, ctr_clamp):
    anchor = tf.constant([[0., 0., 16., 16.]])  # Centre (8, 8), 16 x 16.
    deltas = tf.constant([[0., 0., 10., _CLIP + 1.]])
    decoded = box_ops.decode_boxes_xywh(deltas, anchor, ctr_clamp=ctr_clamp)
    cy, cx, h, w = _centre_size(decoded.numpy()[0])
    # 16 * exp(log(1000 / 16)) = 1000 in both directions.
    self.assertAllClose([cy, cx, h, w], [8., 8., 1000., 1000.], rtol=1e-5)

  def test_lower_size_clip_only_without_clamp(self):
    anchor = tf.constant([[0., 0., 16., 16.]])
    deltas = tf.constant([[0., 0., -10., -(_CLIP + 1.)]])
    # Without ctr_clamp: clipped at -log(62.5) -> 16 / 62.5 = 0.256.
    _, _, h, w = _centre_size(
        box_ops.decode_boxes_xywh(deltas, anchor).numpy()[0])
    self.assertAllClose([h, w], [0.256, 0.256], rtol=1e-5)
    # With ctr_clamp: no lower clip, 16 * exp(-10) and 16 / 62.5 / e.
    _, _, h, w = _centre_size(box_ops.decode_boxes_xywh(
        deltas, anchor, ctr_clamp=32.).numpy()[0])
    self.assertAllClose([h, w], [16. * math.exp(-10.), 0.256 / math.e],
                        rtol=1e-4)

  def test_shift_clamp_uses_pixels_not_units(self):
    # The clamp is on dy * ah (pixels): a small dy on a huge anchor is
    # clamped, a large dy on a tiny anchor is not.
    anchors = tf.constant([[0., 0., 512., 512.], [0., 0., 8., 8.]])
    deltas = tf.constant([[0.25, -0.25, 0., 0.], [3., -3., 0., 0.]])
    decoded = box_ops.decode_boxes_xywh(deltas, anchors, ctr_clamp=32.)
    cy, cx, _, _ = _centre_size(decoded.numpy())
    self.assertAllClose(cy, [256. + 32., 4. + 24.], atol=1e-4)
    self.assertAllClose(cx, [256. - 32., 4. - 24.], atol=1e-4)


if __name__ == '__main__':
  tf.test.main()
