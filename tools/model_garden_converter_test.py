"""Tests for tools/model_garden_converter.py, against Model Garden itself."""

import io

import numpy as np
from PIL import Image
from pycocotools import mask as mask_lib
import pytest

from data import coco_utils
from official.vision.data import create_coco_tf_record
from tools import model_garden_converter

_H, _W = 12, 16
_SQUARE = [3, 2, 9, 2, 9, 6, 3, 6]


def _rect():
  mask = np.zeros((_H, _W), np.uint8)
  mask[2:6, 3:9] = 1
  return mask


def _compressed():
  rle = mask_lib.encode(np.asfortranarray(_rect()))
  return {'size': [_H, _W], 'counts': rle['counts'].decode('ascii')}


def _model_garden_mask(segmentation, iscrowd):
  """The mask Model Garden's converter writes, as its decoder reads it."""
  png = create_coco_tf_record.coco_segmentation_to_mask_png(
      segmentation, _H, _W, iscrowd)
  with Image.open(io.BytesIO(png)) as image:
    return np.asarray(image.convert('L') if image.mode != 'L' else image)


# segmentation, iscrowd, warning kind (None: none), what Model Garden does:
# an exception type or None (it converts; the mask is checked).
_CASES = {
    'polygons': ([_SQUARE], 0, None, None),
    'crowd uncompressed RLE': (coco_utils.uncompressed_rle(_rect()), 1, None,
                               None),
    'compressed RLE': (_compressed(), 0, 'mg_compressed_rle', ValueError),
    'crowd compressed RLE': (_compressed(), 1, 'mg_compressed_rle',
                             ValueError),
    'uncompressed RLE': (coco_utils.uncompressed_rle(_rect()), 0,
                         'mg_rle_not_crowd', np.exceptions.AxisError),
    'crowd polygon': ([_SQUARE], 1, 'mg_crowd_polygons', TypeError),
    'crowd of 5 polygons': ([_SQUARE] * 5, 1, 'mg_crowd_polygons', TypeError),
    'crowd of 2 polygons': ([_SQUARE, [10, 0, 14, 0, 14, 2, 10, 2]], 1,
                            'mg_crowd_polygons', None),
}


@pytest.mark.parametrize('name', sorted(_CASES))
def test_warnings_say_what_model_garden_does(name):
  segmentation, iscrowd, kind, error = _CASES[name]
  ann = {'segmentation': segmentation, 'iscrowd': iscrowd}
  found = model_garden_converter.annotation_warnings(ann)
  assert [k for k, _ in found] == ([kind] if kind else [])
  if error:
    with pytest.raises(error):
      _model_garden_mask(segmentation, iscrowd)
    assert found[0][1].endswith('create_coco_tf_record.py stops on it; '
                                'convert with python -m data.coco_tfrecord '
                                'instead')
    return
  expected = coco_utils.annotation_mask(segmentation, _H, _W)
  right = np.array_equal(_model_garden_mask(segmentation, iscrowd), expected)
  assert right == (kind is None)


def test_no_iscrowd_and_invalid_masks():
  found = model_garden_converter.annotation_warnings(
      {'segmentation': _compressed()}, mask_valid=False)
  assert found == [('mg_no_iscrowd', 'no iscrowd: create_coco_tf_record.py '
                    'stops on it; convert with python -m data.coco_tfrecord '
                    'instead')]
  with pytest.raises(KeyError, match='iscrowd'):
    create_coco_tf_record.coco_annotations_to_lists(
        [{'bbox': [3, 2, 6, 4], 'category_id': 1, 'area': 24.0,
          'segmentation': [_SQUARE]}], {1: 'a'}, _H, _W, include_masks=True)
