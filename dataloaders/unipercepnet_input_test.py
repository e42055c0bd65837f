"""Tests for the UniPercepNet-S input pipeline."""

import os
import re

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from configs import unipercepnet as unipercepnet_cfg
from dataloaders import coco_tfrecord
from dataloaders import shapes_dataset
from dataloaders import unipercepnet_input
from official.vision.data import create_coco_tf_record
from official.vision.dataloaders import tf_example_decoder

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
    rle = coco_tfrecord.uncompressed_rle(mask)
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
  parser = unipercepnet_input.Parser(
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
  pasted = unipercepnet_input.paste_masks(
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
  parser = unipercepnet_input.Parser([40, 40], max_num_instances=6,
                                     mask_crop_size=8,
                                     category_ids=[1, 2, 4])
  _, labels = parser.parse_train(decoded, stage=2)
  np.testing.assert_array_equal(labels['gt_classes'].numpy(),
                                [3, 1, 2, -1, -1, -1])
  # Id 7 (second instance, rows 11..16) is gone; the third box is next.
  np.testing.assert_allclose(labels['gt_boxes'].numpy()[1], [20, 2, 26, 30],
                             atol=1e-4)
  # Identity mapping keeps the ids.
  identity = unipercepnet_input.Parser([40, 40], max_num_instances=6,
                                       mask_crop_size=8)
  _, labels = identity.parse_train(decoded, stage=2)
  np.testing.assert_array_equal(labels['gt_classes'].numpy(),
                                [4, 7, 1, 2, -1, -1])
  mapped = unipercepnet_input.map_categories(
      tf.constant([0, 1, 2, 3, 4, 5, 1000, -3]),
      unipercepnet_input.category_lookup_table([1, 2, 4]))
  np.testing.assert_array_equal(mapped.numpy(), [-1, 1, 2, -1, 3, -1, -1, -1])
  with pytest.raises(ValueError):
    unipercepnet_input.category_lookup_table([1, 1])


def test_crowd_dropped_in_training_kept_in_eval(tmp_path):
  image = np.full([32, 48, 3], 60, np.uint8)
  instances = [(1, _rect_mask([32, 48], 0, 0, 16, 24), True),
               (2, _rect_mask([32, 48], 4, 30, 20, 46), False)]
  decoded = _decode(_serialized_example(tmp_path, image, instances))
  parser = unipercepnet_input.Parser([64, 96], max_num_instances=4,
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
  parser = unipercepnet_input.Parser(
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


def test_recrop_masks_on_clipped_box():
  # Box 10x20 px whose crop is 1 on its left half, 0 on its right half.
  crop = np.zeros([1, 8, 8], np.float32)
  crop[:, :, :4] = 1.
  box = tf.constant([[0., 0., 10., 20.]])
  left = unipercepnet_input.recrop_masks(crop, box,
                                         tf.constant([[0., 0., 10., 10.]]), 8)
  right = unipercepnet_input.recrop_masks(crop, box,
                                          tf.constant([[0., 10., 10., 20.]]),
                                          8)
  same = unipercepnet_input.recrop_masks(crop, box, box, 8)
  # Samples at cell centres, bilinear: only the sample next to the 1/0 edge
  # of the original crop mixes (crop column 3.25 -> 0.75, 3.75 -> 0.25).
  np.testing.assert_allclose(left.numpy()[0, :, :7], 1., atol=1e-6)
  np.testing.assert_allclose(left.numpy()[0, :, 7], 0.75, atol=1e-6)
  np.testing.assert_allclose(right.numpy()[0, :, 0], 0.25, atol=1e-6)
  np.testing.assert_allclose(right.numpy()[0, :, 1:], 0., atol=1e-6)
  np.testing.assert_array_equal(same.numpy(), crop)
  # Middle window x in [5, 15] = crop columns [2, 6].
  mid = unipercepnet_input.recrop_masks(crop, box,
                                        tf.constant([[0., 5., 10., 15.]]), 8)
  np.testing.assert_allclose(mid.numpy()[0, 4],
                             [1, 1, 1, .75, .25, 0, 0, 0], atol=1e-6)


def test_random_crop_clips_box_and_recrops_mask(tmp_path):
  # The instance covers the whole 64x64 image; its mask is the left half.
  image = np.full([64, 64, 3], 80, np.uint8)
  mask = _rect_mask([64, 64], 0, 0, 64, 32)
  decoded = dict(_decode(_serialized_example(tmp_path, image,
                                             [(1, mask, False)])))
  decoded['groundtruth_boxes'] = tf.constant([[0., 0., 1., 1.]])
  parser = unipercepnet_input.Parser([64, 64], max_num_instances=2,
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
    pasted = unipercepnet_input.paste_masks(
        labels['gt_masks'][:1], labels['gt_boxes'][:1], (64, 64)).numpy()[0]
    expected = np.zeros([64, 64], bool)
    expected[:, :max(int(64 - ox), 0)] = True
    if expected.sum() >= 8 * 64:
      assert _iou(pasted > 0.5, expected) > 0.9
    else:  # A sliver (or nothing) of the left half is visible.
      assert pasted[:, 8:].max() < 0.5
  assert seen_clipped


def test_hsv_jitter():
  grey = tf.fill([8, 8, 3], 128.)
  for seed in range(10):
    out = unipercepnet_input.yolox_hsv_jitter(grey, seed=seed).numpy()
    assert out.min() >= 0. and out.max() <= 255.
    # Saturation moves by at most 30/255: grey stays grey-ish.
    assert np.ptp(out, axis=-1).max() <= 31.
    # Value (the largest channel) moves by at most 30.
    assert np.all(np.abs(out.max(axis=-1) - 128.) <= 30.01)
  rng = np.random.default_rng(0)
  image = tf.constant(rng.uniform(0, 255, [6, 7, 3]), tf.float32)
  same = unipercepnet_input.yolox_hsv_jitter(image, gains=[0., 0., 0.])
  np.testing.assert_allclose(same.numpy(), image.numpy(), atol=1e-3)
  brighter = unipercepnet_input.yolox_hsv_jitter(tf.fill([2, 2, 3], 100.),
                                                 gains=[0., 0., 30.])
  np.testing.assert_allclose(brighter.numpy(), 130., atol=1e-3)
  # +60 OpenCV hue units = +120 degrees: red -> green.
  red = tf.constant([[[255., 0., 0.]]])
  green = unipercepnet_input.yolox_hsv_jitter(red, gains=[60., 0., 0.])
  np.testing.assert_allclose(green.numpy(), [[[0., 255., 0.]]], atol=1e-2)
  # Value clipped at 255.
  white = unipercepnet_input.yolox_hsv_jitter(tf.fill([1, 1, 3], 250.),
                                              gains=[0., 0., 30.])
  np.testing.assert_allclose(white.numpy(), 255., atol=1e-3)


def test_horizontal_flip_only_flips_valid_part():
  image = tf.reshape(tf.range(6, dtype=tf.float32), [1, 6, 1])
  boxes = tf.constant([[0., 1., 1., 3.]])
  masks = tf.constant([[[1., 0., 0.]]])
  image, boxes, masks = unipercepnet_input.horizontal_flip(image, boxes,
                                                           masks, 4)
  np.testing.assert_array_equal(image.numpy().ravel(), [3, 2, 1, 0, 4, 5])
  np.testing.assert_array_equal(boxes.numpy(), [[0., 1., 1., 3.]])
  np.testing.assert_array_equal(masks.numpy(), [[[0., 0., 1.]]])


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
  parser = unipercepnet_input.Parser([64, 64], mask_crop_size=8,
                                     mosaic=True, mosaic_tile_size=32)
  examples = [
      _prepared(16, 32, [2., 4., 10., 20.], 10),   # scale 1
      _prepared(32, 16, [0., 0., 32., 16.], 20),   # scale 1
      _prepared(64, 64, [0., 0., 64., 64.], 30),   # scale 0.5
      # Scale 1.6 -> 32x32 at x 40..72, cut at 64; box x 16..32 -> 56..64.
      _prepared(20, 20, [0., 10., 20., 20.], 40, left_half=True),
  ]
  out = parser.mosaic(examples, center=(24, 40))
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


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('shapes'))
  return shapes_dataset.generate(out, num_train=6, num_val=2, image_size=64)


def _check_batch(images, labels, batch, size, num, crop):
  assert images.shape == (batch, size, size, 3)
  assert images.dtype == tf.float32
  assert labels['image_info'].shape == (batch, 4, 2)
  assert labels['image_info'].dtype == tf.float32
  assert labels['gt_boxes'].shape == (batch, num, 4)
  assert labels['gt_boxes'].dtype == tf.float32
  assert labels['gt_classes'].shape == (batch, num)
  assert labels['gt_classes'].dtype == tf.int32
  assert labels['gt_masks'].shape == (batch, num, crop, crop)
  assert labels['gt_masks'].dtype == tf.float32
  classes = labels['gt_classes'].numpy()
  assert set(np.unique(classes)) <= {-1, 1, 2, 3}
  masks = labels['gt_masks'].numpy()
  valid = masks[classes > 0]
  assert valid.min() >= 0. and valid.max() <= 1.
  np.testing.assert_array_equal(masks[classes < 0], -1.)
  boxes = labels['gt_boxes'].numpy()[classes > 0]
  assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
  assert boxes.min() >= 0. and boxes.max() <= size


def test_build_dataset(shapes):
  train = shapes['train']['tfrecords']
  parser_cfg = unipercepnet_cfg.Parser(max_num_instances=8,
                                       mosaic_tile_size=32)
  for stage in (1, 2):
    config = unipercepnet_cfg.DataConfig(
        input_path=train, global_batch_size=2, is_training=True,
        shuffle_buffer_size=8, parser=parser_cfg, seed=1)
    dataset = unipercepnet_input.build_dataset(
        config, [64, 64], category_ids=[1, 2, 4], stage=stage,
        mask_crop_size=16)
    for images, labels in dataset.take(2):
      _check_batch(images, labels, 2, 64, 8, 16)
  config = unipercepnet_cfg.DataConfig(
      input_path=shapes['val']['tfrecords'][0], global_batch_size=2,
      is_training=False, drop_remainder=False, parser=parser_cfg)
  batches = list(unipercepnet_input.build_dataset(
      config, [64, 64], category_ids=[1, 2, 4], mask_crop_size=16))
  assert len(batches) == 1
  images, labels = batches[0]
  _check_batch(images, labels, 2, 64, 8, 16)
  assert labels['source_id'].dtype == tf.int64
  assert sorted(labels['source_id'].numpy().tolist()) == [1, 2]
  np.testing.assert_array_equal(labels['height'].numpy(), [64, 64])
  np.testing.assert_array_equal(labels['width'].numpy(), [64, 64])
  np.testing.assert_allclose(labels['image_info'].numpy()[0],
                             [[64, 64], [64, 64], [1, 1], [0, 0]])


def test_build_dataset_missing_input(tmp_path):
  for pattern in (str(tmp_path / 'nothing-*.tfrecord'),
                  str(tmp_path / 'missing.tfrecord')):
    config = unipercepnet_cfg.DataConfig(input_path=pattern,
                                         global_batch_size=2)
    with pytest.raises(ValueError, match=re.escape(pattern)):
      unipercepnet_input.build_dataset(config, [64, 64])


def test_test_scale_resizes_and_pads_as_the_reference():
  # mmdet's Resize(scale=(1333, 800), keep_ratio=True) then Pad to the
  # scale with 114, then zeros after normalisation up to the input size;
  # scaled to a small input: test_scale (40, 60) within a 64 x 96 input.
  image = np.full([20, 40, 3], 200, np.uint8)
  out, info, valid = unipercepnet_input.preprocess_for_inference(
      image, [64, 96], 114., test_scale=[40, 60])
  out = out.numpy()
  # Landscape: the box is 40 x 60; scale min(40 / 20, 60 / 40) = 1.5.
  np.testing.assert_array_equal(valid.numpy(), [30, 60])
  np.testing.assert_allclose(info.numpy(),
                             [[20, 40], [30, 60], [1.5, 1.5], [0, 0]])
  np.testing.assert_allclose(out[:30, :60] - (200 - _MEAN) / _STD, 0.,
                             atol=1e-5)
  np.testing.assert_allclose(out[30:40, :60] - (114 - _MEAN) / _STD, 0.,
                             atol=1e-5)
  np.testing.assert_allclose(out[40:], 0., atol=1e-6)
  np.testing.assert_allclose(out[:, 60:], 0., atol=1e-6)
  # Portrait: the box turns (60 x 40), unlike the reference's fixed Pad.
  _, info, valid = unipercepnet_input.preprocess_for_inference(
      np.transpose(image, (1, 0, 2)), [64, 96], 114., test_scale=[40, 60])
  np.testing.assert_array_equal(valid.numpy(), [60, 30])
