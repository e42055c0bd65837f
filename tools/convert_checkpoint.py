r"""Converts PyTorch weights into UniPercepNet-S TensorFlow checkpoints.

Whole models trained with the reference implementation (UniPercepNet-S on
MMDetection 3.3):

  python tools/convert_checkpoint.py --checkpoint=epoch_36.pth \
      --experiment=unipercepnet_coco --output_dir=CONVERTED

writes a checkpoint that `train.py --mode=eval`, `train.py` (fine-tuning
from step 0) and `serving/export_saved_model.py --config_file=
CONVERTED/params.yaml --checkpoint_path=CONVERTED` read as they read a
training run, and `CONVERTED/params.yaml` (the experiment with its category
ids written out).

ImageNet backbones for `task.init_checkpoint` (with
`init_checkpoint_modules: backbone`):

  python tools/convert_checkpoint.py --part=backbone \
      --checkpoint=regnetx_4.0gf-a88f671e.pth --experiment=unipercepnet_coco \
      --output_dir=PRETRAINED

reads MMDetection / open-mmlab RegNetX and ResNet, pycls RegNetX, timm
RegNetX (`regnetx_040` and siblings, also .safetensors) and torchvision
ResNet namings. Channel-attention weights, which no ImageNet checkpoint has,
keep their initialisation, as in the reference.

For a VoVNet experiment (backbone type 'vovnet', e.g.
`--experiment=unipercepnet_vovnet39_coco`) it reads vovnet-detectron2's
ImageNet weights (`vovnet39_ese_detectron2.pth`; BGR, std 1: the stem conv's
input channels are reversed and scaled by this project's STDDEV_RGB) and
timm's `ese_vovnet*` weights (RGB; timm has eSE on the last OSA module of
each stage only, the other eSE modules get kernel 0 and bias 3, a gate of
exactly 1, and are logged). See `backbone_namings.to_vovnet`.

Inputs: .pth / .pt (read without torch and without running pickled code),
.safetensors, .npz. Every source tensor is used exactly once and every
target variable filled exactly once, or the tool stops and lists the
unmatched keys and shape mismatches.

The output appears only when complete: it is written into a hidden staging
directory and then moved into --output_dir, the files that make it readable
last; if the conversion fails, --output_dir is left as it was. Other files
in --output_dir stay.
"""

import dataclasses
import os
import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras

from official.core import config_definitions as cfg
from official.core import task_factory
from official.core import train_utils
from common import atomic_io
from configs import unipercepnet as unipercepnet_cfg
from dataloaders import category_ids
from serving import export_saved_model_lib
from tools import backbone_namings
from tools import weights_io

PARTS = ('model', 'backbone')


class ConversionError(ValueError):
  """The source weights do not fit the model; the message lists why."""


@dataclasses.dataclass(frozen=True)
class Target:
  """A Keras layer filled from the source tensors under `prefix`.

  kind: 'conv' (Conv2D, incl. grouped), 'dwconv' (DepthwiseConv2D from a
  Conv2d with groups = channels), 'bn' (BatchNormalization), 'dense'
  (Dense from a 1x1 conv), 'deconv' (Conv2DTranspose), 'scale' (a scalar
  variable, `layer` is the variable itself).
  out_order: source output channels in target order (permutes the weight's
  first axis and the bias), or None.
  in_order: source input channels in target order, or None.
  in_scale: factors of the weight's input channels (in target order,
  applied after `in_order`), or None.
  """
  prefix: str
  layer: object
  kind: str
  out_order: Optional[np.ndarray] = None
  in_order: Optional[np.ndarray] = None
  in_scale: Optional[np.ndarray] = None


# Source tensors that hold no weights.
_SKIPPED_SUFFIXES = ('.num_batches_tracked',)

# The reference reads BGR images, this project RGB.
BGR_TO_RGB = np.array([2, 1, 0])


def _conv_weight(w: np.ndarray) -> np.ndarray:
  """PyTorch `[out, in, kh, kw]` -> Keras `[kh, kw, in, out]`."""
  return np.transpose(w, (2, 3, 1, 0))


