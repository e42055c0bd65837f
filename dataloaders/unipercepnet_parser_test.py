"""Tests for the UniPercepNet-S parser."""

import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from configs import unipercepnet as unipercepnet_cfg
from data import coco_utils
from dataloaders import unipercepnet_parser
from official.vision.data import create_coco_tf_record
from official.vision.dataloaders import tf_example_decoder
from official_ext.vision.ops import mask_ops


_MEAN = np.array(unipercepnet_cfg.MEAN_RGB, np.float32)
_STD = np.array(unipercepnet_cfg.STDDEV_RGB, np.float32)
_NAMES = {1: 'circle', 2: 'square', 4: 'triangle', 7: 'other'}


def _rect_mask(shape, y0, x0, y1, x1):
  mask = np.zeros(shape, bool)
  mask[y0:y1, x0:x1] = True
  return mask


def _serialized_example(tmp_path, image, instances, image_id=1):
  """Model Garden `create_tf_example` bytes of an image and its instances.

  Args:
    tmp_path: directory for the PNG.
    image: uint8 [h, w, 3].
    instances: list of (category_id, bool mask, is_crowd).
    image_id: COCO image id.

  Returns:
    The serialised tf.Example.
  """
  h, w = image.shape[:2]
  file_name = f'image_{image_id}.png'
  Image.fromarray(image).save(os.path.join(tmp_path, file_name))
  anns = []
  for k, (category_id, mask, is_crowd) in enumerate(instances):
    ys, xs = np.nonzero(mask)
    rle = coco_utils.uncompressed_rle(mask)
    anns.append({
        'id': k + 1, 'image_id': image_id, 'category_id': category_id,
        'bbox': [int(xs.min()), int(ys.min()),
                 int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
        'area': float(mask.sum()), 'iscrowd': int(is_crowd),
        'segmentation': rle if is_crowd else [rle],
    })
  example, num_skipped = create_coco_tf_record.create_tf_example(
      {'id': image_id, 'file_name': file_name, 'height': h, 'width': w},
      [str(tmp_path)], bbox_annotations=anns, id_to_name_map=_NAMES,
      include_masks=True)
  assert num_skipped == 0
  return example.SerializeToString()


def _decode(serialized):
  decoder = tf_example_decoder.TfExampleDecoder(include_mask=True)
  return decoder.decode(tf.constant(serialized))


def _iou(a, b):
  return np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1)


def _valid(labels):
  n = int(np.sum(labels['gt_classes'] > 0))
  return n, labels['gt_boxes'][:n], labels['gt_masks'][:n]


def test_round_trip_flip_and_scale(tmp_path):
  # A 64x96 image with a red rectangle (rows 10..29, cols 20..59), id 4.
  image = np.full([64, 96, 3], 30, np.uint8)
  mask = _rect_mask([64, 96], 10, 20, 30, 60)
  image[mask] = [200, 40, 40]
  record = os.path.join(tmp_path, 'one.tfrecord')
  with tf.io.TFRecordWriter(record) as writer:
    writer.write(_serialized_example(tmp_path, image, [(4, mask, False)]))
  parser = unipercepnet_parser.Parser(
      [128, 192], max_num_instances=5, mask_crop_size=28,
      aug_rand_hflip=True, hflip_prob=1.0, category_ids=[1, 2, 4])
  decoder = tf_example_decoder.TfExampleDecoder(include_mask=True)
  dataset = tf.data.TFRecordDataset(record).map(
      lambda s: parser.parse_train(decoder.decode(s), stage=2)).batch(1)
  images, labels = next(iter(dataset))
  images = images.numpy()[0]
  labels = {k: v.numpy()[0] for k, v in labels.items()}

  assert images.shape == (128, 192, 3)
  np.testing.assert_allclose(
      labels['image_info'], [[64, 96], [128, 192], [2, 2], [0, 0]])
  # Scaled by 2 -> x in [40, 120]; flipped in a 192-wide image.
  np.testing.assert_allclose(labels['gt_boxes'][0], [20, 72, 60, 152],
                             atol=1e-3)
  np.testing.assert_array_equal(labels['gt_boxes'][1:], -1)
  np.testing.assert_array_equal(labels['gt_classes'], [3, -1, -1, -1, -1])
  assert labels['gt_masks'].shape == (5, 28, 28)
  np.testing.assert_array_equal(labels['gt_masks'][1:], -1)
  pasted = mask_ops.paste_masks(
      labels['gt_masks'][:1], labels['gt_boxes'][:1], (128, 192)).numpy()[0]
  expected = _rect_mask([128, 192], 20, 72, 60, 152)
  assert _iou(pasted > 0.5, expected) > 0.95
  # The image is flipped too: red inside the flipped box, background left.
  np.testing.assert_allclose(images[40, 100], ([200, 40, 40] - _MEAN) / _STD,
                             atol=1e-3)
  np.testing.assert_allclose(images[40, 60], (30 - _MEAN) / _STD, atol=1e-3)


