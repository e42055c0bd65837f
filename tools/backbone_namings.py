"""Recognises ImageNet backbone state dicts and renames them to one naming.

RegNet / ResNet: `to_mmdet`; VoVNet: `to_vovnet` (see "VoVNet" below).

`to_mmdet(state_dict)` detects which of the supported namings a PyTorch state
dict uses and returns it renamed to MMDetection's RegNet / ResNet naming
(`conv1`, `bn1`, `layer{i}.{j}.conv{1,2,3}`, `layer{i}.{j}.bn{1,2,3}`,
`layer{i}.{j}.downsample.{0,1}`; i = 1..4, j 0-based), which
`tools/convert_checkpoint.backbone_targets` reads, together with a `Form`
telling the converter the naming's name, whether the network expects BGR
input, and which renamed keys (the ImageNet classifier, renamed to `fc.*`)
are deliberately unused. Values are passed through unchanged (same objects).

Supported forms and how they are recognised (after removing a `module.` or a
`model_state.` prefix carried by every key, and a `backbone.` prefix):

  * MMDetection / open-mmlab RegNetX (`open-mmlab://regnetx_3.2gf` etc., what
    mmdet's `tools/model_converters/regnet2mmdet.py` makes of pycls'
    weights): `conv1.weight` is a 3x3 kernel and there are `layer{i}.` keys.
    BGR input.
  * torchvision ResNet-50/101, also MMDetection's `pytorch`-style ResNet
    (`torchvision://resnet50`, `open-mmlab://resnet50`): the same names, but
    `conv1.weight` is a 7x7 kernel. RGB input.
  * pycls RegNetX (`RegNetX-4.0GF_dds_8gpu.pyth`): `stem.conv.weight` and
    `s{i}.b{j}.f.{a,b,c}[_bn]`, `s{i}.b{j}.proj` / `s{i}.b{j}.bn` keys, j
    1-based. BGR input.
  * timm RegNetX (`regnetx_002` ... `regnetx_320`, e.g. `regnetx_040` =
    RegNetX-4.0GF, `.pycls_in1k` and `.tv2_in1k` weights, .pth or
    .safetensors): `stem.conv.weight` and `s{i}.b{j}.conv{1,2,3}.{conv,bn}`,
    `s{i}.b{j}.downsample.{conv,bn}` keys, j 1-based. RGB input.

`backbone.`-prefixed keys may sit beside a classifier (`fc.*`, or
`head.fc.*` as mmpretrain saves it, renamed to `fc.*`); a whole detector
checkpoint (`backbone.` beside other modules such as `neck.` or `bbox_head.`)
is refused: convert it with --part=model.

Channel order, with the sources checked:

  * pycls trains and evaluates on BGR images: `pycls/datasets/imagenet.py`
    reads images with `cv2.imread` (BGR) and normalises with
    "Per-channel mean and SD values in BGR order" `_MEAN = [0.406, 0.456,
    0.485]`. mmdet's `regnet2mmdet.py` only renames keys (`stem.conv` ->
    `conv1`, `head.fc` -> `fc`, `s{i}.b{j}` -> `layer{i}.{j-1}`, `proj`/`bn`
    -> `downsample.0/1`, `f.a/a_bn/...` -> `conv1/bn1/...`), and mmdet's
    RegNet configs (e.g. `configs/regnet/mask-rcnn_regnetx-3.2GF_fpn_1x_
    coco.py`) feed them BGR: `mean=[103.53, 116.28, 123.675]`,
    `bgr_to_rgb=False` ("The mean and std are used in PyCls when training
    RegNets"). So the pycls and mmdet RegNet forms are BGR.
  * timm's regnet weights are RGB, whatever their origin. timm's
    `timm/models/regnet.py` docstring: "Weights from original pycls impl have
    been modified: first layer from BGR -> RGB as most PyTorch models are";
    the flip was done once when the weights were re-hosted (its
    `_filter_fn` only remaps torchvision / classy-vision names and flips
    nothing at load time), and every RegNetX pretrained config (`_cfg`,
    `_cfgpyc` for `.pycls_in1k`, `_cfgtv2` for `.tv2_in1k`) normalises with
    `IMAGENET_DEFAULT_MEAN/STD`, i.e. RGB. The name pattern cannot tell
    these weights apart, and it need not: all are RGB.
  * torchvision ResNets are trained on RGB (PIL) images with RGB ImageNet
    mean/std; mmdet's pytorch-style ResNet configs use `bgr_to_rgb=True`.

Not supported: caffe-style ResNets (`open-mmlab://detectron2/resnet50_caffe`,
BGR, stride on the first 1x1 conv; same names as torchvision's, so they
would be read as RGB torchvision weights), RegNetY / SE weights, and
torchvision's own RegNet naming (`trunk_output.block1.block1-0...`).

VoVNet. `to_vovnet(state_dict)` returns a VoVNet-v2 (eSE) state dict in
vovnet-detectron2's naming (youngwanLEE/vovnet-detectron2, `vovnet/vovnet.py`),
which `tools/convert_checkpoint.vovnet_targets` reads; s = stage 2..5, m =
module 1.., i = layer 0..L-1, n = stem conv 1..3:

  stem.stem_{n}/conv, /norm  (or, depthwise: /dw_conv3x3, /pw_conv1x1,
    /pw_norm; not for n = 1)
  stage{s}.OSA{s}_{m}.layers.{i}.OSA{s}_{m}_{i}/conv, /norm  (or /dw_conv3x3,
    /pw_conv1x1, /pw_norm)
  stage{s}.OSA{s}_{m}.conv_reduction.OSA{s}_{m}_reduction_0/conv, /norm
    (depthwise variants, where the module input is wider than its convs)
  stage{s}.OSA{s}_{m}.concat.OSA{s}_{m}_concat/conv, /norm
  stage{s}.OSA{s}_{m}.ese.fc  (weight and bias)
  classifier  (an ImageNet classifier, skipped)

each followed by `.weight` (and, for norms, `.bias`, `.running_mean`,
`.running_var`; `.num_batches_tracked` is skipped by the converter). The
stages' max pools have no weights. Recognised forms (after removing a
`module.` prefix carried by every key, and a `backbone.bottom_up.` or
`backbone.` prefix):

  * vovnet-detectron2's ImageNet weights (`vovnet39_ese_detectron2.pth`
    etc., from its README): keys `stem.stem_{n}/...` or `stage{s}.OSA...`
    as above. Its BatchNorms are detectron2's FrozenBatchNorm2d by default
    (`MODEL.VOVNET.NORM: FrozenBN`), which have the same four tensors and no
    num_batches_tracked. Keys kept as they are. A classifier `classifier.*`
    (VoVNet.pytorch's name), `fc.*` or `head.fc.*` is skipped. Read as
    BGR input with std 1: vovnet-detectron2's configs (`configs/Base-RCNN-
    VoVNet-FPN.yaml`, `faster_rcnn_V_39_FPN_3x.yaml`, ...) load these
    weights as MODEL.WEIGHTS and set neither INPUT.FORMAT nor PIXEL_MEAN /
    PIXEL_STD, so detectron2's defaults apply: BGR 0..255 images,
    PIXEL_MEAN [103.530, 116.280, 123.675], PIXEL_STD [1, 1, 1] ("When
    using pre-trained models in Detectron1 or any MSRA models, std has been
    absorbed into its conv1 weights, so the std needs to be set 1");
    centermask2's and CenterMask's (maskrcnn-benchmark, TO_BGR255) VoVNet
    configs do the same, and vovnet-detectron2 keeps the BNs frozen, so
    the input's scale is not re-learnt. The ImageNet training script
    of these weights is not published (VoVNet.pytorch's, for VoVNet-v1,
    normalises RGB by torchvision's mean and std), so this is what the
    detection code feeds them, not a documented training setting. The mean
    is this project's MEAN_RGB reversed; the converter reverses the stem
    conv's input channels and multiplies them by this project's STDDEV_RGB
    (the std the source does not divide by).
  * timm `ese_vovnet19b_slim_dw`, `ese_vovnet19b_dw`, `ese_vovnet19b_slim`,
    `ese_vovnet19b`, `ese_vovnet39b`, `ese_vovnet57b`, `ese_vovnet99b`
    (huggingface/pytorch-image-models `timm/models/vovnet.py`; pretrained:
    `ese_vovnet19b_dw.ra_in1k`, `ese_vovnet39b.ra_in1k`, .pth or
    .safetensors): `stem.{n-1}.conv|bn|conv_dw|conv_pw`,
    `stages.{s-2}.blocks.{m-1}.conv_mid.{i}.conv|bn|conv_dw|conv_pw`,
    `...conv_reduction.conv|bn`, `...conv_concat.conv|bn`, `...attn.fc`,
    classifier `head.fc` (renamed to `classifier.*`). A `bn` after a
    `conv_dw` / `conv_pw` pair is the `pw_norm`. The same architecture as
    vovnet-detectron2's, stage 2 without a pool in both, except that timm
    puts eSE (`attn`) on the last block of each stage only (`OsaStage`:
    `attn=attn if last_block else ''`); `Form.ese_last_module_only` tells
    the converter, which gives the other eSE modules a gate of exactly 1.
    RGB input with timm's IMAGENET_DEFAULT_MEAN / STD (`_cfg`), as this
    project. VoVNet-v1 (`vovnet39a`, `vovnet57a`: no eSE, no identity
    mapping) and `eca_vovnet39b` are refused.
"""

