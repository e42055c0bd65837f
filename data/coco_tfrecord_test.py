"""Tests for the COCO-to-TFRecord writer."""

import os

import numpy as np
from PIL import Image
from pycocotools import mask as mask_lib
import pytest
import tensorflow as tf

from data import coco_tfrecord
from data import coco_utils
from official.vision.dataloaders import tf_example_decoder

_H, _W = 12, 16


def _rect(y0, x0, y1, x1):
  mask = np.zeros((_H, _W), np.uint8)
  mask[y0:y1, x0:x1] = 1
  return mask


@pytest.fixture
def coco(tmp_path):
  for name in ('a.png', 'b.jpg'):
    Image.fromarray(np.zeros((_H, _W, 3), np.uint8)).save(tmp_path / name)
  compressed = mask_lib.encode(np.asfortranarray(_rect(1, 2, 5, 9)))
  compressed['counts'] = compressed['counts'].decode('ascii')
  annotations = [
      # Compressed RLE, a polygon (two parts), a crowd region (uncompressed).
      {'segmentation': compressed, 'bbox': [2, 1, 7, 4], 'iscrowd': 0},
      {'segmentation': [[0, 6, 4, 6, 4, 10, 0, 10], [10, 0, 14, 0, 14, 2,
                                                     10, 2]],
       'bbox': [0, 0, 14, 10], 'iscrowd': 0},
      {'segmentation': coco_utils.uncompressed_rle(_rect(8, 10, 12, 16)),
       'bbox': [10, 8, 6, 4], 'iscrowd': 1},
  ]
  for i, (ann, image_id) in enumerate(zip(annotations, (1, 1, 2))):
    ann.update(id=i + 1, image_id=image_id, category_id=7 if i else 3,
               area=1.)
  return {
      'images': [{'id': 1, 'file_name': 'a.png', 'height': _H, 'width': _W},
                 {'id': 2, 'file_name': 'b.jpg', 'height': _H, 'width': _W}],
      'annotations': annotations,
      'categories': [{'id': 3, 'name': 'x'}, {'id': 7, 'name': 'y'}],
  }


def test_every_mask_kind_and_crowd_decode_as_the_json_says(coco, tmp_path):
  done = []
  paths = coco_tfrecord.write_tfrecords(
      coco, str(tmp_path), str(tmp_path / 'out'), num_shards=1,
      progress=lambda i, n: done.append((i, n)))
  assert done == [(1, 2), (2, 2)]
  decoder = tf_example_decoder.TfExampleDecoder(include_mask=True)
  records = [decoder.decode(r) for r in tf.data.TFRecordDataset(paths)]
  masks = [r['groundtruth_instance_masks'].numpy() for r in records]
  # pycocotools' rasterisation of the two squares: 4x4 + 4x2 pixels.
  polygon = coco_utils.annotation_mask(coco['annotations'][1][
      'segmentation'], _H, _W)
  assert polygon.sum() == 24 and polygon[7, 1] and polygon[1, 11]
  np.testing.assert_array_equal(masks[0], [_rect(1, 2, 5, 9), polygon])
  np.testing.assert_array_equal(masks[1], [_rect(8, 10, 12, 16)])
  np.testing.assert_array_equal(records[0]['groundtruth_classes'], [3, 7])
  np.testing.assert_array_equal(records[1]['groundtruth_is_crowd'], [True])
  formats = [tf.train.Example.FromString(r.numpy()).features.feature[
      'image/format'].bytes_list.value[0] for r in tf.data.TFRecordDataset(
          paths)]
  assert formats == [b'png', b'jpeg']


def test_worker_processes_write_the_same_bytes(coco, tmp_path):
  one = coco_tfrecord.write_tfrecords(coco, str(tmp_path),
                                      str(tmp_path / 'one'), num_shards=2)
  two = coco_tfrecord.write_tfrecords(coco, str(tmp_path),
                                      str(tmp_path / 'two'), num_shards=2,
                                      num_processes=2)
  for a, b in zip(one, two):
    assert os.path.getsize(a) > 0
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
      assert fa.read() == fb.read()


def test_box_outside_the_image_is_an_error_naming_it(coco, tmp_path):
  coco['annotations'][0]['bbox'] = [10, 1, 7, 4]  # x + w = 17 > 16
  with pytest.raises(ValueError, match=r'image 1 \(a.png\)'):
    coco_tfrecord.write_tfrecords(coco, str(tmp_path), str(tmp_path / 'o'))
