"""Photometric and flip augmentations of the training pipeline."""

from typing import Optional, Tuple

import tensorflow as tf


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


def flip_image(image: tf.Tensor, valid_width: tf.Tensor) -> tf.Tensor:
  """Mirrors the columns [0, valid_width) of an [H, W, C] image.

  Columns >= valid_width (padding) are unchanged.
  """
  valid_width = tf.cast(valid_width, tf.int32)
  cols = tf.range(tf.shape(image)[1], dtype=tf.int32)
  source = tf.where(cols < valid_width, valid_width - 1 - cols, cols)
  return tf.gather(image, source, axis=1)


def flip_boxes(boxes: tf.Tensor, valid_width: tf.Tensor) -> tf.Tensor:
  """float [N, 4] yxyx pixel boxes mirrored in an image valid_width wide."""
  w = tf.cast(tf.cast(valid_width, tf.int32), boxes.dtype)
  y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
  return tf.stack([y1, w - x2, y2, w - x1], axis=-1)


def flip_masks(masks: tf.Tensor) -> tf.Tensor:
  """[N, S, S] box-aligned crops of mirrored boxes: each crop mirrored."""
  return tf.reverse(masks, axis=[2])


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
  return (flip_image(image, valid_width), flip_boxes(boxes, valid_width),
          flip_masks(masks))
