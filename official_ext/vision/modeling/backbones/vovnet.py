"""VoVNet-v2 with effective Squeeze-Excitation (Lee and Park, "CenterMask").

An OSA (one-shot aggregation) module runs L 3x3 conv-BN-ReLU layers in
sequence, concatenates the module input with all L outputs, maps them with a
1x1 conv-BN-ReLU to the stage's output width, applies effective SE (eSE:
global average pool, one 1x1 conv C -> C with bias, hard sigmoid
relu6(x + 3) / 6, multiply) and, in the second and later modules of a stage,
adds the module input (after eSE). The stem is three 3x3 conv-BN-ReLU (strides
2, 1, 2); stages 3-5 start with a 3x3 stride-2 max pool in PyTorch's
ceil_mode. Depthwise variants ('-dw-') replace every 3x3 conv but the first
of the stem by a depthwise 3x3 conv, a pointwise 1x1 conv, BN and ReLU (no BN
between the two convs), and start each OSA module whose input width differs
from its conv width with a 1x1 conv-BN-ReLU reduction; the concatenation
still takes the unreduced input. The specs are vovnet-detectron2's
(`_STAGE_SPECS`); eSE follows every OSA module, as there.

Layer names and checkpoint conversion. Every layer is named after the
vovnet-detectron2 module it stands for (s: stage 2..5, m: module 1.., i:
layer 0..L-1, n: stem conv 1..3); timm's `ese_vovnet*` names are given too
(timm's stages and blocks count from 0: stages.{s-2}.blocks.{m-1}):

  Keras layer                      vovnet-detectron2 / timm module
  stem_{n}_conv, stem_{n}_norm     stem.stem_{n}/conv, /norm
                                   stem.{n-1}.conv, .bn
  stem_{n}_dw_conv3x3,             stem.stem_{n}/dw_conv3x3, /pw_conv1x1,
    stem_{n}_pw_conv1x1,             /pw_norm
    stem_{n}_pw_norm               stem.{n-1}.conv_dw, .conv_pw, .bn
  stage{s}_OSA{s}_{m}_layer{i}_    stage{s}.OSA{s}_{m}.layers.{i}.
    conv, _norm                      OSA{s}_{m}_{i}/conv, /norm
                                   stages.{s-2}.blocks.{m-1}.conv_mid.{i}.
                                     conv, .bn
  stage{s}_OSA{s}_{m}_layer{i}_    stage{s}.OSA{s}_{m}.layers.{i}.
    dw_conv3x3, _pw_conv1x1,         OSA{s}_{m}_{i}/dw_conv3x3, /pw_conv1x1,
    _pw_norm                         /pw_norm
                                   ...conv_mid.{i}.conv_dw, .conv_pw, .bn
  stage{s}_OSA{s}_{m}_reduction_   stage{s}.OSA{s}_{m}.conv_reduction.
    conv, _norm                      OSA{s}_{m}_reduction_0/conv, /norm
                                   ...blocks.{m-1}.conv_reduction.conv, .bn
  stage{s}_OSA{s}_{m}_concat_      stage{s}.OSA{s}_{m}.concat.
    conv, _norm                      OSA{s}_{m}_concat/conv, /norm
                                   ...blocks.{m-1}.conv_concat.conv, .bn
  stage{s}_OSA{s}_{m}_ese (its     stage{s}.OSA{s}_{m}.ese.fc
    sublayer `fc`)                 ...blocks.{m-1}.attn.fc

Parameterless layers: `stem_1_pad` and `stem_3_pad` (zero padding of the
stride-2 convs, symmetric as PyTorch's), `*_relu`, `stage{s}_pool` (the
detectron2 stage's `Pooling`), `stage{s}_OSA{s}_{m}_concat` (the
concatenation) and `stage{s}_OSA{s}_{m}_identity` (the residual add).

Tensors: a conv weight [out, in, kh, kw] is the Keras kernel transposed by
(2, 3, 1, 0); a depthwise weight [C, 1, kh, kw] is the `depthwise_kernel`
[kh, kw, C, 1] transposed by (2, 3, 0, 1); the eSE `fc` weight and bias are
its conv's kernel and bias; BN weight, bias, running_mean and running_var
are gamma, beta, moving_mean and moving_variance (num_batches_tracked is
dropped, as is timm's classifier `head.fc`). timm puts eSE on the last module
of each stage only: a converter sets the other eSE kernels to 0 and biases to
3, which makes their gate exactly 1 (relu6(0 + 3 + 3) / 6).
"""

import dataclasses
import math
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from official.modeling import hyperparams
from official.modeling import tf_utils
from official.vision.modeling.backbones import factory
from official_ext.vision.modeling.backbones import base


