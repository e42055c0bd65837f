"""Tests for the network input and serving's preprocessing."""

import numpy as np
import pytest

from configs import unipercepnet as unipercepnet_cfg
from dataloaders.ops import preprocess_ops


_MEAN = np.array(unipercepnet_cfg.MEAN_RGB, np.float32)
_STD = np.array(unipercepnet_cfg.STDDEV_RGB, np.float32)


def test_test_scale_resizes_and_pads_as_the_reference():
  # mmdet's Resize(scale=(1333, 800), keep_ratio=True) then Pad to the
  # scale with 114, then zeros after normalisation up to the input size;
  # scaled to a small input: test_scale (40, 60) within a 64 x 96 input.
  image = np.full([20, 40, 3], 200, np.uint8)
  out, info, valid = preprocess_ops.preprocess_for_inference(
      image, [64, 96], 114., test_scale=[40, 60])
  out = out.numpy()
  # Landscape: the box is 40 x 60; scale min(40 / 20, 60 / 40) = 1.5.
  np.testing.assert_array_equal(valid.numpy(), [30, 60])
  np.testing.assert_allclose(info.numpy(),
                             [[20, 40], [30, 60], [1.5, 1.5], [0, 0]])
  np.testing.assert_allclose(out[:30, :60] - (200 - _MEAN) / _STD, 0.,
                             atol=1e-5)
  np.testing.assert_allclose(out[30:40, :60] - (114 - _MEAN) / _STD, 0.,
                             atol=1e-5)
  np.testing.assert_allclose(out[40:], 0., atol=1e-6)
  np.testing.assert_allclose(out[:, 60:], 0., atol=1e-6)
  # Portrait: the box turns (60 x 40), unlike the reference's fixed Pad.
  _, info, valid = preprocess_ops.preprocess_for_inference(
      np.transpose(image, (1, 0, 2)), [64, 96], 114., test_scale=[40, 60])
  np.testing.assert_array_equal(valid.numpy(), [60, 30])


@pytest.mark.parametrize('test_scale', [None, [40, 60]])
def test_a_side_fitted_below_one_pixel_keeps_one(test_scale):
  # 1 x 4000 into 64 x 96 (or the test scale's 40 x 60 box): the height
  # would be 0.024 (0.015) of a row; it keeps one, at scale 1.
  width = 96 if test_scale is None else 60
  info_size = [64, 96] if test_scale is None else [1, 60]
  image = np.full([1, 4000, 3], 200, np.uint8)
  out, info, valid = preprocess_ops.preprocess_for_inference(
      image, [64, 96], 114., test_scale=test_scale)
  np.testing.assert_array_equal(valid.numpy(), [1, width])
  np.testing.assert_allclose(
      info.numpy(), [[1, 4000], info_size, [1, width / 4000], [0, 0]],
      rtol=1e-6)
  out = out.numpy()
  np.testing.assert_allclose(out[0, :width] - (200 - _MEAN) / _STD, 0.,
                             atol=1e-5)
  pad_rows = 64 if test_scale is None else 40
  np.testing.assert_allclose(out[1:pad_rows, :width] - (114 - _MEAN) / _STD,
                             0., atol=1e-5)
  # Transposed: one column.
  out, info, valid = preprocess_ops.preprocess_for_inference(
      np.transpose(image, (1, 0, 2)), [96, 64], 114., test_scale=test_scale)
  np.testing.assert_array_equal(valid.numpy(), [width, 1])
  np.testing.assert_allclose(out.numpy()[:width, 0] - (200 - _MEAN) / _STD,
                             0., atol=1e-5)
