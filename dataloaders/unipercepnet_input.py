"""Training and evaluation input pipeline of UniPercepNet-S.

Reads TFRecords written by Model Garden's
`official/vision/data/create_coco_tf_record.py --include_masks`, decoded with
its `TfExampleDecoder`.

Masks are carried as box-aligned crops: right after decoding (and removal of
crowd and unknown-class annotations), each instance's full-resolution mask is
sampled inside its box on a `mask_crop_size x mask_crop_size` grid. From then
on, geometric ops only transform boxes; a horizontal flip also flips the
crops, and when a box gets clipped (crop window, mosaic quadrant) its crop is
re-sampled on the visible sub-window. No full-size mask survives decoding.

Sampling convention (`crop_and_resize_cells`): a box [y1, x1, y2, x2] in
continuous pixel coordinates (pixel i covers [i, i + 1]) is split into S x S
equal cells, and the mask is bilinearly sampled at the cell centres (RoIAlign
with one sample per bin). Crop pixel (i, j) therefore covers the box region
[y1 + i * h / S, y1 + (i + 1) * h / S] x [...]; pasting a crop back is a
half-pixel-centred resize of the crop to the box size.

Pipelines, all ending with padding (`pad_value`) to `output_size` and mean/std
normalisation (`MEAN_RGB` / `STDDEV_RGB`, 0..255 RGB scale):

  stage 1 (train): [mosaic of 4] -> random resize (scale in [aug_scale_min,
      aug_scale_max] relative to fitting output_size) + random crop ->
      YOLOX HSV jitter -> horizontal flip.
  stage 2 (train): resize to fit output_size -> HSV jitter -> flip.
  eval: resize to fit output_size, top-left, no augmentation.
"""

import functools
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from configs import unipercepnet as unipercepnet_cfg
from official.core import input_reader
from official.vision.dataloaders import tf_example_decoder
from official.vision.dataloaders import utils
from official.vision.ops import box_ops
from official.vision.ops import preprocess_ops
from official_ext.vision.ops import preprocess_ops as preprocess_ops_ext

MOSAIC_SIZE = 4
# Keys of a prepared example that the mosaic consumes.
_MOSAIC_KEYS = ('image', 'image_shape', 'boxes', 'classes', 'masks',
                'num_instances')


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


def crop_and_resize_cells(masks: tf.Tensor, boxes: tf.Tensor,
                          crop_size: int) -> tf.Tensor:
  """Samples each mask at the cell centres of a crop_size^2 grid in its box.

  Args:
    masks: float [N, H, W] masks (full images, or earlier crops).
    boxes: float [N, 4] yxyx boxes in continuous pixel coordinates of the
      masks' frame (pixel i covers [i, i + 1]).
    crop_size: side S of the output crops.

  Returns:
    float32 [N, S, S] crops. Sample positions are clamped to the pixel-centre
    range [0, H - 1] x [0, W - 1], so a box touching the frame border reads
    the border pixels (no zero fade-in); samples of a box extending beyond
    the frame by more than half a pixel get clamped likewise (an error of at
    most half a pixel for boxes inside the frame).
  """
  masks = tf.cast(masks, tf.float32)
  boxes = tf.cast(boxes, tf.float32)
  shape = tf.shape(masks)
  height = tf.cast(shape[1], tf.float32)
  width = tf.cast(shape[2], tf.float32)
  y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
  cell_h = (y2 - y1) / crop_size
  cell_w = (x2 - x1) / crop_size
  # Pixel-index positions of the first and last sample.
  sy1 = tf.clip_by_value(y1 + 0.5 * cell_h - 0.5, 0., height - 1.)
  sy2 = tf.clip_by_value(y2 - 0.5 * cell_h - 0.5, 0., height - 1.)
  sx1 = tf.clip_by_value(x1 + 0.5 * cell_w - 0.5, 0., width - 1.)
  sx2 = tf.clip_by_value(x2 - 0.5 * cell_w - 0.5, 0., width - 1.)
  norm_h = tf.maximum(height - 1., 1.)
  norm_w = tf.maximum(width - 1., 1.)
  sample_boxes = tf.stack(
      [sy1 / norm_h, sx1 / norm_w, sy2 / norm_h, sx2 / norm_w], axis=-1)
  crops = tf.image.crop_and_resize(
      masks[..., tf.newaxis], sample_boxes,
      box_indices=tf.range(shape[0], dtype=tf.int32),
      crop_size=[crop_size, crop_size], method='bilinear')
  return crops[..., 0]


