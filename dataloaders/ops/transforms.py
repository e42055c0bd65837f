"""One geometric transform for an image, its boxes and their mask crops.

After detectron2's `Transform`: the parameters are drawn once
(`resize_crop_transform`, or set directly as the mosaic does), and the same
`GeometricTransform` then moves the image (`apply_image`), the boxes
(`apply_boxes`) and the box-aligned mask crops (`apply_masks`), so that the
three cannot drift apart.

The transform resizes the image to `scaled_size` (source pixel coordinate p
goes to p * scale, scale = scaled_size / image_size per axis), shifts it by
-offset, keeps what falls inside `window` of an `output_size` canvas (zeros
elsewhere; boxes are clipped to the window and their crops re-sampled on the
visible part), then optionally mirrors the columns [0, window x2).
"""

import math
from typing import Optional, Sequence

import tensorflow as tf

from dataloaders.ops import augment_ops
from official_ext.vision.ops import mask_ops
from official_ext.vision.ops import preprocess_ops as preprocess_ops_ext


class GeometricTransform:
  """Resize, shift, window (crop / paste) and optional flip, as one object."""

  def __init__(self,
               image_size: tf.Tensor,
               scaled_size: tf.Tensor,
               offset: tf.Tensor,
               window: tf.Tensor,
               output_size: Sequence[int],
               flip: Optional[tf.Tensor] = None,
               resize_method: str = 'bilinear',
               info_size: Optional[tf.Tensor] = None):
    """Initialises the transform.

    Args:
      image_size: [2] (height, width) of the source image.
      scaled_size: [2] whole-pixel (height, width) the image is resized to.
      offset: int [2] (y, x) of the resized image at output pixel (0, 0)
        (negative: the image moves down / right).
      window: int [4] (y1, x1, y2, x2) of the output that shows the image;
        it must lie inside both the canvas and the shifted resized image.
      output_size: [height, width] of the output canvas (Python ints).
      flip: optional bool scalar: mirror columns [0, window x2) after the
        rest (a window at x1 = 0 only).
      resize_method: 'bilinear' (`tf.image.resize`, float arithmetic) or
        'opencv' (OpenCV's on uint8 pixels, as the reference's test resize).
      info_size: the second row of `image_info` (Model Garden's "desired
        size"); default: output_size.
    """
    if resize_method not in ('bilinear', 'opencv'):
      raise ValueError(f'Unknown resize_method {resize_method!r}.')
    self._image_size = tf.cast(image_size, tf.float32)
    self._scaled_size = tf.cast(scaled_size, tf.float32)
    self._offset = tf.cast(offset, tf.int32)
    self._window = tf.cast(window, tf.int32)
    self._output_size = [int(s) for s in output_size]
    self._flip = flip
    self._resize_method = resize_method
    self._info_size = (tf.constant(self._output_size, tf.float32)
                       if info_size is None else
                       tf.cast(info_size, tf.float32))

  @property
  def output_size(self):
    return list(self._output_size)

  @property
  def scale(self) -> tf.Tensor:
    """float32 [2]: (y, x) scale, scaled size over image size."""
    return self._scaled_size / self._image_size

  @property
  def valid_size(self) -> tf.Tensor:
    """int32 [2]: the window's bottom-right corner (the content's extent)."""
    return self._window[2:]

  @property
  def image_info(self) -> tf.Tensor:
    """float32 [4, 2], Model Garden's: image size, info size, scale, offset."""
    return tf.stack([self._image_size, self._info_size, self.scale,
                     tf.cast(self._offset, tf.float32)])

  @property
  def paddings(self) -> tf.Tensor:
    """int32 [3, 2]: `tf.pad` paddings placing the window on the canvas."""
    height, width = self._output_size
    y1, x1, y2, x2 = tf.unstack(self._window)
    return tf.stack([tf.stack([y1, height - y2]), tf.stack([x1, width - x2]),
                     tf.zeros([2], tf.int32)])

  def _maybe_flip(self, flip_fn, value: tf.Tensor) -> tf.Tensor:
    if self._flip is None:
      return value
    return tf.cond(self._flip, lambda: flip_fn(value), lambda: value)

  # ----------------------------------------------------------------- image.
  def visible_part(self, image: tf.Tensor) -> tf.Tensor:
    """float32: the resized image's part that the window shows, unflipped."""
    size = tf.cast(self._scaled_size, tf.int32)
    if self._resize_method == 'opencv':
      resized = tf.cast(preprocess_ops_ext.resize_like_opencv(image, size),
                        tf.float32)
    else:
      resized = tf.image.resize(tf.cast(image, tf.float32), size,
                                method=tf.image.ResizeMethod.BILINEAR)
    start = self._window[:2] + self._offset
    extent = self._window[2:] - self._window[:2]
    return resized[start[0]:start[0] + extent[0],
                   start[1]:start[1] + extent[1], :]

  def apply_image(self, image: tf.Tensor) -> tf.Tensor:
    """float32 [height, width, C]: the image moved, zeros outside the window."""
    image = tf.pad(self.visible_part(image), self.paddings)
    image.set_shape(self._output_size + [None])
    return self._maybe_flip(
        lambda x: augment_ops.flip_image(x, self._window[3]), image)

  # ----------------------------------------------------------- label maps.
  def visible_label(self, label: tf.Tensor) -> tf.Tensor:
    """The label map's part the window shows, unflipped (nearest resize).

    Args:
      label: integer [height, width, C] per-pixel labels of the source.
    """
    size = tf.cast(self._scaled_size, tf.int32)
    resized = tf.image.resize(
        label, size, method=tf.image.ResizeMethod.NEAREST_NEIGHBOR)
    start = self._window[:2] + self._offset
    extent = self._window[2:] - self._window[:2]
    return tf.cast(resized[start[0]:start[0] + extent[0],
                           start[1]:start[1] + extent[1], :], label.dtype)

  def apply_label_map(self, label: tf.Tensor, fill: int) -> tf.Tensor:
    """[height, width, C] labels moved as the image, `fill` outside the
    window (nearest-neighbour resampling keeps labels whole).

    Args:
      label: integer [h, w, C] per-pixel labels of the source image.
      fill: the label of the canvas outside the window.
    """
    label = tf.pad(self.visible_label(label), self.paddings,
                   constant_values=tf.cast(fill, label.dtype))
    label.set_shape(self._output_size + [label.shape[-1]])
    return self._maybe_flip(
        lambda x: augment_ops.flip_image(x, self._window[3]), label)

  # ---------------------------------------------------------------- boxes.
  def _moved_boxes(self, boxes: tf.Tensor) -> tf.Tensor:
    """Resized and shifted, not clipped."""
    boxes = tf.cast(boxes, tf.float32)
    return (boxes * tf.tile(self.scale[tf.newaxis], [1, 2]) -
            tf.tile(tf.cast(self._offset, tf.float32)[tf.newaxis], [1, 2]))

  def _clipped(self, boxes: tf.Tensor) -> tf.Tensor:
    window = tf.cast(self._window, tf.float32)
    low = tf.tile(window[:2], [2])
    high = tf.tile(window[2:], [2])
    return tf.maximum(tf.minimum(boxes, high), low)

  def apply_boxes(self, boxes: tf.Tensor) -> tf.Tensor:
    """float32 [N, 4] yxyx pixel boxes moved and clipped to the window.

    Boxes outside the window come out empty; the caller drops them.
    """
    return self._maybe_flip(
        lambda b: augment_ops.flip_boxes(b, self._window[3]),
        self._clipped(self._moved_boxes(boxes)))

  def apply_masks(self, masks: tf.Tensor, boxes: tf.Tensor,
                  crop_size: int) -> tf.Tensor:
    """float32 [N, S, S] crops aligned with `apply_boxes(boxes)`.

    Args:
      masks: [N, S, S] crops aligned with `boxes`.
      boxes: [N, 4] the boxes before the transform.
      crop_size: S.
    """
    moved = self._moved_boxes(boxes)
    masks = mask_ops.recrop_masks(masks, moved, self._clipped(moved),
                                  crop_size)
    return self._maybe_flip(augment_ops.flip_masks, masks)


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