import dataclasses
import re
from typing import Callable, Dict, List, Optional, Pattern, Sequence, Tuple

import numpy as np

# The renamed ImageNet classifier (`fc.weight`, `fc.bias`).
CLASSIFIER_PREFIX = 'fc.'

_BACKBONE_PREFIX = 'backbone.'
# Prefixes removed when every key carries them: DataParallel's `module.`,
# pycls' `model_state` wrapper flattened into the key.
_WRAPPER_PREFIXES = ('module.', 'model_state.')
# Classifier keys allowed beside `backbone.` (mmpretrain-style classifiers).
_CLASSIFIER_HEADS = ('fc.', 'head.fc.')

_BLOCK = r's(?P<stage>\d+)\.b(?P<block>\d+)'


def _is_classifier(key: str) -> bool:
  return key.startswith(CLASSIFIER_PREFIX)


@dataclasses.dataclass(frozen=True)
class Form:
  """A state dict naming.

  Attributes:
    name: human-readable name of the naming, for log lines.
    bgr: True if the checkpoint's network expects BGR input (the converter
      then reverses the stem conv's input channels for RGB input).
    skipped: whether a key of the renamed dict is deliberately unused (the
      ImageNet classifier).
    input_mean: the per-channel mean (0..255 scale, the checkpoint's channel
      order) the network's input has subtracted, or None for the ImageNet
      mean this project subtracts.
    input_std: likewise the per-channel std its input is divided by, or
      None for the ImageNet std this project divides by.
    ese_last_module_only: (VoVNet) only the last OSA module of each stage
      has eSE weights.
  """
  name: str
  bgr: bool
  skipped: Callable[[str], bool] = _is_classifier
  input_mean: Optional[Tuple[float, float, float]] = None
  input_std: Optional[Tuple[float, float, float]] = None
  ese_last_module_only: bool = False


