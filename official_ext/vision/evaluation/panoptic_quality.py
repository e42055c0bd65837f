"""Panoptic Quality with COCO's per-class crowd regions.

Model Garden's `panoptic_quality.PanopticQuality` knows crowd only
class-agnostically: ground-truth segments of the ignored (void) category
with an instance id > 0, which forgive a false positive of any class. COCO
(Kirillov et al. 2019; cocodataset panopticapi) marks crowd per class: a
crowd region of class c is never matched and never a false negative, and an
unmatched prediction of class c is not a false positive when more than half
of it lies on ground-truth void plus crowd of class c (crowd of another class
does not forgive it). The IoU's union leaves out only the prediction's pixels
on ground-truth void.

Here ground-truth pixels of a (non-void) category c with instance id
`CROWD_INSTANCE_ID` are crowd of class c, as the panoptic input pipeline
writes them. Model Garden's class-agnostic crowd (void category, instance
id > 0) is kept too.
"""

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from official.vision.evaluation import panoptic_quality

CROWD_INSTANCE_ID = 255


def _counts(ids: np.ndarray) -> Dict[int, int]:
  """Maps each unique entry of `ids` to its count."""
  values, counts = np.unique(ids, return_counts=True)
  return {int(v): int(c) for v, c in zip(values, counts)}


def _to_numpy(value: Any) -> np.ndarray:
  if isinstance(value, (tf.Tensor, tf.Variable)):
    return value.numpy()
  if isinstance(value, tuple):  # Per-replica values.
    return np.concatenate([_to_numpy(v) for v in value])
  return np.asarray(value)


