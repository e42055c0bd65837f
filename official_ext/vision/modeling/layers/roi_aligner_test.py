"""ROIAligner: Model Garden's results, the matmul path on one level."""

import numpy as np
import tensorflow as tf

from official.vision.modeling.layers import roi_aligner as mg_roi_aligner
from official_ext.vision.modeling.layers import roi_aligner


def test_single_and_multi_level_match_model_garden():
  rng = np.random.default_rng(0)
  boxes = tf.constant([[[10., 20., 90., 150.], [0., 0., 256., 256.],
                        [-1., -1., -1., -1.]]])
  ours = roi_aligner.ROIAligner(crop_size=4, sample_offset=0.5)
  theirs = mg_roi_aligner.MultilevelROIAligner(crop_size=4,
                                               sample_offset=0.5)
  single = {'5': tf.constant(rng.standard_normal([1, 8, 8, 3]), tf.float32)}
  multi = {'3': tf.constant(rng.standard_normal([1, 32, 32, 3]), tf.float32),
           '4': tf.constant(rng.standard_normal([1, 16, 16, 3]), tf.float32)}
  for features in (single, multi):
    np.testing.assert_allclose(ours(features, boxes).numpy(),
                               theirs(features, boxes).numpy(), rtol=1e-5,
                               atol=1e-5)


def test_config_round_trip():
  layer = roi_aligner.ROIAligner(crop_size=14, sample_offset=0.25)
  clone = roi_aligner.ROIAligner.from_config(layer.get_config())
  assert clone.get_config() == {'crop_size': 14, 'sample_offset': 0.25}