MMDET_REGNET = Form('MMDetection RegNet', bgr=True)
TORCHVISION_RESNET = Form('torchvision / MMDetection pytorch-style ResNet',
                          bgr=False)
PYCLS_REGNET = Form('pycls RegNet', bgr=True)
TIMM_REGNET = Form('timm RegNet', bgr=False)
FORMS = (MMDET_REGNET, TORCHVISION_RESNET, PYCLS_REGNET, TIMM_REGNET)

# (pattern, replacement) per naming; the first full match renames a key.
_PYCLS_RULES = (
    (r'stem\.conv\.(?P<p>\w+)', 'conv1.{p}'),
    (r'stem\.bn\.(?P<p>\w+)', 'bn1.{p}'),
    (_BLOCK + r'\.proj\.(?P<p>\w+)', 'layer{stage}.{j}.downsample.0.{p}'),
    (_BLOCK + r'\.bn\.(?P<p>\w+)', 'layer{stage}.{j}.downsample.1.{p}'),
    (_BLOCK + r'\.f\.a\.(?P<p>\w+)', 'layer{stage}.{j}.conv1.{p}'),
    (_BLOCK + r'\.f\.a_bn\.(?P<p>\w+)', 'layer{stage}.{j}.bn1.{p}'),
    (_BLOCK + r'\.f\.b\.(?P<p>\w+)', 'layer{stage}.{j}.conv2.{p}'),
    (_BLOCK + r'\.f\.b_bn\.(?P<p>\w+)', 'layer{stage}.{j}.bn2.{p}'),
    (_BLOCK + r'\.f\.c\.(?P<p>\w+)', 'layer{stage}.{j}.conv3.{p}'),
    (_BLOCK + r'\.f\.c_bn\.(?P<p>\w+)', 'layer{stage}.{j}.bn3.{p}'),
    (r'head\.fc\.(?P<p>\w+)', 'fc.{p}'),
)
_TIMM_RULES = (
    (r'stem\.conv\.(?P<p>\w+)', 'conv1.{p}'),
    (r'stem\.bn\.(?P<p>\w+)', 'bn1.{p}'),
    (_BLOCK + r'\.conv(?P<i>[123])\.conv\.(?P<p>\w+)',
     'layer{stage}.{j}.conv{i}.{p}'),
    (_BLOCK + r'\.conv(?P<i>[123])\.bn\.(?P<p>\w+)',
     'layer{stage}.{j}.bn{i}.{p}'),
    (_BLOCK + r'\.downsample\.conv\.(?P<p>\w+)',
     'layer{stage}.{j}.downsample.0.{p}'),
    (_BLOCK + r'\.downsample\.bn\.(?P<p>\w+)',
     'layer{stage}.{j}.downsample.1.{p}'),
    (r'head\.fc\.(?P<p>\w+)', 'fc.{p}'),
)
_COMPILED = {
    PYCLS_REGNET.name: [(re.compile(p), r) for p, r in _PYCLS_RULES],
    TIMM_REGNET.name: [(re.compile(p), r) for p, r in _TIMM_RULES],
}