def recrop_masks(masks: tf.Tensor, boxes: tf.Tensor, clipped_boxes: tf.Tensor,
                 crop_size: int) -> tf.Tensor:
  """Re-samples box-aligned crops on the visible part of clipped boxes.

  Args:
    masks: float [N, S, S] crops aligned with `boxes`.
    boxes: float [N, 4] yxyx boxes before clipping.
    clipped_boxes: float [N, 4] the same boxes after clipping (inside
      `boxes`).
    crop_size: S.

  Returns:
    float32 [N, S, S] crops aligned with `clipped_boxes`; crops of boxes that
    were not clipped are returned unchanged.
  """
  y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
  h = tf.maximum(y2 - y1, 1e-6)
  w = tf.maximum(x2 - x1, 1e-6)
  cy1, cx1, cy2, cx2 = tf.unstack(clipped_boxes, axis=-1)
  window = tf.stack([(cy1 - y1) / h, (cx1 - x1) / w,
                     (cy2 - y1) / h, (cx2 - x1) / w], axis=-1) * crop_size
  recropped = crop_and_resize_cells(masks, window, crop_size)
  changed = tf.reduce_any(tf.abs(boxes - clipped_boxes) > 1e-4, axis=-1)
  return tf.where(changed[:, tf.newaxis, tf.newaxis], recropped,
                  tf.cast(masks, tf.float32))


def paste_masks(masks: tf.Tensor, boxes: tf.Tensor,
                image_size: Tuple[int, int]) -> tf.Tensor:
  """Pastes box-aligned crops back into full images, as the reference does.

  The inverse of `crop_and_resize_cells`, and mmdet's `_do_paste_mask`:
  each output pixel centre is mapped into its box's S x S crop and sampled
  bilinearly with zeros outside the crop (`grid_sample`,
  `align_corners=False`), within the box grown to whole pixels plus one
  pixel on each side; pixels outside that window are 0.

  Args:
    masks: float [N, S, S] crops.
    boxes: float [N, 4] yxyx pixel boxes.
    image_size: (height, width) of the output.

  Returns:
    float32 [N, height, width] masks.
  """
  masks = tf.cast(masks, tf.float32)
  boxes = tf.cast(boxes, tf.float32)
  size = masks.shape[1]
  height, width = image_size
  y1, x1, y2, x2 = [b[:, tf.newaxis] for b in tf.unstack(boxes, axis=-1)]

  def axis_weights(start, end, length):
    """[N, length, S] bilinear weights and [N, length] window of one axis."""
    pixels = tf.range(length, dtype=tf.float32)[tf.newaxis]
    # Crop index coordinates of the pixel centres.
    c = (pixels + 0.5 - start) / tf.maximum(end - start, 1e-6) * size - 0.5
    low = tf.floor(c)
    frac = c - low
    low = tf.cast(low, tf.int32)
    # tf.one_hot gives zero rows for indices outside the crop.
    weights = (tf.one_hot(low, size) * (1. - frac)[..., None] +
               tf.one_hot(low + 1, size) * frac[..., None])
    window = ((pixels >= tf.floor(start) - 1.) &
              (pixels < tf.math.ceil(end) + 1.))
    return weights, window

  wy, inside_y = axis_weights(y1, y2, height)  # [N, H, S], [N, H]
  wx, inside_x = axis_weights(x1, x2, width)   # [N, W, S], [N, W]
  pasted = tf.einsum('nhs,nst,nwt->nhw', wy, masks, wx)
  inside = tf.logical_and(inside_y[:, :, tf.newaxis],
                          inside_x[:, tf.newaxis, :])
  return tf.where(inside, pasted, tf.zeros_like(pasted))


