"""Model Garden's RoIAlign on one feature level, without its big gather.

Model Garden's `spatial_transform_ops.multilevel_crop_and_resize` gathers
the 2x2 neighbours of every sample point from a concatenation of all
levels into a `[B, R, 2S, 2S, C]` tensor, then weights and pools it: with
one level and a few hundred RoIs that moves more memory than the mask
head's convolutions, and its gradient is a scatter. Here the same samples
(one per bin, at `sample_offset`) with the same border handling come from:

- `tf.image.crop_and_resize` on the map padded by `_PAD` cells per side
  (linearly extrapolated at the top and left, the last row and column
  repeated at the bottom and right, which is what Model Garden's clamped
  neighbours and unclamped weights amount to), when every sample lies in
  that padded map: always for boxes inside the image;
- otherwise two matmuls with the bilinear weight matrices (sampling on a
  grid is separable: `out = Ay F Ax^T` per channel).

Both agree with Model Garden's to float rounding (crop_and_resize places
its samples by its own arithmetic: about 1e-5 relative).
"""

import tensorflow as tf

# Cells of padding around the map for the crop_and_resize path.
_PAD = 4


def _grid(start: tf.Tensor, size: tf.Tensor, output_size: int,
          sample_offset: float) -> tf.Tensor:
  """`[..., output_size]` sample positions, computed as Model Garden does."""
  steps = tf.constant([i + sample_offset for i in range(output_size)],
                      tf.float32)
  return start[..., None] + steps * size[..., None] / output_size


def _interpolation_matrix(grid: tf.Tensor, length) -> tf.Tensor:
  """`[..., S, length]` bilinear weights of samples at `grid` along an axis.

  Row k has (1 - l) at the floor of sample k and l at the next cell, both
  clamped to the map, with l from the unclamped position (Model Garden's
  RoIAlign kernel).
  """
  last = tf.cast(length, tf.float32) - 1.
  lower = tf.minimum(tf.maximum(tf.floor(grid), 0.), last)
  upper = tf.minimum(lower + 1., last)
  high_weight = grid - lower
  low_weight = 1. - high_weight
  return (tf.one_hot(tf.cast(lower, tf.int32), length) * low_weight[..., None] +
          tf.one_hot(tf.cast(upper, tf.int32), length) *
          high_weight[..., None])


def _pad_like_model_garden(features: tf.Tensor, axis: int,
                           pad: int) -> tf.Tensor:
  """Pads `pad` cells on both sides of `axis` with Model Garden's values.

  Before the first cell: the line through cells 0 and 1 (k cells out:
  (1 + k) f[0] - k f[1]); after the last: the last cell.
  """
  length = features.shape[axis]
  first = tf.gather(features, [0], axis=axis)
  second = tf.gather(features, [min(1, length - 1)], axis=axis)
  last = tf.gather(features, [length - 1], axis=axis)
  before = [(1. + k) * first - k * second for k in range(pad, 0, -1)]
  return tf.concat(before + [features] + [last] * pad, axis=axis)


def _crop_and_resize(features, grid_y, grid_x, output_size):
  """Samples at grids that lie within the `_PAD`-padded map."""
  batch = tf.shape(features)[0]
  height, width, channels = features.shape[1:]
  num_boxes = tf.shape(grid_y)[1]
  # crop_and_resize has no bfloat16 kernel: it samples in float32.
  padded = _pad_like_model_garden(
      _pad_like_model_garden(tf.cast(features, tf.float32), 1, _PAD), 2,
      _PAD)
  # crop_and_resize samples linearly from box corner to box corner, at
  # y * (padded height - 1) in cells of the padded map.
  scale_y = float(height + 2 * _PAD - 1)
  scale_x = float(width + 2 * _PAD - 1)
  corners = tf.stack([(grid_y[..., 0] + _PAD) / scale_y,
                      (grid_x[..., 0] + _PAD) / scale_x,
                      (grid_y[..., -1] + _PAD) / scale_y,
                      (grid_x[..., -1] + _PAD) / scale_x], axis=-1)
  crops = tf.image.crop_and_resize(
      padded, tf.reshape(corners, [-1, 4]),
      tf.repeat(tf.range(batch), num_boxes),
      [output_size, output_size])
  crops = tf.reshape(crops, [batch, num_boxes, output_size, output_size,
                             channels])
  return tf.cast(crops, features.dtype)


def _matmuls(features, grid_y, grid_x, output_size):
  """Samples at any grids: `Ay F Ax^T`, two (batched) matmuls."""
  batch = tf.shape(features)[0]
  height, width, channels = features.shape[1:]
  num_boxes = tf.shape(grid_y)[1]
  s = output_size
  ay = tf.cast(_interpolation_matrix(grid_y, height), features.dtype)
  ax = tf.cast(_interpolation_matrix(grid_x, width), features.dtype)
  # Rows: [B, R * S, H] x [B, H, W * C] -> [B, R, S, W, C].
  rows = tf.matmul(tf.reshape(ay, [batch, num_boxes * s, height]),
                   tf.reshape(features, [batch, height, width * channels]))
  rows = tf.reshape(rows, [batch, num_boxes, s, width, channels])
  # Columns: [B, R, 1, S, W] x [B, R, S, W, C] -> [B, R, S, S, C].
  return tf.matmul(ax[:, :, None, :, :], rows)


def single_level_crop_and_resize(features: tf.Tensor,
                                 boxes: tf.Tensor,
                                 stride: float,
                                 output_size: int = 7,
                                 sample_offset: float = 0.5) -> tf.Tensor:
  """RoIAlign of boxes on one feature map (Model Garden's, single level).

  Args:
    features: `[B, H, W, C]` map at `stride`; H, W and C static.
    boxes: `[B, R, 4]` boxes (ymin, xmin, ymax, xmax) in image pixels.
    stride: the map's stride (Model Garden's `2**level`).
    output_size: side of each crop.
    sample_offset: subpixel offset of the sample in each bin, in [0, 1].

  Returns:
    `[B, R, output_size, output_size, C]` crops, of `features`' dtype.
  """
  features = tf.convert_to_tensor(features)
  height, width, channels = features.shape[1:]
  if height is None or width is None or channels is None:
    raise ValueError('single_level_crop_and_resize needs static H, W and C, '
                     f'got {features.shape}.')
  boxes = tf.cast(boxes, tf.float32)
  # Model Garden's order of operations: corners and sizes scaled separately.
  stride = tf.constant(stride, tf.float32)
  grid_y = _grid(boxes[..., 0] / stride,
                 (boxes[..., 2] - boxes[..., 0]) / stride, output_size,
                 sample_offset)
  grid_x = _grid(boxes[..., 1] / stride,
                 (boxes[..., 3] - boxes[..., 1]) / stride, output_size,
                 sample_offset)
  inside = tf.reduce_all(
      (grid_y >= -_PAD) & (grid_y <= height - 1 + _PAD) &
      (grid_x >= -_PAD) & (grid_x <= width - 1 + _PAD))
  return tf.cond(
      inside,
      lambda: _crop_and_resize(features, grid_y, grid_x, output_size),
      lambda: _matmuls(features, grid_y, grid_x, output_size))
