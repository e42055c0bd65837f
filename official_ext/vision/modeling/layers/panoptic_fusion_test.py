"""PanopticFusion: Panoptic FPN's fusion on hand-built cases.

Detections use all-ones 4 x 4 crops in whole-pixel boxes: `paste_masks`
turns such a crop into exactly the box's pixels at mask_threshold 0.5
(checked by `test_all_ones_crop_pastes_to_the_box`), so the expected masks
are plain rectangles.
"""

import numpy as np
import pytest
import tensorflow as tf

from official_ext.vision.modeling.layers import panoptic_fusion
from official_ext.vision.ops import mask_ops

H, W = 16, 20
K = 3  # Thing classes 1..3.
S = 3  # Stuff classes 1..3 -> categories 4..6.
M = 4


def _semantic_logits(labels):
  """[B, H, W, S + 1] logits whose argmax is `labels` ([B, H, W])."""
  return tf.constant(np.eye(S + 1, dtype=np.float32)[labels] * 10. - 5.)


def _inputs(images, num_slots=4):
  """Batches detections given per image as lists of (box, score, class).

  Args:
    images: list of dicts with 'dets' (list of (yxyx box, score, class)),
      optional 'num' (num_detections; default len(dets)) and 'semantic'
      ([H, W] semantic labels; default all "things").
    num_slots: D; slots beyond the detections are padding (class 0).

  Returns:
    The positional inputs of the layer.
  """
  b = len(images)
  boxes = np.zeros([b, num_slots, 4], np.float32)
  scores = np.zeros([b, num_slots], np.float32)
  classes = np.zeros([b, num_slots], np.int32)
  num = np.zeros([b], np.int32)
  semantic = np.zeros([b, H, W], np.int64)
  for i, image in enumerate(images):
    for d, (box, score, cls) in enumerate(image['dets']):
      boxes[i, d] = box
      scores[i, d] = score
      classes[i, d] = cls
    num[i] = image.get('num', len(image['dets']))
    if 'semantic' in image:
      semantic[i] = image['semantic']
  masks = np.ones([b, num_slots, M, M], np.float32)
  return (tf.constant(boxes), tf.constant(scores), tf.constant(classes),
          tf.constant(masks), tf.constant(num), _semantic_logits(semantic))


def _fuse(images, valid_size=None, num_slots=4, **kwargs):
  kwargs.setdefault('stuff_area_threshold', 6)
  layer = panoptic_fusion.PanopticFusion(K, S, **kwargs)
  if valid_size is not None:
    valid_size = tf.constant(valid_size, tf.int32)
  out = layer(*_inputs(images, num_slots), valid_size=valid_size)
  assert out['category_mask'].dtype == tf.int32
  assert out['instance_mask'].dtype == tf.int32
  return out['category_mask'].numpy(), out['instance_mask'].numpy()


def _empty():
  return np.zeros([H, W], np.int32), np.zeros([H, W], np.int32)


def test_all_ones_crop_pastes_to_the_box():
  boxes = tf.constant([[2., 3., 6., 8.], [0., 0., 3., 2.],
                       [13., 17., 16., 20.]])
  pasted = mask_ops.paste_masks(tf.ones([3, M, M]), boxes, (H, W)).numpy()
  for mask, (y1, x1, y2, x2) in zip(pasted >= 0.5, boxes.numpy().astype(int)):
    expected = np.zeros([H, W], bool)
    expected[y1:y2, x1:x2] = True
    np.testing.assert_array_equal(mask, expected)


def test_overlap_rejection():
  dets = [
      ([0, 0, 4, 4], 0.9, 1),  # A: 16 px.
      ([0, 1, 4, 5], 0.8, 2),  # 12 of 16 on A: dropped.
      ([0, 3, 4, 7], 0.7, 3),  # 4 of 16 on A: keeps cols 4..6.
      ([8, 0, 12, 4], 0.6, 1),  # B.
      ([8, 2, 12, 6], 0.5, 2),  # Exactly half on B: kept (not > 0.5).
  ]
  category, instance = _fuse([{'dets': dets}], num_slots=6)
  cat, ins = _empty()
  cat[0:4, 0:4], ins[0:4, 0:4] = 1, 1
  cat[0:4, 4:7], ins[0:4, 4:7] = 3, 3
  cat[8:12, 0:4], ins[8:12, 0:4] = 1, 4
  cat[8:12, 4:6], ins[8:12, 4:6] = 2, 5
  np.testing.assert_array_equal(category[0], cat)
  np.testing.assert_array_equal(instance[0], ins)


