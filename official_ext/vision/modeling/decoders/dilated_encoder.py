"""YOLOF's DilatedEncoder (Chen et al., "You Only Look One-level Feature").

One backbone level in, one level out at the same stride: a 1x1 projection
(+BN), a 3x3 conv (+BN), then residual bottlenecks (1x1 -> dilated 3x3 -> 1x1,
each BN + ReLU, plus identity) whose dilations grow to widen the receptive
field without a feature pyramid.
"""

from typing import Any, Mapping, Optional, Sequence

import tensorflow as tf
import tf_keras

from official.modeling import hyperparams
from official.modeling import tf_utils
from official.vision.modeling.decoders import factory
from official_ext.vision.modeling.layers import nn_layers


@tf_keras.utils.register_keras_serializable(package='Vision')
class DilatedResidualBlock(tf_keras.layers.Layer):
  """1x1 -> 3x3 dilated -> 1x1 (each conv + BN + activation) + identity."""

  def __init__(self,
               bottleneck_filters: int,
               dilation_rate: int,
               activation: str = 'relu',
               use_sync_bn: bool = False,
               norm_momentum: float = 0.9,
               norm_epsilon: float = 1e-5,
               kernel_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               **kwargs):
    super().__init__(**kwargs)
    self._config_dict = {
        'bottleneck_filters': bottleneck_filters,
        'dilation_rate': dilation_rate,
        'activation': activation,
        'use_sync_bn': use_sync_bn,
        'norm_momentum': norm_momentum,
        'norm_epsilon': norm_epsilon,
        'kernel_regularizer': kernel_regularizer,
    }
    self._activation_fn = tf_utils.get_activation(activation)

  def build(self, input_shape):
    c = self._config_dict
    filters = int(input_shape[-1])
    specs = [(c['bottleneck_filters'], 1, 1),
             (c['bottleneck_filters'], 3, c['dilation_rate']),
             (filters, 1, 1)]
    self._convs, self._norms = [], []
    for i, (f, k, d) in enumerate(specs):
      self._convs.append(tf_keras.layers.Conv2D(
          f, k, padding='same', dilation_rate=d, use_bias=False,
          kernel_initializer=tf_keras.initializers.RandomNormal(stddev=0.01),
          kernel_regularizer=c['kernel_regularizer'], name=f'conv{i + 1}'))
      self._norms.append(nn_layers.BatchNormalization(
          momentum=c['norm_momentum'], epsilon=c['norm_epsilon'],
          synchronized=c['use_sync_bn'], name=f'norm{i + 1}'))
    super().build(input_shape)

  def call(self, inputs, training=None):
    x = inputs
    for conv, norm in zip(self._convs, self._norms):
      x = self._activation_fn(norm(conv(x), training=training))
    return inputs + x

  def get_config(self) -> Mapping[str, Any]:
    return dict(list(super().get_config().items()) +
                list(self._config_dict.items()))


@tf_keras.utils.register_keras_serializable(package='Vision')
class DilatedEncoder(tf_keras.Model):
  """Maps `{level: C5}` to `{level: P5}` with `num_filters` channels."""

  def __init__(self,
               input_specs: Mapping[str, tf.TensorShape],
               level: str = '5',
               num_filters: int = 512,
               bottleneck_filters: int = 128,
               dilation_rates: Sequence[int] = (2, 4, 6, 8),
               activation: str = 'relu',
               use_sync_bn: bool = False,
               norm_momentum: float = 0.9,
               norm_epsilon: float = 1e-5,
               kernel_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               **kwargs):
    level = str(level)
    if level not in input_specs:
      raise ValueError(f'DilatedEncoder level {level!r} is not among the '
                       f'backbone outputs {sorted(input_specs)}.')
    self._config_dict = {
        'input_specs': input_specs,
        'level': level,
        'num_filters': num_filters,
        'bottleneck_filters': bottleneck_filters,
        'dilation_rates': list(dilation_rates),
        'activation': activation,
        'use_sync_bn': use_sync_bn,
        'norm_momentum': norm_momentum,
        'norm_epsilon': norm_epsilon,
        'kernel_regularizer': kernel_regularizer,
    }
    inputs = {level: tf_keras.Input(shape=input_specs[level][1:])}
    norm_kwargs = dict(momentum=norm_momentum, epsilon=norm_epsilon,
                       synchronized=use_sync_bn)
    # Caffe2's "xavier fill": uniform with variance 1 / fan_in.
    xavier = tf_keras.initializers.VarianceScaling(1.0, 'fan_in', 'uniform')
    x = tf_keras.layers.Conv2D(
        num_filters, 1, kernel_initializer=xavier,
        kernel_regularizer=kernel_regularizer, name='lateral_conv')(
            inputs[level])
    x = nn_layers.BatchNormalization(name='lateral_norm',
                                           **norm_kwargs)(x)
    x = tf_keras.layers.Conv2D(
        num_filters, 3, padding='same', kernel_initializer=xavier,
        kernel_regularizer=kernel_regularizer, name='fpn_conv')(x)
    x = nn_layers.BatchNormalization(name='fpn_norm', **norm_kwargs)(x)
    for i, rate in enumerate(dilation_rates):
      x = DilatedResidualBlock(
          bottleneck_filters, rate, activation=activation,
          use_sync_bn=use_sync_bn, norm_momentum=norm_momentum,
          norm_epsilon=norm_epsilon, kernel_regularizer=kernel_regularizer,
          name=f'dilated_block{i}')(x)
    outputs = {level: x}
    self._output_specs = {level: x.get_shape()}
    super().__init__(inputs=inputs, outputs=outputs, **kwargs)

  @property
  def output_specs(self) -> Mapping[str, tf.TensorShape]:
    return self._output_specs

  def get_config(self) -> Mapping[str, Any]:
    return self._config_dict

  @classmethod
  def from_config(cls, config, custom_objects=None):
    return cls(**config)


@factory.register_decoder_builder('dilated_encoder')
def build_dilated_encoder(
    input_specs: Mapping[str, tf.TensorShape],
    model_config: hyperparams.Config,
    l2_regularizer: Optional[tf_keras.regularizers.Regularizer] = None
) -> tf_keras.Model:
  """Builds a DilatedEncoder from a model config with a `decoder` OneOf.

  The encoder reads the backbone output `model_config.level`.
  """
  if model_config.decoder.type != 'dilated_encoder':
    raise ValueError(
        f'Inconsistent decoder type {model_config.decoder.type!r}.')
  cfg = model_config.decoder.get()
  norm = model_config.norm_activation
  return DilatedEncoder(
      input_specs=input_specs,
      level=str(model_config.level),
      num_filters=cfg.num_filters,
      bottleneck_filters=cfg.bottleneck_filters,
      dilation_rates=cfg.dilation_rates,
      activation=norm.activation,
      use_sync_bn=norm.use_sync_bn,
      norm_momentum=norm.norm_momentum,
      norm_epsilon=norm.norm_epsilon,
      kernel_regularizer=l2_regularizer)
