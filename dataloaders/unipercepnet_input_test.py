"""Tests for the UniPercepNet-S datasets (Model Garden's reader)."""

import re

import numpy as np
import pytest
import tensorflow as tf

from configs import unipercepnet as unipercepnet_cfg
from data import shapes_dataset
from dataloaders import unipercepnet_input


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
                                       mosaic_tile_size=32,
                                       mask_crop_size=16)
  for stage in (1, 2):
    config = unipercepnet_cfg.DataConfig(
        input_path=train, global_batch_size=2, is_training=True,
        shuffle_buffer_size=8, parser=parser_cfg, seed=1)
    dataset = unipercepnet_input.build_dataset(
        config, [64, 64], category_ids=[1, 2, 4], stage=stage)
    for images, labels in dataset.take(2):
      _check_batch(images, labels, 2, 64, 8, 16)
  config = unipercepnet_cfg.DataConfig(
      input_path=shapes['val']['tfrecords'][0], global_batch_size=2,
      is_training=False, drop_remainder=False, parser=parser_cfg)
  batches = list(unipercepnet_input.build_dataset(
      config, [64, 64], category_ids=[1, 2, 4]))
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