@dataclasses.dataclass(frozen=True)
class VoVNetSpec:
  """Architecture of one VoVNet.

  Attributes:
    stem_filters: output widths of the three stem convs.
    stage_conv_filters: width of the 3x3 convs of the OSA modules, per stage.
    stage_out_filters: output width of the OSA modules, per stage.
    layers_per_module: 3x3 convs per OSA module (L).
    modules_per_stage: OSA modules per stage.
    depthwise: whether the 3x3 convs (but the first of the stem) are
      depthwise separable.
  """
  stem_filters: Tuple[int, int, int]
  stage_conv_filters: Tuple[int, int, int, int]
  stage_out_filters: Tuple[int, int, int, int]
  layers_per_module: int
  modules_per_stage: Tuple[int, int, int, int]
  depthwise: bool = False


_WIDE_CONV = (128, 160, 192, 224)
_WIDE_OUT = (256, 512, 768, 1024)
_SLIM_CONV = (64, 80, 96, 112)
_SLIM_OUT = (112, 256, 384, 512)

# vovnet-detectron2's `_STAGE_SPECS` (timm's ese_vovnet19b_slim_dw,
# ese_vovnet19b_dw, ese_vovnet19b_slim, ese_vovnet19b, ese_vovnet39b,
# ese_vovnet57b and ese_vovnet99b).
VOVNET_SPECS: Dict[str, VoVNetSpec] = {
    'V-19-slim-dw-eSE': VoVNetSpec(
        (64, 64, 64), _SLIM_CONV, _SLIM_OUT, 3, (1, 1, 1, 1), True),
    'V-19-dw-eSE': VoVNetSpec(
        (64, 64, 64), _WIDE_CONV, _WIDE_OUT, 3, (1, 1, 1, 1), True),
    'V-19-slim-eSE': VoVNetSpec(
        (64, 64, 128), _SLIM_CONV, _SLIM_OUT, 3, (1, 1, 1, 1)),
    'V-19-eSE': VoVNetSpec(
        (64, 64, 128), _WIDE_CONV, _WIDE_OUT, 3, (1, 1, 1, 1)),
    'V-39-eSE': VoVNetSpec(
        (64, 64, 128), _WIDE_CONV, _WIDE_OUT, 5, (1, 1, 2, 2)),
    'V-57-eSE': VoVNetSpec(
        (64, 64, 128), _WIDE_CONV, _WIDE_OUT, 5, (1, 1, 4, 3)),
    'V-99-eSE': VoVNetSpec(
        (64, 64, 128), _WIDE_CONV, _WIDE_OUT, 5, (1, 3, 9, 3)),
}


@tf_keras.utils.register_keras_serializable(package='Vision')
class EffectiveSE(tf_keras.layers.Layer):
  """Effective squeeze-excitation: `x * hsigmoid(fc(avgpool(x)))`.

  `fc` is a 1x1 conv C -> C with bias, hsigmoid is relu6(z + 3) / 6.
  """

  def __init__(self,
               kernel_initializer: str = 'VarianceScaling',
               kernel_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               bias_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               **kwargs):
    super().__init__(**kwargs)
    self._kernel_initializer = kernel_initializer
    self._kernel_regularizer = kernel_regularizer
    self._bias_regularizer = bias_regularizer

  def build(self, input_shape):
    channels = int(input_shape[-1])
    self._fc = tf_keras.layers.Conv2D(
        channels,
        1,
        use_bias=True,
        kernel_initializer=tf_utils.clone_initializer(
            self._kernel_initializer),
        kernel_regularizer=self._kernel_regularizer,
        bias_regularizer=self._bias_regularizer,
        name='fc')
    self._fc.build(tf.TensorShape([input_shape[0], 1, 1, channels]))
    super().build(input_shape)

  def call(self, inputs):
    pooled = tf.reduce_mean(inputs, axis=[1, 2], keepdims=True)
    gate = tf.nn.relu6(self._fc(pooled) + 3.) / 6.
    return inputs * tf.cast(gate, inputs.dtype)

  def get_config(self) -> Mapping[str, Any]:
    config = {
        'kernel_initializer': self._kernel_initializer,
        'kernel_regularizer': self._kernel_regularizer,
        'bias_regularizer': self._bias_regularizer,
    }
    return dict(list(super().get_config().items()) + list(config.items()))


def ceil_mode_pool_size(size: int) -> int:
  """Output size of a 3x3 stride-2 max pool in PyTorch's ceil_mode.

  ceil((size - 3) / 2) + 1, which is size // 2 for every size >= 2.

  Args:
    size: the input height or width, >= 2.

  Returns:
    The output height or width.
  """
  if size < 2:
    raise ValueError(f'A 3x3 stride-2 ceil-mode pool needs a size >= 2, got '
                     f'{size}.')
  return math.ceil((size - 3) / 2) + 1