def yolox_hsv_jitter(image: tf.Tensor,
                     hue_delta: float = 5.,
                     saturation_delta: float = 30.,
                     value_delta: float = 30.,
                     gains: Optional[tf.Tensor] = None,
                     seed: Optional[int] = None) -> tf.Tensor:
  """mmdet's YOLOXHSVRandomAug on a float RGB image in 0..255.

  Gains (OpenCV units: H in 0..180, S and V in 0..255) are
  uniform(-1, 1, 3) * [hue_delta, saturation_delta, value_delta], each zeroed
  with probability 0.5 and truncated to integers as mmdet does. Hue is added
  modulo 180; saturation and value are added and clipped.

  Args:
    image: float [H, W, 3] RGB image with values in [0, 255].
    hue_delta: maximum hue change, OpenCV units (0..180).
    saturation_delta: maximum saturation change (0..255).
    value_delta: maximum value change (0..255).
    gains: optional float [3] (dh, ds, dv) in OpenCV units to apply instead of
      random ones.
    seed: optional op seed of the random gains.

  Returns:
    float32 [H, W, 3] jittered image in [0, 255].
  """
  if gains is None:
    deltas = tf.constant([hue_delta, saturation_delta, value_delta],
                         tf.float32)
    gains = tf.random.uniform([3], -1., 1., seed=seed) * deltas
    keep = tf.random.uniform([3], 0, 2, dtype=tf.int32, seed=seed)
    gains = tf.cast(tf.cast(gains, tf.int32) * keep, tf.float32)
  gains = tf.cast(gains, tf.float32)
  hsv = tf.image.rgb_to_hsv(
      tf.clip_by_value(tf.cast(image, tf.float32), 0., 255.) / 255.)
  h, s, v = tf.unstack(hsv, axis=-1)
  h = tf.math.floormod(h + gains[0] / 180., 1.)
  s = tf.clip_by_value(s + gains[1] / 255., 0., 1.)
  v = tf.clip_by_value(v + gains[2] / 255., 0., 1.)
  rgb = tf.image.hsv_to_rgb(tf.stack([h, s, v], axis=-1))
  return tf.clip_by_value(rgb * 255., 0., 255.)


