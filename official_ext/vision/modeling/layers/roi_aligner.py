"""An RoIAligner that is fast on a single feature level.

A drop-in for Model Garden's `roi_aligner.MultilevelROIAligner` (same
arguments, inputs and results): with one level in `features` it runs
`official_ext.vision.ops.spatial_transform_ops.single_level_crop_and_resize`
(two matmuls instead of a gather); with several it is Model Garden's.
"""

from typing import Mapping, Optional

import tensorflow as tf
import tf_keras

from official.vision.modeling.layers import roi_aligner
from official_ext.vision.ops import spatial_transform_ops


@tf_keras.utils.register_keras_serializable(package='Vision')
class ROIAligner(roi_aligner.MultilevelROIAligner):
  """RoIAlign; single-level maps take the matmul path."""

  def call(self,
           features: Mapping[str, tf.Tensor],
           boxes: tf.Tensor,
           training: Optional[bool] = None) -> tf.Tensor:
    """Crops `[B, R, crop_size, crop_size, C]` features of the boxes.

    Args:
      features: {level: `[B, H_l, W_l, C]`}, level l at stride 2**l.
      boxes: `[B, R, 4]` (ymin, xmin, ymax, xmax) in image pixels.
      training: unused.

    Returns:
      The crops, as Model Garden's `MultilevelROIAligner` computes them.
    """
    if len(features) != 1:
      return super().call(features, boxes, training=training)
    (level, feature_map), = features.items()
    return spatial_transform_ops.single_level_crop_and_resize(
        feature_map, boxes, stride=2.**int(level),
        output_size=self._config_dict['crop_size'],
        sample_offset=self._config_dict['sample_offset'])