def _expected(target: Target) -> List[Tuple[str, tf.Variable,
                                             Callable[[np.ndarray],
                                                      np.ndarray]]]:
  """(source key, variable, source -> variable value) of one target."""
  layer, p = target.layer, target.prefix

  def reorder(w, is_weight):
    if target.out_order is not None:
      w = w[target.out_order]
    if is_weight and target.in_order is not None:
      w = w[:, target.in_order]
    if is_weight and target.in_scale is not None:
      scale = np.asarray(target.in_scale, np.float32)
      w = w * np.reshape(scale, [1, -1] + [1] * (w.ndim - 2))
    return w

  if target.kind == 'scale':
    return [(p, layer, lambda w: np.reshape(w, layer.shape))]
  if target.kind == 'bn':
    return [(f'{p}.weight', layer.gamma, lambda w: w),
            (f'{p}.bias', layer.beta, lambda w: w),
            (f'{p}.running_mean', layer.moving_mean, lambda w: w),
            (f'{p}.running_var', layer.moving_variance, lambda w: w)]
  kernel = getattr(layer, 'kernel', None)
  if target.kind == 'conv':
    weight = lambda w: _conv_weight(reorder(w, True))
  elif target.kind == 'dwconv':
    # Conv2d(groups=C) is [C, 1, kh, kw]; DepthwiseConv2D [kh, kw, C, 1].
    kernel = layer.depthwise_kernel
    weight = lambda w: np.transpose(reorder(w, True), (2, 3, 0, 1))
  elif target.kind == 'dense':
    weight = lambda w: reorder(w, True)[:, :, 0, 0].T
  elif target.kind == 'deconv':
    # ConvTranspose2d is [in, out, kh, kw]; Keras [kh, kw, out, in].
    weight = lambda w: np.transpose(w, (2, 3, 1, 0))
  else:
    raise ValueError(f'Unknown target kind {target.kind!r}.')
  items = [(f'{p}.weight', kernel, weight)]
  if layer.use_bias:
    items.append((f'{p}.bias', layer.bias, lambda w: reorder(w, False)))
  return items


def assign(targets: Sequence[Target], source: Dict[str, np.ndarray],
           variables: Sequence[tf.Variable], source_name: str,
           skipped: Callable[[str], bool] = lambda key: False) -> None:
  """Fills `variables` from `source` through `targets`; all or nothing.

  Args:
    targets: what to fill from where.
    source: the source state dict.
    variables: every variable that must be filled, each exactly once.
    source_name: the file, for messages.
    skipped: source keys that are deliberately not used.

  Raises:
    ConversionError: listing source keys not used, variables not filled or
      filled twice, missing keys and shape mismatches.
  """
  values, problems, used = [], [], set()
  filled, reported = {}, set()
  for target in targets:
    for key, variable, transform in _expected(target):
      if key not in source:
        problems.append(f'missing source tensor {key} (for {variable.name})')
        reported.add(variable.ref())
        continue
      if key in used:
        problems.append(f'source tensor {key} used twice')
      used.add(key)
      value = transform(np.asarray(source[key], np.float32))
      if tuple(value.shape) != tuple(variable.shape):
        problems.append(f'{key}: shape {tuple(source[key].shape)} does not '
                        f'fit {variable.name} {tuple(variable.shape)}')
        reported.add(variable.ref())
        continue
      ref = variable.ref()
      if ref in filled:
        problems.append(f'{variable.name} filled from {filled[ref]} and {key}')
      filled[ref] = key
      values.append((variable, value))
  unused = sorted(k for k in source
                  if k not in used and not k.endswith(_SKIPPED_SUFFIXES)
                  and not skipped(k))
  problems += [f'source tensor {k} {tuple(np.shape(source[k]))} matches no '
               'variable' for k in unused]
  unfilled = [v.name for v in variables
              if v.ref() not in filled and v.ref() not in reported]
  problems += [f'variable {n} has no source tensor' for n in unfilled]
  if problems:
    shown = problems[:40]
    more = len(problems) - len(shown)
    raise ConversionError(
        f'{source_name}: {len(problems)} problem(s) converting the weights:\n'
        + '\n'.join('  ' + p for p in shown) +
        (f'\n  ... and {more} more' if more > 0 else ''))
  for variable, value in values:
    variable.assign(value.astype(variable.dtype.as_numpy_dtype))


