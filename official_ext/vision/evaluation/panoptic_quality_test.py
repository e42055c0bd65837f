"""PQ with COCO's per-class crowd against an independent computation.

`_reference_pq` below is written from the COCO definition (see the module
docstring of panoptic_quality.py) with explicit per-segment loops; it does not
use the module under test.
"""

import numpy as np
import pytest
import tensorflow as tf

from official.vision.evaluation import panoptic_quality as mg_panoptic_quality
from official_ext.vision.evaluation import panoptic_quality

# Categories: 0 void, 1 and 2 things, 3, 4 and 5 stuff.
NUM_CATEGORIES = 6
IS_THING = np.array([False, True, True, False, False, False])
CROWD = 255


def _reference_pq(images, is_thing=IS_THING):
  """PQ/SQ/RQ from the definition, with explicit loops over segments.

  Args:
    images: list of (gt_category, gt_instance, pred_category, pred_instance)
      [H, W] integer arrays, already cropped; category 0 is void, gt
      instance CROWD in a category c is crowd of class c.
    is_thing: bool per category.

  Returns:
    A dict like the evaluator's result.
  """
  num = len(is_thing)
  tp, fp, fn, iou_sum = [0] * num, [0] * num, [0] * num, [0.] * num
  for gt_cat, gt_ins, pred_cat, pred_ins in images:
    void = gt_cat == 0
    gt_segments, crowd, pred_segments = {}, {}, {}
    for c, i in set(zip(gt_cat.ravel().tolist(), gt_ins.ravel().tolist())):
      mask = (gt_cat == c) & (gt_ins == i)
      if c == 0:
        continue
      if i == CROWD:
        crowd[c] = mask
      else:
        gt_segments[(c, i)] = mask
    for c, i in set(zip(pred_cat.ravel().tolist(),
                        pred_ins.ravel().tolist())):
      if c != 0:
        pred_segments[(c, i)] = (pred_cat == c) & (pred_ins == i)
    gt_matched, pred_matched = set(), set()
    for g, g_mask in gt_segments.items():
      for p, p_mask in pred_segments.items():
        if g[0] != p[0]:
          continue
        intersection = int(np.sum(g_mask & p_mask))
        union = int(np.sum(g_mask) + np.sum(p_mask) - intersection -
                    np.sum(p_mask & void))
        if intersection / union > 0.5:
          tp[g[0]] += 1
          iou_sum[g[0]] += intersection / union
          gt_matched.add(g)
          pred_matched.add(p)
    for g in gt_segments:
      if g not in gt_matched:
        fn[g[0]] += 1
    for p, p_mask in pred_segments.items():
      if p in pred_matched:
        continue
      ignored = np.sum(p_mask & void)
      if p[0] in crowd:
        ignored += np.sum(p_mask & crowd[p[0]])
      if ignored / np.sum(p_mask) <= 0.5:
        fp[p[0]] += 1
  pq, sq, rq, counted = {}, {}, {}, []
  for c in range(1, num):
    if tp[c] + fp[c] + fn[c] == 0:
      continue
    counted.append(c)
    sq[c] = iou_sum[c] / tp[c] if tp[c] else 0.
    rq[c] = tp[c] / (tp[c] + fp[c] / 2 + fn[c] / 2)
    pq[c] = sq[c] * rq[c]
  result = {}
  for suffix, members in [
      ('', counted), ('_things', [c for c in counted if is_thing[c]]),
      ('_stuff', [c for c in counted if not is_thing[c]])]:
    for name, values in [('PQ', pq), ('SQ', sq), ('RQ', rq)]:
      result[name + suffix] = (
          sum(values[c] for c in members) / len(members) if members else 0.)
  result['num_categories'] = len(counted)
  result['num_things'] = sum(bool(is_thing[c]) for c in counted)
  result['num_stuff'] = len(counted) - result['num_things']
  return result


