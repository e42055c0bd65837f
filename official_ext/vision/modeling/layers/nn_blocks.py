"""A bottleneck block with grouped 3x3 conv and optional channel attention.

Model Garden's `nn_blocks.BottleneckBlock` has neither groups (needed by
RegNetX / ResNeXt) nor CBAM-style channel attention, so this block adds both.
It is the block of ResNet v1.5 (stride on the 3x3) when `groups == 1` and
`expansion == 4`, and of RegNetX when `expansion == 1`.
"""

from typing import Any, Mapping, Optional

import tensorflow as tf
import tf_keras

from official.modeling import tf_utils
from official_ext.vision.modeling.layers import nn_layers


def symmetric_pad(x: tf.Tensor, pad: int) -> tf.Tensor:
  """Zero-pads height and width by `pad` on both sides (PyTorch's padding)."""
  return tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])


@tf_keras.utils.register_keras_serializable(package='Vision')
class GroupedBottleneckBlock(tf_keras.layers.Layer):
  """1x1 -> 3x3 grouped (strided) -> 1x1, BN after each, residual add.

  Channel attention, when enabled, acts on the output of the last BN, before
  the residual add. With `norm_eval` the BN layers always use their moving
  statistics (mmdet's `norm_eval=True`) while gamma and beta stay trainable.
  """

  def __init__(self,
               out_filters: int,
               bottleneck_filters: int,
               strides: int = 1,
               groups: int = 1,
               use_projection: bool = False,
               channel_attention: bool = False,
               attention_reduction: int = 16,
               kernel_initializer: str = 'VarianceScaling',
               kernel_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               bias_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               activation: str = 'relu',
               use_sync_bn: bool = False,
               norm_momentum: float = 0.9,
               norm_epsilon: float = 1e-5,
               norm_eval: bool = False,
               **kwargs):
    super().__init__(**kwargs)
    if bottleneck_filters % groups:
      raise ValueError(f'bottleneck_filters={bottleneck_filters} is not a '
                       f'multiple of groups={groups}.')
    self._config_dict = {
        'out_filters': out_filters,
        'bottleneck_filters': bottleneck_filters,
        'strides': strides,
        'groups': groups,
        'use_projection': use_projection,
        'channel_attention': channel_attention,
        'attention_reduction': attention_reduction,
        'kernel_initializer': kernel_initializer,
        'kernel_regularizer': kernel_regularizer,
        'bias_regularizer': bias_regularizer,
        'activation': activation,
        'use_sync_bn': use_sync_bn,
        'norm_momentum': norm_momentum,
        'norm_epsilon': norm_epsilon,
        'norm_eval': norm_eval,
    }
    self._activation_fn = tf_utils.get_activation(activation)

  def _conv(self, filters, kernel_size, strides=1, groups=1, name=None):
    c = self._config_dict
    return nn_layers.GroupedConv2D(
        filters,
        kernel_size,
        strides=strides,
        groups=groups,
        # Strided 3x3 convs pad explicitly (see `call`).
        padding='valid' if strides > 1 and kernel_size > 1 else 'same',
        use_bias=False,
        kernel_initializer=tf_utils.clone_initializer(c['kernel_initializer']),
        kernel_regularizer=c['kernel_regularizer'],
        bias_regularizer=c['bias_regularizer'],
        name=name)

  def _norm(self, name=None):
    c = self._config_dict
    return nn_layers.BatchNormalization(
        axis=-1,
        momentum=c['norm_momentum'],
        epsilon=c['norm_epsilon'],
        synchronized=c['use_sync_bn'],
        name=name)

  def build(self, input_shape):
    c = self._config_dict
    if c['use_projection']:
      self._shortcut = self._conv(c['out_filters'], 1, c['strides'],
                                  name='shortcut')
      self._shortcut_norm = self._norm('shortcut_norm')
    self._conv1 = self._conv(c['bottleneck_filters'], 1, name='conv1')
    self._norm1 = self._norm('norm1')
    self._conv2 = self._conv(c['bottleneck_filters'], 3, c['strides'],
                             c['groups'], name='conv2')
    self._norm2 = self._norm('norm2')
    self._conv3 = self._conv(c['out_filters'], 1, name='conv3')
    self._norm3 = self._norm('norm3')
    if c['channel_attention']:
      self._attention = nn_layers.ChannelAttention(
          reduction_ratio=c['attention_reduction'],
          kernel_regularizer=c['kernel_regularizer'],
          bias_regularizer=c['bias_regularizer'],
          name='channel_attention')
    else:
      self._attention = None
    super().build(input_shape)

  def call(self, inputs, training=None):
    bn_training = False if self._config_dict['norm_eval'] else training
    shortcut = inputs
    if self._config_dict['use_projection']:
      shortcut = self._shortcut_norm(self._shortcut(inputs),
                                     training=bn_training)
    x = self._activation_fn(self._norm1(self._conv1(inputs),
                                        training=bn_training))
    if self._config_dict['strides'] > 1:
      # PyTorch pads a strided 3x3 conv by one on every side; 'same' would
      # pad only the bottom and right of an even-sized map.
      x = symmetric_pad(x, 1)
    x = self._activation_fn(self._norm2(self._conv2(x), training=bn_training))
    x = self._norm3(self._conv3(x), training=bn_training)
    if self._attention is not None:
      x = self._attention(x)
    return self._activation_fn(x + shortcut)

  def get_config(self) -> Mapping[str, Any]:
    return dict(list(super().get_config().items()) +
                list(self._config_dict.items()))

  @classmethod
  def from_config(cls, config, custom_objects=None):
    return cls(**config)


def bottleneck_stage(x: tf.Tensor,
                     num_blocks: int,
                     out_filters: int,
                     bottleneck_filters: int,
                     strides: int,
                     groups: int,
                     name: str,
                     **block_kwargs) -> tf.Tensor:
  """Applies `num_blocks` GroupedBottleneckBlocks; only the first is strided.

  The first block projects its shortcut when it changes the resolution or the
  width, as in ResNet v1.5 and RegNet.
  """
  in_filters = x.shape[-1]
  for i in range(num_blocks):
    x = GroupedBottleneckBlock(
        out_filters=out_filters,
        bottleneck_filters=bottleneck_filters,
        strides=strides if i == 0 else 1,
        groups=groups,
        use_projection=(i == 0 and (strides != 1 or in_filters != out_filters)),
        name=f'{name}_block{i}',
        **block_kwargs)(x)
  return x