def test_overlap_threshold_is_configurable():
  dets = [([0, 0, 4, 4], 0.9, 1), ([0, 3, 4, 7], 0.7, 3)]  # 25 % overlap.
  category, instance = _fuse([{'dets': dets}], overlap_threshold=0.2)
  cat, ins = _empty()
  cat[0:4, 0:4], ins[0:4, 0:4] = 1, 1
  np.testing.assert_array_equal(category[0], cat)
  np.testing.assert_array_equal(instance[0], ins)


def test_score_threshold():
  dets = [([0, 0, 4, 4], 0.49, 1), ([8, 8, 12, 12], 0.5, 2)]
  category, instance = _fuse([{'dets': dets}])
  cat, ins = _empty()
  cat[8:12, 8:12], ins[8:12, 8:12] = 2, 2
  np.testing.assert_array_equal(category[0], cat)
  np.testing.assert_array_equal(instance[0], ins)


def test_higher_score_wins_from_a_later_slot():
  dets = [([0, 0, 4, 4], 0.6, 1), ([0, 2, 4, 6], 0.9, 2)]
  category, instance = _fuse([{'dets': dets}])
  cat, ins = _empty()
  cat[0:4, 2:6], ins[0:4, 2:6] = 2, 2  # Slot 1 first.
  cat[0:4, 0:2], ins[0:4, 0:2] = 1, 1  # Slot 0: half covered, kept.
  np.testing.assert_array_equal(category[0], cat)
  np.testing.assert_array_equal(instance[0], ins)


def test_ties_keep_slot_order():
  dets = [([0, 0, 4, 4], 0.7, 1), ([0, 2, 4, 6], 0.7, 2)]
  category, instance = _fuse([{'dets': dets}])
  cat, ins = _empty()
  cat[0:4, 0:4], ins[0:4, 0:4] = 1, 1
  cat[0:4, 4:6], ins[0:4, 4:6] = 2, 2
  np.testing.assert_array_equal(category[0], cat)
  np.testing.assert_array_equal(instance[0], ins)


def test_padding_slots_are_ignored():
  dets = [
      ([0, 0, 4, 4], 0.6, 1),
      ([4, 4, 8, 8], 0.9, 0),  # Class 0 inside num_detections.
      ([8, 8, 12, 12], 0.9, 2),  # Beyond num_detections.
  ]
  category, instance = _fuse([{'dets': dets, 'num': 2}])
  cat, ins = _empty()
  cat[0:4, 0:4], ins[0:4, 0:4] = 1, 1
  np.testing.assert_array_equal(category[0], cat)
  np.testing.assert_array_equal(instance[0], ins)


def test_stuff_area_threshold_counts_unclaimed_valid_pixels():
  semantic = np.zeros([H, W], np.int64)
  semantic[10:12, 0:3] = 1  # 6 px: kept (= threshold).
  semantic[0:2, 0:3] = 1  # Another 6 px of class 1: same segment.
  semantic[10:12, 6:10] = 2  # 8 px, 4 claimed by the instance: dropped.
  semantic[4, 10:18] = 3  # 8 px, 3 beyond valid width 15: dropped.
  dets = [([10, 8, 12, 10], 0.9, 2)]
  category, instance = _fuse([{'dets': dets, 'semantic': semantic}],
                             valid_size=[[H, 15]])
  cat, ins = _empty()
  cat[10:12, 8:10], ins[10:12, 8:10] = 2, 1
  cat[10:12, 0:3] = cat[0:2, 0:3] = K + 1
  np.testing.assert_array_equal(category[0], cat)
  np.testing.assert_array_equal(instance[0], ins)
  # One pixel more of class 3 inside the valid image reaches the threshold.
  semantic[5, 10] = 3
  category, _ = _fuse([{'dets': dets, 'semantic': semantic}],
                      valid_size=[[H, 15]])
  cat[4, 10:15] = K + 3
  cat[5, 10] = K + 3
  np.testing.assert_array_equal(category[0], cat)
  # Threshold 13: class 1 (12 px) and class 3 (6 px) are dropped.
  category, _ = _fuse([{'dets': dets, 'semantic': semantic}],
                      valid_size=[[H, 15]], stuff_area_threshold=13)
  cat, _ = _empty()
  cat[10:12, 8:10] = 2
  np.testing.assert_array_equal(category[0], cat)


def test_things_class_never_becomes_stuff_and_unclaimed_is_void():
  semantic = np.zeros([H, W], np.int64)  # All "things".
  semantic[0:4, 0:5] = 2
  category, instance = _fuse([{'dets': [], 'semantic': semantic}],
                             stuff_area_threshold=0)
  cat, ins = _empty()
  cat[0:4, 0:5] = K + 2
  np.testing.assert_array_equal(category[0], cat)
  np.testing.assert_array_equal(instance[0], ins)