def _hand_image():
  """One 12 x 12 image; its numbers are worked out in test_hand_checked.

  Ground truth: thing 1 instance 1 [0:4, 0:4]; crowd of class 1
  [0:4, 6:12]; thing 2 instance 2 [6:8, 0:4]; stuff 3 [8:12, :]; void
  elsewhere ([0:4, 4:6], [4:6, :], [6:8, 4:12]).
  Prediction: (1, 1) [0:4, 0:5] (4 px on void); (1, 2) [0:4, 7:12] (all
  on class-1 crowd); (2, 3) [0:2, 6:7] (on class-1 crowd); (2, 4)
  [6:8, 0:4]; stuff 4 [4:6, :] (all on void); stuff 3 [8:11, :]; stuff 5
  [11:12, :] (only in the prediction).

  Returns:
    gt category, gt instance, pred category, pred instance.
  """
  gt_cat = np.zeros([12, 12], np.int32)
  gt_ins = np.zeros([12, 12], np.int32)
  gt_cat[0:4, 0:4], gt_ins[0:4, 0:4] = 1, 1
  gt_cat[0:4, 6:12], gt_ins[0:4, 6:12] = 1, CROWD
  gt_cat[6:8, 0:4], gt_ins[6:8, 0:4] = 2, 2
  gt_cat[8:12, :] = 3
  pred_cat = np.zeros([12, 12], np.int32)
  pred_ins = np.zeros([12, 12], np.int32)
  pred_cat[0:4, 0:5], pred_ins[0:4, 0:5] = 1, 1
  pred_cat[0:4, 7:12], pred_ins[0:4, 7:12] = 1, 2
  pred_cat[0:2, 6:7], pred_ins[0:2, 6:7] = 2, 3
  pred_cat[6:8, 0:4], pred_ins[6:8, 0:4] = 2, 4
  pred_cat[4:6, :] = 4
  pred_cat[8:11, :] = 3
  pred_cat[11:12, :] = 5
  return gt_cat, gt_ins, pred_cat, pred_ins


def _random_image(rng, size=(24, 28)):
  """Rectangles of gt segments (incl. crowd, void) and perturbed predictions.

  Args:
    rng: numpy Generator.
    size: (H, W).

  Returns:
    gt category, gt instance, pred category, pred instance.
  """
  h, w = size
  gt_cat = rng.choice([0, 3, 4], size=1)[0] * np.ones(size, np.int32)
  gt_ins = np.zeros(size, np.int32)
  pred_cat = gt_cat.copy()
  pred_ins = np.zeros(size, np.int32)
  if rng.random() < 0.5:  # Some stuff bands; predictions shifted.
    row = rng.integers(2, h - 2)
    gt_cat[row:] = 5
    pred_cat[row + rng.integers(-3, 4):] = rng.choice([5, 5, 4])
  for n in range(rng.integers(3, 8)):
    y, x = rng.integers(0, h - 3), rng.integers(0, w - 3)
    hh, ww = rng.integers(2, 10), rng.integers(2, 10)
    c = rng.choice([0, 1, 2, 3])
    i = (CROWD if rng.random() < 0.2 else n + 1) if c in (1, 2) else 0
    gt_cat[y:y + hh, x:x + ww], gt_ins[y:y + hh, x:x + ww] = c, i
    if rng.random() < 0.8:
      dy, dx = rng.integers(-2, 3, size=2)
      y, x = max(y + dy, 0), max(x + dx, 0)
      pc = c if rng.random() < 0.7 else rng.choice([1, 2, 3, 4, 5])
      pi = n + 10 if pc in (1, 2) else 0
      pred_cat[y:y + hh, x:x + ww], pred_ins[y:y + hh, x:x + ww] = pc, pi
  return gt_cat, gt_ins, pred_cat, pred_ins


def _evaluator():
  return panoptic_quality.PanopticQualityEvaluator(NUM_CATEGORIES, IS_THING)


def _assert_results_equal(result, expected):
  assert set(result) == set(expected)
  for key, value in expected.items():
    assert result[key] == pytest.approx(value, abs=1e-9), key