# Keys that identify a naming (any one of them suffices).
_PYCLS_MARK = re.compile(_BLOCK + r'\.f\.[abc](_bn)?\.')
_TIMM_MARK = re.compile(_BLOCK + r'\.conv[123]\.(conv|bn)\.')
_MMDET_MARK = re.compile(r'layer\d+\.\d+\.(conv[123]|bn[123]|downsample)\.')


def _sample(keys: Sequence[str], n: int = 8) -> str:
  shown = ', '.join(list(keys)[:n])
  more = len(keys) - n
  return shown + (f', ... ({more} more)' if more > 0 else '')


def _strip_common_prefix(source: Dict[str, np.ndarray],
                         prefix: str) -> Dict[str, np.ndarray]:
  if source and all(k.startswith(prefix) for k in source):
    return {k[len(prefix):]: v for k, v in source.items()}
  return source


def _strip_backbone(source: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """Removes a `backbone.` prefix; refuses keys of other modules."""
  if not any(k.startswith(_BACKBONE_PREFIX) for k in source):
    return source
  others = [k for k in source if not k.startswith(_BACKBONE_PREFIX)]
  foreign = [k for k in others if not k.startswith(_CLASSIFIER_HEADS)]
  if foreign:
    modules = sorted({k.split('.')[0] for k in foreign})
    raise ValueError(
        'The state dict holds a whole model: besides `backbone.*` it has '
        f'{len(foreign)} key(s) of other modules ({", ".join(modules)}; e.g. '
        f'{_sample(foreign, 4)}). Convert a whole detector with '
        '--part=model; --part=backbone reads ImageNet backbone weights.')
  out = {}
  for key, value in source.items():
    if key.startswith(_BACKBONE_PREFIX):
      key = key[len(_BACKBONE_PREFIX):]
    elif key.startswith('head.'):
      key = key[len('head.'):]
    if key in out:
      raise ValueError(f'Key {key!r} appears twice once `backbone.` / '
                       '`head.` are removed.')
    out[key] = value
  return out


def _rename_key(key: str, rules: Sequence[Tuple[Pattern[str], str]]
                ) -> Optional[str]:
  """`key` renamed by the first rule that matches it fully, or None."""
  for pattern, replacement in rules:
    match = pattern.fullmatch(key)
    if not match:
      continue
    fields = match.groupdict()
    if 'block' in fields:
      if int(fields['block']) < 1:
        return None  # Blocks are 1-based in these namings.
      fields['j'] = int(fields['block']) - 1
      fields['stage'] = int(fields['stage'])
    return replacement.format(**fields)
  return None


def _renamed_keys(source: Dict[str, np.ndarray], form_name: str,
                  rename_key: Callable[[str], Optional[str]]
                  ) -> Tuple[Dict[str, np.ndarray], List[str]]:
  """(the source under `rename_key`'s names, the keys it has no name for).

  Raises:
    ValueError: if two keys get the same name.
  """
  out, unknown = {}, []
  for key, value in source.items():
    new_key = rename_key(key)
    if new_key is None:
      unknown.append(key)
    elif new_key in out:
      raise ValueError(f'{form_name}: {key!r} and another key both rename '
                       f'to {new_key!r}.')
    else:
      out[new_key] = value
  return out, unknown


def _rename(source: Dict[str, np.ndarray],
            form: Form) -> Dict[str, np.ndarray]:
  """Renames a pycls / timm state dict with the form's rules."""
  rules = _COMPILED[form.name]
  out, unknown = _renamed_keys(source, form.name,
                               lambda key: _rename_key(key, rules))
  if unknown:
    raise ValueError(
        f'The state dict looks like {form.name} naming, but {len(unknown)} '
        f'key(s) are not RegNetX backbone or classifier keys: '
        f'{_sample(unknown)}. (RegNetY / squeeze-excitation weights are not '
        'supported.)')
  return out


def _stem_kernel_size(source: Dict[str, np.ndarray]) -> Optional[int]:
  shape = np.shape(source['conv1.weight'])
  if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3]:
    return None
  return int(shape[2])