# ------------------------------------------------------------------ layers


def backbone_targets(backbone: tf_keras.Model, prefix: str = '',
                     rgb_from_bgr: bool = False,
                     with_attention: bool = True) -> List[Target]:
  """The RegNet / CAResNet backbone in MMDetection's naming.

  `conv1`/`bn1` stem, `layer{i}.{j}` blocks with `conv1..3`, `bn1..3`,
  `downsample.{0,1}` and `channel_attention.excitation.{0,1}.conv`.
  """
  stem_order = BGR_TO_RGB if rgb_from_bgr else None
  targets = [Target(f'{prefix}conv1', backbone.get_layer('stem_conv'), 'conv',
                    in_order=stem_order),
             Target(f'{prefix}bn1', backbone.get_layer('stem_norm'), 'bn')]
  for layer in backbone.layers:
    name = layer.name
    if not name.startswith('stage') or '_block' not in name:
      continue
    stage, block = name[len('stage'):].split('_block')
    p = f'{prefix}layer{stage}.{block}'
    # pylint: disable=protected-access
    for i in (1, 2, 3):
      targets.append(Target(f'{p}.conv{i}', getattr(layer, f'_conv{i}'),
                            'conv'))
      targets.append(Target(f'{p}.bn{i}', getattr(layer, f'_norm{i}'), 'bn'))
    if layer._config_dict['use_projection']:
      targets.append(Target(f'{p}.downsample.0', layer._shortcut, 'conv'))
      targets.append(Target(f'{p}.downsample.1', layer._shortcut_norm, 'bn'))
    if with_attention and layer._attention is not None:
      a = f'{p}.channel_attention.excitation'
      targets.append(Target(f'{a}.0.conv', layer._attention._squeeze, 'conv'))
      targets.append(Target(f'{a}.1.conv', layer._attention._excite, 'conv'))
    # pylint: enable=protected-access
  return targets


def attention_variables(backbone: tf_keras.Model) -> List[tf.Variable]:
  """The channel-attention variables of a backbone's blocks."""
  out = []
  for layer in backbone.layers:
    attention = getattr(layer, '_attention', None)
    if attention is not None:
      out += attention.variables
  return out


# VoVNet Keras layer names (see `vovnet.py`'s docstring).
_VOVNET_STEM_LAYER = re.compile(
    r'stem_(?P<n>[123])_(?P<op>conv|norm|dw_conv3x3|pw_conv1x1|pw_norm)')
_VOVNET_OSA_LAYER = re.compile(
    r'stage(?P<s>[2-5])_OSA(?P=s)_(?P<m>\d+)_(?:layer(?P<i>\d+)|'
    r'(?P<unit>reduction|concat))_'
    r'(?P<op>conv|norm|dw_conv3x3|pw_conv1x1|pw_norm)')
_VOVNET_ESE_LAYER = re.compile(r'stage(?P<s>[2-5])_OSA(?P=s)_(?P<m>\d+)_ese')
_VOVNET_KINDS = {'conv': 'conv', 'pw_conv1x1': 'conv',
                 'dw_conv3x3': 'dwconv', 'norm': 'bn', 'pw_norm': 'bn'}


def _vovnet_module(name: str) -> Optional[Tuple[str, str]]:
  """(vovnet-detectron2 module, target kind) of a VoVNet conv / BN layer."""
  match = _VOVNET_STEM_LAYER.fullmatch(name)
  if match:
    op = match.group('op')
    return f'stem.stem_{match.group("n")}/{op}', _VOVNET_KINDS[op]
  match = _VOVNET_OSA_LAYER.fullmatch(name)
  if match:
    s, m, op = match.group('s'), match.group('m'), match.group('op')
    module = f'stage{s}.OSA{s}_{m}'
    if match.group('i') is not None:
      i = match.group('i')
      unit = f'{module}.layers.{i}.OSA{s}_{m}_{i}'
    elif match.group('unit') == 'reduction':
      unit = f'{module}.conv_reduction.OSA{s}_{m}_reduction_0'
    else:
      unit = f'{module}.concat.OSA{s}_{m}_concat'
    return f'{unit}/{op}', _VOVNET_KINDS[op]
  return None


