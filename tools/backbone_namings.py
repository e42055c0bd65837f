"""Recognises ImageNet backbone state dicts and renames them to MMDetection's.

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
"""

import dataclasses
import re
from typing import Callable, Dict, Optional, Pattern, Sequence, Tuple

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
  """
  name: str
  bgr: bool
  skipped: Callable[[str], bool] = _is_classifier


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


def _rename(source: Dict[str, np.ndarray],
            form: Form) -> Dict[str, np.ndarray]:
  """Renames a pycls / timm state dict with the form's rules."""
  rules = _COMPILED[form.name]
  out, unknown = {}, []
  for key, value in source.items():
    new_key = _rename_key(key, rules)
    if new_key is None:
      unknown.append(key)
    elif new_key in out:
      raise ValueError(f'{form.name}: {key!r} and another key both rename '
                       f'to {new_key!r}.')
    else:
      out[new_key] = value
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

