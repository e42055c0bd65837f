"""single_level_crop_and_resize is Model Garden's RoIAlign on one level."""

import numpy as np
import pytest
import tensorflow as tf

from official.vision.ops import spatial_transform_ops as mg_ops
from official_ext.vision.ops import spatial_transform_ops


def _boxes(rng, batch, num, image_height, image_width, spread=0.2):
  """Boxes inside and across the image border, tiny ones, -1 padding."""
  y = rng.uniform(-spread, 1. + spread, [batch, num, 2]) * image_height
  x = rng.uniform(-spread, 1. + spread, [batch, num, 2]) * image_width
  boxes = np.stack([y.min(-1), x.min(-1), y.max(-1), x.max(-1)], axis=-1)
  boxes[:, 0] = [3., 5., 3.5, 5.2]  # Smaller than a cell.
  boxes[:, 1] = -1.  # Padding, as the samplers write it.
  boxes[:, 2] = [0., 0., image_height, image_width]
  return boxes.astype(np.float32)


def _check(level, output_size, sample_offset, spread, seed=0):
  rng = np.random.default_rng(seed)
  height, width, channels = 5, 7, 6
  stride = 2**level
  features = tf.constant(rng.standard_normal([2, height, width, channels]),
                         tf.float32)
  boxes = tf.constant(_boxes(rng, 2, 9, height * stride, width * stride,
                             spread))
  expected = mg_ops.multilevel_crop_and_resize(
      {str(level): features}, boxes, output_size=output_size,
      sample_offset=sample_offset)
  got = spatial_transform_ops.single_level_crop_and_resize(
      features, boxes, stride=stride, output_size=output_size,
      sample_offset=sample_offset)
  assert got.shape == expected.shape == (2, 9, output_size, output_size,
                                         channels)
  np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4,
                             atol=1e-4)


@pytest.mark.parametrize('level,output_size,sample_offset',
                         [(5, 14, 0.5), (3, 7, 0.), (4, 5, 0.25)])
def test_matches_model_garden_near_the_map(level, output_size,
                                           sample_offset):
  # Samples up to ~2 cells outside the map: the crop_and_resize path.
  _check(level, output_size, sample_offset, spread=0.2)


@pytest.mark.parametrize('level,output_size,sample_offset',
                         [(5, 14, 0.5), (2, 7, 0.)])
def test_matches_model_garden_far_outside_the_map(level, output_size,
                                                  sample_offset):
  # Samples up to ~10 cells outside the map: the matmul path.
  _check(level, output_size, sample_offset, spread=2., seed=1)


@pytest.mark.parametrize('path', ['_crop_and_resize', '_matmuls'])
def test_both_paths_match_model_garden_inside(path):
  rng = np.random.default_rng(2)
  features = tf.constant(rng.standard_normal([1, 4, 6, 3]), tf.float32)
  boxes = tf.constant(_boxes(rng, 1, 6, 4 * 16, 6 * 16, spread=0.))
  boxes = tf.maximum(boxes, 0.)
  expected = mg_ops.multilevel_crop_and_resize({'4': features}, boxes,
                                               output_size=7)
  grid_y = spatial_transform_ops._grid(  # pylint: disable=protected-access
      boxes[..., 0] / 16., (boxes[..., 2] - boxes[..., 0]) / 16., 7, 0.5)
  grid_x = spatial_transform_ops._grid(  # pylint: disable=protected-access
      boxes[..., 1] / 16., (boxes[..., 3] - boxes[..., 1]) / 16., 7, 0.5)
  got = getattr(spatial_transform_ops, path)(features, grid_y, grid_x, 7)
  np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4,
                             atol=1e-4)


@pytest.mark.parametrize('spread', [0.2, 2.])
def test_gradients_match_model_garden(spread):
  rng = np.random.default_rng(0)
  features = tf.constant(rng.standard_normal([1, 4, 6, 3]), tf.float32)
  boxes = tf.constant(_boxes(rng, 1, 5, 4 * 32, 6 * 32, spread))
  weights = tf.constant(rng.standard_normal([1, 5, 7, 7, 3]), tf.float32)

  def grad(fn):
    with tf.GradientTape() as tape:
      tape.watch(features)
      loss = tf.reduce_sum(fn() * weights)
    return tape.gradient(loss, features).numpy()

  expected = grad(lambda: mg_ops.multilevel_crop_and_resize(
      {'5': features}, boxes, output_size=7))
  got = grad(lambda: spatial_transform_ops.single_level_crop_and_resize(
      features, boxes, stride=32, output_size=7))
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_dynamic_batch_and_boxes_in_a_graph():
  fn = tf.function(
      lambda f, b: spatial_transform_ops.single_level_crop_and_resize(
          f, b, stride=8, output_size=3),
      input_signature=[tf.TensorSpec([None, 3, 4, 2], tf.float32),
                       tf.TensorSpec([None, None, 4], tf.float32)])
  features = tf.reshape(tf.range(2 * 3 * 4 * 2, dtype=tf.float32),
                        [2, 3, 4, 2])
  boxes = tf.constant([[[0., 0., 24., 32.]], [[8., 8., 16., 16.]]])
  expected = mg_ops.multilevel_crop_and_resize({'3': features}, boxes,
                                               output_size=3)
  np.testing.assert_allclose(fn(features, boxes).numpy(), expected.numpy(),
                             rtol=1e-5, atol=1e-4)
