"""Tests for data/coco_checks.py (the rest runs in the callers' tests)."""

import numpy as np
from pycocotools import mask as mask_lib
import pytest

from data import coco_checks
from data import coco_utils


def _encoded(mask):
  return mask_lib.encode(np.asfortranarray(mask))


def test_compressed_rle_runs_match_pycocotools():
  rng = np.random.default_rng(0)
  for _ in range(20):
    height, width = rng.integers(1, 40, size=2)
    mask = (rng.random((height, width)) < rng.random()).astype(np.uint8)
    runs = coco_checks.compressed_rle_runs(_encoded(mask)['counts'])
    np.testing.assert_array_equal(runs,
                                  coco_utils.uncompressed_rle(mask)['counts'])
  # Runs longer than one character, and differences against two runs back.
  mask = np.zeros((120, 160), np.uint8)
  mask[10:110, 20:120] = 1
  runs = coco_checks.compressed_rle_runs(
      _encoded(mask)['counts'].decode('ascii'))
  np.testing.assert_array_equal(runs,
                                coco_utils.uncompressed_rle(mask)['counts'])


@pytest.mark.parametrize('counts,error', [
    ('0P', 'ends inside a number'),
    ('ab\x7f', 'holds characters outside the RLE code'),
    ('0@', 'decodes to a negative run'),
])
def test_compressed_rle_runs_errors(counts, error):
  with pytest.raises(ValueError, match=error):
    coco_checks.compressed_rle_runs(counts)


def test_segmentation_area_and_box_are_pycocotools():
  rng = np.random.default_rng(1)
  for _ in range(10):
    height, width = (int(v) for v in rng.integers(1, 40, size=2))
    mask = (rng.random((height, width)) < rng.random()).astype(np.uint8)
    rle = _encoded(mask)
    for segmentation in (
        {'size': [height, width], 'counts': rle['counts'].decode('ascii')},
        coco_utils.uncompressed_rle(mask)):
      findings, area, box = coco_checks.check_segmentation(
          segmentation, height, width)
      assert findings == []
      assert area == mask.sum() == mask_lib.area(rle)
      if area:
        np.testing.assert_array_equal(box, mask_lib.toBbox(rle))
      else:
        assert box is None
  # Runs that cover fewer pixels than the size (pycocotools would decode
  # them into uninitialised memory) are found before pycocotools sees them.
  findings, area, _ = coco_checks.check_segmentation(
      {'size': [4, 4], 'counts': '1'}, 4, 4)
  assert findings == [('invalid_rle', 'RLE counts cover 1 pixels, its size '
                       '4x4 has 16')] and area is None