def test_valid_size_padding_stays_void():
  semantic = np.full([H, W], 1, np.int64)
  dets = [([8, 8, 14, 14], 0.9, 3)]  # Crosses the valid corner (10, 12).
  category, instance = _fuse([{'dets': dets, 'semantic': semantic}],
                             valid_size=[[10, 12]])
  cat, ins = _empty()
  cat[:10, :12] = K + 1
  cat[8:10, 8:12], ins[8:10, 8:12] = 3, 1
  np.testing.assert_array_equal(category[0], cat)
  np.testing.assert_array_equal(instance[0], ins)


def test_instance_outside_the_valid_image_claims_nothing():
  dets = [([12, 12, 16, 16], 0.9, 3), ([0, 0, 2, 2], 0.8, 1)]
  category, instance = _fuse([{'dets': dets}], valid_size=[[10, 12]])
  cat, ins = _empty()
  cat[0:2, 0:2], ins[0:2, 0:2] = 1, 2
  np.testing.assert_array_equal(category[0], cat)
  np.testing.assert_array_equal(instance[0], ins)


def _two_images():
  semantic = np.zeros([H, W], np.int64)
  semantic[12:16, :] = 3
  first = {'dets': [([0, 0, 4, 4], 0.9, 1), ([0, 1, 4, 5], 0.8, 2)]}
  second = {'dets': [([2, 2, 6, 6], 0.55, 2), ([4, 4, 8, 8], 0.95, 3),
                     ([0, 0, 1, 1], 0.3, 1)], 'semantic': semantic}
  cat0, ins0 = _empty()
  cat0[0:4, 0:4], ins0[0:4, 0:4] = 1, 1
  cat1, ins1 = _empty()
  cat1[4:8, 4:8], ins1[4:8, 4:8] = 3, 2
  cat1[2:6, 2:6] = np.where(ins1[2:6, 2:6] == 0, 2, cat1[2:6, 2:6])
  ins1[2:6, 2:6] = np.where(ins1[2:6, 2:6] == 0, 1, ins1[2:6, 2:6])
  cat1[12:14, :] = K + 3  # Valid height 14.
  return [first, second], np.stack([cat0, cat1]), np.stack([ins0, ins1])


def test_batch_of_two_images():
  images, cat, ins = _two_images()
  category, instance = _fuse(images, valid_size=[[H, W], [14, W]])
  np.testing.assert_array_equal(category, cat)
  np.testing.assert_array_equal(instance, ins)


def test_tf_function_with_static_shapes():
  images, cat, ins = _two_images()
  inputs = _inputs(images) + (tf.constant([[H, W], [14, W]]),)
  layer = panoptic_fusion.PanopticFusion(K, S, stuff_area_threshold=6)
  fn = tf.function(layer).get_concrete_function(
      *[tf.TensorSpec(x.shape, x.dtype) for x in inputs])
  assert fn.structured_outputs['category_mask'].shape == (2, H, W)
  assert fn.structured_outputs['instance_mask'].shape == (2, H, W)
  out = fn(*inputs)
  np.testing.assert_array_equal(out['category_mask'].numpy(), cat)
  np.testing.assert_array_equal(out['instance_mask'].numpy(), ins)


def test_saved_model_export(tmp_path):
  images, cat, ins = _two_images()
  inputs = _inputs(images) + (tf.constant([[H, W], [14, W]]),)
  module = tf.Module()
  module.layer = panoptic_fusion.PanopticFusion(K, S, stuff_area_threshold=6)
  specs = [tf.TensorSpec([None] + x.shape[1:], x.dtype) for x in inputs]
  module.serve = tf.function(module.layer, input_signature=specs)
  tf.saved_model.save(module, str(tmp_path))
  loaded = tf.saved_model.load(str(tmp_path))
  out = loaded.serve(*inputs)
  np.testing.assert_array_equal(out['category_mask'].numpy(), cat)
  np.testing.assert_array_equal(out['instance_mask'].numpy(), ins)


def test_config_round_trip():
  layer = panoptic_fusion.PanopticFusion(
      80, 53, score_threshold=0.6, overlap_threshold=0.4,
      stuff_area_threshold=100, mask_threshold=0.4)
  clone = panoptic_fusion.PanopticFusion.from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()
  assert clone.get_config()['stuff_area_threshold'] == 100


if __name__ == '__main__':
  pytest.main([__file__])