def _detect(source: Dict[str, np.ndarray]) -> Optional[Form]:
  """The form of a prefix-free state dict, or None."""
  keys = list(source)
  pycls = 'stem.conv.weight' in source and any(
      _PYCLS_MARK.match(k) for k in keys)
  timm = 'stem.conv.weight' in source and any(
      _TIMM_MARK.match(k) for k in keys)
  mmdet = 'conv1.weight' in source and any(_MMDET_MARK.match(k) for k in keys)
  found = [f for f, hit in ((PYCLS_REGNET, pycls), (TIMM_REGNET, timm),
                            (MMDET_REGNET, mmdet)) if hit]
  if len(found) != 1:
    if len(found) > 1:
      raise ValueError(
          'The state dict mixes namings ('
          + ', '.join(f.name for f in found) + f'); keys: {_sample(keys)}.')
    return None
  if found[0] is not MMDET_REGNET:
    return found[0]
  kernel = _stem_kernel_size(source)
  if kernel == 3:
    return MMDET_REGNET
  if kernel == 7:
    return TORCHVISION_RESNET
  raise ValueError(
      'The state dict has MMDetection / torchvision names but its stem '
      f'`conv1.weight` has shape {tuple(np.shape(source["conv1.weight"]))}; '
      'expected [32, 3, 3, 3] (RegNet) or [64, 3, 7, 7] (ResNet).')