def vovnet_targets(backbone: tf_keras.Model, rgb_from_bgr: bool = False,
                   stem_input_scale: Optional[np.ndarray] = None,
                   skipped_ese: Sequence[str] = ()) -> List[Target]:
  """The VoVNet backbone in vovnet-detectron2's naming.

  Args:
    backbone: a `vovnet.VoVNet`.
    rgb_from_bgr: the source's stem conv reads BGR (reverse its input
      channels).
    stem_input_scale: factors of the stem conv's input channels (target
      order), or None.
    skipped_ese: names of eSE layers that get no target.

  Returns:
    A Target per conv, depthwise conv, BN and eSE `fc`.

  Raises:
    ValueError: a layer with weights that has no vovnet-detectron2 name.
  """
  targets = []
  for layer in backbone.layers:
    if not layer.weights:
      continue  # Input, padding, ReLU, pools, concatenations, adds.
    match = _VOVNET_ESE_LAYER.fullmatch(layer.name)
    if match:
      if layer.name not in skipped_ese:
        s, m = match.group('s'), match.group('m')
        # pylint: disable=protected-access
        targets.append(Target(f'stage{s}.OSA{s}_{m}.ese.fc', layer._fc,
                              'conv'))
        # pylint: enable=protected-access
      continue
    module = _vovnet_module(layer.name)
    if module is None:
      raise ValueError(f'VoVNet layer {layer.name!r} has weights but no '
                       'vovnet-detectron2 name.')
    prefix, kind = module
    if layer.name == 'stem_1_conv':
      targets.append(Target(prefix, layer, kind,
                            in_order=BGR_TO_RGB if rgb_from_bgr else None,
                            in_scale=stem_input_scale))
    else:
      targets.append(Target(prefix, layer, kind))
  return targets


def vovnet_gate_free_ese(
    backbone: tf_keras.Model) -> List[tf_keras.layers.Layer]:
  """The eSE layers of a VoVNet but those of each stage's last module."""
  modules = {}
  for layer in backbone.layers:
    match = _VOVNET_ESE_LAYER.fullmatch(layer.name)
    if match:
      modules.setdefault(match.group('s'), []).append(
          (int(match.group('m')), layer))
  out = []
  for stage in sorted(modules):
    out += [layer for _, layer in sorted(modules[stage],
                                         key=lambda item: item[0])[:-1]]
  return out


def set_gate_to_one(ese: tf_keras.layers.Layer) -> List[tf.Variable]:
  """Kernel 0, bias 3: an eSE gate of relu6(0 + 3 + 3) / 6 = 1 exactly.

  Returns:
    The variables set.
  """
  fc = ese._fc  # pylint: disable=protected-access
  fc.kernel.assign(tf.zeros_like(fc.kernel))
  fc.bias.assign(tf.fill(tf.shape(fc.bias), tf.constant(3., fc.bias.dtype)))
  return [fc.kernel, fc.bias]


def _stem_input_scale(form: backbone_namings.Form,
                      in_order: Optional[np.ndarray]) -> Optional[np.ndarray]:
  """The stem's input-channel factors for this project's normalisation.

  This project feeds (x - MEAN_RGB) / STDDEV_RGB. A source that subtracts
  the same mean (in its channel order) and divides by `form.input_std`
  reads that input times STDDEV_RGB / input_std: its stem kernel, scaled
  so, computes the same (the zero padding is zero in both).

  Args:
    form: the source's naming.
    in_order: source input channels in target order, or None.

  Returns:
    Factors in target (RGB) order, or None when the source's normalisation
    is this project's.

  Raises:
    ConversionError: the source subtracts another mean (a stem bias would
      be needed).
  """
  if form.input_mean is None and form.input_std is None:
    return None
  order = np.arange(3) if in_order is None else np.asarray(in_order)
  if form.input_mean is not None:
    source_mean = np.asarray(form.input_mean, np.float64)[order]
    if not np.allclose(source_mean, unipercepnet_cfg.MEAN_RGB, atol=1e-3):
      raise ConversionError(
          f'{form.name} input mean {form.input_mean} (RGB order: '
          f'{source_mean.tolist()}) is not MEAN_RGB '
          f'{list(unipercepnet_cfg.MEAN_RGB)}.')
  if form.input_std is None:
    return None
  return (np.asarray(unipercepnet_cfg.STDDEV_RGB, np.float64) /
          np.asarray(form.input_std, np.float64)[order]).astype(np.float32)


