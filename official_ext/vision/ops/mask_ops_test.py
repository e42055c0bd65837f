"""Tests for the box-aligned mask ops."""

import numpy as np
import tensorflow as tf

from official_ext.vision.ops import mask_ops


def test_recrop_masks_on_clipped_box():
  # Box 10x20 px whose crop is 1 on its left half, 0 on its right half.
  crop = np.zeros([1, 8, 8], np.float32)
  crop[:, :, :4] = 1.
  box = tf.constant([[0., 0., 10., 20.]])
  left = mask_ops.recrop_masks(crop, box,
                               tf.constant([[0., 0., 10., 10.]]), 8)
  right = mask_ops.recrop_masks(crop, box,
                                tf.constant([[0., 10., 10., 20.]]),
                                8)
  same = mask_ops.recrop_masks(crop, box, box, 8)
  # Samples at cell centres, bilinear: only the sample next to the 1/0 edge
  # of the original crop mixes (crop column 3.25 -> 0.75, 3.75 -> 0.25).
  np.testing.assert_allclose(left.numpy()[0, :, :7], 1., atol=1e-6)
  np.testing.assert_allclose(left.numpy()[0, :, 7], 0.75, atol=1e-6)
  np.testing.assert_allclose(right.numpy()[0, :, 0], 0.25, atol=1e-6)
  np.testing.assert_allclose(right.numpy()[0, :, 1:], 0., atol=1e-6)
  np.testing.assert_array_equal(same.numpy(), crop)
  # Middle window x in [5, 15] = crop columns [2, 6].
  mid = mask_ops.recrop_masks(crop, box,
                              tf.constant([[0., 5., 10., 15.]]), 8)
  np.testing.assert_allclose(mid.numpy()[0, 4],
                             [1, 1, 1, .75, .25, 0, 0, 0], atol=1e-6)
