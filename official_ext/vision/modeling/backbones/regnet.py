"""RegNetX backbone (Radosavovic et al., "Designing Network Design Spaces").

Stage widths and depths come from the standard RegNet generator: a linear
width ramp `u_j = w0 + wa * j` (j < depth) quantised in log space to powers of
`wm`, rounded to multiples of 8, grouped into stages of equal width, then
made compatible with the group width. Blocks are X blocks (bottleneck ratio
1): 1x1 -> 3x3 grouped (strided) -> 1x1, with optional CBAM channel attention.
"""

import dataclasses
from typing import Dict, List, Optional

import numpy as np
import tf_keras

from official.modeling import hyperparams
from official.vision.modeling.backbones import factory
from official_ext.vision.modeling.backbones import base
from official_ext.vision.modeling.layers import nn_blocks


@dataclasses.dataclass(frozen=True)
class RegNetParams:
  """Generator parameters of one RegNet model."""
  w0: int
  wa: float
  wm: float
  depth: int
  group_width: int
  bottleneck_ratio: float = 1.0


# RegNetX models of the RegNet paper (its Table/pycls model zoo).
REGNET_PARAMS: Dict[str, RegNetParams] = {
    'regnetx_200mf': RegNetParams(24, 36.44, 2.49, 13, 8),
    'regnetx_400mf': RegNetParams(24, 24.48, 2.54, 22, 16),
    'regnetx_800mf': RegNetParams(56, 35.73, 2.28, 16, 16),
    'regnetx_1.6gf': RegNetParams(80, 34.01, 2.25, 18, 24),
    'regnetx_3.2gf': RegNetParams(88, 26.31, 2.25, 25, 48),
    'regnetx_4.0gf': RegNetParams(96, 38.65, 2.43, 23, 40),
    'regnetx_6.4gf': RegNetParams(184, 60.83, 2.07, 17, 56),
    'regnetx_8.0gf': RegNetParams(80, 49.56, 2.88, 23, 120),
    'regnetx_12gf': RegNetParams(168, 73.36, 2.37, 19, 112),
}


@dataclasses.dataclass(frozen=True)
class RegNetStages:
  widths: List[int]
  depths: List[int]
  group_widths: List[int]
  bottleneck_widths: List[int]


def generate_regnet_stages(params: RegNetParams,
                           quantum: int = 8) -> RegNetStages:
  """Per-stage widths, depths and group widths from generator parameters."""
  if params.wa < 0 or params.w0 <= 0 or params.wm <= 1 or params.depth < 1:
    raise ValueError(f'Invalid RegNet parameters: {params}.')
  continuous = np.arange(params.depth) * params.wa + params.w0
  exponents = np.round(np.log(continuous / params.w0) / np.log(params.wm))
  block_widths = params.w0 * np.power(params.wm, exponents)
  block_widths = (np.round(block_widths / quantum) * quantum).astype(int)

  widths, depths = [], []
  for w in block_widths.tolist():
    if widths and widths[-1] == w:
      depths[-1] += 1
    else:
      widths.append(w)
      depths.append(1)

  bottleneck = [int(w * params.bottleneck_ratio) for w in widths]
  groups = [min(params.group_width, b) for b in bottleneck]
  bottleneck = [int(round(b / g) * g) for b, g in zip(bottleneck, groups)]
  widths = [int(b / params.bottleneck_ratio) for b in bottleneck]
  return RegNetStages(widths, depths, groups, bottleneck)


@tf_keras.utils.register_keras_serializable(package='Vision')
class RegNet(base.EndpointBackbone):
  """RegNetX; outputs endpoints '2'..'5' (strides 4..32)."""

  def __init__(self,
               model_id: str = 'regnetx_4.0gf',
               input_specs: tf_keras.layers.InputSpec = tf_keras.layers.InputSpec(
                   shape=[None, None, None, 3]),
               stem_filters: int = 32,
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
    if model_id not in REGNET_PARAMS:
      raise ValueError(f'Unknown RegNet model_id {model_id!r}; known: '
                       f'{sorted(REGNET_PARAMS)}.')
    config_dict = {
        'model_id': model_id,
        'input_specs': input_specs,
        'stem_filters': stem_filters,
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
    stages = generate_regnet_stages(REGNET_PARAMS[model_id])
    args = base.ConvArgs.from_config(config_dict)

    inputs = tf_keras.Input(shape=input_specs.shape[1:])
    x = base.conv_norm_act(inputs, stem_filters, 3, 2, 'stem', args)
    endpoints = {}
    for i, (width, depth, group_width, bottleneck) in enumerate(
        zip(stages.widths, stages.depths, stages.group_widths,
            stages.bottleneck_widths)):
      x = nn_blocks.bottleneck_stage(
          x, depth, width, bottleneck, strides=2,
          groups=bottleneck // group_width, name=f'stage{i + 1}',
          channel_attention=channel_attention,
          attention_reduction=attention_reduction, **args.as_kwargs())
      endpoints[str(i + 2)] = x

    self._stages = stages
    super().__init__(inputs, endpoints, config_dict, **kwargs)

  @property
  def stages(self) -> RegNetStages:
    return self._stages


@factory.register_backbone_builder('regnet')
def build_regnet(
    input_specs: tf_keras.layers.InputSpec,
    backbone_config: hyperparams.Config,
    norm_activation_config: hyperparams.Config,
    l2_regularizer: Optional[tf_keras.regularizers.Regularizer] = None
) -> tf_keras.Model:
  """Builds a RegNet backbone from a `Backbone` OneOf config."""
  cfg, kwargs = base.builder_kwargs('regnet', backbone_config,
                                    norm_activation_config, l2_regularizer)
  return RegNet(
      model_id=cfg.model_id,
      input_specs=input_specs,
      stem_filters=cfg.stem_filters,
      channel_attention=cfg.channel_attention,
      attention_reduction=cfg.attention_reduction,
      norm_eval=cfg.norm_eval,
      **kwargs)