def fill_vovnet(backbone: tf_keras.Model, source: Dict[str, np.ndarray],
                source_name: str = 'checkpoint') -> List[str]:
  """Fills a VoVNet with ImageNet weights; all or nothing.

  Args:
    backbone: a `vovnet.VoVNet`.
    source: the state dict, in a naming `backbone_namings.to_vovnet` reads.
    source_name: the file, for messages.

  Returns:
    Names of the eSE variables the source has no weights for (timm's eSE
    modules but the last of each stage), set to a gate of exactly 1.

  Raises:
    ValueError: an unrecognised naming (`backbone_namings.to_vovnet`).
    ConversionError: source tensors or variables left unmatched, shape
      mismatches (see `assign`).
  """
  source, form = backbone_namings.to_vovnet(source)
  logging.info('%s: %s naming.', source_name, form.name)
  gate_free = (vovnet_gate_free_ese(backbone) if form.ese_last_module_only
               else [])
  stem_order = BGR_TO_RGB if form.bgr else None
  targets = vovnet_targets(
      backbone, rgb_from_bgr=form.bgr,
      stem_input_scale=_stem_input_scale(form, stem_order),
      skipped_ese=[layer.name for layer in gate_free])
  unsourced = {v.ref() for layer in gate_free for v in layer.variables}
  assign(targets, source,
         [v for v in backbone.variables if v.ref() not in unsourced],
         source_name, skipped=form.skipped)
  names = []
  for layer in gate_free:
    names += [v.name for v in set_gate_to_one(layer)]
  if names:
    logging.info(
        '%s: no eSE weights for %d module(s) (timm has eSE on the last '
        'module of each stage only); set to a gate of exactly 1 (kernel 0, '
        'bias 3): %s', source_name, len(gate_free), ', '.join(names))
  return names


def _box_channel_order(num_anchors: int) -> np.ndarray:
  """Source box channels in target order: (x1, y1, x2, y2) -> (y1, x1, ...).

  The same permutation turns (dx, dy, dw, dh) deltas into (dy, dx, dh, dw).
  """
  return np.concatenate([a * 4 + np.array([1, 0, 3, 2])
                         for a in range(num_anchors)])


