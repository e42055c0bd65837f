"""Tests for the 4-image mosaic."""

import numpy as np
import tensorflow as tf

from dataloaders import unipercepnet_parser
from dataloaders.ops import mosaic as mosaic_lib


def _prepared(h, w, box, value, crop_size=8, left_half=False):
  masks = np.ones([1, crop_size, crop_size], np.float32)
  if left_half:
    masks[:, :, crop_size // 2:] = 0.
  return {
      'image': tf.fill([h, w, 3], tf.constant(value, tf.uint8)),
      'boxes': tf.constant([box], tf.float32),
      'classes': tf.constant([value // 10], tf.int32),
      'masks': tf.constant(masks),
  }


def test_mosaic_places_images_and_boxes_in_quadrants():
  parser = unipercepnet_parser.Parser([64, 64], mask_crop_size=8)
  mosaic = mosaic_lib.Mosaic(tile_size=32, mask_crop_size=8)
  examples = [
      _prepared(16, 32, [2., 4., 10., 20.], 10),   # scale 1
      _prepared(32, 16, [0., 0., 32., 16.], 20),   # scale 1
      _prepared(64, 64, [0., 0., 64., 64.], 30),   # scale 0.5
      # Scale 1.6 -> 32x32 at x 40..72, cut at 64; box x 16..32 -> 56..64.
      _prepared(20, 20, [0., 10., 20., 20.], 40, left_half=True),
  ]
  out = mosaic.mosaic(examples, center=(24, 40))
  yc, xc = 24, 40
  boxes = out['boxes'].numpy()
  np.testing.assert_array_equal(out['classes'].numpy(), [1, 2, 3, 4])
  assert out['image'].shape == (64, 64, 3)
  quadrants = [(0, 0, yc, xc), (0, xc, yc, 64), (yc, 0, 64, xc),
               (yc, xc, 64, 64)]
  for box, (qy1, qx1, qy2, qx2) in zip(boxes, quadrants):
    assert qy1 <= box[0] < box[2] <= qy2 and qx1 <= box[1] < box[3] <= qx2
  np.testing.assert_allclose(boxes, [[10, 12, 18, 28],     # shift (8, 8)
                                     [0, 40, 24, 56],      # top cut at 0
                                     [24, 8, 56, 40],
                                     [24, 56, 56, 64]], atol=1e-4)
  image = out['image'].numpy()
  assert image[0, 0, 0] == 114.   # Above image 0, left of image 1.
  assert image[8, 8, 0] == 10. and image[23, 39, 0] == 10.
  assert image[0, 40, 0] == 20. and image[0, 56, 0] == 114.
  assert image[24, 8, 0] == 30. and image[24, 7, 0] == 114.
  assert image[55, 63, 0] == 40. and image[56, 63, 0] == 114.
  # The clipped box kept the visible (left, all-ones) half of its mask.
  masks = out['masks'].numpy()
  np.testing.assert_allclose(masks[3][:, :7], 1., atol=1e-6)
  np.testing.assert_allclose(masks[3][:, 7], 0.75, atol=1e-6)
  np.testing.assert_array_equal(masks[:3], 1.)
  # Stage-1 geometry runs on the canvas.
  image, labels = parser.parse_prepared_train(out, stage=1)
  assert image.shape == (64, 64, 3)
  np.testing.assert_allclose(labels['gt_boxes'].numpy()[:4], boxes,
                             atol=1e-4)
