"""roi_align against a loop-by-loop transliteration of the PyTorch kernel."""

import math

import numpy as np
import pytest
import tensorflow as tf

from official_ext.vision.ops import spatial_transform_ops


def _bilinear(plane, y, x):
  """One sample, with the kernel's border rules."""
  height, width = plane.shape
  if y < -1. or y > height or x < -1. or x > width:
    return 0.
  y, x = max(y, 0.), max(x, 0.)
  y_low, x_low = int(y), int(x)
  if y_low >= height - 1:
    y_high = y_low = height - 1
    y = float(y_low)
  else:
    y_high = y_low + 1
  if x_low >= width - 1:
    x_high = x_low = width - 1
    x = float(x_low)
  else:
    x_high = x_low + 1
  ly, lx = y - y_low, x - x_low
  hy, hx = 1. - ly, 1. - lx
  return (hy * hx * plane[y_low, x_low] + hy * lx * plane[y_low, x_high] +
          ly * hx * plane[y_high, x_low] + ly * lx * plane[y_high, x_high])


def _reference(features, boxes, size, scale, ratio, aligned):
  """[B, R, S, S, C] by explicit loops over RoIs, bins and samples."""
  batch, num = boxes.shape[:2]
  channels = features.shape[-1]
  out = np.zeros([batch, num, size, size, channels])
  offset = 0.5 if aligned else 0.
  for b in range(batch):
    for r in range(num):
      y1, x1, y2, x2 = boxes[b, r] * scale - offset
      roi_h, roi_w = y2 - y1, x2 - x1
      if not aligned:
        roi_h, roi_w = max(roi_h, 1.), max(roi_w, 1.)
      bin_h, bin_w = roi_h / size, roi_w / size
      ny = ratio if ratio > 0 else int(math.ceil(roi_h / size))
      nx = ratio if ratio > 0 else int(math.ceil(roi_w / size))
      count = max(ny * nx, 1)
      for c in range(channels):
        plane = features[b, :, :, c]
        for i in range(size):
          for j in range(size):
            total = 0.
            for iy in range(ny):
              y = y1 + i * bin_h + (iy + .5) * bin_h / ny
              for ix in range(nx):
                x = x1 + j * bin_w + (ix + .5) * bin_w / nx
                total += _bilinear(plane, y, x)
            out[b, r, i, j, c] = total / count
  return out


def _boxes(rng, batch, num, image_height, image_width):
  """Boxes inside and across the border, far outside, tiny, padding."""
  y = rng.uniform(-0.3, 1.3, [batch, num, 2]) * image_height
  x = rng.uniform(-0.3, 1.3, [batch, num, 2]) * image_width
  boxes = np.stack([y.min(-1), x.min(-1), y.max(-1), x.max(-1)], axis=-1)
  boxes[:, 0] = [3., 5., 3.5, 5.2]  # Smaller than a cell.
  boxes[:, 1] = -1.  # Padding, as the samplers write it.
  boxes[:, 2] = [0., 0., image_height, image_width]
  boxes[:, 3] = [-9. * image_height, -3. * image_width, 4. * image_height,
                 0.5 * image_width]  # Many samples, most far outside.
  return boxes.astype(np.float32)


@pytest.mark.parametrize('ratio,aligned,size',
                         [(0, True, 4), (0, False, 3), (2, True, 5),
                          (1, False, 2)])
def test_matches_the_kernel(ratio, aligned, size):
  rng = np.random.default_rng(ratio * 10 + size)
  height, width, stride = 5, 7, 8
  features = rng.standard_normal([2, height, width, 3]).astype(np.float32)
  boxes = _boxes(rng, 2, 7, height * stride, width * stride)
  got = spatial_transform_ops.roi_align(
      features, boxes, output_size=size, spatial_scale=1. / stride,
      sampling_ratio=ratio, aligned=aligned)
  expected = _reference(features.astype(np.float64), boxes, size,
                        1. / stride, ratio, aligned)
  assert got.shape == expected.shape
  np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)
  # The big box averages many samples per bin: adaptive grids differ.
  if ratio == 0:
    assert not np.allclose(got.numpy(), spatial_transform_ops.roi_align(
        features, boxes, size, 1. / stride, sampling_ratio=1,
        aligned=aligned).numpy(), atol=1e-3)


def test_gradient_and_bfloat16():
  rng = np.random.default_rng(3)
  features = tf.constant(rng.standard_normal([1, 4, 6, 2]), tf.float32)
  boxes = tf.constant([[[2., 3., 20., 40.], [-5., -5., 9., 70.]]])
  with tf.GradientTape() as tape:
    tape.watch(features)
    crops = spatial_transform_ops.roi_align(features, boxes, 3, 1. / 8.)
    loss = tf.reduce_sum(crops)
  grad = tape.gradient(loss, features).numpy()
  # Linear in the features: the gradient of the sum is the total weight
  # each cell gets, the same whatever the features.
  epsilon = np.zeros([1, 4, 6, 2], np.float32)
  epsilon[0, 1, 2, 0] = 1.
  bumped = spatial_transform_ops.roi_align(features + epsilon, boxes, 3,
                                           1. / 8.)
  np.testing.assert_allclose(grad[0, 1, 2, 0],
                             float(tf.reduce_sum(bumped - crops)), rtol=1e-4)
  half = spatial_transform_ops.roi_align(tf.cast(features, tf.bfloat16),
                                         boxes, 3, 1. / 8.)
  assert half.dtype == tf.bfloat16
  np.testing.assert_allclose(tf.cast(half, tf.float32).numpy(), crops.numpy(),
                             atol=0.05)


@pytest.mark.parametrize('aligned,size', [(True, 4), (False, 3)])
def test_adaptive_grid_compiles_with_xla(aligned, size):
  # The adaptive grid's sample count depends on the boxes; compiled, a
  # static number of samples from the first one on the map gives the same
  # crops, here for boxes inside, across and far outside the map, and with
  # up to 64 samples per bin along an axis.
  rng = np.random.default_rng(size)
  height, width, stride = 5, 7, 8
  features = rng.standard_normal([2, height, width, 3]).astype(np.float32)
  boxes = np.concatenate([
      _boxes(rng, 2, 7, height * stride, width * stride),
      np.array([[[-2e3, -50., -1e3, 70.], [-1e3, -1e3, 2e3, 2e3],
                 [30., 30., 30., 30.], [20., 50., 10., 40.]]] * 2,
               np.float32)], axis=1)

  def crop(f, b):
    return spatial_transform_ops.roi_align(
        f, b, output_size=size, spatial_scale=1. / stride, aligned=aligned)

  compiled = tf.function(crop, jit_compile=True)(features, boxes)
  np.testing.assert_allclose(compiled.numpy(), crop(features, boxes).numpy(),
                             rtol=1e-5, atol=1e-6)
  expected = _reference(features.astype(np.float64), boxes, size,
                        1. / stride, 0, aligned)
  np.testing.assert_allclose(compiled.numpy(), expected, rtol=1e-5,
                             atol=1e-5)