def model_targets(model) -> List[Target]:
  """Every layer of a UniPercepNetModel in the reference's naming."""
  # pylint: disable=protected-access
  targets = backbone_targets(model.backbone, 'backbone.', rgb_from_bgr=True)
  decoder = model.decoder
  for name in ('lateral_conv', 'fpn_conv'):
    targets.append(Target(f'neck.{name}', decoder.get_layer(name), 'conv'))
  for name in ('lateral_norm', 'fpn_norm'):
    targets.append(Target(f'neck.{name}', decoder.get_layer(name), 'bn'))
  for layer in decoder.layers:
    if layer.name.startswith('dilated_block'):
      p = f'neck.dilated_encoder_blocks.{layer.name[len("dilated_block"):]}'
      for i, (conv, norm) in enumerate(zip(layer._convs, layer._norms)):
        targets.append(Target(f'{p}.conv{i + 1}.conv', conv, 'conv'))
        targets.append(Target(f'{p}.conv{i + 1}.bn', norm, 'bn'))

  head = model.head
  for i, (conv, norm) in enumerate(zip(head._stacked_convs,
                                       head._stacked_norms)):
    targets.append(Target(f'bbox_head.inter_convs.{i}.conv', conv, 'conv'))
    targets.append(Target(f'bbox_head.inter_convs.{i}.bn', norm, 'bn'))
  for task in ('cls', 'reg'):
    d = getattr(head, f'_{task}_decomposition')
    p = f'bbox_head.{task}_decomp'
    targets += [Target(f'{p}.layer_attention.0', d._attention1, 'dense'),
                Target(f'{p}.layer_attention.2', d._attention2, 'dense'),
                Target(f'{p}.reduction_conv.conv', d._reduction, 'conv'),
                Target(f'{p}.reduction_conv.bn', d._norm, 'bn')]
  box_order = _box_channel_order(head.num_anchors)
  # Offsets: channel 2g + {0: dy, 1: dx} of source box channel g.
  offset_order = (2 * box_order[:, None] + np.arange(2)).reshape(-1)
  targets += [
      Target('bbox_head.tood_cls', head._cls_conv, 'conv'),
      Target('bbox_head.tood_reg', head._reg_conv, 'conv',
             out_order=box_order),
      Target('bbox_head.cls_prob_module.0', head._prob_conv1, 'conv'),
      Target('bbox_head.cls_prob_module.2', head._prob_conv2, 'conv'),
      Target('bbox_head.scales.0.scale', head._scale, 'scale'),
  ]
  if head._config_dict['deformable_sampling']:
    targets += [
        Target('bbox_head.reg_offset_module.0', head._offset_conv1, 'conv'),
        Target('bbox_head.reg_offset_module.2', head._offset_conv2, 'conv',
               out_order=offset_order)]

  if model.mask_head is not None:
    mask = model.mask_head
    p = 'roi_head.mask_head'
    for i, conv in enumerate(mask._convs):
      targets.append(Target(f'{p}.convs.{i}.conv', conv, 'conv'))
    if mask._attention is not None:
      targets.append(Target(f'{p}.sam.conv.conv', mask._attention._conv,
                            'conv'))
    targets += [Target(f'{p}.upsample', mask._upsample, 'deconv'),
                Target(f'{p}.conv_logits', mask._logits, 'conv')]
  # pylint: enable=protected-access
  return targets


# ------------------------------------------------------------- conversion


def build_task_and_model(params: cfg.ExperimentConfig):
  task = task_factory.get_task(params.task)
  return task, task.build_model()


def convert_model(params: cfg.ExperimentConfig, source: Dict[str, np.ndarray],
                  source_name: str = 'checkpoint'):
  """A built model holding the reference weights of `source`."""
  task, model = build_task_and_model(params)
  assign(model_targets(model), source, model.variables, source_name)
  return task, model


def convert_backbone(params: cfg.ExperimentConfig,
                     source: Dict[str, np.ndarray],
                     source_name: str = 'checkpoint') -> tf_keras.Model:
  """The experiment's backbone holding ImageNet weights from `source`.

  A VoVNet (backbone type 'vovnet') is filled by `fill_vovnet`; the others
  (RegNet, CAResNet) from MMDetection's naming, channel attention left as
  initialised.
  """
  if params.task.model.backbone.type == 'vovnet':
    _, model = build_task_and_model(params)
    fill_vovnet(model.backbone, source, source_name)
    return model.backbone
  source, form = backbone_namings.to_mmdet(source)
  logging.info('%s: %s naming.', source_name, form.name)
  _, model = build_task_and_model(params)
  backbone = model.backbone
  attention = {v.ref() for v in attention_variables(backbone)}
  assign(backbone_targets(backbone, rgb_from_bgr=form.bgr,
                          with_attention=False),
         source, [v for v in backbone.variables if v.ref() not in attention],
         source_name, skipped=form.skipped)
  return backbone


# The model's checkpoint: `ckpt-0` (CheckpointManager's name, step 0).
_MODEL_CHECKPOINT_NAME = 'ckpt'
_MODEL_CHECKPOINT = f'{_MODEL_CHECKPOINT_NAME}-0'
# The files that make a conversion readable, moved into --output_dir last,
# in this order: the checkpoint's index, params.yaml, then the `checkpoint`
# state file that tf.train.latest_checkpoint reads.
_MODEL_LAST = (f'{_MODEL_CHECKPOINT}.index', 'params.yaml', 'checkpoint')
_BACKBONE_CHECKPOINT = 'backbone'