def test_hand_checked():
  # Class 1: (1, 1) matches gt (1, 1): intersection 16, union
  #   16 + 20 - 16 - 4 (on void) = 16, IoU 1; (1, 2) lies on class-1 crowd:
  #   forgiven; the crowd is no FN. PQ = SQ = RQ = 1.
  # Class 2: (2, 4) matches with IoU 1; (2, 3) lies on crowd of class 1,
  #   which does not forgive class 2: FP. RQ = 1 / 1.5, SQ 1, PQ 2/3.
  # Class 3: IoU 36 / 48 = 0.75: TP. PQ = SQ = 0.75, RQ 1.
  # Class 4: all on void: forgiven, not counted.
  # Class 5: FP only. PQ = SQ = RQ = 0, counted.
  # PQ = (1 + 2/3 + 0.75 + 0) / 4, things (1 + 2/3) / 2, stuff 0.75 / 2.
  evaluator = _evaluator()
  gt_cat, gt_ins, pred_cat, pred_ins = _hand_image()
  evaluator.update_state(
      {'category_mask': gt_cat[None], 'instance_mask': gt_ins[None]},
      {'category_mask': pred_cat[None], 'instance_mask': pred_ins[None]})
  expected = {
      'PQ': (1. + 2. / 3. + 0.75) / 4., 'SQ': 2.75 / 4.,
      'RQ': (1. + 2. / 3. + 1.) / 4.,
      'PQ_things': (1. + 2. / 3.) / 2., 'SQ_things': 1.,
      'RQ_things': (1. + 2. / 3.) / 2.,
      'PQ_stuff': 0.375, 'SQ_stuff': 0.375, 'RQ_stuff': 0.5,
      'num_categories': 4, 'num_things': 2, 'num_stuff': 2}
  _assert_results_equal(evaluator.result(), expected)
  _assert_results_equal(_reference_pq([_hand_image()]), expected)


def test_matches_the_reference_over_batches_with_valid_size():
  rng = np.random.default_rng(7)
  images = [_hand_image()] + [_random_image(rng) for _ in range(11)]
  evaluator = _evaluator()
  cropped = []
  for start in range(0, len(images), 3):
    batch = images[start:start + 3]
    height = max(im[0].shape[0] for im in batch)
    width = max(im[0].shape[1] for im in batch)
    arrays = []
    valid_size = []
    # Padding that would count if not cropped: stuff 3 in the ground truth,
    # thing (1, 7) in the prediction.
    for j, fill in enumerate([3, 0, 1, 7]):
      padded = np.full([len(batch), height + 2, width + 3], fill, np.int32)
      for k, image in enumerate(batch):
        h, w = image[0].shape
        padded[k, :h, :w] = image[j]
      arrays.append(padded)
    for image in batch:
      valid_size.append(image[0].shape)
    # Crop the random images further: valid_size smaller than the image.
    valid_size = [(h - 1, w - 2) for h, w in valid_size]
    cropped += [tuple(a[:h, :w] for a in image)
                for image, (h, w) in zip(batch, valid_size)]
    evaluator.update_state(
        {'category_mask': tf.constant(arrays[0]),
         'instance_mask': tf.constant(arrays[1]),
         'valid_size': tf.constant(valid_size)},
        {'category_mask': arrays[2], 'instance_mask': arrays[3]})
  result = evaluator.result()
  expected = _reference_pq(cropped)
  _assert_results_equal(result, expected)
  # The cases are all there: crowd, counted classes of both kinds.
  assert expected['num_things'] == 2 and expected['num_stuff'] == 3
  assert 0.2 < expected['PQ'] < 0.9


