"""ResNet v1.5 (stride on the 3x3) with optional CBAM channel attention.

Model Garden's `resnet` backbone offers squeeze-and-excitation, not the CBAM
channel attention (avg- and max-pooled vectors through one shared MLP) that
UniPercepNet-S puts in every bottleneck, and cannot keep BN statistics frozen
while training gamma and beta. This backbone does both.
"""

from typing import Optional

import tf_keras

from official.modeling import hyperparams
from official.vision.modeling.backbones import factory
from official_ext.vision.modeling.backbones import base
from official_ext.vision.modeling.layers import nn_blocks

# Blocks per stage of the bottleneck ResNets.
RESNET_SPECS = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
_STAGE_FILTERS = (64, 128, 256, 512)
_EXPANSION = 4


@tf_keras.utils.register_keras_serializable(package='Vision')
class CAResNet(base.EndpointBackbone):
  """Bottleneck ResNet; outputs endpoints '2'..'5' (strides 4..32)."""

  def __init__(self,
               model_id: int = 50,
               input_specs: tf_keras.layers.InputSpec = tf_keras.layers.InputSpec(
                   shape=[None, None, None, 3]),
               channel_attention: bool = False,
               attention_reduction: int = 16,
               norm_eval: bool = False,
               activation: str = 'relu',
               use_sync_bn: bool = False,
               norm_momentum: float = 0.9,
               norm_epsilon: float = 1e-5,
               kernel_initializer: str = 'VarianceScaling',
               kernel_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               bias_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               **kwargs):
    if model_id not in RESNET_SPECS:
      raise ValueError(f'Unknown ResNet model_id {model_id!r}; known: '
                       f'{sorted(RESNET_SPECS)}.')
    config_dict = {
        'model_id': model_id,
        'input_specs': input_specs,
        'channel_attention': channel_attention,
        'attention_reduction': attention_reduction,
        'norm_eval': norm_eval,
        'activation': activation,
        'use_sync_bn': use_sync_bn,
        'norm_momentum': norm_momentum,
        'norm_epsilon': norm_epsilon,
        'kernel_initializer': kernel_initializer,
        'kernel_regularizer': kernel_regularizer,
        'bias_regularizer': bias_regularizer,
    }
    args = base.ConvArgs.from_config(config_dict)

    inputs = tf_keras.Input(shape=input_specs.shape[1:])
    # The stem conv and the pool pad symmetrically, as torchvision's do.
    x = base.conv_norm_act(inputs, 64, 7, 2, 'stem', args)
    # Zeros pad like -inf here: the pool's inputs are ReLU outputs.
    x = tf_keras.layers.ZeroPadding2D(1, name='stem_pool_pad')(x)
    x = tf_keras.layers.MaxPool2D(3, strides=2, padding='valid',
                                  name='stem_pool')(x)

    endpoints = {}
    for i, (num_blocks, filters) in enumerate(
        zip(RESNET_SPECS[model_id], _STAGE_FILTERS)):
      x = nn_blocks.bottleneck_stage(
          x, num_blocks, filters * _EXPANSION, filters,
          strides=1 if i == 0 else 2, groups=1, name=f'stage{i + 1}',
          channel_attention=channel_attention,
          attention_reduction=attention_reduction, **args.as_kwargs())
      endpoints[str(i + 2)] = x

    super().__init__(inputs, endpoints, config_dict, **kwargs)


@factory.register_backbone_builder('ca_resnet')
def build_ca_resnet(
    input_specs: tf_keras.layers.InputSpec,
    backbone_config: hyperparams.Config,
    norm_activation_config: hyperparams.Config,
    l2_regularizer: Optional[tf_keras.regularizers.Regularizer] = None
) -> tf_keras.Model:
  """Builds a CAResNet backbone from a `Backbone` OneOf config."""
  cfg, kwargs = base.builder_kwargs('ca_resnet', backbone_config,
                                    norm_activation_config, l2_regularizer)
  return CAResNet(
      model_id=cfg.model_id,
      input_specs=input_specs,
      channel_attention=cfg.channel_attention,
      attention_reduction=cfg.attention_reduction,
      norm_eval=cfg.norm_eval,
      **kwargs)
