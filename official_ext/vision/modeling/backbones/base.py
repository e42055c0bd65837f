"""What this package's backbones share.

`EndpointBackbone` is the functional Keras model around a backbone's
endpoints ('2'..'5', strides 4..32) with the constructor arguments as its
config; `ConvArgs` and `conv_norm_act` build the conv-BN-activation units
(padded symmetrically before a strided conv, as PyTorch pads);
`builder_kwargs` reads the settings every backbone builder takes from Model
Garden's configs.
"""

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple

import tensorflow as tf
import tf_keras

from official.modeling import hyperparams
from official.modeling import tf_utils
from official_ext.vision.modeling.layers import nn_layers


@dataclasses.dataclass(frozen=True)
class ConvArgs:
  """Settings shared by the convs, BN layers and activations."""
  kernel_initializer: str = 'VarianceScaling'
  kernel_regularizer: Optional[tf_keras.regularizers.Regularizer] = None
  bias_regularizer: Optional[tf_keras.regularizers.Regularizer] = None
  activation: str = 'relu'
  use_sync_bn: bool = False
  norm_momentum: float = 0.9
  norm_epsilon: float = 1e-5
  # BN always in inference mode (frozen statistics; gamma and beta train).
  norm_eval: bool = False

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> 'ConvArgs':
    """The fields of `config` (a backbone's config dict) that name these."""
    return cls(**{f.name: config[f.name] for f in dataclasses.fields(cls)})

  def as_kwargs(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)


def norm_act(x: tf.Tensor, norm_name: str, act_name: str,
             args: ConvArgs) -> tf.Tensor:
  """BN (frozen with `norm_eval`) -> activation."""
  x = nn_layers.BatchNormalization(
      momentum=args.norm_momentum, epsilon=args.norm_epsilon,
      synchronized=args.use_sync_bn, name=norm_name)(
          x, training=False if args.norm_eval else None)
  return tf_keras.layers.Activation(
      tf_utils.get_activation(args.activation), name=act_name)(x)


def pad_for(x: tf.Tensor, kernel_size: int, strides: int,
            prefix: str) -> Tuple[tf.Tensor, str]:
  """Pads symmetrically before a strided conv; returns the conv's padding."""
  if strides == 1:
    return x, 'same'
  x = tf_keras.layers.ZeroPadding2D(kernel_size // 2, name=f'{prefix}_pad')(x)
  return x, 'valid'


def conv_norm_act(x: tf.Tensor, filters: int, kernel_size: int,
                  strides: int, prefix: str, args: ConvArgs) -> tf.Tensor:
  """Conv (no bias) -> BN -> activation; layers `{prefix}_conv|norm|relu`.

  A strided conv is preceded by `{prefix}_pad`, `kernel_size // 2` zeros on
  every side.

  Args:
    x: the input (NHWC).
    filters: output channels.
    kernel_size: odd.
    strides: 1 or 2.
    prefix: the layer name prefix.
    args: the shared settings.

  Returns:
    The output.
  """
  x, padding = pad_for(x, kernel_size, strides, prefix)
  x = tf_keras.layers.Conv2D(
      filters, kernel_size, strides=strides, padding=padding, use_bias=False,
      kernel_initializer=tf_utils.clone_initializer(args.kernel_initializer),
      kernel_regularizer=args.kernel_regularizer, name=f'{prefix}_conv')(x)
  return norm_act(x, f'{prefix}_norm', f'{prefix}_relu', args)


class EndpointBackbone(tf_keras.Model):
  """A functional backbone: endpoints by level, its arguments as config.

  A subclass builds its graph from `tf_keras.Input` in `__init__` and ends
  with `super().__init__(inputs, endpoints, config_dict, **kwargs)`, where
  `config_dict` holds every argument of its constructor but `kwargs`.
  """

  def __init__(self, inputs: tf.Tensor, endpoints: Mapping[str, tf.Tensor],
               config_dict: Mapping[str, Any], **kwargs):
    self._config_dict = dict(config_dict)
    self._output_specs = {k: v.get_shape() for k, v in endpoints.items()}
    super().__init__(inputs=inputs, outputs=dict(endpoints), **kwargs)

  @property
  def output_specs(self) -> Dict[str, tf.TensorShape]:
    return self._output_specs

  def get_config(self) -> Dict[str, Any]:
    return self._config_dict

  @classmethod
  def from_config(cls, config, custom_objects=None):
    return cls(**config)


def builder_kwargs(
    backbone_type: str,
    backbone_config: hyperparams.Config,
    norm_activation_config: hyperparams.Config,
    l2_regularizer: Optional[tf_keras.regularizers.Regularizer] = None
) -> Tuple[hyperparams.Config, Dict[str, Any]]:
  """Checks the `Backbone` OneOf's type; returns its config and the settings.

  Args:
    backbone_type: the type the builder is registered for.
    backbone_config: a `Backbone` OneOf config.
    norm_activation_config: activation and BN settings.
    l2_regularizer: of the conv kernels.

  Returns:
    (the chosen backbone's config, the constructor keyword arguments that
    come from `norm_activation_config` and `l2_regularizer`).
  """
  if backbone_config.type != backbone_type:
    raise ValueError(f'Inconsistent backbone type {backbone_config.type!r} '
                     f'for the {backbone_type!r} builder.')
  return backbone_config.get(), dict(
      activation=norm_activation_config.activation,
      use_sync_bn=norm_activation_config.use_sync_bn,
      norm_momentum=norm_activation_config.norm_momentum,
      norm_epsilon=norm_activation_config.norm_epsilon,
      kernel_regularizer=l2_regularizer)