def test_valid_size_crops_the_padding():
  gt_cat, gt_ins, pred_cat, pred_ins = _hand_image()
  pad = lambda a, value: np.pad(a, [(0, 3), (0, 2)],
                                constant_values=value)[None]
  # Stuff 3 in the gt padding; a class-2 thing in the predicted padding.
  pred_cat_padded, pred_ins_padded = pad(pred_cat, 0), pad(pred_ins, 0)
  pred_cat_padded[0, 12:, :] = 2
  pred_ins_padded[0, 12:, :] = 9
  groundtruths = {'category_mask': pad(gt_cat, 3),
                  'instance_mask': pad(gt_ins, 0)}
  predictions = {'category_mask': pred_cat_padded,
                 'instance_mask': pred_ins_padded}
  evaluator = _evaluator()
  evaluator.update_state(dict(groundtruths, valid_size=[[12, 12]]),
                         predictions)
  _assert_results_equal(evaluator.result(), _reference_pq([_hand_image()]))
  evaluator.update_state(groundtruths, predictions)
  uncropped = evaluator.result()
  # Class 2 gets a second FP: RQ 1 / (1 + 2 / 2). Stuff 3 grows to
  # 48 + 66 px: IoU 36 / 114, no match.
  assert uncropped['RQ_things'] == pytest.approx((1. + 0.5) / 2.)
  assert uncropped['PQ_stuff'] == 0.


def test_crowd_differs_from_model_garden():
  """Model Garden's PQ has no per-class crowd; that is why this exists."""
  gt_cat, gt_ins, pred_cat, pred_ins = _hand_image()
  # Without the prediction on the crowd of class 1.
  pred_cat[0:4, 7:12] = 0
  pred_ins[0:4, 7:12] = 0
  ours = panoptic_quality.PanopticQuality(NUM_CATEGORIES, 0, 256, 256 * 6)
  mg = mg_panoptic_quality.PanopticQuality(NUM_CATEGORIES, 0, 256, 256 * 6)
  for metric in (ours, mg):
    metric.compare_and_accumulate(
        {'category_mask': gt_cat, 'instance_mask': gt_ins},
        {'category_mask': pred_cat, 'instance_mask': pred_ins})
  with np.errstate(divide='ignore', invalid='ignore'):
    ours_pq = ours.result_per_category()['pq_per_class']
    mg_pq = mg.result_per_category()['pq_per_class']
  # Ours: the crowd of class 1 is no FN.
  assert ours.fn_per_class[1] == 0
  assert ours_pq[1] == 1.
  # Model Garden: the crowd is an ordinary segment, missed: a FN.
  assert mg.fn_per_class[1] == 1
  assert mg_pq[1] == pytest.approx(2 / 3)

  # Model Garden's class-agnostic crowd (void category, instance > 0)
  # forgives any class; COCO's crowd of class 1 does not forgive class 2.
  gt_cat, gt_ins, pred_cat, pred_ins = _hand_image()
  ours.reset()
  mg.reset()
  ours.compare_and_accumulate(
      {'category_mask': gt_cat, 'instance_mask': gt_ins},
      {'category_mask': pred_cat, 'instance_mask': pred_ins})
  mg_gt_cat = np.where(gt_ins == CROWD, 0, gt_cat)
  mg.compare_and_accumulate(
      {'category_mask': mg_gt_cat, 'instance_mask': gt_ins},
      {'category_mask': pred_cat, 'instance_mask': pred_ins})
  assert ours.fp_per_class[2] == 1  # (2, 3) on crowd of class 1.
  assert mg.fp_per_class[2] == 0


def test_model_garden_ignored_crowd_is_kept():
  gt_cat, gt_ins, pred_cat, pred_ins = _hand_image()
  # The same crowd region in Model Garden's encoding: void, instance > 0.
  gt_cat = np.where(gt_ins == CROWD, 0, gt_cat)
  gt_ins = np.where(gt_ins == CROWD, 3, gt_ins)
  ours = panoptic_quality.PanopticQuality(NUM_CATEGORIES, 0, 256, 256 * 6)
  ours.compare_and_accumulate(
      {'category_mask': gt_cat, 'instance_mask': gt_ins},
      {'category_mask': pred_cat, 'instance_mask': pred_ins})
  np.testing.assert_array_equal(ours.fp_per_class, [0, 0, 0, 0, 0, 1])
  np.testing.assert_array_equal(ours.fn_per_class, np.zeros(6))
  np.testing.assert_array_equal(ours.tp_per_class, [0, 1, 1, 1, 0, 0])