def _supported() -> str:
  return ('MMDetection / open-mmlab RegNetX (conv1 3x3, layer{i}.{j}.*), '
          'torchvision / MMDetection pytorch-style ResNet (conv1 7x7, '
          'layer{i}.{j}.*), pycls RegNetX (stem.conv, s{i}.b{j}.f.a, '
          's{i}.b{j}.proj), timm RegNetX (stem.conv, s{i}.b{j}.conv1.conv, '
          's{i}.b{j}.downsample.conv)')


def to_mmdet(source: Dict[str, np.ndarray]
            ) -> Tuple[Dict[str, np.ndarray], Form]:
  """Renames a backbone state dict to MMDetection's naming.

  Args:
    source: a flat `{name: array}` state dict in one of the supported
      namings (see the module docstring).

  Returns:
    (the state dict with MMDetection names and the same values, its `Form`).
    The ImageNet classifier, if present, is renamed to `fc.*`, which
    `form.skipped` accepts.

  Raises:
    ValueError: an empty or unrecognised state dict (the message lists some
      of its keys and the supported forms), a whole-detector checkpoint, or
      keys that do not belong to the recognised naming.
  """
  if not source:
    raise ValueError('The state dict is empty.')
  for prefix in _WRAPPER_PREFIXES:
    source = _strip_common_prefix(source, prefix)
  source = _strip_backbone(source)
  form = _detect(source)
  if form is None:
    keys = sorted(source)
    raise ValueError(
        f'Unrecognised backbone state dict naming; {len(keys)} keys, e.g. '
        f'{_sample(keys)}. Supported: {_supported()}.')
  if form in (PYCLS_REGNET, TIMM_REGNET):
    return _rename(source, form), form
  return dict(source), form



# ------------------------------------------------------------------ VoVNet

# VoVNet ImageNet classifiers (timm's `head.fc` is renamed `classifier`).
VOVNET_CLASSIFIER_PREFIXES = ('classifier.', 'fc.', 'head.fc.')


def _is_vovnet_classifier(key: str) -> bool:
  return key.startswith(VOVNET_CLASSIFIER_PREFIXES)


# detectron2's default input: BGR, ImageNet mean, std 1 (see the docstring).
_DETECTRON2_BGR_MEAN = (103.530, 116.280, 123.675)
_DETECTRON2_STD = (1., 1., 1.)

VOVNET_DETECTRON2 = Form('vovnet-detectron2 VoVNet', bgr=True,
                         skipped=_is_vovnet_classifier,
                         input_mean=_DETECTRON2_BGR_MEAN,
                         input_std=_DETECTRON2_STD)
TIMM_VOVNET = Form('timm VoVNet', bgr=False, skipped=_is_vovnet_classifier,
                   ese_last_module_only=True)
VOVNET_FORMS = (VOVNET_DETECTRON2, TIMM_VOVNET)

_VOVNET_DETECTRON2_MARK = re.compile(
    r'stem\.stem_[123]/|stage[2-5]\.OSA[2-5]_\d+\.')
_TIMM_VOVNET_MARK = re.compile(
    r'stem\.[012]\.(conv|bn|conv_dw|conv_pw)\.|stages\.[0-3]\.blocks\.\d+\.'
    r'(conv_mid|conv_reduction|conv_concat|attn)\.')

# A timm conv unit: stem conv, OSA layer, reduction or aggregation conv.
_TIMM_VOVNET_UNIT = re.compile(
    r'(?:stem\.(?P<stem>[012])|stages\.(?P<stage>[0-3])\.blocks\.'
    r'(?P<block>\d+)\.(?:conv_mid\.(?P<layer>\d+)|(?P<part>conv_reduction|'
    r'conv_concat)))\.(?P<op>conv|bn|conv_dw|conv_pw)\.(?P<param>\w+)')