def horizontal_flip(image: tf.Tensor, boxes: tf.Tensor, masks: tf.Tensor,
                    valid_width: tf.Tensor
                    ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """Flips the valid (unpadded) left part of an image, its boxes and crops.

  Args:
    image: [H, W, C] image whose content occupies columns [0, valid_width).
    boxes: float [N, 4] yxyx pixel boxes.
    masks: [N, S, S] box-aligned crops.
    valid_width: int scalar, width of the content.

  Returns:
    (image, boxes, masks) flipped; columns >= valid_width are unchanged.
  """
  valid_width = tf.cast(valid_width, tf.int32)
  cols = tf.range(tf.shape(image)[1], dtype=tf.int32)
  source = tf.where(cols < valid_width, valid_width - 1 - cols, cols)
  image = tf.gather(image, source, axis=1)
  w = tf.cast(valid_width, boxes.dtype)
  y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
  boxes = tf.stack([y1, w - x2, y2, w - x1], axis=-1)
  masks = tf.reverse(masks, axis=[2])
  return image, boxes, masks


def fit_box(image_size: tf.Tensor, output_size: Sequence[int],
            test_scale: Optional[Sequence[int]] = None) -> tf.Tensor:
  """float32 [2]: the (height, width) box an image is resized to fit.

  Without `test_scale`, the network input. With `test_scale` =
  [short, long], mmdet's keep-ratio `Resize(scale=(long, short))` bounds,
  oriented like the image, within the network input.

  Args:
    image_size: [2] (height, width) of the image.
    output_size: [height, width] of the network input.
    test_scale: None or [short side, long side].
  """
  box = tf.constant([float(s) for s in output_size], tf.float32)
  if not test_scale:
    return box
  short, long = float(min(test_scale)), float(max(test_scale))
  image_size = tf.cast(image_size, tf.float32)
  landscape = image_size[1] >= image_size[0]
  oriented = tf.where(landscape, tf.constant([short, long]),
                      tf.constant([long, short]))
  return tf.minimum(oriented, box)


def resize_image(image: tf.Tensor,
                 output_size: Sequence[int],
                 aug_scale_min: float = 1.0,
                 aug_scale_max: float = 1.0,
                 test_scale: Optional[Sequence[int]] = None
                 ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """Resizes to fit (times a random scale), crops, zero-pads.

  Model Garden's `resize_and_crop_image` with the padded size equal to the
  output size; the content sits at the top-left. With `test_scale`, the
  reference's test resize instead: fitted into `fit_box(..., test_scale)`
  at mmdet's rounding of the size, with OpenCV's bilinear arithmetic on
  uint8 pixels (`official_ext.vision.ops.preprocess_ops`).

  Args:
    image: [h, w, 3] image, any real dtype, 0..255.
    output_size: [height, width] of the result.
    aug_scale_min: minimum random scale relative to fitting output_size.
    aug_scale_max: maximum random scale (1.0 and 1.0: no augmentation).
    test_scale: see `fit_box`.

  Returns:
    (image float32 [height, width, 3], image_info float32 [4, 2] as Model
    Garden's: original size, output size, scale, crop offset; valid_size
    int32 [2]: the extent of the content at the top-left.)
  """
  output_size = [int(s) for s in output_size]
  if test_scale:
    image_size = tf.shape(image)[0:2]
    scaled_size = preprocess_ops_ext.keep_ratio_size(
        image_size, fit_box(image_size, output_size, test_scale))
    image = tf.cast(preprocess_ops_ext.resize_like_opencv(image, scaled_size),
                    tf.float32)
    image = tf.image.pad_to_bounding_box(image, 0, 0, *output_size)
    image_size = tf.cast(image_size, tf.float32)
    scaled_size = tf.cast(scaled_size, tf.float32)
    image_info = tf.stack([image_size, scaled_size, scaled_size / image_size,
                           tf.zeros([2])])
    return image, image_info, tf.cast(scaled_size, tf.int32)
  image = tf.cast(image, tf.float32)
  image_size = tf.cast(tf.shape(image)[0:2], tf.float32)
  image, image_info = preprocess_ops.resize_and_crop_image(
      image, output_size, padded_size=output_size, aug_scale_min=aug_scale_min,
      aug_scale_max=aug_scale_max, seed=None)
  scaled_size = tf.round(image_size * image_info[2, :])
  valid_size = tf.minimum(scaled_size - image_info[3, :],
                          tf.constant(output_size, tf.float32))
  return image, image_info, tf.cast(valid_size, tf.int32)


def pad_and_normalize(image: tf.Tensor,
                      valid_size: tf.Tensor,
                      pad_value: float,
                      dtype: tf.DType = tf.float32,
                      pad_size: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Fills the padding with pad_value, normalises (MEAN_RGB / STDDEV_RGB).

  Args:
    image: float32 [height, width, 3], 0..255, content at the top-left.
    valid_size: int32 [2], the extent of the content.
    pad_value: value of the padding pixels before normalisation.
    dtype: dtype of the result.
    pad_size: [2] extent (at the top-left) that padding with `pad_value`
      fills; beyond it the normalised image is 0 (the reference pads to its
      test scale with `pad_value`, then to a multiple of 32 with zeros after
      normalisation). None: all of the image.

  Returns:
    The network input, [height, width, 3] of `dtype`.
  """
  height, width = image.shape[0], image.shape[1]

  def inside(size):
    size = tf.cast(size, tf.int32)
    rows = tf.range(height)[:, tf.newaxis] < size[0]
    cols = tf.range(width)[tf.newaxis, :] < size[1]
    return tf.logical_and(rows, cols)[..., tf.newaxis]

  mean = tf.constant(unipercepnet_cfg.MEAN_RGB, tf.float32)
  std = tf.constant(unipercepnet_cfg.STDDEV_RGB, tf.float32)
  padding = tf.constant(pad_value, tf.float32)
  if pad_size is not None:
    padding = tf.where(inside(pad_size), padding, mean)
  image = tf.where(inside(valid_size), image, padding)
  image = (image - mean) / std
  image.set_shape([height, width, 3])
  return tf.cast(image, dtype)


def preprocess_for_inference(image: tf.Tensor,
                             output_size: Sequence[int],
                             pad_value: float = 114.,
                             test_scale: Optional[Sequence[int]] = None
                             ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """An image as evaluation feeds it to the network; also used by serving.

  Args:
    image: [h, w, 3] uint8 (or 0..255 float) RGB image of any size.
    output_size: [height, width] of the network input.
    pad_value: value of the padding pixels before normalisation.
    test_scale: see `fit_box`; the padding fills the fitting box with
      `pad_value` and the rest of the input with the mean colour.

  Returns:
    (float32 [height, width, 3] network input, image_info [4, 2],
    valid_size int32 [2]).
  """
  image, image_info, valid_size = resize_image(image, output_size,
                                               test_scale=test_scale)
  pad_size = (fit_box(image_info[0, :], output_size, test_scale)
              if test_scale else None)
  image = pad_and_normalize(image, valid_size, pad_value, pad_size=pad_size)
  return image, image_info, valid_size


class Parser:
  """Parses decoded examples into (image, labels) for UniPercepNet-S."""

  def __init__(self,
               output_size: Sequence[int],
               max_num_instances: int = 100,
               mask_crop_size: int = 112,
               mosaic: bool = False,
               mosaic_tile_size: int = 640,
               aug_scale_min: float = 1.0,
               aug_scale_max: float = 1.0,
               aug_rand_hflip: bool = False,
               aug_hsv: bool = False,
               pad_value: float = 114.,
               test_scale: Optional[Sequence[int]] = None,
               skip_crowd_during_training: bool = True,
               category_ids: Optional[Sequence[int]] = None,
               dtype: str = 'float32',
               hflip_prob: float = 0.5):
    """Initialises the parser.

    Args:
      output_size: [height, width] of the network input.
      max_num_instances: labels are clipped or padded to this many instances.
      mask_crop_size: side of the box-aligned mask crops.
      mosaic: whether stage 1 uses the 4-image mosaic (see `mosaic`; applied
        at the dataset level by `build_dataset`).
      mosaic_tile_size: side of the square each mosaic image is fitted into;
        the mosaic canvas is twice this size.
      aug_scale_min: minimum random scale of stage 1, relative to fitting
        output_size.
      aug_scale_max: maximum random scale of stage 1.
      aug_rand_hflip: whether training flips horizontally (probability
        `hflip_prob`).
      aug_hsv: whether training applies the YOLOX HSV jitter.
      pad_value: value of padding pixels (0..255 scale, before
        normalisation).
      test_scale: evaluation's resize bounds (see `fit_box`).
      skip_crowd_during_training: drop crowd annotations in training.
      category_ids: dataset category ids; position i maps to contiguous class
        i + 1 and other ids are dropped. None: ids are already 1..K.
      dtype: dtype of the output image.
      hflip_prob: flip probability when `aug_rand_hflip` (1.0 forces it).
    """
    self._output_size = [int(s) for s in output_size]
    self._max_num_instances = max_num_instances
    self._mask_crop_size = mask_crop_size
    self._mosaic = mosaic
    self._mosaic_tile_size = mosaic_tile_size
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

  @property
  def mosaic_enabled(self) -> bool:
    return self._mosaic

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
      [n]), 'num_instances' (int32), 'source_id', 'height', 'width'.
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
    masks = tf.gather(decoded['groundtruth_instance_masks'], indices)
    masks = crop_and_resize_cells(masks, boxes, self._mask_crop_size)
    return {
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

  # ---------------------------------------------------------------- mosaic.
  def mosaic(self, examples: Sequence[Mapping[str, tf.Tensor]],
             center: Optional[Tuple[Any, Any]] = None
             ) -> Dict[str, tf.Tensor]:
    """mmdet-style mosaic of 4 prepared examples.

    Each image is resized to fit a `mosaic_tile_size` square (aspect kept)
    and placed around `center` of a 2 * tile canvas filled with `pad_value`:
    example 0 top-left (its bottom-right corner at the centre), 1 top-right,
    2 bottom-left, 3 bottom-right; parts beyond the canvas are cut. Boxes are
    scaled, shifted, clipped to the pasted region (crops re-sampled when
    clipped) and empty ones dropped.

    Args:
      examples: 4 dicts with 'image' [h, w, 3], 'boxes' [n, 4] pixel yxyx,
        'classes' [n], 'masks' [n, S, S] (from `prepare`).
      center: optional (y, x) integer centre; random in [0.5, 1.5] * tile
        otherwise.

    Returns:
      A dict with 'image' (float32 [2T, 2T, 3]), 'image_shape', 'boxes',
      'classes', 'masks', 'num_instances'.
    """
    if len(examples) != MOSAIC_SIZE:
      raise ValueError(f'mosaic needs {MOSAIC_SIZE} examples, got '
                       f'{len(examples)}.')
    tile = self._mosaic_tile_size
    canvas_size = 2 * tile
    if center is None:
      center = tf.random.uniform([2], tile // 2, tile + tile // 2 + 1,
                                 dtype=tf.int32)
      yc, xc = center[0], center[1]
    else:
      yc = tf.cast(center[0], tf.int32)
      xc = tf.cast(center[1], tf.int32)

    canvas = tf.zeros([canvas_size, canvas_size, 3], tf.float32)
    all_boxes, all_classes, all_masks = [], [], []
    for i, example in enumerate(examples):
      image = tf.cast(example['image'], tf.float32)
      size = tf.cast(tf.shape(image)[0:2], tf.float32)
      scale = tf.minimum(tile / size[0], tile / size[1])
      new_size = tf.maximum(tf.cast(tf.round(size * scale), tf.int32), 1)
      image = tf.image.resize(image, new_size)
      h, w = new_size[0], new_size[1]
      top, left = i < 2, i % 2 == 0
      # Paste region on the canvas.
      y1 = tf.maximum(yc - h, 0) if top else yc
      y2 = yc if top else tf.minimum(yc + h, canvas_size)
      x1 = tf.maximum(xc - w, 0) if left else xc
      x2 = xc if left else tf.minimum(xc + w, canvas_size)
      # Matching region of the resized image.
      iy1 = h - (y2 - y1) if top else 0
      ix1 = w - (x2 - x1) if left else 0
      piece = image[iy1:iy1 + y2 - y1, ix1:ix1 + x2 - x1, :]
      canvas += tf.pad(piece - self._pad_value,
                       [[y1, canvas_size - y2], [x1, canvas_size - x2],
                        [0, 0]])
      shift = tf.cast(tf.stack([y1 - iy1, x1 - ix1]), tf.float32)
      box_scale = tf.cast(new_size, tf.float32) / size
      boxes = (tf.cast(example['boxes'], tf.float32) *
               tf.tile(box_scale, [2]) + tf.tile(shift, [2]))
      region = tf.cast(tf.stack([y1, x1, y2, x2]), tf.float32)
      clipped = tf.concat([tf.maximum(boxes[:, :2], region[:2]),
                           tf.minimum(boxes[:, 2:], region[2:])], axis=-1)
      clipped = tf.concat([clipped[:, :2],
                           tf.maximum(clipped[:, 2:], clipped[:, :2])],
                          axis=-1)
      all_masks.append(recrop_masks(example['masks'], boxes, clipped,
                                    self._mask_crop_size))
      all_boxes.append(clipped)
      all_classes.append(tf.cast(example['classes'], tf.int32))
    canvas += self._pad_value
    canvas.set_shape([canvas_size, canvas_size, 3])
    boxes = tf.concat(all_boxes, axis=0)
    indices = box_ops.get_non_empty_box_indices(boxes)
    return {
        'image': canvas,
        'image_shape': tf.constant([canvas_size, canvas_size], tf.int32),
        'boxes': tf.gather(boxes, indices),
        'classes': tf.gather(tf.concat(all_classes, axis=0), indices),
        'masks': tf.gather(tf.concat(all_masks, axis=0), indices),
        'num_instances': tf.shape(indices)[0],
    }

  def mosaic_from_batch(self, batch: Mapping[str, tf.Tensor]
                        ) -> Dict[str, tf.Tensor]:
    """`mosaic` on a padded batch of 4 prepared examples (tf.data map fn).

    Args:
      batch: `padded_batch(4)` of prepared examples restricted to 'image',
        'image_shape', 'boxes', 'classes', 'masks', 'num_instances'.

    Returns:
      The output of `mosaic`.
    """
    examples = []
    for i in range(MOSAIC_SIZE):
      h, w = batch['image_shape'][i][0], batch['image_shape'][i][1]
      n = batch['num_instances'][i]
      examples.append({
          'image': batch['image'][i][:h, :w, :],
          'boxes': batch['boxes'][i][:n],
          'classes': batch['classes'][i][:n],
          'masks': batch['masks'][i][:n],
      })
    return self.mosaic(examples)

  # -------------------------------------------------------------- geometry.
  def _resize_and_crop(self, prepared: Mapping[str, tf.Tensor],
                       aug_scale_min: float, aug_scale_max: float,
                       test_scale: Optional[Sequence[int]] = None):
    """Resizes (random scale), crops and zero-pads to output_size.

    Returns:
      (image float32 [H, W, 3] 0..255 zero-padded, image_info [4, 2],
      valid_size int32 [2] of the content at the top-left, boxes [n, 4],
      classes [n], masks [n, S, S]) with empty boxes removed.
    """
    image, image_info, valid_size = resize_image(
        prepared['image'], self._output_size, aug_scale_min, aug_scale_max,
        test_scale)
    image_scale, offset = image_info[2, :], image_info[3, :]
    valid_size = tf.cast(valid_size, tf.float32)
    boxes = tf.cast(prepared['boxes'], tf.float32)
    raw_boxes = (boxes * tf.tile(image_scale[tf.newaxis], [1, 2]) -
                 tf.tile(offset[tf.newaxis], [1, 2]))
    boxes = preprocess_ops.resize_and_crop_boxes(boxes, image_scale,
                                                 valid_size, offset)
    masks = recrop_masks(prepared['masks'], raw_boxes, boxes,
                         self._mask_crop_size)
    indices = box_ops.get_non_empty_box_indices(boxes)
    return (image, image_info, tf.cast(valid_size, tf.int32),
            tf.gather(boxes, indices), tf.gather(prepared['classes'], indices),
            tf.gather(masks, indices))

  def _finish_image(self, image: tf.Tensor,
                    valid_size: tf.Tensor) -> tf.Tensor:
    return pad_and_normalize(image, valid_size, self._pad_value, self._dtype)

  def _labels(self, image_info, boxes, classes, masks) -> Dict[str, tf.Tensor]:
    n = self._max_num_instances
    return {
        'image_info': tf.cast(image_info, tf.float32),
        'gt_boxes': preprocess_ops.clip_or_pad_to_fixed_size(
            tf.cast(boxes, tf.float32), n, -1),
        'gt_classes': preprocess_ops.clip_or_pad_to_fixed_size(
            tf.cast(classes, tf.int32), n, -1),
        'gt_masks': preprocess_ops.clip_or_pad_to_fixed_size(
            tf.cast(masks, tf.float32), n, -1),
    }

  # ------------------------------------------------------------ public API.
  def parse_prepared_train(self, prepared: Mapping[str, tf.Tensor],
                           stage: int) -> Tuple[tf.Tensor,
                                                Dict[str, tf.Tensor]]:
    """Training augmentation of a prepared (or mosaic) example.

    Args:
      prepared: output of `prepare(..., is_training=True)` or of `mosaic`.
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
    image, image_info, valid_size, boxes, classes, masks = (
        self._resize_and_crop(prepared, scale_min, scale_max))
    if self._aug_hsv:
      image = yolox_hsv_jitter(image)
    if self._hflip_prob > 0:
      flip = tf.random.uniform([]) < self._hflip_prob
      image, boxes, masks = tf.cond(
          flip, lambda: horizontal_flip(image, boxes, masks, valid_size[1]),
          lambda: (image, boxes, masks))
    image = self._finish_image(image, valid_size)
    return image, self._labels(image_info, boxes, classes, masks)

  def parse_train(self, decoded: Mapping[str, tf.Tensor],
                  stage: int) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    """Parses one decoded example for training (no mosaic: see `mosaic`).

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
    image, image_info, valid_size, boxes, classes, masks = (
        self._resize_and_crop(
            dict(prepared, classes=tf.stack(
                [tf.cast(prepared['classes'], tf.int32),
                 tf.cast(prepared['is_crowd'], tf.int32)], axis=-1)),
            1.0, 1.0, self._test_scale))
    classes, is_crowd = classes[:, 0], classes[:, 1]
    pad_size = (fit_box(image_info[0, :], self._output_size, self._test_scale)
                if self._test_scale else None)
    image = pad_and_normalize(image, valid_size, self._pad_value, self._dtype,
                              pad_size)
    labels = self._labels(image_info, boxes, classes, masks)
    labels.update({
        'gt_is_crowd': preprocess_ops.clip_or_pad_to_fixed_size(
            is_crowd, self._max_num_instances, -1),
        'source_id': utils.process_source_id(prepared['source_id']),
        'height': prepared['height'],
        'width': prepared['width'],
    })
    return image, labels

  def parse_eval(self, decoded: Mapping[str, tf.Tensor]
                 ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    """Parses one decoded example for evaluation (crowd boxes kept)."""
    return self.parse_prepared_eval(self.prepare(decoded, False))


# ------------------------------------------------------------------ dataset.
def _check_input_path(input_path: Union[str, Sequence[str]]) -> None:
  """Raises ValueError naming the first pattern that matches no file."""
  if not input_path:
    raise ValueError('input_path is empty.')
  paths = [input_path] if isinstance(input_path, str) else list(input_path)
  for path in paths:
    for pattern in str(path).split(','):
      pattern = pattern.strip()
      if pattern and not tf.io.gfile.glob(pattern):
        raise ValueError(f'{pattern} does not match any files.')


def _mosaic_sample_fn(parser: Parser):
  """InputReader `sample_fn`: groups prepared examples by 4 into mosaics."""

  def sample_fn(dataset: tf.data.Dataset) -> tf.data.Dataset:
    dataset = dataset.map(lambda x: {k: x[k] for k in _MOSAIC_KEYS},
                          num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.padded_batch(MOSAIC_SIZE, drop_remainder=True)
    return dataset.map(parser.mosaic_from_batch,
                       num_parallel_calls=tf.data.AUTOTUNE)

  return sample_fn


def build_parser(data_config: unipercepnet_cfg.DataConfig,
                 output_size: Sequence[int],
                 category_ids: Optional[Sequence[int]] = None,
                 mask_crop_size: int = 112) -> Parser:
  """Builds a `Parser` from a `DataConfig`."""
  p = data_config.parser
  return Parser(
      output_size=output_size,
      max_num_instances=p.max_num_instances,
      mask_crop_size=mask_crop_size,
      mosaic=p.mosaic,
      mosaic_tile_size=p.mosaic_tile_size,
      aug_scale_min=p.aug_scale_min,
      aug_scale_max=p.aug_scale_max,
      aug_rand_hflip=p.aug_rand_hflip,
      aug_hsv=p.aug_hsv,
      pad_value=p.pad_value,
      test_scale=p.test_scale,
      skip_crowd_during_training=p.skip_crowd_during_training,
      category_ids=category_ids,
      dtype=data_config.dtype)


def build_dataset(data_config: unipercepnet_cfg.DataConfig,
                  output_size: Sequence[int],
                  category_ids: Optional[Sequence[int]] = None,
                  stage: int = 2,
                  input_context: Optional[tf.distribute.InputContext] = None,
                  mask_crop_size: int = 112) -> tf.data.Dataset:
  """Builds the batched (image, labels) dataset with Model Garden's reader.

  Training datasets repeat forever; stage 1 and stage 2 are separate datasets
  that the caller concatenates (e.g. `stage1.take(n).concatenate(stage2)`).
  The stage-1 mosaic (if `parser.mosaic`) runs as the reader's `sample_fn`:
  prepared examples are grouped by 4 (`padded_batch`), so each mosaic
  consumes 4 shuffled images.

  Args:
    data_config: a `configs.unipercepnet.DataConfig`.
    output_size: [height, width] of the network input.
    category_ids: dataset category ids in contiguous order (see `Parser`).
    stage: 1 or 2; ignored when not training.
    input_context: optional `tf.distribute.InputContext` (sharding and the
      per-replica batch size).
    mask_crop_size: side of the box-aligned mask crops.

  Returns:
    A `tf.data.Dataset` of (image [B, H, W, 3], labels) batches.

  Raises:
    ValueError: if a pattern of `input_path` matches no file, or `stage` is
      not 1 or 2.
  """
  if stage not in (1, 2):
    raise ValueError(f'stage must be 1 or 2, got {stage}.')
  _check_input_path(data_config.input_path)
  parser = build_parser(data_config, output_size, category_ids,
                        mask_crop_size)
  decoder = tf_example_decoder.TfExampleDecoder(
      include_mask=True,
      regenerate_source_id=(
          data_config.decoder.simple_decoder.regenerate_source_id))
  is_training = data_config.is_training

  def decoder_fn(serialized):
    return parser.prepare(decoder.decode(serialized), is_training)

  sample_fn = None
  if not is_training:
    parser_fn = parser.parse_prepared_eval
  else:
    parser_fn = functools.partial(parser.parse_prepared_train, stage=stage)
    if stage == 1 and parser.mosaic_enabled:
      sample_fn = _mosaic_sample_fn(parser)
  reader = input_reader.InputReader(
      params=data_config,
      dataset_fn=tf.data.TFRecordDataset,
      decoder_fn=decoder_fn,
      sample_fn=sample_fn,
      parser_fn=parser_fn)
  return reader.read(input_context=input_context)


__all__: List[str] = [
    'Parser', 'build_dataset', 'build_parser', 'category_lookup_table',
    'crop_and_resize_cells', 'horizontal_flip', 'map_categories',
    'paste_masks', 'recrop_masks', 'yolox_hsv_jitter',
]