@tf_keras.utils.register_keras_serializable(package='Vision')
class CeilModeMaxPool2D(tf_keras.layers.Layer):
  """3x3 stride-2 max pool as PyTorch's `MaxPool2d(3, 2, ceil_mode=True)`.

  No padding; the last window may hang over the bottom and right edges and
  then pools the pixels it covers. Even sizes are padded with -inf by one
  row (column) at the bottom (right), odd sizes not at all, then pooled
  VALID: the output size is `ceil_mode_pool_size` of the input size.
  """

  def call(self, inputs):
    dynamic_shape = tf.shape(inputs)
    pads = []
    for axis in (1, 2):
      size = inputs.shape[axis]
      # 1 for even sizes, 0 for odd ones.
      pads.append((size + 1) % 2 if size is not None
                  else (dynamic_shape[axis] + 1) % 2)
    padded = tf.pad(
        inputs, [[0, 0], [0, pads[0]], [0, pads[1]], [0, 0]],
        constant_values=tf.constant(-np.inf, inputs.dtype))
    return tf.nn.max_pool2d(padded, 3, 2, 'VALID')

  def compute_output_shape(self, input_shape):
    shape = tf.TensorShape(input_shape).as_list()
    for axis in (1, 2):
      if shape[axis] is not None:
        shape[axis] = ceil_mode_pool_size(shape[axis])
    return tf.TensorShape(shape)


def dw_conv_norm_act(x: tf.Tensor, filters: int, strides: int, prefix: str,
                     args: base.ConvArgs) -> tf.Tensor:
  """Depthwise 3x3 -> pointwise 1x1 -> BN -> activation (no BN between).

  Layers `{prefix}_dw_conv3x3`, `_pw_conv1x1`, `_pw_norm` and `_pw_relu`.

  Args:
    x: the input (NHWC).
    filters: output channels of the pointwise conv.
    strides: of the depthwise conv, 1 or 2.
    prefix: the layer name prefix.
    args: the shared settings.

  Returns:
    The output.
  """
  x, padding = base.pad_for(x, 3, strides, prefix)
  x = tf_keras.layers.DepthwiseConv2D(
      3, strides=strides, padding=padding, use_bias=False,
      depthwise_initializer=tf_utils.clone_initializer(
          args.kernel_initializer),
      depthwise_regularizer=args.kernel_regularizer,
      name=f'{prefix}_dw_conv3x3')(x)
  x = tf_keras.layers.Conv2D(
      filters, 1, use_bias=False,
      kernel_initializer=tf_utils.clone_initializer(args.kernel_initializer),
      kernel_regularizer=args.kernel_regularizer,
      name=f'{prefix}_pw_conv1x1')(x)
  return base.norm_act(x, f'{prefix}_pw_norm', f'{prefix}_pw_relu', args)


def osa_module(x: tf.Tensor, conv_filters: int, out_filters: int,
               num_layers: int, identity: bool, depthwise: bool, prefix: str,
               args: base.ConvArgs) -> tf.Tensor:
  """One OSA module with eSE (see the module docstring).

  Args:
    x: the module input (NHWC).
    conv_filters: width of the 3x3 convs.
    out_filters: output width (the 1x1 aggregation conv's).
    num_layers: number of 3x3 convs (L).
    identity: add the module input to the output (after eSE); needs
      `out_filters` input channels.
    depthwise: depthwise separable 3x3 convs (and a 1x1 reduction first when
      the input width is not `conv_filters`).
    prefix: the layer name prefix, e.g. 'stage4_OSA4_2'.
    args: the shared settings.

  Returns:
    The module output, `out_filters` channels.
  """
  in_filters = x.shape[-1]
  if identity and in_filters != out_filters:
    raise ValueError(f'{prefix}: the identity needs {out_filters} input '
                     f'channels, got {in_filters}.')
  outputs = [x]
  y = x
  if depthwise and in_filters != conv_filters:
    y = base.conv_norm_act(y, conv_filters, 1, 1, f'{prefix}_reduction', args)
  for i in range(num_layers):
    if depthwise:
      y = dw_conv_norm_act(y, conv_filters, 1, f'{prefix}_layer{i}', args)
    else:
      y = base.conv_norm_act(y, conv_filters, 3, 1, f'{prefix}_layer{i}', args)
    outputs.append(y)
  y = tf_keras.layers.Concatenate(axis=-1, name=f'{prefix}_concat')(outputs)
  y = base.conv_norm_act(y, out_filters, 1, 1, f'{prefix}_concat', args)
  y = EffectiveSE(
      kernel_initializer=args.kernel_initializer,
      kernel_regularizer=args.kernel_regularizer,
      bias_regularizer=args.bias_regularizer, name=f'{prefix}_ese')(y)
  if identity:
    y = tf_keras.layers.Add(name=f'{prefix}_identity')([y, x])
  return y


