"""The parser of UniPercepNet-S: decoded examples to (image, labels).

Decodes nothing itself: it takes the output of Model Garden's
`TfExampleDecoder(include_mask=True)` (records from
`official/vision/data/create_coco_tf_record.py --include_masks`).

`Parser.prepare` removes crowd (in training) and unknown-class annotations,
maps category ids to contiguous classes and turns each instance's
full-resolution mask into a crop aligned with its box (`ops/mask_ops.py`).
From then on a single `GeometricTransform` (`ops/transforms.py`) moves the
image, the boxes and the crops together. Pipelines, all ending with padding
(`pad_value`) to `output_size` and mean/std normalisation
(`ops/preprocess_ops.py`):

  stage 1 (train): [mosaic of 4, `ops/mosaic.py`] -> random resize (scale
      in [aug_scale_min, aug_scale_max] relative to fitting output_size) +
      random crop + horizontal flip -> YOLOX HSV jitter.
  stage 2 (train): resize to fit output_size + flip -> HSV jitter.
  eval: resize to fit output_size, top-left, no augmentation.

A panoptic parser (`stuff_category_ids`) reads the records' panoptic masks
too (`panoptic_decoder.py`): training labels gain the semantic head's target
'gt_semantic' (0 things, 1..S stuff, `IGNORE_LABEL` void), moved by the same
transform (nearest-neighbour); evaluation labels gain the ground truth of
the panoptic quality, 'gt_panoptic_category_mask' (dataset ids) and
'gt_panoptic_instance_mask' (instance ids, `CROWD_INSTANCE_ID` on the
pixels of crowd annotations' masks), at the network input's resolution.
"""

from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from dataloaders.ops import augment_ops
from dataloaders.ops import preprocess_ops
from dataloaders.ops import transforms
from official.vision.dataloaders import utils
from official.vision.ops import box_ops
from official.vision.ops import preprocess_ops as preprocess_ops_lib
from official_ext.vision.ops import mask_ops

# The semantic target of void pixels (modeling/heads/semantic_head.py's).
IGNORE_LABEL = 255
# The instance id of crowd pixels in the panoptic ground truth
# (official_ext/vision/evaluation/panoptic_quality.py's).
CROWD_INSTANCE_ID = 255


def semantic_lookup_table(thing_category_ids: Sequence[int],
                          stuff_category_ids: Sequence[int]) -> np.ndarray:
  """uint8 [256]: dataset category id -> semantic class.

  Thing ids go to 0 ("things"), stuff id i of `stuff_category_ids` to i + 1,
  every other id (0 = void, unknown ids) to IGNORE_LABEL.

  Raises:
    ValueError: if an id is outside 1..254 or both a thing and a stuff id.
  """
  things, stuff = [int(i) for i in thing_category_ids], [
      int(i) for i in stuff_category_ids]
  both = sorted(set(things) & set(stuff))
  if both:
    raise ValueError(f'Category ids {both} are both things '
                     '(task.category_ids) and stuff '
                     '(model.panoptic.stuff_category_ids).')
  bad = [i for i in things + stuff if not 0 < i < IGNORE_LABEL]
  if bad:
    raise ValueError(f'Panoptic category ids must be in 1..254 (the records '
                     f'store them as uint8 PNGs), got {bad}.')
  table = np.full([256], IGNORE_LABEL, np.uint8)
  table[things] = 0
  table[stuff] = np.arange(1, len(stuff) + 1)
  return table