_TIMM_VOVNET_ESE = re.compile(
    r'stages\.(?P<stage>[0-3])\.blocks\.(?P<block>\d+)\.attn\.fc\.'
    r'(?P<param>weight|bias)')
_TIMM_VOVNET_HEAD = re.compile(r'head\.fc\.(?P<param>weight|bias)')
# timm op -> vovnet-detectron2 layer suffix (a `bn` depends on the unit).
_TIMM_VOVNET_OPS = {'conv': 'conv', 'conv_dw': 'dw_conv3x3',
                    'conv_pw': 'pw_conv1x1'}


def _timm_vovnet_unit(match) -> Tuple[str, str]:
  """(timm unit prefix, vovnet-detectron2 unit prefix) of a unit match."""
  fields = match.groupdict()
  if fields['stem'] is not None:
    n = int(fields['stem']) + 1
    return f'stem.{fields["stem"]}', f'stem.stem_{n}'
  s, m = int(fields['stage']) + 2, int(fields['block']) + 1
  timm_block = f'stages.{fields["stage"]}.blocks.{fields["block"]}'
  module = f'stage{s}.OSA{s}_{m}'
  if fields['layer'] is not None:
    i = int(fields['layer'])
    return (f'{timm_block}.conv_mid.{i}',
            f'{module}.layers.{i}.OSA{s}_{m}_{i}')
  if fields['part'] == 'conv_reduction':
    return (f'{timm_block}.conv_reduction',
            f'{module}.conv_reduction.OSA{s}_{m}_reduction_0')
  return f'{timm_block}.conv_concat', f'{module}.concat.OSA{s}_{m}_concat'


def _timm_vovnet_key(key: str, source: Dict[str, np.ndarray]
                    ) -> Optional[str]:
  """A timm VoVNet key in vovnet-detectron2's naming, or None."""
  match = _TIMM_VOVNET_UNIT.fullmatch(key)
  if match:
    timm_unit, unit = _timm_vovnet_unit(match)
    op, param = match.group('op'), match.group('param')
    if op == 'bn':
      depthwise = f'{timm_unit}.conv_dw.weight' in source
      layer = 'pw_norm' if depthwise else 'norm'
    else:
      layer = _TIMM_VOVNET_OPS[op]
    return f'{unit}/{layer}.{param}'
  match = _TIMM_VOVNET_ESE.fullmatch(key)
  if match:
    s, m = int(match.group('stage')) + 2, int(match.group('block')) + 1
    return f'stage{s}.OSA{s}_{m}.ese.fc.{match.group("param")}'
  match = _TIMM_VOVNET_HEAD.fullmatch(key)
  if match:
    return f'classifier.{match.group("param")}'
  return None


def _rename_timm_vovnet(source: Dict[str, np.ndarray]
                       ) -> Dict[str, np.ndarray]:
  """A timm `ese_vovnet*` state dict in vovnet-detectron2's naming."""
  if not any(_TIMM_VOVNET_ESE.fullmatch(k) for k in source):
    raise ValueError(
        'The state dict looks like timm VoVNet naming but has no eSE '
        '(`stages.*.blocks.*.attn.fc.*`) weights: VoVNet-v1 (`vovnet39a`, '
        '`vovnet57a`, no eSE and no identity mapping) and eca_vovnet39b are '
        'not supported; use an `ese_vovnet*` checkpoint.')
  out, unknown = _renamed_keys(
      source, TIMM_VOVNET.name, lambda key: _timm_vovnet_key(key, source))
  if unknown:
    raise ValueError(
        f'The state dict looks like {TIMM_VOVNET.name} naming, but '
        f'{len(unknown)} key(s) are not VoVNet-v2 (eSE) backbone or '
        f'classifier keys: {_sample(sorted(unknown))}.')
  return out


