"""Semantic head of the panoptic model, on the single stride-32 feature map.

  P [B, h, w, C] -> for each of num_filters (256, 128, 128):
      3x3 conv (no bias) + GroupNorm + ReLU + bilinear x2
  -> 1x1 conv to num_classes logits (stuff classes + one "things" class)
  -> bilinear x upsample_factor (4): [B, 32 h, 32 w, num_classes]

The reference's former panoptic variant of UniPercepNet-S; the upsampling
is `tf.image.resize` bilinear, whose half-pixel sampling is PyTorch's
`interpolate(..., mode='bilinear', align_corners=False)`.
"""

from typing import Any, Mapping, Optional, Sequence

import tensorflow as tf
import tf_keras

# The semantic target's value for pixels that do not count (void).
IGNORE_LABEL = 255


def _upsample(x: tf.Tensor, factor: int) -> tf.Tensor:
  size = tf.shape(x)[1:3] * factor
  out = tf.image.resize(x, size, method=tf.image.ResizeMethod.BILINEAR)
  static = x.shape
  if static[1] is not None and static[2] is not None:
    out.set_shape([static[0], static[1] * factor, static[2] * factor,
                   static[3]])
  return tf.cast(out, x.dtype)


@tf_keras.utils.register_keras_serializable(package='Vision')
class SemanticHead(tf_keras.layers.Layer):
  """Conv-GN-ReLU-upsample blocks and a per-pixel classifier."""

  def __init__(self,
               num_classes: int,
               num_filters: Sequence[int] = (256, 128, 128),
               num_groups: int = 32,
               upsample_factor: int = 4,
               kernel_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               **kwargs):
    super().__init__(**kwargs)
    if num_classes < 2:
      raise ValueError('The semantic head needs the things class and at '
                       f'least one stuff class, got num_classes={num_classes}.')
    for f in num_filters:
      if f % num_groups:
        raise ValueError(f'semantic head num_filters {list(num_filters)} must '
                         f'be multiples of num_groups={num_groups}.')
    self._config_dict = {
        'num_classes': num_classes,
        'num_filters': [int(f) for f in num_filters],
        'num_groups': num_groups,
        'upsample_factor': upsample_factor,
        'kernel_regularizer': kernel_regularizer,
    }

  def build(self, input_shape):
    c = self._config_dict
    shape = tf.TensorShape(input_shape)
    self._blocks = []
    for i, filters in enumerate(c['num_filters']):
      conv = tf_keras.layers.Conv2D(
          filters, 3, padding='same', use_bias=False,
          kernel_initializer=tf_keras.initializers.VarianceScaling(
              2.0, 'fan_out', 'untruncated_normal'),
          kernel_regularizer=c['kernel_regularizer'], name=f'conv{i}')
      with tf.name_scope(conv.name):
        conv.build(shape)
      shape = shape[:-1].concatenate([filters])
      norm = tf_keras.layers.GroupNormalization(
          groups=c['num_groups'], epsilon=1e-5, name=f'gn{i}')
      with tf.name_scope(norm.name):
        norm.build(shape)
      self._blocks.append((conv, norm))
    self._classifier = tf_keras.layers.Conv2D(
        c['num_classes'], 1,
        kernel_initializer=tf_keras.initializers.RandomNormal(stddev=0.01),
        bias_initializer='zeros',
        kernel_regularizer=c['kernel_regularizer'], name='classifier')
    with tf.name_scope(self._classifier.name):
      self._classifier.build(shape)
    super().build(input_shape)

  def call(self, features: tf.Tensor) -> tf.Tensor:
    """`[B, h, w, C]` -> logits `[B, h * F, w * F, num_classes]`.

    F = 2 ** len(num_filters) * upsample_factor (32 with the defaults).
    """
    x = features
    for conv, norm in self._blocks:
      x = _upsample(tf.nn.relu(norm(conv(x))), 2)
    return _upsample(self._classifier(x),
                     self._config_dict['upsample_factor'])

  @property
  def output_stride_factor(self) -> int:
    c = self._config_dict
    return 2 ** len(c['num_filters']) * c['upsample_factor']

  def get_config(self) -> Mapping[str, Any]:
    return dict(super().get_config(), **self._config_dict)

  @classmethod
  def from_config(cls, config):
    return cls(**config)


def semantic_loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
  """Mean cross-entropy over the pixels whose label is not IGNORE_LABEL.

  PyTorch's `cross_entropy(..., ignore_index=255)` with mean reduction; 0
  when every pixel is ignored.

  Args:
    logits: float `[B, H, W, C]`.
    labels: int `[B, H, W]` classes 0..C-1 or IGNORE_LABEL.
  """
  labels = tf.cast(labels, tf.int32)
  valid = tf.not_equal(labels, IGNORE_LABEL)
  safe = tf.where(valid, labels, tf.zeros_like(labels))
  per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=safe, logits=tf.cast(logits, tf.float32))
  weights = tf.cast(valid, tf.float32)
  return tf.math.divide_no_nan(tf.reduce_sum(per_pixel * weights),
                               tf.reduce_sum(weights))