@tf_keras.utils.register_keras_serializable(package='Vision')
class VoVNet(base.EndpointBackbone):
  """VoVNet-v2 (eSE); outputs endpoints '2'..'5' (strides 4..32).

  The input height and width must be multiples of 32 where they are known.
  """

  def __init__(self,
               model_id: str = 'V-39-eSE',
               input_specs: tf_keras.layers.InputSpec = tf_keras.layers.InputSpec(
                   shape=[None, None, None, 3]),
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
    """Builds the backbone.

    Args:
      model_id: a key of `VOVNET_SPECS`.
      input_specs: the input's spec, [batch, height, width, channels].
      norm_eval: keep every BN in inference mode (frozen statistics).
      activation: of every conv (the architecture's is 'relu').
      use_sync_bn: synchronise BN statistics across replicas.
      norm_momentum: BN momentum.
      norm_epsilon: BN epsilon.
      kernel_initializer: of the conv kernels.
      kernel_regularizer: of the conv kernels.
      bias_regularizer: of the eSE biases.
      **kwargs: to `tf_keras.Model`.
    """
    if model_id not in VOVNET_SPECS:
      raise ValueError(f'Unknown VoVNet model_id {model_id!r}; known: '
                       f'{sorted(VOVNET_SPECS)}.')
    height, width = input_specs.shape[1:3]
    if (height is not None and height % 32) or (
        width is not None and width % 32):
      raise ValueError(f'The VoVNet input size must be a multiple of 32, got '
                       f'{height}x{width} (height x width).')
    config_dict = {
        'model_id': model_id,
        'input_specs': input_specs,
        'norm_eval': norm_eval,
        'activation': activation,
        'use_sync_bn': use_sync_bn,
        'norm_momentum': norm_momentum,
        'norm_epsilon': norm_epsilon,
        'kernel_initializer': kernel_initializer,
        'kernel_regularizer': kernel_regularizer,
        'bias_regularizer': bias_regularizer,
    }
    spec = VOVNET_SPECS[model_id]
    args = base.ConvArgs.from_config(config_dict)

    inputs = tf_keras.Input(shape=input_specs.shape[1:])
    x = base.conv_norm_act(inputs, spec.stem_filters[0], 3, 2, 'stem_1', args)
    for n, strides in ((2, 1), (3, 2)):
      if spec.depthwise:
        x = dw_conv_norm_act(x, spec.stem_filters[n - 1], strides,
                             f'stem_{n}', args)
      else:
        x = base.conv_norm_act(x, spec.stem_filters[n - 1], 3, strides,
                               f'stem_{n}', args)

    endpoints = {}
    for i, (conv_filters, out_filters, num_modules) in enumerate(
        zip(spec.stage_conv_filters, spec.stage_out_filters,
            spec.modules_per_stage)):
      stage = i + 2
      if stage > 2:
        x = CeilModeMaxPool2D(name=f'stage{stage}_pool')(x)
      for m in range(1, num_modules + 1):
        x = osa_module(
            x, conv_filters, out_filters, spec.layers_per_module,
            identity=m > 1, depthwise=spec.depthwise,
            prefix=f'stage{stage}_OSA{stage}_{m}', args=args)
      endpoints[str(stage)] = x

    self._architecture = spec
    super().__init__(inputs, endpoints, config_dict, **kwargs)

  @property
  def architecture(self) -> VoVNetSpec:
    return self._architecture


@factory.register_backbone_builder('vovnet')
def build_vovnet(
    input_specs: tf_keras.layers.InputSpec,
    backbone_config: hyperparams.Config,
    norm_activation_config: hyperparams.Config,
    l2_regularizer: Optional[tf_keras.regularizers.Regularizer] = None
) -> tf_keras.Model:
  """Builds a VoVNet backbone from a `Backbone` OneOf config.

  Args:
    input_specs: the input's spec.
    backbone_config: a `Backbone` config of type 'vovnet'.
    norm_activation_config: activation and BN settings.
    l2_regularizer: of the conv kernels.

  Returns:
    The `VoVNet`.
  """
  cfg, kwargs = base.builder_kwargs('vovnet', backbone_config,
                                    norm_activation_config, l2_regularizer)
  return VoVNet(model_id=cfg.model_id, input_specs=input_specs,
                norm_eval=cfg.norm_eval, **kwargs)
