"""Tests for the network input and serving's preprocessing."""

import numpy as np

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
