"""OpenCV's bilinear resize and mmdet's keep-ratio size, reproduced."""

import os

import numpy as np
import tensorflow as tf

from official_ext.vision.ops import preprocess_ops


def test_reproduces_the_references_resized_image(refparity_dir):
  # The reference's network input is cv2.resize(image, (1199, 800)), in
  # BGR, normalised; the uint8 pixels come back exactly (fixture README 6).
  fixture = np.load(os.path.join(refparity_dir, 'image.npz'))
  mean = np.array([103.53, 116.28, 123.675])[:, None, None]
  std = np.array([57.375, 57.12, 58.395])[:, None, None]
  pixels = np.round(fixture['preprocessed'][0] * std + mean)[:, :800, :1199]
  expected = np.transpose(pixels, (1, 2, 0))[..., ::-1]  # RGB
  size = preprocess_ops.keep_ratio_size(tf.shape(fixture['image'])[:2],
                                        tf.constant([800., 1333.]))
  np.testing.assert_array_equal(size.numpy(), [800, 1199])
  resized = preprocess_ops.resize_like_opencv(fixture['image'], size)
  np.testing.assert_array_equal(resized.numpy(), expected)


def test_hand_computed_upscale_and_borders():
  # 1 x 2 -> 1 x 4, scale 0.5: sample positions -0.25, 0.25, 0.75, 1.25.
  # Columns left of / past the image take the border pixel; inside,
  # weights round((1 - f) * 2048) and round(f * 2048) with f = 0.25, 0.75.
  image = np.array([[[0], [200]]], np.uint8)
  out = preprocess_ops.resize_like_opencv(image, (1, 4)).numpy()[0, :, 0]
  np.testing.assert_array_equal(out, [0, 50, 150, 200])
  # Identity size leaves pixels unchanged; floats are rounded first.
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, [5, 7, 3]).astype(np.uint8)
  np.testing.assert_array_equal(
      preprocess_ops.resize_like_opencv(image, (5, 7)).numpy(), image)
  np.testing.assert_array_equal(
      preprocess_ops.resize_like_opencv(image.astype(np.float32) + 0.2,
                                        (5, 7)).numpy(), image)


def test_keep_ratio_size_rounds_like_mmcv():
  # int(side * scale + 0.5): 640 * 800 / 427 = 1199.06 -> 1199.
  size = preprocess_ops.keep_ratio_size([427, 640], [800., 1344.])
  np.testing.assert_array_equal(size.numpy(), [800, 1199])
  size = preprocess_ops.keep_ratio_size([100, 50], [64., 64.])
  np.testing.assert_array_equal(size.numpy(), [64, 32])