def resize_crop_transform(image_size: tf.Tensor,
                          output_size: Sequence[int],
                          aug_scale_min: float = 1.0,
                          aug_scale_max: float = 1.0,
                          test_scale: Optional[Sequence[int]] = None,
                          hflip_prob: float = 0.0) -> GeometricTransform:
  """Draws the transform of a resize to fit, random scale, crop and flip.

  Without `test_scale`, Model Garden's `resize_and_crop_image` (its random
  scale and crop offset, drawn the same way) with the padded size equal to
  the output size: the content sits at the top-left. With `test_scale`,
  the reference's test resize instead: fitted into `fit_box(...,
  test_scale)` at mmdet's rounding of the size, with OpenCV's bilinear
  arithmetic on uint8 pixels (`official_ext.vision.ops.preprocess_ops`).

  Args:
    image_size: int [2] (height, width) of the image.
    output_size: [height, width] of the output.
    aug_scale_min: minimum random scale relative to fitting output_size.
    aug_scale_max: maximum random scale (1.0 and 1.0: no augmentation).
    test_scale: see `fit_box`.
    hflip_prob: probability of a horizontal flip (0: never).

  Returns:
    A `GeometricTransform` onto an `output_size` canvas.
  """
  output_size = [int(s) for s in output_size]
  size = tf.cast(image_size, tf.float32)
  desired = tf.constant(output_size, tf.float32)
  info_size = None
  resize_method = 'bilinear'
  offset = tf.zeros([2], tf.int32)
  if test_scale:
    scaled = tf.cast(preprocess_ops_ext.keep_ratio_size(
        image_size, fit_box(image_size, output_size, test_scale)), tf.float32)
    resize_method = 'opencv'
  else:
    jitter = not (math.isclose(aug_scale_min, 1.0) and
                  math.isclose(aug_scale_max, 1.0))
    scaled = desired
    if jitter:
      scaled = tf.round(tf.random.uniform([], aug_scale_min, aug_scale_max) *
                        desired)
    scaled = tf.round(size * tf.minimum(scaled[0] / size[0],
                                        scaled[1] / size[1]))
    if jitter:
      max_offset = tf.maximum(scaled - desired, 0.)
      offset = tf.cast(max_offset * tf.random.uniform([2], 0, 1), tf.int32)
  # A side fitting would shrink below one pixel (the short side of a 1 x 4000
  # image) keeps one: a 0 size fails the resize ("output dimensions must be
  # positive"), or makes the scale 0 and the boxes infinite.
  scaled = tf.maximum(scaled, 1.)
  if test_scale:
    info_size = scaled
  valid = tf.minimum(scaled - tf.cast(offset, tf.float32), desired)
  flip = (tf.random.uniform([]) < hflip_prob) if hflip_prob > 0 else None
  return GeometricTransform(
      size, scaled, offset, tf.concat([tf.zeros([2]), valid], axis=0),
      output_size, flip=flip, resize_method=resize_method,
      info_size=info_size)
