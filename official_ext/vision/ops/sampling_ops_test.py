"""Tests for official_ext.vision.ops.sampling_ops."""

import math

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from official_ext.vision.ops import sampling_ops


def _np_bilinear(features, offsets):
  """Reference: per (b, h, w, c) bilinear sample with zero padding."""
  b_, h_, w_, c_ = features.shape
  out = np.zeros(features.shape, np.float64)

  def value(b, y, x, c):
    if 0 <= y < h_ and 0 <= x < w_:
      return features[b, y, x, c]
    return 0.

  for b in range(b_):
    for h in range(h_):
      for w in range(w_):
        for c in range(c_):
          y = h + offsets[b, h, w, c, 0]
          x = w + offsets[b, h, w, c, 1]
          y0, x0 = math.floor(y), math.floor(x)
          ly, lx = y - y0, x - x0
          out[b, h, w, c] = (
              (1 - ly) * (1 - lx) * value(b, y0, x0, c) +
              (1 - ly) * lx * value(b, y0, x0 + 1, c) +
              ly * (1 - lx) * value(b, y0 + 1, x0, c) +
              ly * lx * value(b, y0 + 1, x0 + 1, c))
  return out


def _features(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


class DeformableResampleTest(tf.test.TestCase, parameterized.TestCase):

  def test_zero_offsets_identity(self):
    x = _features((2, 5, 7, 3))
    out = sampling_ops.deformable_resample(x, np.zeros((2, 5, 7, 3, 2)))
    self.assertEqual(out.shape.as_list(), [2, 5, 7, 3])
    self.assertAllEqual(out, x)

  def test_integer_shift(self):
    x = _features((2, 6, 8, 3), seed=1)
    offsets = np.zeros((2, 6, 8, 3, 2), np.float32)
    offsets[..., 0] = 1.   # dy: sample one row below.
    offsets[..., 1] = -2.  # dx: sample two columns to the left.
    out = sampling_ops.deformable_resample(x, offsets).numpy()
    expected = np.zeros_like(x)
    # out[h, w] = x[h + 1, w - 2], zero where h + 1 >= 6 or w - 2 < 0.
    expected[:, :5, 2:, :] = x[:, 1:, :6, :]
    self.assertAllClose(out, expected, atol=1e-6, rtol=0)
    self.assertAllEqual(out[:, 5, :, :], np.zeros((2, 8, 3)))
    self.assertAllEqual(out[:, :, :2, :], np.zeros((2, 6, 2, 3)))

  def test_per_channel_offsets(self):
    x = _features((1, 5, 5, 2), seed=2)
    offsets = np.zeros((1, 5, 5, 2, 2), np.float32)
    offsets[..., 0, 0] = -1.  # Channel 0 samples one row up.
    offsets[..., 0, 1] = 1.   # ... and one column right.
    out = sampling_ops.deformable_resample(x, offsets).numpy()
    # Channel 1 is untouched.
    self.assertAllEqual(out[..., 1], x[..., 1])
    expected0 = np.zeros((1, 5, 5), np.float32)
    expected0[:, 1:, :4] = x[:, :4, 1:, 0]
    self.assertAllClose(out[..., 0], expected0, atol=1e-6, rtol=0)

  def test_per_position_offsets(self):
    # One pixel pulls from the opposite corner, the rest stay.
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    offsets = np.zeros((1, 4, 4, 1, 2), np.float32)
    offsets[0, 0, 0, 0] = [3., 3.]
    out = sampling_ops.deformable_resample(x, offsets).numpy()
    expected = x.copy()
    expected[0, 0, 0, 0] = 15.
    self.assertAllEqual(out, expected)

  def test_fractional_offset_hand_computed(self):
    # x[h, w] = 10 h + w is linear, so inside the map the bilinear sample at
    # (h + 0.5, w + 0.25) is 10 (h + 0.5) + w + 0.25.
    h, w = np.meshgrid(np.arange(4), np.arange(5), indexing='ij')
    x = (10. * h + w).astype(np.float32)[None, :, :, None]
    offsets = np.zeros((1, 4, 5, 1, 2), np.float32)
    offsets[..., 0] = 0.5
    offsets[..., 1] = 0.25
    out = sampling_ops.deformable_resample(x, offsets).numpy()[0, :, :, 0]
    self.assertAllClose(out[:3, :4], (10. * (h + 0.5) + w + 0.25)[:3, :4],
                        atol=1e-5)
    # Last row: half its weight falls on the zero padding below.
    self.assertAllClose(out[3, 0], 0.5 * (0.75 * 30. + 0.25 * 31.),
                        atol=1e-5)
    # Last column (not last row): a quarter of the weight falls outside.
    self.assertAllClose(out[0, 4], 0.75 * (0.5 * 4. + 0.5 * 14.), atol=1e-5)

  @parameterized.parameters(((0.5, 0.25),), ((-0.5, 1.25),),
                            ((-1.75, -0.4),))
  def test_fractional_offsets_match_numpy(self, dydx):
    x = _features((2, 6, 5, 3), seed=3)
    offsets = np.broadcast_to(np.array(dydx, np.float32),
                              (2, 6, 5, 3, 2)).copy()
    out = sampling_ops.deformable_resample(x, offsets)
    self.assertAllClose(out, _np_bilinear(x, offsets), atol=1e-5)

  def test_random_offsets_match_numpy(self):
    x = _features((2, 5, 6, 4), seed=4)
    offsets = np.random.default_rng(5).uniform(
        -3, 3, (2, 5, 6, 4, 2)).astype(np.float32)
    out = sampling_ops.deformable_resample(x, offsets)
    self.assertAllClose(out, _np_bilinear(x, offsets), atol=1e-5)

  @parameterized.parameters(False, True)
  def test_tf_function(self, jit_compile):
    x = _features((2, 5, 6, 4), seed=6)
    offsets = np.random.default_rng(7).uniform(
        -2, 2, (2, 5, 6, 4, 2)).astype(np.float32)
    fn = tf.function(sampling_ops.deformable_resample,
                     jit_compile=jit_compile)
    out = fn(tf.constant(x), tf.constant(offsets))
    self.assertAllClose(out, _np_bilinear(x, offsets), atol=1e-5)

  def test_dynamic_shapes_in_tf_function(self):
    fn = tf.function(
        sampling_ops.deformable_resample,
        input_signature=[tf.TensorSpec([None, None, None, None]),
                         tf.TensorSpec([None, None, None, None, 2])])
    x = _features((1, 3, 4, 2), seed=8)
    offsets = np.full((1, 3, 4, 2, 2), 0.5, np.float32)
    self.assertAllClose(fn(x, offsets), _np_bilinear(x, offsets), atol=1e-5)

  def test_gradients_flow_to_offsets(self):
    # d out / d dy at an interior point of x[h, w] = 10 h + w is 10.
    h, w = np.meshgrid(np.arange(4), np.arange(4), indexing='ij')
    x = tf.constant((10. * h + w).astype(np.float32)[None, :, :, None])
    offsets = tf.Variable(np.full((1, 4, 4, 1, 2), 0.3, np.float32))
    with tf.GradientTape() as tape:
      out = sampling_ops.deformable_resample(x, offsets)
      value = out[0, 1, 1, 0]
    grad = tape.gradient(value, offsets).numpy()
    self.assertAllClose(grad[0, 1, 1, 0], [10., 1.], atol=1e-5)


if __name__ == '__main__':
  tf.test.main()
