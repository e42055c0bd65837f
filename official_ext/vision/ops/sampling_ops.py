"""Per-channel deformable bilinear resampling.

TOOD's "deformable sampling" resamples every channel of a map at its own
offset: a depthwise deformable conv with a 1x1 all-ones kernel. Written here
with four batched gathers, so it runs on any device and under XLA.
"""

import tensorflow as tf


def deformable_resample(features: tf.Tensor, offsets: tf.Tensor) -> tf.Tensor:
  """Samples each channel of `features` at its own offset.

  Args:
    features: `[B, H, W, C]`.
    offsets: `[B, H, W, C, 2]`, per channel `(dy, dx)` in cells of the map.

  Returns:
    `[B, H, W, C]` with `out[b, h, w, c]` the bilinear interpolation of
    `features[b, :, :, c]` at `(h + dy, w + dx)`, samples outside the map
    counting as zero (as a zero-padded deformable conv does).
  """
  features = tf.convert_to_tensor(features)
  dtype = features.dtype
  offsets = tf.cast(offsets, dtype)
  shape = tf.shape(features)
  batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]

  grid_y = tf.cast(tf.range(height), dtype)[None, :, None, None]
  grid_x = tf.cast(tf.range(width), dtype)[None, None, :, None]
  y = grid_y + offsets[..., 0]
  x = grid_x + offsets[..., 1]
  y0 = tf.floor(y)
  x0 = tf.floor(x)
  wy1 = y - y0
  wx1 = x - x0
  wy0 = 1. - wy1
  wx0 = 1. - wx1
  y0 = tf.cast(y0, tf.int32)
  x0 = tf.cast(x0, tf.int32)

  # [B, C, H * W]: each channel is gathered from its own plane.
  planes = tf.reshape(tf.transpose(features, [0, 3, 1, 2]),
                      [batch, channels, height * width])

  def corner(yi, xi, weight):
    valid = ((yi >= 0) & (yi < height) & (xi >= 0) & (xi < width))
    index = (tf.clip_by_value(yi, 0, height - 1) * width +
             tf.clip_by_value(xi, 0, width - 1))
    index = tf.reshape(tf.transpose(index, [0, 3, 1, 2]),
                       [batch, channels, height * width])
    values = tf.gather(planes, index, batch_dims=2)
    values = tf.transpose(
        tf.reshape(values, [batch, channels, height, width]), [0, 2, 3, 1])
    return values * weight * tf.cast(valid, dtype)

  return (corner(y0, x0, wy0 * wx0) + corner(y0, x0 + 1, wy0 * wx1) +
          corner(y0 + 1, x0, wy1 * wx0) + corner(y0 + 1, x0 + 1, wy1 * wx1))
