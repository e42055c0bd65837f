"""RoI mask head with optional spatial attention.

  RoI features [B, R, S, S, C] -> num_convs x (3x3 conv + ReLU)
  -> spatial attention (CBAM SAM, optional) -> 2x2 stride-2 deconv + ReLU
  -> 1x1 conv to K logits at 2S x 2S -> the channel of each RoI's class.
"""

from typing import Any, Mapping, Optional

import tensorflow as tf
import tf_keras

from official_ext.vision.modeling.layers import nn_layers


@tf_keras.utils.register_keras_serializable(package='Vision')
class AttentionMaskHead(tf_keras.layers.Layer):
  """FCN mask head (Mask R-CNN) with a spatial attention module."""

  def __init__(self,
               num_classes: int,
               num_convs: int = 4,
               num_filters: int = 256,
               upsample_factor: int = 2,
               spatial_attention: bool = True,
               attention_kernel_size: int = 7,
               kernel_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               **kwargs):
    super().__init__(**kwargs)
    self._config_dict = {
        'num_classes': num_classes,
        'num_convs': num_convs,
        'num_filters': num_filters,
        'upsample_factor': upsample_factor,
        'spatial_attention': spatial_attention,
        'attention_kernel_size': attention_kernel_size,
        'kernel_regularizer': kernel_regularizer,
    }

  def build(self, input_shape):
    c = self._config_dict
    he_out = lambda: tf_keras.initializers.VarianceScaling(  # pylint: disable=g-long-lambda
        2.0, 'fan_out', 'untruncated_normal')
    feature_shape = tf.TensorShape([None] + list(input_shape[2:]))
    self._convs = []
    for i in range(c['num_convs']):
      conv = tf_keras.layers.Conv2D(
          c['num_filters'], 3, padding='same', activation='relu',
          kernel_initializer=he_out(),
          kernel_regularizer=c['kernel_regularizer'], name=f'mask_conv{i}')
      conv.build(feature_shape)
      feature_shape = feature_shape[:-1].concatenate([c['num_filters']])
      self._convs.append(conv)
    self._attention = None
    if c['spatial_attention']:
      self._attention = nn_layers.SpatialAttention(
          kernel_size=c['attention_kernel_size'],
          kernel_regularizer=c['kernel_regularizer'], name='spatial_attention')
      self._attention.build(feature_shape)
    self._upsample = tf_keras.layers.Conv2DTranspose(
        c['num_filters'], c['upsample_factor'], strides=c['upsample_factor'],
        activation='relu', kernel_initializer=he_out(),
        kernel_regularizer=c['kernel_regularizer'], name='mask_deconv')
    self._upsample.build(feature_shape)
    self._logits = tf_keras.layers.Conv2D(
        c['num_classes'], 1, kernel_initializer=he_out(),
        kernel_regularizer=c['kernel_regularizer'], name='mask_logits')
    self._logits.build(feature_shape)
    super().build(input_shape)

  def call(self, roi_features: tf.Tensor, roi_classes: tf.Tensor) -> tf.Tensor:
    """Mask logits of each RoI's class.

    Args:
      roi_features: `[B, R, S, S, C]`.
      roi_classes: `[B, R]` int, 1-based class ids (0, padding, reads class 1).

    Returns:
      `[B, R, 2S, 2S]` float32 logits.
    """
    shape = tf.shape(roi_features)
    batch, num_rois = shape[0], shape[1]
    size = roi_features.shape[2]
    x = tf.reshape(roi_features, [-1, size, size, roi_features.shape[-1]])
    for conv in self._convs:
      x = conv(x)
    if self._attention is not None:
      x = self._attention(x)
    logits = tf.cast(self._logits(self._upsample(x)), tf.float32)
    out_size = logits.shape[1]
    logits = tf.reshape(logits, [batch, num_rois, out_size, out_size,
                                 self._config_dict['num_classes']])
    index = tf.maximum(tf.cast(roi_classes, tf.int32) - 1, 0)
    return tf.gather(logits, index[:, :, None], axis=-1, batch_dims=2)[..., 0]

  def get_config(self) -> Mapping[str, Any]:
    return dict(list(super().get_config().items()) +
                list(self._config_dict.items()))
