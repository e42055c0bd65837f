"""Tests for the geometric transform of images, boxes and mask crops."""

import numpy as np
import pytest
import tensorflow as tf

from dataloaders.ops import transforms
from official_ext.vision.ops import mask_ops


def _scene():
  """A 20x30 image whose object (rows 4..9, cols 6..17) is 200, else 10."""
  image = np.full([20, 30, 3], 10, np.uint8)
  image[4:10, 6:18] = 200
  boxes = tf.constant([[4., 6., 10., 18.], [0., 0., 2., 2.]])
  # The first crop is the object's left half only.
  masks = np.zeros([2, 8, 8], np.float32)
  masks[0, :, :4] = 1.
  return image, boxes, tf.constant(masks)


@pytest.mark.parametrize('flip', [False, True])
def test_image_boxes_and_masks_move_together(flip):
  image, boxes, masks = _scene()
  # Scale 2 (40x60), crop from (6, 8): the second box falls outside.
  transform = transforms.GeometricTransform(
      [20, 30], [40, 60], offset=[6, 8], window=[0, 0, 32, 48],
      output_size=[36, 50], flip=tf.constant(flip))
  out = transform.apply_image(image).numpy()
  moved = transform.apply_boxes(boxes).numpy()
  crops = transform.apply_masks(masks, boxes, 8)
  assert out.shape == (36, 50, 3)
  assert out[32:].max() == 0 and out[:, 48:].max() == 0
  # The object: rows 2..13, cols 4..27 (mirrored in 48 columns: 20..43),
  # its border pixels blended by the bilinear resize.
  cols = slice(21, 43) if flip else slice(5, 27)
  np.testing.assert_array_equal(out[3:13, cols, 0], 200.)
  np.testing.assert_array_equal(out[3:13, 45 if flip else 2, 0], 10.)
  np.testing.assert_allclose(moved[0], [2, 20, 14, 44] if flip else
                             [2, 4, 14, 28])
  assert moved[1, 2] - moved[1, 0] <= 0 or moved[1, 3] - moved[1, 1] <= 0
  # The crop's half lies on the object's half that came from its left.
  pasted = mask_ops.paste_masks(crops[:1], moved[:1], (36, 50)).numpy()[0]
  half = slice(32, 44) if flip else slice(4, 16)
  expected = np.zeros([36, 50], bool)
  expected[2:14, half] = True
  np.testing.assert_array_equal(pasted > 0.5, expected)
  np.testing.assert_allclose(transform.image_info.numpy(),
                             [[20, 30], [36, 50], [2, 2], [6, 8]])
  np.testing.assert_array_equal(transform.valid_size.numpy(), [32, 48])


def test_window_inside_the_canvas_clips_boxes_to_it():
  image, boxes, masks = _scene()
  # Pasted at (10, 5) of a 40x40 canvas, the window rows 10..30, cols 5..35.
  transform = transforms.GeometricTransform(
      [20, 30], [20, 30], offset=[-10, -5], window=[10, 5, 30, 35],
      output_size=[40, 40])
  placed = tf.pad(transform.visible_part(image),
                  transform.paddings).numpy()
  np.testing.assert_array_equal(placed[10:30, 5:35], image)
  assert placed[:10].max() == 0 and placed[:, 35:].max() == 0
  np.testing.assert_allclose(transform.apply_boxes(boxes).numpy(),
                             [[14, 11, 20, 23], [10, 5, 12, 7]])
  np.testing.assert_allclose(
      transform.apply_masks(masks, boxes, 8).numpy(), masks.numpy())