def test_non_contiguous_ids_mapped_and_unknown_dropped(tmp_path):
  image = np.full([40, 40, 3], 90, np.uint8)
  instances = [(cid, _rect_mask([40, 40], 2 + 9 * k, 2, 8 + 9 * k, 30), False)
               for k, cid in enumerate([4, 7, 1, 2])]
  decoded = _decode(_serialized_example(tmp_path, image, instances))
  parser = unipercepnet_parser.Parser([40, 40], max_num_instances=6,
                                      mask_crop_size=8,
                                      category_ids=[1, 2, 4])
  _, labels = parser.parse_train(decoded, stage=2)
  np.testing.assert_array_equal(labels['gt_classes'].numpy(),
                                [3, 1, 2, -1, -1, -1])
  # Id 7 (second instance, rows 11..16) is gone; the third box is next.
  np.testing.assert_allclose(labels['gt_boxes'].numpy()[1], [20, 2, 26, 30],
                             atol=1e-4)
  # Identity mapping keeps the ids.
  identity = unipercepnet_parser.Parser([40, 40], max_num_instances=6,
                                        mask_crop_size=8)
  _, labels = identity.parse_train(decoded, stage=2)
  np.testing.assert_array_equal(labels['gt_classes'].numpy(),
                                [4, 7, 1, 2, -1, -1])
  mapped = unipercepnet_parser.map_categories(
      tf.constant([0, 1, 2, 3, 4, 5, 1000, -3]),
      unipercepnet_parser.category_lookup_table([1, 2, 4]))
  np.testing.assert_array_equal(mapped.numpy(), [-1, 1, 2, -1, 3, -1, -1, -1])
  with pytest.raises(ValueError):
    unipercepnet_parser.category_lookup_table([1, 1])


def test_crowd_dropped_in_training_kept_in_eval(tmp_path):
  image = np.full([32, 48, 3], 60, np.uint8)
  instances = [(1, _rect_mask([32, 48], 0, 0, 16, 24), True),
               (2, _rect_mask([32, 48], 4, 30, 20, 46), False)]
  decoded = _decode(_serialized_example(tmp_path, image, instances))
  parser = unipercepnet_parser.Parser([64, 96], max_num_instances=4,
                                      mask_crop_size=8, category_ids=[1, 2, 4])
  _, labels = parser.parse_train(decoded, stage=1)
  np.testing.assert_array_equal(labels['gt_classes'].numpy(), [2, -1, -1, -1])
  np.testing.assert_allclose(labels['gt_boxes'].numpy()[0],
                             [8, 60, 40, 92], atol=1e-4)
  image, labels = parser.parse_eval(decoded)
  assert image.shape == (64, 96, 3)
  np.testing.assert_array_equal(labels['gt_classes'].numpy(), [1, 2, -1, -1])
  np.testing.assert_array_equal(labels['gt_is_crowd'].numpy(), [1, 0, -1, -1])
  assert labels['source_id'].dtype == tf.int64
  assert int(labels['source_id']) == 1
  assert (int(labels['height']), int(labels['width'])) == (32, 48)


def test_empty_image_gives_padding_labels(tmp_path):
  image = np.full([24, 40, 3], 100, np.uint8)
  decoded = _decode(_serialized_example(tmp_path, image, []))
  parser = unipercepnet_parser.Parser(
      [32, 64], max_num_instances=3, mask_crop_size=8, aug_scale_min=0.5,
      aug_scale_max=2.0, aug_rand_hflip=True, aug_hsv=True)
  for image, labels in (parser.parse_train(decoded, stage=1),
                        parser.parse_train(decoded, stage=2),
                        parser.parse_eval(decoded)):
    assert image.shape == (32, 64, 3)
    np.testing.assert_array_equal(labels['gt_boxes'].numpy(), -1)
    np.testing.assert_array_equal(labels['gt_classes'].numpy(), -1)
    np.testing.assert_array_equal(labels['gt_masks'].numpy(), -1)
    assert labels['gt_masks'].shape == (3, 8, 8)
  # Eval: the image (24x40 -> 32x53) is top-left, padding is pad_value.
  image = image.numpy()
  np.testing.assert_allclose(image[31, 52], (100 - _MEAN) / _STD, atol=1e-3)
  np.testing.assert_allclose(image[0, 54], (114 - _MEAN) / _STD, atol=1e-3)


def test_random_crop_clips_box_and_recrops_mask(tmp_path):
  # The instance covers the whole 64x64 image; its mask is the left half.
  image = np.full([64, 64, 3], 80, np.uint8)
  mask = _rect_mask([64, 64], 0, 0, 64, 32)
  decoded = dict(_decode(_serialized_example(tmp_path, image,
                                             [(1, mask, False)])))
  decoded['groundtruth_boxes'] = tf.constant([[0., 0., 1., 1.]])
  parser = unipercepnet_parser.Parser([64, 64], max_num_instances=2,
                                      mask_crop_size=32, aug_scale_min=2.0,
                                      aug_scale_max=2.0)
  seen_clipped = False
  for _ in range(4):
    _, labels = parser.parse_train(decoded, stage=1)
    info = labels['image_info'].numpy()
    oy, ox = info[3]
    np.testing.assert_allclose(info[2], [2, 2])
    np.testing.assert_allclose(labels['gt_boxes'].numpy()[0],
                               [0, 0, min(128 - oy, 64), min(128 - ox, 64)],
                               atol=1e-4)
    seen_clipped |= bool(oy > 0 or ox > 0)
    pasted = mask_ops.paste_masks(
        labels['gt_masks'][:1], labels['gt_boxes'][:1], (64, 64)).numpy()[0]
    expected = np.zeros([64, 64], bool)
    expected[:, :max(int(64 - ox), 0)] = True
    if expected.sum() >= 8 * 64:
      assert _iou(pasted > 0.5, expected) > 0.9
    else:  # A sliver (or nothing) of the left half is visible.
      assert pasted[:, 8:].max() < 0.5
  assert seen_clipped
