"""Tests for the panoptic records' decoding and parsing (the semantic target
and the panoptic ground truth move with the image)."""

import io

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from dataloaders import panoptic_decoder
from dataloaders import unipercepnet_parser
from dataloaders import unipercepnet_parser_test as parser_test
from dataloaders.ops import mosaic as mosaic_lib

_H, _W = 40, 60
_THINGS = [1, 2]
_STUFF = [5, 6]


def _png(array):
  buffer = io.BytesIO()
  Image.fromarray(array.astype(np.uint8)).save(buffer, format='PNG')
  return buffer.getvalue()


def _scene():
  """Sky (5) on top, road (6) below, void strip, a square (1) and a crowd
  of category 2; returns (image, instances, category, instance)."""
  category = np.full([_H, _W], 6, np.uint8)
  category[:15] = 5
  category[:, 55:] = 0                              # void strip
  square = parser_test._rect_mask((_H, _W), 20, 10, 30, 22)
  crowd = parser_test._rect_mask((_H, _W), 5, 30, 25, 50)
  instance = np.zeros([_H, _W], np.uint8)
  category[square], instance[square] = 1, 1
  category[crowd], instance[crowd] = 2, 2           # MG: crowd as a segment
  image = np.random.default_rng(0).integers(0, 255, [_H, _W, 3], np.uint8)
  instances = [(1, square, False), (2, crowd, True)]
  return image, instances, category, instance


def _example(tmp_path, with_panoptic=True):
  image, instances, category, instance = _scene()
  example = tf.train.Example.FromString(
      parser_test._serialized_example(tmp_path, image, instances))
  if with_panoptic:
    feature = example.features.feature
    feature[panoptic_decoder.CATEGORY_MASK_KEY].bytes_list.value.append(
        _png(category))
    feature[panoptic_decoder.INSTANCE_MASK_KEY].bytes_list.value.append(
        _png(instance))
  return example.SerializeToString(), category, instance


def _parser(**kwargs):
  return unipercepnet_parser.Parser(
      output_size=[64, 96], mask_crop_size=8, category_ids=_THINGS,
      stuff_category_ids=_STUFF, **kwargs)


def test_semantic_table_maps_things_stuff_and_void():
  table = unipercepnet_parser.semantic_lookup_table([1, 2], [5, 6])
  assert table[[0, 1, 2, 3, 5, 6, 200]].tolist() == [255, 0, 0, 255, 1, 2,
                                                     255]
  with pytest.raises(ValueError, match=r'\[2\] are both things'):
    unipercepnet_parser.semantic_lookup_table([1, 2], [2, 6])
  with pytest.raises(ValueError, match='1..254'):
    unipercepnet_parser.semantic_lookup_table([1], [300])


def test_decoder_reads_the_panoptic_masks(tmp_path):
  serialized, category, instance = _example(tmp_path)
  decoded = panoptic_decoder.PanopticTfExampleDecoder().decode(
      tf.constant(serialized))
  np.testing.assert_array_equal(
      decoded['groundtruth_panoptic_category_mask'], category)
  np.testing.assert_array_equal(
      decoded['groundtruth_panoptic_instance_mask'], instance)
  assert decoded['groundtruth_instance_masks'].shape == (2, _H, _W)


def test_a_record_without_panoptic_masks_says_which_key(tmp_path):
  serialized, _, _ = _example(tmp_path, with_panoptic=False)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='image/panoptic/category_mask'):
    panoptic_decoder.PanopticTfExampleDecoder().decode(
        tf.constant(serialized))


@pytest.mark.parametrize('flip', [False, True])
def test_semantic_target_moves_with_the_image(tmp_path, flip):
  serialized, category, _ = _example(tmp_path)
  parser = _parser(aug_rand_hflip=flip, hflip_prob=1.0)
  decoded = panoptic_decoder.PanopticTfExampleDecoder().decode(
      tf.constant(serialized))
  _, labels = parser.parse_train(decoded, stage=2)
  # 40x60 fitted into 64x96: scale 1.6, 64 x 96 exactly; nearest resize.
  table = unipercepnet_parser.semantic_lookup_table(_THINGS, _STUFF)
  rows = np.floor((np.arange(64) + 0.5) / 1.6).astype(int)
  cols = np.floor((np.arange(96) + 0.5) / 1.6).astype(int)
  expected = table[category][rows][:, cols]
  if flip:
    expected = expected[:, ::-1]
  semantic = labels['gt_semantic'].numpy()
  assert semantic.shape == (64, 96)
  np.testing.assert_array_equal(semantic, expected)
  # The thing pixels are class 0 and the void strip is ignored.
  assert set(np.unique(semantic)) == {0, 1, 2, 255}
  # The boxes moved the same way: the square's box covers its label pixels.
  box = labels['gt_boxes'].numpy()[0]
  ys, xs = np.nonzero(semantic == 0)
  square = (ys >= 20 * 1.6 - 1) & (ys < 30 * 1.6 + 1) & (xs < 48 if not flip
                                                          else xs >= 48)
  assert ys[square].min() >= box[0] - 1 and xs[square].max() <= box[3] + 1


def test_eval_ground_truth_marks_crowd_and_pads_with_void(tmp_path):
  serialized, category, instance = _example(tmp_path)
  decoded = panoptic_decoder.PanopticTfExampleDecoder().decode(
      tf.constant(serialized))
  parser = unipercepnet_parser.Parser(
      output_size=[64, 64], mask_crop_size=8, category_ids=_THINGS,
      stuff_category_ids=_STUFF)
  _, labels = parser.parse_eval(decoded)
  # 40x60 fitted into 64x64: scale 64/60, 43 x 64, void below.
  cat = labels['gt_panoptic_category_mask'].numpy()
  inst = labels['gt_panoptic_instance_mask'].numpy()
  rows = np.floor((np.arange(43) + 0.5) * 40 / 43).astype(int)
  cols = np.floor((np.arange(64) + 0.5) * 60 / 64).astype(int)
  np.testing.assert_array_equal(cat[:43], category[rows][:, cols])
  expected_inst = instance[rows][:, cols]
  expected_inst[expected_inst == 2] = unipercepnet_parser.CROWD_INSTANCE_ID
  np.testing.assert_array_equal(inst[:43], expected_inst)
  assert not cat[43:].any() and not inst[43:].any()


def test_mosaic_carries_the_semantic_target(tmp_path):
  serialized, category, _ = _example(tmp_path)
  parser = _parser()
  decoded = panoptic_decoder.PanopticTfExampleDecoder().decode(
      tf.constant(serialized))
  prepared = parser.prepare(decoded, is_training=True)
  mosaic = mosaic_lib.Mosaic(tile_size=60, mask_crop_size=8)
  out = mosaic.mosaic([prepared] * 4, center=(60, 60))
  semantic = out['semantic'].numpy()[:, :, 0]
  table = unipercepnet_parser.semantic_lookup_table(_THINGS, _STUFF)
  # Tile side 60 fits the 40x60 image at scale 1: the top-left tile sits
  # with its bottom-right corner at the centre.
  np.testing.assert_array_equal(semantic[20:60, 0:60], table[category])
  np.testing.assert_array_equal(semantic[60:100, 60:120], table[category])
  # Where no image lies, the target is ignored.
  assert (semantic[:20] == 255).all() and (semantic[100:] == 255).all()
