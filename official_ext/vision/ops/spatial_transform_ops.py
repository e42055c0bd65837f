"""RoIAlign as Detectron2, mmcv and torchvision compute it, on one level.

Model Garden's `spatial_transform_ops.multilevel_crop_and_resize` takes one
sample per bin at a fixed offset and gathers a `[B, R, 2S, 2S, C]` tensor
of neighbours. Detectors trained in PyTorch (mmdet's `RoIAlign` with
`aligned=True`, `sampling_ratio=0`) average a grid of samples per bin whose
size adapts to the RoI, and treat the map border their own way. This op
computes exactly that, per RoI and bin:

- the RoI in map cells is `box * spatial_scale - 0.5` (`aligned`; without
  it the box is not shifted and its sides are at least one cell);
- each of the `S x S` bins averages `ny x nx` samples at the centres of a
  regular `ny x nx` subdivision of the bin, with `n = sampling_ratio` or,
  for 0, `ceil(roi_side / S)` per axis (at least one sample counted);
- a sample more than one cell outside the map (`y < -1` or `y > H`)
  contributes zero; otherwise its coordinates are clamped to `[0, H - 1]`
  and it is bilinearly interpolated.

Sampling on a grid is separable and bilinear weights factor per axis, so
the bin averages are `Ay F Ax^T` per RoI and channel, with `Ay` `[S, H]` the
average of the samples' interpolation rows: two batched matmuls, whose
gradient is two matmuls as well.
"""

import tensorflow as tf


def _axis_weights(start: tf.Tensor, length: tf.Tensor, output_size: int,
                  num_samples: tf.Tensor, max_samples, size) -> tf.Tensor:
  """`[B, R, S, size]`: bin averages of the samples' bilinear weights.

  Args:
    start: `[B, R]` first RoI coordinate along the axis, in cells.
    length: `[B, R]` RoI length along the axis, in cells.
    output_size: S, bins along the axis.
    num_samples: `[B, R]` int samples per bin along the axis.
    max_samples: the largest of `num_samples` (int or scalar tensor).
    size: the map's length along the axis (static int).
  """
  bin_size = length / output_size
  n = tf.cast(num_samples, tf.float32)
  bins = tf.range(output_size, dtype=tf.float32)
  samples = tf.range(max_samples, dtype=tf.float32)
  # [B, R, S, n]: bin start + (i + 0.5) * bin / n.
  pos = (start[..., None, None] + bins[:, None] * bin_size[..., None, None] +
         (samples + 0.5) * (bin_size / tf.maximum(n, 1.))[..., None, None])
  used = samples < n[..., None, None]
  inside = (pos >= -1.) & (pos <= float(size))
  pos = tf.maximum(pos, 0.)
  low = tf.floor(pos)
  at_end = low >= size - 1
  low = tf.where(at_end, float(size - 1), low)
  pos = tf.where(at_end, low, pos)
  frac = pos - low
  high = tf.minimum(low + 1., size - 1)
  keep = tf.cast(used & inside, tf.float32)
  low_i = tf.cast(low, tf.int32)
  high_i = tf.cast(high, tf.int32)
  weights = (tf.one_hot(low_i, size) * ((1. - frac) * keep)[..., None] +
             tf.one_hot(high_i, size) * (frac * keep)[..., None])
  return tf.reduce_sum(weights, axis=-2) / tf.maximum(n, 1.)[..., None, None]


def roi_align(features: tf.Tensor,
              boxes: tf.Tensor,
              output_size: int,
              spatial_scale: float,
              sampling_ratio: int = 0,
              aligned: bool = True) -> tf.Tensor:
  """RoIAlign with average pooling (mmcv / torchvision semantics).

  Args:
    features: `[B, H, W, C]`; H, W and C static.
    boxes: `[B, R, 4]` (ymin, xmin, ymax, xmax) in image pixels.
    output_size: side S of each crop.
    spatial_scale: map cells per image pixel (1 / stride).
    sampling_ratio: samples per bin along each axis; 0: adaptive,
      `ceil(roi_side / S)` per RoI (the number then depends on the boxes,
      so shapes inside the op are dynamic; give a fixed ratio for XLA).
    aligned: shift the RoI by half a cell (pixel model of `aligned=True`).

  Returns:
    `[B, R, S, S, C]` crops of `features`' dtype.
  """
  features = tf.convert_to_tensor(features)
  height, width, channels = features.shape[1:]
  if height is None or width is None or channels is None:
    raise ValueError(f'roi_align needs static H, W and C, got '
                     f'{features.shape}.')
  if sampling_ratio < 0:
    raise ValueError(f'sampling_ratio must be >= 0, got {sampling_ratio}.')
  boxes = tf.cast(boxes, tf.float32)
  offset = 0.5 if aligned else 0.
  ymin, xmin, ymax, xmax = tf.unstack(boxes * spatial_scale - offset, axis=-1)
  roi_h = ymax - ymin
  roi_w = xmax - xmin
  if not aligned:
    roi_h = tf.maximum(roi_h, 1.)
    roi_w = tf.maximum(roi_w, 1.)
  if sampling_ratio > 0:
    ny = nx = tf.fill(tf.shape(roi_h), sampling_ratio)
    max_y = max_x = sampling_ratio
  else:
    ny = tf.cast(tf.math.ceil(roi_h / output_size), tf.int32)
    nx = tf.cast(tf.math.ceil(roi_w / output_size), tf.int32)
    ny = tf.maximum(ny, 0)
    nx = tf.maximum(nx, 0)
    max_y = tf.maximum(tf.reduce_max(ny), 1)
    max_x = tf.maximum(tf.reduce_max(nx), 1)
  ay = _axis_weights(ymin, roi_h, output_size, ny, max_y, height)
  ax = _axis_weights(xmin, roi_w, output_size, nx, max_x, width)

  dtype = features.dtype
  compute = tf.float32 if dtype == tf.bfloat16 else dtype
  batch = tf.shape(features)[0]
  num_boxes = tf.shape(boxes)[1]
  s = output_size
  maps = tf.cast(features, compute)
  # Rows: [B, R * S, H] x [B, H, W * C] -> [B, R, S, W, C].
  rows = tf.matmul(tf.reshape(tf.cast(ay, compute),
                              [batch, num_boxes * s, height]),
                   tf.reshape(maps, [batch, height, width * channels]))
  rows = tf.reshape(rows, [batch, num_boxes, s, width, channels])
  # Columns: [B, R, 1, S, W] x [B, R, S, W, C] -> [B, R, S, S, C].
  crops = tf.matmul(tf.cast(ax, compute)[:, :, None, :, :], rows)
  return tf.cast(crops, dtype)