def write_model(task, model, params: cfg.ExperimentConfig,
                output_dir: str) -> str:
  """A training-run style checkpoint (model, EMA optimizer, step 0).

  Writes `output_dir/ckpt-0.*`, `checkpoint` and `params.yaml`, which
  appear only when all are complete (`atomic_io.atomic_files`): written
  into a hidden staging directory, then moved into `output_dir` (created
  whole if missing), the `checkpoint` state file last. Other files there
  stay. If writing fails, `output_dir` is left as it was.

  Returns:
    The checkpoint's path, `output_dir/ckpt-0`.
  """
  optimizer = task.create_optimizer(params.trainer.optimizer_config,
                                    params.runtime)
  items = {'model': model}
  if hasattr(optimizer, 'shadow_copy'):
    # EMA: the averages (what evaluation and export read) are the weights.
    optimizer.shadow_copy(model)
    # pylint: disable=protected-access
    for average, weight in zip(optimizer._average_weights,
                               optimizer._model_weights):
      average.assign(weight)
    # pylint: enable=protected-access
    items['optimizer'] = optimizer
  step = tf.Variable(0, dtype=tf.int64, name='global_step')
  params = params.replace(task={
      'category_ids': category_ids.resolve_category_ids(params.task)})
  with atomic_io.atomic_files(output_dir, last=_MODEL_LAST) as staging:
    # The `checkpoint` state file names the checkpoint relative to its
    # directory, so it stays right once moved.
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(global_step=step, **items), staging,
        max_to_keep=1, checkpoint_name=_MODEL_CHECKPOINT_NAME)
    manager.save(checkpoint_number=0)
    train_utils.serialize_config(params, staging)
  return os.path.join(output_dir, _MODEL_CHECKPOINT)


def write_backbone(backbone: tf_keras.Model, output_dir: str) -> str:
  """A checkpoint `task.init_checkpoint_modules: backbone` reads.

  Writes `output_dir/backbone.*`, which appear only when complete: written
  into a hidden staging directory, then moved into `output_dir` (created
  whole if missing), the index last (`atomic_io.atomic_files`). Other files
  there stay. If writing fails, `output_dir` is left as it was.

  Returns:
    The checkpoint's path, `output_dir/backbone`.
  """
  with atomic_io.atomic_files(
      output_dir, last=[f'{_BACKBONE_CHECKPOINT}.index']) as staging:
    tf.train.Checkpoint(backbone=backbone).write(
        os.path.join(staging, _BACKBONE_CHECKPOINT))
  return os.path.join(output_dir, _BACKBONE_CHECKPOINT)


def define_flags() -> None:
  """The command line's flags (defined only when run as a program)."""
  flags.DEFINE_string(
      'checkpoint', None, 'PyTorch weights: .pth/.pt, .safetensors or .npz.')
  flags.DEFINE_string('experiment', 'unipercepnet_coco',
                      'Registered experiment.')
  flags.DEFINE_multi_string('config_file', None,
                            'YAML overrides, applied in order.')
  flags.DEFINE_string('params_override', '',
                      'YAML/JSON string of overrides, applied last.')
  flags.DEFINE_string('output_dir', None, 'Output directory.')
  flags.DEFINE_enum(
      'part', 'model', PARTS,
      'model: a whole reference checkpoint; backbone: ImageNet weights for '
      'task.init_checkpoint.')
  flags.mark_flags_as_required(['checkpoint', 'output_dir'])


def main(_):
  f = flags.FLAGS
  params = export_saved_model_lib.load_params(
      f.experiment, f.config_file, f.params_override)
  source = weights_io.load_state_dict(f.checkpoint)
  if f.part == 'model':
    task, model = convert_model(params, source, f.checkpoint)
    path = write_model(task, model, params, f.output_dir)
    print(f'Wrote {path} and {os.path.join(f.output_dir, "params.yaml")}')
  else:
    backbone = convert_backbone(params, source, f.checkpoint)
    path = write_backbone(backbone, f.output_dir)
    print(f'Wrote {path}; train with --params_override='
          f'task.init_checkpoint={path},task.init_checkpoint_modules=backbone')


if __name__ == '__main__':
  define_flags()
  app.run(main)
