"""Tests for the COCO panoptic PNG id encoding."""

import numpy as np

from common import panoptic_png


def test_ids_round_trip_through_rgb():
  ids = np.array([[0, 1, 255], [256, 70000, 256**3 - 1]])
  rgb = panoptic_png.encode_segment_ids(ids)
  assert rgb.dtype == np.uint8
  # 70000 = 112 + 256 * 17 + 256^2 * 1.
  np.testing.assert_array_equal(rgb[1, 1], [112, 17, 1])
  np.testing.assert_array_equal(panoptic_png.decode_segment_ids(rgb), ids)
