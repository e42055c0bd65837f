"""Image resizing as OpenCV and MMDetection's test pipeline do it.

Detectors trained with MMDetection see images resized by `cv2.resize`
(`INTER_LINEAR`) on uint8 pixels, at the size mmdet's keep-ratio `Resize`
rounds to. `tf.image.resize` interpolates in float and rounds differently;
the difference is at most one grey level, but a model is evaluated on the
exact pixels it was made for only with OpenCV's arithmetic, reproduced here:

- per output column x: `fx = float32((x + 0.5) * (w / new_w) - 0.5)`,
  `sx = floor(fx)`, weights `round((1 - (fx - sx)) * 2048)` and
  `round((fx - sx) * 2048)`; columns left of the image (sx < 0) and at or
  past its last column take that border column with weights (2048, 0);
- per output row the same weights, but rows outside the image are only
  clamped (their weights are not reset);
- a horizontal pass in integers, `D = S[sx] * a0 + S[sx + 1] * a1`, then a
  vertical pass in OpenCV's SIMD fixed point:
  `(((D0 >> 4) * b0 >> 16) + ((D1 >> 4) * b1 >> 16) + 2) >> 2`.

On the reference fixture's image this equals `cv2.resize` exactly.
"""

from typing import Sequence, Tuple

import tensorflow as tf

# OpenCV's INTER_RESIZE_COEF_SCALE (11 fractional bits).
_COEF_SCALE = 2048.


def _taps(source: tf.Tensor, target: tf.Tensor, reset_borders: bool
          ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
  """Source indices (low, high) and fixed-point weights per target index."""
  scale = 1. / (tf.cast(target, tf.float64) / tf.cast(source, tf.float64))
  positions = tf.cast(
      (tf.range(target, dtype=tf.float64) + 0.5) * scale - 0.5, tf.float32)
  low = tf.floor(positions)
  frac = positions - low
  low = tf.cast(low, tf.int32)
  if reset_borders:
    last = source - 1
    outside = (low < 0) | (low >= last)
    frac = tf.where(outside, 0., frac)
    low = tf.where(low < 0, 0, tf.minimum(low, last))
  w0 = tf.cast(tf.round((1. - frac) * _COEF_SCALE), tf.int32)
  w1 = tf.cast(tf.round(frac * _COEF_SCALE), tf.int32)
  high = tf.clip_by_value(low + 1, 0, source - 1)
  low = tf.clip_by_value(low, 0, source - 1)
  return low, high, w0, w1


def resize_like_opencv(image: tf.Tensor, size: Sequence) -> tf.Tensor:
  """`cv2.resize(image, (width, height), interpolation=INTER_LINEAR)`.

  Args:
    image: uint8 `[h, w, C]` (other dtypes are rounded and clipped to
      0..255 first).
    size: (height, width) of the result, ints or int scalars.

  Returns:
    uint8 `[height, width, C]`.
  """
  if image.dtype != tf.uint8:
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
  shape = tf.shape(image)
  height, width = size[0], size[1]
  pixels = tf.cast(image, tf.int32)
  x0, x1, a0, a1 = _taps(shape[1], width, reset_borders=True)
  rows = (tf.gather(pixels, x0, axis=1) * a0[None, :, None] +
          tf.gather(pixels, x1, axis=1) * a1[None, :, None])
  y0, y1, b0, b1 = _taps(shape[0], height, reset_borders=False)
  shift = tf.bitwise.right_shift
  top = shift(shift(tf.gather(rows, y0), 4) * b0[:, None, None], 16)
  bottom = shift(shift(tf.gather(rows, y1), 4) * b1[:, None, None], 16)
  out = shift(top + bottom + 2, 2)
  return tf.cast(tf.clip_by_value(out, 0, 255), tf.uint8)


def keep_ratio_size(image_size: tf.Tensor, box: tf.Tensor) -> tf.Tensor:
  """int32 [2]: mmdet's keep-ratio size of an image fitted into `box`.

  `scale = min(box_h / h, box_w / w)`, each side `int(side * scale + 0.5)`
  (in float64, as mmcv computes it).
  """
  image_size = tf.cast(image_size, tf.float64)
  box = tf.cast(box, tf.float64)
  scale = tf.reduce_min(box / image_size)
  return tf.cast(tf.floor(image_size * scale + 0.5), tf.int32)