def test_crowd_is_never_matched():
  # The prediction covers the crowd of class 1 exactly: still no TP, no FP.
  gt_cat = np.zeros([4, 4], np.int32)
  gt_ins = np.zeros([4, 4], np.int32)
  gt_cat[:, :2], gt_ins[:, :2] = 1, CROWD
  gt_cat[:, 2:] = 3
  pred_cat = gt_cat.copy()
  pred_ins = np.where(gt_cat == 1, 1, 0)
  evaluator = _evaluator()
  evaluator.update_state(
      {'category_mask': gt_cat[None], 'instance_mask': gt_ins[None]},
      {'category_mask': pred_cat[None], 'instance_mask': pred_ins[None]})
  result = evaluator.result()
  assert result['num_things'] == 0
  assert result['PQ'] == 1. and result['num_categories'] == 1


def test_prediction_on_void_shrinks_the_union():
  # gt (1, 1): 2 px; prediction: those 2 px plus 2 px of void: IoU 1, not
  # 2 / 4 (which would be no match).
  gt_cat = np.array([[1, 1, 0, 0]])
  gt_ins = np.array([[1, 1, 0, 0]])
  pred = np.array([[1, 1, 1, 1]])
  evaluator = _evaluator()
  evaluator.update_state(
      {'category_mask': gt_cat[None], 'instance_mask': gt_ins[None]},
      {'category_mask': pred[None], 'instance_mask': pred[None]})
  result = evaluator.result()
  assert result['PQ'] == 1. and result['SQ_things'] == 1.


def test_exactly_half_ignored_is_a_false_positive():
  # Prediction (2, 1): 2 px on void, 1 px on class-2 crowd, 3 px on stuff 3
  # (3 of 6 ignored, not more than half): FP. (2, 2): 2 px on void, 1 on
  # crowd, 2 on stuff (3 of 5): forgiven.
  gt_cat = np.array([[0, 0, 2, 3, 3, 3], [0, 0, 2, 3, 3, 3]])
  gt_ins = np.array([[0, 0, CROWD, 0, 0, 0], [0, 0, CROWD, 0, 0, 0]])
  pred_cat = np.array([[2, 2, 2, 2, 2, 2], [2, 2, 2, 2, 2, 0]])
  pred_ins = np.array([[1, 1, 1, 1, 1, 1], [2, 2, 2, 2, 2, 0]])
  metric = panoptic_quality.PanopticQuality(NUM_CATEGORIES, 0, 256, 256 * 6)
  metric.compare_and_accumulate(
      {'category_mask': gt_cat, 'instance_mask': gt_ins},
      {'category_mask': pred_cat, 'instance_mask': pred_ins})
  np.testing.assert_array_equal(metric.fp_per_class, [0, 0, 1, 0, 0, 0])
  np.testing.assert_array_equal(metric.fn_per_class, [0, 0, 0, 1, 0, 0])
  np.testing.assert_array_equal(metric.tp_per_class, np.zeros(6))


def test_result_resets_and_name():
  evaluator = _evaluator()
  assert evaluator.name == 'panoptic_quality'
  gt_cat, gt_ins, pred_cat, pred_ins = _hand_image()
  inputs = ({'category_mask': gt_cat[None], 'instance_mask': gt_ins[None]},
            {'category_mask': pred_cat[None], 'instance_mask': pred_ins[None]})
  evaluator.update_state(*inputs)
  first = evaluator.result()
  evaluator.update_state(*inputs)
  assert evaluator.result() == first
  evaluator.update_state(*inputs)
  evaluator.reset_states()
  assert evaluator.result()['num_categories'] == 0


def test_rejects_out_of_range_ids():
  evaluator = _evaluator()
  ok = np.zeros([1, 2, 2], np.int32)
  with pytest.raises(ValueError, match='category'):
    evaluator.update_state({'category_mask': ok + 6, 'instance_mask': ok},
                           {'category_mask': ok, 'instance_mask': ok})
  with pytest.raises(ValueError, match='instance'):
    evaluator.update_state({'category_mask': ok, 'instance_mask': ok},
                           {'category_mask': ok + 1, 'instance_mask': ok + 256})
  with pytest.raises(ValueError, match='is_thing'):
    panoptic_quality.PanopticQualityEvaluator(3, [True, False])