def _strip_vovnet_prefix(source: Dict[str, np.ndarray]
                        ) -> Dict[str, np.ndarray]:
  """Removes `backbone.bottom_up.` or `backbone.`; refuses whole detectors.

  Keys outside the prefix may only be a classifier
  (`VOVNET_CLASSIFIER_PREFIXES`), which stay as they are.
  """
  for prefix in ('backbone.bottom_up.', _BACKBONE_PREFIX):
    if not any(k.startswith(prefix) for k in source):
      continue
    others = [k for k in source if not k.startswith(prefix)]
    foreign = [k for k in others
               if not k.startswith(VOVNET_CLASSIFIER_PREFIXES)]
    if foreign:
      modules = sorted({'.'.join(k.split('.')[:2])
                        if k.startswith(_BACKBONE_PREFIX) else k.split('.')[0]
                        for k in foreign})
      raise ValueError(
          f'The state dict holds a whole model: besides `{prefix}*` it has '
          f'{len(foreign)} key(s) of other modules ({", ".join(modules)}; '
          f'e.g. {_sample(sorted(foreign), 4)}). --part=backbone reads '
          'ImageNet VoVNet backbone weights.')
    out = {}
    for key, value in source.items():
      new_key = key[len(prefix):] if key.startswith(prefix) else key
      if new_key in out:
        raise ValueError(f'Key {new_key!r} appears twice once `{prefix}` is '
                         'removed.')
      out[new_key] = value
    return out
  return source


def _supported_vovnet() -> str:
  return ('vovnet-detectron2 (stem.stem_1/conv.weight, stage2.OSA2_1.layers.'
          '0.OSA2_1_0/conv.weight, stage2.OSA2_1.concat.OSA2_1_concat/'
          'norm.weight, stage2.OSA2_1.ese.fc.weight), timm ese_vovnet* '
          '(stem.0.conv.weight, stages.0.blocks.0.conv_mid.0.conv.weight, '
          'stages.0.blocks.0.conv_concat.bn.weight, '
          'stages.0.blocks.0.attn.fc.weight)')


def to_vovnet(source: Dict[str, np.ndarray]
             ) -> Tuple[Dict[str, np.ndarray], Form]:
  """Renames a VoVNet backbone state dict to vovnet-detectron2's naming.

  Args:
    source: a flat `{name: array}` state dict in vovnet-detectron2's or
      timm's `ese_vovnet*` naming (see the module docstring).

  Returns:
    (the state dict in vovnet-detectron2's naming with the same values, its
    `Form`). A classifier, if present, is named `classifier.*` or `fc.*`,
    which `form.skipped` accepts.

  Raises:
    ValueError: an empty or unrecognised state dict (the message lists some
      of its keys and the supported forms), a whole-detector checkpoint, a
      mix of the two namings, or timm keys that are not VoVNet-v2 keys.
  """
  if not source:
    raise ValueError('The state dict is empty.')
  source = _strip_common_prefix(source, 'module.')
  source = _strip_vovnet_prefix(source)
  keys = sorted(source)
  detectron2 = [k for k in keys if _VOVNET_DETECTRON2_MARK.match(k)]
  timm = [k for k in keys if _TIMM_VOVNET_MARK.match(k)]
  if detectron2 and timm:
    raise ValueError(
        f'The state dict mixes namings ({VOVNET_DETECTRON2.name}: '
        f'{_sample(detectron2, 3)}; {TIMM_VOVNET.name}: {_sample(timm, 3)}).')
  if detectron2:
    return dict(source), VOVNET_DETECTRON2
  if timm:
    return _rename_timm_vovnet(source), TIMM_VOVNET
  hint = ''
  try:
    other = _detect(_strip_backbone(dict(source)))
  except ValueError:
    other = None
  if other is not None:
    hint = (f' It looks like {other.name} weights, but the experiment\'s '
            'backbone is a VoVNet.')
  raise ValueError(
      f'Unrecognised VoVNet state dict naming; {len(keys)} keys, e.g. '
      f'{_sample(keys)}. Supported: {_supported_vovnet()}.{hint}')
