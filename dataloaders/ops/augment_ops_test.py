"""Tests for the HSV jitter and the flips."""

import numpy as np
import tensorflow as tf

from dataloaders.ops import augment_ops


def test_hsv_jitter():
  grey = tf.fill([8, 8, 3], 128.)
  for seed in range(10):
    out = augment_ops.yolox_hsv_jitter(grey, seed=seed).numpy()
    assert out.min() >= 0. and out.max() <= 255.
    # Saturation moves by at most 30/255: grey stays grey-ish.
    assert np.ptp(out, axis=-1).max() <= 31.
    # Value (the largest channel) moves by at most 30.
    assert np.all(np.abs(out.max(axis=-1) - 128.) <= 30.01)
  rng = np.random.default_rng(0)
  image = tf.constant(rng.uniform(0, 255, [6, 7, 3]), tf.float32)
  same = augment_ops.yolox_hsv_jitter(image, gains=[0., 0., 0.])
  np.testing.assert_allclose(same.numpy(), image.numpy(), atol=1e-3)
  brighter = augment_ops.yolox_hsv_jitter(tf.fill([2, 2, 3], 100.),
                                          gains=[0., 0., 30.])
  np.testing.assert_allclose(brighter.numpy(), 130., atol=1e-3)
  # +60 OpenCV hue units = +120 degrees: red -> green.
  red = tf.constant([[[255., 0., 0.]]])
  green = augment_ops.yolox_hsv_jitter(red, gains=[60., 0., 0.])
  np.testing.assert_allclose(green.numpy(), [[[0., 255., 0.]]], atol=1e-2)
  # Value clipped at 255.
  white = augment_ops.yolox_hsv_jitter(tf.fill([1, 1, 3], 250.),
                                       gains=[0., 0., 30.])
  np.testing.assert_allclose(white.numpy(), 255., atol=1e-3)


def test_horizontal_flip_only_flips_valid_part():
  image = tf.reshape(tf.range(6, dtype=tf.float32), [1, 6, 1])
  boxes = tf.constant([[0., 1., 1., 3.]])
  masks = tf.constant([[[1., 0., 0.]]])
  image, boxes, masks = augment_ops.horizontal_flip(image, boxes,
                                                    masks, 4)
  np.testing.assert_array_equal(image.numpy().ravel(), [3, 2, 1, 0, 4, 5])
  np.testing.assert_array_equal(boxes.numpy(), [[0., 1., 1., 3.]])
  np.testing.assert_array_equal(masks.numpy(), [[[0., 0., 1.]]])