def category_lookup_table(category_ids: Sequence[int]) -> np.ndarray:
  """Dense table mapping dataset category ids to contiguous ids 1..K.

  Args:
    category_ids: dataset ids; position i maps to contiguous class i + 1.

  Returns:
    An int32 array `t` of length max(category_ids) + 1 with
    `t[category_ids[i]] = i + 1` and -1 elsewhere.

  Raises:
    ValueError: if the ids are empty, negative or repeated.
  """
  ids = [int(i) for i in category_ids]
  if not ids or min(ids) < 0 or len(set(ids)) != len(ids):
    raise ValueError('category_ids must be non-empty, non-negative and '
                     f'unique, got {category_ids}.')
  table = np.full([max(ids) + 1], -1, np.int32)
  table[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
  return table


def map_categories(classes: tf.Tensor,
                   table: Optional[np.ndarray]) -> tf.Tensor:
  """Maps dataset ids to contiguous ids with `table`; -1 for unknown ids.

  Args:
    classes: integer [N] dataset category ids.
    table: output of `category_lookup_table`, or None for the identity.

  Returns:
    int32 [N] contiguous ids, -1 where the id is not in the table.
  """
  classes = tf.cast(classes, tf.int32)
  if table is None:
    return classes
  size = table.shape[0]
  inside = tf.logical_and(classes >= 0, classes < size)
  mapped = tf.gather(tf.constant(table), tf.clip_by_value(classes, 0,
                                                          size - 1))
  return tf.where(inside, mapped, -tf.ones_like(mapped))


class Parser:
  """Parses decoded examples into (image, labels) for UniPercepNet-S."""

  def __init__(self,
               output_size: Sequence[int],
               mask_crop_size: int,
               max_num_instances: int = 100,
               aug_scale_min: float = 1.0,
               aug_scale_max: float = 1.0,
               aug_rand_hflip: bool = False,
               aug_hsv: bool = False,
               pad_value: float = 114.,
               test_scale: Optional[Sequence[int]] = None,
               skip_crowd_during_training: bool = True,
               category_ids: Optional[Sequence[int]] = None,
               dtype: str = 'float32',
               hflip_prob: float = 0.5,
               stuff_category_ids: Optional[Sequence[int]] = None):
    """Initialises the parser.

    Args:
      output_size: [height, width] of the network input.
      mask_crop_size: side of the box-aligned mask crops.
      max_num_instances: labels are clipped or padded to this many instances.
      aug_scale_min: minimum random scale of stage 1, relative to fitting
        output_size.
      aug_scale_max: maximum random scale of stage 1.
      aug_rand_hflip: whether training flips horizontally (probability
        `hflip_prob`).
      aug_hsv: whether training applies the YOLOX HSV jitter.
      pad_value: value of padding pixels (0..255 scale, before
        normalisation).
      test_scale: evaluation's resize bounds (see `transforms.fit_box`).
      skip_crowd_during_training: drop crowd annotations in training.
      category_ids: dataset category ids; position i maps to contiguous class
        i + 1 and other ids are dropped. None: ids are already 1..K.
      dtype: dtype of the output image.
      hflip_prob: flip probability when `aug_rand_hflip` (1.0 forces it).
      stuff_category_ids: a panoptic parser's stuff ids (needs
        `category_ids`, the things); None: an instance parser.
    """
    self._output_size = [int(s) for s in output_size]
    self._max_num_instances = max_num_instances
    self._mask_crop_size = mask_crop_size
    self._aug_scale_min = aug_scale_min
    self._aug_scale_max = aug_scale_max
    self._hflip_prob = hflip_prob if aug_rand_hflip else 0.
    self._aug_hsv = aug_hsv
    self._pad_value = float(pad_value)
    self._test_scale = list(test_scale) if test_scale else None
    self._skip_crowd_during_training = skip_crowd_during_training
    self._category_table = (None if category_ids is None else
                            category_lookup_table(category_ids))
    self._dtype = tf.dtypes.as_dtype(dtype)
    self._semantic_table = None
    if stuff_category_ids:
      if category_ids is None:
        raise ValueError('A panoptic parser needs the thing category_ids.')
      self._semantic_table = semantic_lookup_table(category_ids,
                                                   stuff_category_ids)

  @property
  def panoptic(self) -> bool:
    return self._semantic_table is not None

  # --------------------------------------------------------------- prepare.
  def prepare(self, decoded: Mapping[str, tf.Tensor],
              is_training: bool) -> Dict[str, tf.Tensor]:
    """Filters annotations, maps classes, turns masks into box crops.

    Args:
      decoded: output of `TfExampleDecoder(include_mask=True).decode`.
      is_training: drop crowd annotations if `skip_crowd_during_training`.

    Returns:
      A dict with 'image' (uint8 [h, w, 3], as decoded), 'image_shape' (int32
      [2]), 'boxes' (float32 [n, 4] yxyx pixels), 'classes' (int32 [n],
      contiguous), 'masks' (float32 [n, S, S] box crops), 'is_crowd' (bool
      [n]), 'num_instances' (int32), 'source_id', 'height', 'width'; a
      panoptic parser adds 'semantic' (uint8 [h, w, 1]) and in evaluation
      'panoptic' (uint8 [h, w, 2]: category ids, instance ids with crowd
      pixels marked).
    """
    image = decoded['image']
    image_shape = tf.shape(image)[0:2]
    classes = map_categories(decoded['groundtruth_classes'],
                             self._category_table)
    is_crowd = tf.cast(decoded['groundtruth_is_crowd'], tf.bool)
    keep = classes > 0
    if is_training and self._skip_crowd_during_training:
      keep = tf.logical_and(keep, tf.logical_not(is_crowd))
    indices = tf.where(keep)[:, 0]
    boxes = box_ops.denormalize_boxes(
        tf.gather(tf.cast(decoded['groundtruth_boxes'], tf.float32), indices),
        image_shape)
    full_masks = decoded['groundtruth_instance_masks']
    masks = mask_ops.crop_and_resize_cells(tf.gather(full_masks, indices),
                                           boxes, self._mask_crop_size)
    prepared = {
        'image': image,
        'image_shape': image_shape,
        'boxes': boxes,
        'classes': tf.gather(classes, indices),
        'masks': masks,
        'is_crowd': tf.gather(is_crowd, indices),
        'num_instances': tf.shape(indices)[0],
        'source_id': decoded['source_id'],
        'height': decoded['height'],
        'width': decoded['width'],
    }
    if self.panoptic:
      prepared.update(self._prepare_panoptic(decoded, full_masks, classes,
                                             is_crowd, is_training))
    return prepared

  def _prepare_panoptic(self, decoded: Mapping[str, tf.Tensor],
                        full_masks: tf.Tensor, classes: tf.Tensor,
                        is_crowd: tf.Tensor,
                        is_training: bool) -> Dict[str, tf.Tensor]:
    """The semantic target and, in evaluation, the panoptic ground truth."""
    category = decoded['groundtruth_panoptic_category_mask']
    semantic = tf.gather(tf.constant(self._semantic_table),
                         tf.cast(category, tf.int32))
    out = {'semantic': semantic[:, :, tf.newaxis]}
    if not is_training:
      instance = decoded['groundtruth_panoptic_instance_mask']
      # Crowd pixels: those of the known crowd annotations' masks that the
      # panoptic masks give to a thing (whatever instance id they carry).
      crowd = tf.gather(full_masks,
                        tf.where(tf.logical_and(is_crowd, classes > 0))[:, 0])
      crowd = tf.logical_and(tf.reduce_any(crowd > 0.5, axis=0),
                             tf.equal(semantic, 0))
      instance = tf.where(crowd, tf.constant(CROWD_INSTANCE_ID, tf.uint8),
                          instance)
      out['panoptic'] = tf.stack([category, instance], axis=-1)
    return out

  # -------------------------------------------------------------- geometry.
  def _apply(self, transform: transforms.GeometricTransform,
             prepared: Mapping[str, tf.Tensor]):
    """The image, boxes and crops of `prepared` moved by one transform.

    Returns:
      (image float32 [H, W, 3] 0..255 zero-padded, boxes [n, 4], masks
      [n, S, S], indices [n] of the instances kept: those whose box is not
      empty after the transform).
    """
    image = transform.apply_image(prepared['image'])
    boxes = transform.apply_boxes(prepared['boxes'])
    masks = transform.apply_masks(prepared['masks'], prepared['boxes'],
                                  self._mask_crop_size)
    indices = box_ops.get_non_empty_box_indices(boxes)
    return image, tf.gather(boxes, indices), tf.gather(masks, indices), indices

  def _labels(self, image_info, boxes, classes, masks) -> Dict[str, tf.Tensor]:
    n = self._max_num_instances
    return {
        'image_info': tf.cast(image_info, tf.float32),
        'gt_boxes': preprocess_ops_lib.clip_or_pad_to_fixed_size(
            tf.cast(boxes, tf.float32), n, -1),
        'gt_classes': preprocess_ops_lib.clip_or_pad_to_fixed_size(
            tf.cast(classes, tf.int32), n, -1),
        'gt_masks': preprocess_ops_lib.clip_or_pad_to_fixed_size(
            tf.cast(masks, tf.float32), n, -1),
    }

  # ------------------------------------------------------------ public API.
  def parse_prepared_train(self, prepared: Mapping[str, tf.Tensor],
                           stage: int) -> Tuple[tf.Tensor,
                                                Dict[str, tf.Tensor]]:
    """Training augmentation of a prepared (or mosaic) example.

    Args:
      prepared: output of `prepare(..., is_training=True)` or of
        `mosaic.Mosaic.mosaic`.
      stage: 1 (random resize + crop) or 2 (resize to fit).

    Returns:
      (image [H, W, 3] in dtype, labels) with labels 'image_info',
      'gt_boxes', 'gt_classes', 'gt_masks'.
    """
    if stage not in (1, 2):
      raise ValueError(f'stage must be 1 or 2, got {stage}.')
    if stage == 1:
      scale_min, scale_max = self._aug_scale_min, self._aug_scale_max
    else:
      scale_min, scale_max = 1.0, 1.0
    transform = transforms.resize_crop_transform(
        tf.shape(prepared['image'])[0:2], self._output_size, scale_min,
        scale_max, hflip_prob=self._hflip_prob)
    image, boxes, masks, indices = self._apply(transform, prepared)
    if self._aug_hsv:
      # Pointwise: the same before or after the flip.
      image = augment_ops.yolox_hsv_jitter(image)
    image = preprocess_ops.normalize_for_network(image, transform,
                                                 self._pad_value, self._dtype)
    classes = tf.gather(prepared['classes'], indices)
    labels = self._labels(transform.image_info, boxes, classes, masks)
    if self.panoptic:
      labels['gt_semantic'] = tf.cast(transform.apply_label_map(
          prepared['semantic'], IGNORE_LABEL)[:, :, 0], tf.int32)
    return image, labels

  def parse_train(self, decoded: Mapping[str, tf.Tensor],
                  stage: int) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    """Parses one decoded example for training (no mosaic: `mosaic.Mosaic`).

    Args:
      decoded: output of `TfExampleDecoder(include_mask=True).decode`.
      stage: 1 or 2 (Python int).

    Returns:
      (image, labels), see `parse_prepared_train`.
    """
    return self.parse_prepared_train(self.prepare(decoded, True), stage)

  def parse_prepared_eval(self, prepared: Mapping[str, tf.Tensor]
                          ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    """Eval parsing of a prepared example: resize to fit, top-left, pad.

    Args:
      prepared: output of `prepare(..., is_training=False)`.

    Returns:
      (image, labels): labels of `parse_prepared_train` plus 'gt_is_crowd'
      (int32 [max_num_instances], padded with -1), 'source_id' (int64),
      'height' and 'width' (original).
    """
    transform = transforms.resize_crop_transform(
        tf.shape(prepared['image'])[0:2], self._output_size,
        test_scale=self._test_scale)
    image, boxes, masks, indices = self._apply(transform, prepared)
    image = preprocess_ops.normalize_for_network(
        image, transform, self._pad_value, self._dtype, self._test_scale)
    classes = tf.gather(tf.cast(prepared['classes'], tf.int32), indices)
    is_crowd = tf.gather(tf.cast(prepared['is_crowd'], tf.int32), indices)
    labels = self._labels(transform.image_info, boxes, classes, masks)
    labels.update({
        'gt_is_crowd': preprocess_ops_lib.clip_or_pad_to_fixed_size(
            is_crowd, self._max_num_instances, -1),
        'source_id': utils.process_source_id(prepared['source_id']),
        'height': prepared['height'],
        'width': prepared['width'],
    })
    if self.panoptic:
      panoptic = tf.cast(transform.apply_label_map(prepared['panoptic'], 0),
                         tf.int32)
      labels['gt_panoptic_category_mask'] = panoptic[:, :, 0]
      labels['gt_panoptic_instance_mask'] = panoptic[:, :, 1]
    return image, labels

  def parse_eval(self, decoded: Mapping[str, tf.Tensor]
                 ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    """Parses one decoded example for evaluation (crowd boxes kept)."""
    return self.parse_prepared_eval(self.prepare(decoded, False))
