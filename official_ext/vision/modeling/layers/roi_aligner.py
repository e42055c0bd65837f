"""RoIAlign on one feature level, as PyTorch detectors compute it.

Model Garden's `roi_aligner.MultilevelROIAligner` takes one sample per bin;
detectors trained with mmdet, Detectron2 or torchvision (`RoIAlign`,
`aligned=True`, `sampling_ratio=0`) average an adaptive grid of samples per
bin. This layer takes the same inputs as Model Garden's and computes
theirs (`official_ext.vision.ops.spatial_transform_ops.roi_align`).
"""

from typing import Any, Mapping, Optional

import tensorflow as tf
import tf_keras

from official_ext.vision.ops import spatial_transform_ops


@tf_keras.utils.register_keras_serializable(package='Vision')
class ROIAligner(tf_keras.layers.Layer):
  """RoIAlign of boxes on a single-level feature map."""

  def __init__(self,
               crop_size: int = 14,
               sampling_ratio: int = 0,
               aligned: bool = True,
               **kwargs):
    super().__init__(**kwargs)
    self._config_dict = {
        'crop_size': crop_size,
        'sampling_ratio': sampling_ratio,
        'aligned': aligned,
    }

  def call(self,
           features: Mapping[str, tf.Tensor],
           boxes: tf.Tensor,
           training: Optional[bool] = None) -> tf.Tensor:
    """Crops `[B, R, crop_size, crop_size, C]` features of the boxes.

    Args:
      features: {level: `[B, H, W, C]`}, one level l at stride 2**l.
      boxes: `[B, R, 4]` (ymin, xmin, ymax, xmax) in image pixels.
      training: unused.

    Returns:
      The crops.
    """
    del training
    if len(features) != 1:
      raise ValueError('ROIAligner reads one feature level, got levels '
                       f'{sorted(features)}.')
    (level, feature_map), = features.items()
    c = self._config_dict
    return spatial_transform_ops.roi_align(
        feature_map, boxes, output_size=c['crop_size'],
        spatial_scale=1. / 2.**int(level),
        sampling_ratio=c['sampling_ratio'], aligned=c['aligned'])

  def get_config(self) -> Mapping[str, Any]:
    return dict(list(super().get_config().items()) +
                list(self._config_dict.items()))
