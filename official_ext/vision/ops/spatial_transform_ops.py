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

The adaptive grid's largest sample count depends on the boxes, and so does
the shape of the samples' tensor: XLA cannot compile that. When traced for
XLA (`jit_compile`, TPU), each bin enumerates a fixed number of samples
instead, from its first one that can land on the map: samples more than a
cell outside contribute zero, and a bin with several samples spaces them
more than half a cell apart, so `2 * size + 4` of them cover every sample
that counts (the same sums, with fewer zero terms).
"""

import tensorflow as tf

from official_ext.vision.ops import xla_utils


def _axis_weights(start: tf.Tensor, length: tf.Tensor, output_size: int,
                  num_samples: tf.Tensor, max_samples, size,
                  from_first_on_map: bool = False) -> tf.Tensor:
  """`[B, R, S, size]`: bin averages of the samples' bilinear weights.

  Args:
    start: `[B, R]` first RoI coordinate along the axis, in cells.
    length: `[B, R]` RoI length along the axis, in cells.
    output_size: S, bins along the axis.
    num_samples: `[B, R]` int samples per bin along the axis.
    max_samples: the samples enumerated per bin (int or scalar tensor): the
      largest of `num_samples`, or with `from_first_on_map` a static number
      of at least the samples that land within a cell of the map.
    size: the map's length along the axis (static int).
    from_first_on_map: enumerate each bin's samples from (about) its first
      one at or after -1, instead of from its first one.
  """
  bin_size = length / output_size
  n = tf.cast(num_samples, tf.float32)
  bins = tf.range(output_size, dtype=tf.float32)
  samples = tf.range(max_samples, dtype=tf.float32)
  bin_start = start[..., None, None] + bins[:, None] * bin_size[..., None, None]
  step = (bin_size / tf.maximum(n, 1.))[..., None, None]
  if from_first_on_map:
    # Sample i is at bin_start + (i + 0.5) * step; the first at or after -1
    # is ceil((-1 - bin_start) / step - 0.5), one fewer against rounding.
    # (A bin without a positive step has no samples: it starts at 0.)
    positive = step > 0.
    first = tf.math.ceil((-1. - bin_start) / tf.where(positive, step, 1.) -
                         0.5) - 1.
    samples = tf.where(positive, tf.maximum(first, 0.), 0.) + samples
  # [B, R, S, n]: bin start + (i + 0.5) * bin / n.
  pos = bin_start + (samples + 0.5) * step
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
      `ceil(roi_side / S)` per RoI (the number then depends on the boxes;
      traced for XLA, a static number of them is enumerated, see the
      module docstring).
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
  static = False
  if sampling_ratio > 0:
    ny = nx = tf.fill(tf.shape(roi_h), sampling_ratio)
    max_y = max_x = sampling_ratio
  else:
    ny = tf.cast(tf.math.ceil(roi_h / output_size), tf.int32)
    nx = tf.cast(tf.math.ceil(roi_w / output_size), tf.int32)
    ny = tf.maximum(ny, 0)
    nx = tf.maximum(nx, 0)
    static = xla_utils.in_xla_context()
    if static:
      max_y, max_x = 2 * height + 4, 2 * width + 4
    else:
      max_y = tf.maximum(tf.reduce_max(ny), 1)
      max_x = tf.maximum(tf.reduce_max(nx), 1)
  ay = _axis_weights(ymin, roi_h, output_size, ny, max_y, height,
                     from_first_on_map=static)
  ax = _axis_weights(xmin, roi_w, output_size, nx, max_x, width,
                     from_first_on_map=static)

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
