"""ROIAligner: the op on the one level, with the level's stride."""

import numpy as np
import pytest
import tensorflow as tf

from official_ext.vision.modeling.layers import roi_aligner
from official_ext.vision.ops import spatial_transform_ops


def test_reads_the_level_stride():
  rng = np.random.default_rng(0)
  boxes = tf.constant([[[10., 20., 90., 150.], [0., 0., 256., 256.],
                        [-1., -1., -1., -1.]]])
  features = tf.constant(rng.standard_normal([1, 8, 8, 3]), tf.float32)
  layer = roi_aligner.ROIAligner(crop_size=4, sampling_ratio=0)
  expected = spatial_transform_ops.roi_align(features, boxes, 4, 1. / 32.)
  np.testing.assert_array_equal(layer({'5': features}, boxes).numpy(),
                                expected.numpy())
  with pytest.raises(ValueError, match='one feature level'):
    layer({'4': features, '5': features}, boxes)


def test_config_round_trip():
  layer = roi_aligner.ROIAligner(crop_size=14, sampling_ratio=2,
                                 aligned=False)
  clone = roi_aligner.ROIAligner.from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()
  assert clone.get_config()['sampling_ratio'] == 2