class PanopticQuality(panoptic_quality.PanopticQuality):
  """Model Garden's PanopticQuality with COCO's per-class crowd."""

  def compare_and_accumulate(self, groundtruths: Mapping[str, Any],
                             predictions: Mapping[str, Any]):
    """Compares the segments of one image and accumulates the counts.

    Args:
      groundtruths: 'category_mask' and 'instance_mask', integer [H, W]
        arrays. Category `ignored_label` with instance 0 is void; with
        instance > 0 it is class-agnostic crowd (Model Garden's); another
        category c with instance `CROWD_INSTANCE_ID` is crowd of class c.
      predictions: 'category_mask' and 'instance_mask', integer [H, W]
        arrays. Pixels of category `ignored_label` belong to no segment.

    Raises:
      ValueError: on mismatched shapes, or ids out of range.
    """
    gt_category = np.asarray(groundtruths['category_mask']).astype(np.int64)
    gt_instance = np.asarray(groundtruths['instance_mask']).astype(np.int64)
    pred_category = np.asarray(predictions['category_mask']).astype(np.int64)
    pred_instance = np.asarray(predictions['instance_mask']).astype(np.int64)
    shapes = {gt_category.shape, gt_instance.shape, pred_category.shape,
              pred_instance.shape}
    if len(shapes) != 1:
      raise ValueError(f'Masks of different shapes: {shapes}.')
    max_instances = self.max_instances_per_category
    for name, mask, limit in [
        ('category', gt_category, self.num_categories),
        ('category', pred_category, self.num_categories),
        ('instance', gt_instance, max_instances),
        ('instance', pred_instance, max_instances)]:
      if mask.size and (mask.min() < 0 or mask.max() >= limit):
        raise ValueError(f'A {name} id is outside [0, {limit}).')
    if self.offset < self.num_categories * max_instances:
      raise ValueError(f'offset {self.offset} < num_categories * '
                       f'max_instances_per_category.')

    gt_segment = gt_category * max_instances + gt_instance
    pred_segment = pred_category * max_instances + pred_instance
    gt_ignored = gt_category == self.ignored_label
    gt_void = gt_ignored & (gt_instance == 0)
    gt_crowd = ~gt_ignored & (gt_instance == CROWD_INSTANCE_ID)
    gt_is_segment = ~gt_ignored & ~gt_crowd
    pred_is_segment = pred_category != self.ignored_label

    gt_areas = _counts(gt_segment[gt_is_segment])
    pred_areas = _counts(pred_segment[pred_is_segment])
    void_overlap = _counts(pred_segment[pred_is_segment & gt_void])
    forgiving = gt_ignored | (gt_crowd & (gt_category == pred_category))
    forgiven_overlap = _counts(pred_segment[pred_is_segment & forgiving])

    same_class = gt_is_segment & pred_is_segment & (
        gt_category == pred_category)
    pairs = _counts(gt_segment[same_class] * self.offset +
                    pred_segment[same_class])
    gt_matched = set()
    pred_matched = set()
    for pair, intersection in pairs.items():
      gt_id, pred_id = divmod(pair, self.offset)
      union = (gt_areas[gt_id] + pred_areas[pred_id] - intersection -
               void_overlap.get(pred_id, 0))
      iou = intersection / union
      if iou > 0.5:
        category = gt_id // max_instances
        self.tp_per_class[category] += 1
        self.iou_per_class[category] += iou
        gt_matched.add(gt_id)
        pred_matched.add(pred_id)

    for gt_id in gt_areas:
      if gt_id not in gt_matched:
        self.fn_per_class[gt_id // max_instances] += 1
    for pred_id, area in pred_areas.items():
      if pred_id in pred_matched:
        continue
      if forgiven_overlap.get(pred_id, 0) / area > 0.5:
        continue
      self.fp_per_class[pred_id // max_instances] += 1


class PanopticQualityEvaluator:
  """Accumulates PQ over batches of category and instance masks."""

  def __init__(self,
               num_categories: int,
               is_thing: Sequence[bool],
               ignored_label: int = 0,
               max_instances_per_category: int = 256,
               offset: Optional[int] = None):
    """Initializes the evaluator.

    Args:
      num_categories: the number of category ids (ids are 0..num_categories
        - 1, the ignored label included).
      is_thing: bool array of length num_categories, True for thing
        categories.
      ignored_label: the void category id.
      max_instances_per_category: instance ids (ground truth and prediction)
        must be below it; it must exceed CROWD_INSTANCE_ID.
      offset: the multiplier separating ground-truth and predicted segment
        ids; None: num_categories * max_instances_per_category, the smallest
        that works.
    """
    is_thing = np.asarray(is_thing, bool)
    if is_thing.shape != (num_categories,):
      raise ValueError(f'is_thing has shape {is_thing.shape}, expected '
                       f'({num_categories},).')
    if max_instances_per_category <= CROWD_INSTANCE_ID:
      raise ValueError('max_instances_per_category must exceed '
                       f'CROWD_INSTANCE_ID = {CROWD_INSTANCE_ID}.')
    if offset is None:
      offset = num_categories * max_instances_per_category
    self._is_thing = is_thing
    self._pq = PanopticQuality(num_categories, ignored_label,
                               max_instances_per_category, offset)

  @property
  def name(self) -> str:
    return 'panoptic_quality'

  def reset_states(self):
    """Clears the accumulated counts."""
    self._pq.reset()

  def update_state(self, groundtruths: Mapping[str, Any],
                   predictions: Mapping[str, Any]):
    """Accumulates one batch.

    Args:
      groundtruths: 'category_mask' and 'instance_mask' integer [B, H, W]
        (numpy arrays or tensors), optional 'valid_size' integer [B, 2]: only
        [:height, :width] of each image is compared (absent: all of it).
      predictions: 'category_mask' and 'instance_mask' integer [B, H', W']
        with the same valid part.

    Raises:
      ValueError: if a mask is missing or the cropped masks differ in shape.
    """
    for name, inputs in [('groundtruths', groundtruths),
                         ('predictions', predictions)]:
      for key in ('category_mask', 'instance_mask'):
        if key not in inputs:
          raise ValueError(f'Missing `{key}` in {name}.')
    gt_category = _to_numpy(groundtruths['category_mask'])
    gt_instance = _to_numpy(groundtruths['instance_mask'])
    pred_category = _to_numpy(predictions['category_mask'])
    pred_instance = _to_numpy(predictions['instance_mask'])
    valid_size = groundtruths.get('valid_size')
    if valid_size is not None:
      valid_size = _to_numpy(valid_size).astype(np.int64)
    for i in range(gt_category.shape[0]):
      if valid_size is None:
        height, width = gt_category.shape[1:3]
      else:
        height, width = valid_size[i]
      window = (i, slice(0, height), slice(0, width))
      self._pq.compare_and_accumulate(
          {'category_mask': gt_category[window],
           'instance_mask': gt_instance[window]},
          {'category_mask': pred_category[window],
           'instance_mask': pred_instance[window]})

  def result(self) -> Dict[str, float]:
    """Returns the metrics and resets the state (as Model Garden's does).

    Returns:
      'PQ', 'SQ', 'RQ' and their '_things' and '_stuff' variants (fractions,
      means over the categories with TP + FP + FN > 0), and 'num_categories',
      'num_things', 'num_stuff', the numbers of categories in those means.
    """
    with np.errstate(divide='ignore', invalid='ignore'):  # 0 / 0 -> 0.
      results = self._pq.result(self._is_thing)
    flat = {}
    for group, suffix in [('All', ''), ('Things', '_things'),
                          ('Stuff', '_stuff')]:
      for metric in ('PQ', 'SQ', 'RQ'):
        flat[metric + suffix] = float(results[f'{group}_{metric.lower()}'])
    flat['num_categories'] = float(results['All_num_categories'])
    flat['num_things'] = float(results['Things_num_categories'])
    flat['num_stuff'] = float(results['Stuff_num_categories'])
    self.reset_states()
    return flat
