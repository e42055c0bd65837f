"""Tests for tools/backbone_namings.py: form detection and renaming."""

import itertools
import re
from typing import Dict, Iterator, List, Tuple

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from official_ext.vision.modeling.backbones import regnet
from tools import backbone_namings
from tools import convert_checkpoint

_BN_PARAMS = ('weight', 'bias', 'running_mean', 'running_var',
              'num_batches_tracked')
_BN_VALUES = ('weight', 'bias', 'running_mean', 'running_var')
# (stage, number of blocks); the first block of a stage has a projection.
_LAYOUT = ((1, 2), (2, 1))


def _values() -> Iterator[np.ndarray]:
  """Distinct small arrays: the k-th is [k, k + 0.5]."""
  for k in itertools.count(1):
    yield np.array([k, k + 0.5], np.float32)


def _mmdet_keys() -> List[str]:
  """Every key of `_LAYOUT` (and the classifier) in MMDetection's naming."""
  keys = ['conv1.weight'] + [f'bn1.{p}' for p in _BN_PARAMS]
  for stage, blocks in _LAYOUT:
    for j in range(blocks):
      p = f'layer{stage}.{j}'
      for i in (1, 2, 3):
        keys.append(f'{p}.conv{i}.weight')
        keys += [f'{p}.bn{i}.{q}' for q in _BN_PARAMS]
      if j == 0:
        keys.append(f'{p}.downsample.0.weight')
        keys += [f'{p}.downsample.1.{q}' for q in _BN_PARAMS]
  return keys + ['fc.weight', 'fc.bias']


_PYCLS_MODULES = {'conv1': 'f.a', 'bn1': 'f.a_bn', 'conv2': 'f.b',
                  'bn2': 'f.b_bn', 'conv3': 'f.c', 'bn3': 'f.c_bn',
                  'downsample.0': 'proj', 'downsample.1': 'bn'}
_TIMM_MODULES = {'conv1': 'conv1.conv', 'bn1': 'conv1.bn',
                 'conv2': 'conv2.conv', 'bn2': 'conv2.bn',
                 'conv3': 'conv3.conv', 'bn3': 'conv3.bn',
                 'downsample.0': 'downsample.conv',
                 'downsample.1': 'downsample.bn'}


def _renamed_key(mmdet_key: str, modules: Dict[str, str]) -> str:
  """An MMDetection RegNet key in pycls' or timm's naming (1-based blocks)."""
  stem = {'conv1.': 'stem.conv.', 'bn1.': 'stem.bn.', 'fc.': 'head.fc.'}
  for old, new in stem.items():
    if mmdet_key.startswith(old):
      return new + mmdet_key[len(old):]
  stage, block, module, param = re.fullmatch(
      r'layer(\d)\.(\d+)\.(\w+(?:\.\d)?)\.(\w+)', mmdet_key).groups()
  return f's{stage}.b{int(block) + 1}.{modules[module]}.{param}'


def _pycls_key(mmdet_key: str) -> str:
  return _renamed_key(mmdet_key, _PYCLS_MODULES)


def timm_key(mmdet_key: str) -> str:
  """The timm name of an MMDetection RegNet key."""
  return _renamed_key(mmdet_key, _TIMM_MODULES)


def _state_dicts(to_source, stem_kernel: int = 3
                ) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
  """(source state dict, the expected MMDetection-named state dict)."""
  values = _values()
  expected = {}
  for key in _mmdet_keys():
    expected[key] = next(values)
  expected['conv1.weight'] = np.arange(
      32 * 3 * stem_kernel ** 2, dtype=np.float32).reshape(
          32, 3, stem_kernel, stem_kernel)
  return {to_source(k): v for k, v in expected.items()}, expected


def _assert_renamed(renamed, expected):
  assert sorted(renamed) == sorted(expected)
  for key, value in expected.items():
    assert renamed[key] is value, key


def _assert_skips_only_classifier(form, renamed):
  for key in renamed:
    assert form.skipped(key) == (key in ('fc.weight', 'fc.bias')), key


# ------------------------------------------------------------------ forms


def test_pycls_regnet_is_renamed_and_bgr():
  source, expected = _state_dicts(_pycls_key)
  assert 's2.b1.f.b.weight' in source
  assert 's1.b2.f.c_bn.running_var' in source
  assert 's1.b1.proj.weight' in source and 's1.b1.bn.weight' in source

  renamed, form = backbone_namings.to_mmdet(source)

  _assert_renamed(renamed, expected)
  assert renamed['layer2.0.conv2.weight'] is source['s2.b1.f.b.weight']
  assert renamed['layer1.1.bn3.running_var'] is source[
      's1.b2.f.c_bn.running_var']
  assert renamed['layer1.0.downsample.0.weight'] is source['s1.b1.proj.weight']
  assert renamed['layer1.0.downsample.1.weight'] is source['s1.b1.bn.weight']
  assert renamed['conv1.weight'] is source['stem.conv.weight']
  assert renamed['fc.bias'] is source['head.fc.bias']
  assert form.name == 'pycls RegNet'
  assert form.bgr is True
  _assert_skips_only_classifier(form, renamed)


def test_timm_regnet_is_renamed_and_rgb():
  source, expected = _state_dicts(timm_key)
  assert 's2.b1.conv2.conv.weight' in source
  assert 's1.b1.downsample.bn.running_mean' in source

  renamed, form = backbone_namings.to_mmdet(source)

  _assert_renamed(renamed, expected)
  assert renamed['layer2.0.conv2.weight'] is source['s2.b1.conv2.conv.weight']
  assert renamed['layer1.1.bn1.bias'] is source['s1.b2.conv1.bn.bias']
  assert renamed['layer1.0.downsample.1.running_mean'] is source[
      's1.b1.downsample.bn.running_mean']
  assert renamed['bn1.running_var'] is source['stem.bn.running_var']
  assert form.name == 'timm RegNet'
  assert form.bgr is False
  _assert_skips_only_classifier(form, renamed)


def test_mmdet_regnet_is_kept_and_bgr():
  source, expected = _state_dicts(lambda k: k, stem_kernel=3)

  renamed, form = backbone_namings.to_mmdet(source)

  _assert_renamed(renamed, expected)
  assert form.name == 'MMDetection RegNet'
  assert form.bgr is True
  _assert_skips_only_classifier(form, renamed)


def test_torchvision_resnet_is_kept_and_rgb():
  source, expected = _state_dicts(lambda k: k, stem_kernel=7)
  source['conv1.weight'] = expected['conv1.weight'] = np.ones(
      (64, 3, 7, 7), np.float32)

  renamed, form = backbone_namings.to_mmdet(source)

  _assert_renamed(renamed, expected)
  assert form.name.startswith('torchvision')
  assert form.bgr is False
  _assert_skips_only_classifier(form, renamed)


@pytest.mark.parametrize('prefix', ['module.', 'model_state.'])
def test_wrapper_prefix_on_every_key_is_removed(prefix):
  source, expected = _state_dicts(_pycls_key)
  renamed, form = backbone_namings.to_mmdet(
      {prefix + k: v for k, v in source.items()})
  _assert_renamed(renamed, expected)
  assert form.name == 'pycls RegNet'


def test_backbone_prefix_is_removed():
  source, expected = _state_dicts(lambda k: k)
  prefixed = {('' if k.startswith('fc.') else 'backbone.') + k: v
              for k, v in source.items()}
  renamed, form = backbone_namings.to_mmdet(prefixed)
  _assert_renamed(renamed, expected)
  assert form.name == 'MMDetection RegNet'


def test_classifier_head_beside_backbone_is_renamed_and_skipped():
  source, expected = _state_dicts(lambda k: k, stem_kernel=7)
  prefixed = {('head.' if k.startswith('fc.') else 'backbone.') + k: v
              for k, v in source.items()}
  renamed, form = backbone_namings.to_mmdet(prefixed)
  _assert_renamed(renamed, expected)
  assert form.skipped('fc.weight') and not form.skipped('bn1.weight')


def test_form_is_a_frozen_dataclass():
  _, form = backbone_namings.to_mmdet(_state_dicts(timm_key)[0])
  with pytest.raises(AttributeError):
    form.bgr = True  # pytype: disable=attribute-error


# ----------------------------------------------------------------- errors


def test_whole_detector_is_refused():
  source, _ = _state_dicts(lambda k: k)
  detector = {f'backbone.{k}': v for k, v in source.items()}
  detector['neck.lateral_conv.weight'] = np.zeros((2,), np.float32)
  detector['bbox_head.tood_cls.bias'] = np.zeros((2,), np.float32)
  with pytest.raises(ValueError, match=r'--part=model') as error:
    backbone_namings.to_mmdet(detector)
  assert 'bbox_head' in str(error.value) and 'neck' in str(error.value)


def test_unknown_form_lists_keys_and_supported_forms():
  source = {'patch_embed.proj.weight': np.zeros((2,), np.float32),
            'blocks.0.attn.qkv.weight': np.zeros((2,), np.float32)}
  with pytest.raises(ValueError, match='Unrecognised') as error:
    backbone_namings.to_mmdet(source)
  message = str(error.value)
  assert 'patch_embed.proj.weight' in message
  for name in ('pycls', 'timm', 'torchvision', 'MMDetection'):
    assert name in message


def test_foreign_key_in_a_recognised_form_is_refused():
  source, _ = _state_dicts(_pycls_key)
  source['s1.b1.f.se.f_ex.0.weight'] = np.zeros((2,), np.float32)  # RegNetY.
  with pytest.raises(ValueError, match=r's1\.b1\.f\.se\.f_ex\.0\.weight'):
    backbone_namings.to_mmdet(source)


def test_unexpected_stem_kernel_is_refused():
  source, _ = _state_dicts(lambda k: k, stem_kernel=5)
  with pytest.raises(ValueError, match=r'\(32, 3, 5, 5\)'):
    backbone_namings.to_mmdet(source)


def test_empty_state_dict_is_refused():
  with pytest.raises(ValueError, match='empty'):
    backbone_namings.to_mmdet({})


# ------------------------------------------------------------- end to end


def _block_layers(backbone: tf_keras.Model
                 ) -> Iterator[Tuple[str, tf_keras.layers.Layer, str]]:
  """(MMDetection prefix, Keras layer, kind) of every conv and norm."""
  yield 'conv1', backbone.get_layer('stem_conv'), 'conv'
  yield 'bn1', backbone.get_layer('stem_norm'), 'bn'
  for layer in backbone.layers:
    match = re.fullmatch(r'stage(\d+)_block(\d+)', layer.name)
    if not match:
      continue
    p = f'layer{match.group(1)}.{match.group(2)}'
    # pylint: disable=protected-access
    for i in (1, 2, 3):
      yield f'{p}.conv{i}', getattr(layer, f'_conv{i}'), 'conv'
      yield f'{p}.bn{i}', getattr(layer, f'_norm{i}'), 'bn'
    if layer._config_dict['use_projection']:
      yield f'{p}.downsample.0', layer._shortcut, 'conv'
      yield f'{p}.downsample.1', layer._shortcut_norm, 'bn'
    # pylint: enable=protected-access


def _export(backbone, to_source, bgr: bool) -> Dict[str, np.ndarray]:
  """The backbone's weights as a PyTorch state dict in another naming."""
  out = {}
  for prefix, layer, kind in _block_layers(backbone):
    if kind == 'conv':
      assert not layer.use_bias
      weight = np.transpose(layer.kernel.numpy(), (3, 2, 0, 1))
      if bgr and prefix == 'conv1':
        weight = weight[:, ::-1]  # The source network reads BGR.
      out[f'{prefix}.weight'] = weight
    else:
      for param, variable in zip(
          _BN_VALUES, (layer.gamma, layer.beta, layer.moving_mean,
                       layer.moving_variance)):
        out[f'{prefix}.{param}'] = variable.numpy()
      out[f'{prefix}.num_batches_tracked'] = np.array(7, np.int64)
  out['fc.weight'] = np.ones((10, 8), np.float32)
  out['fc.bias'] = np.ones((10,), np.float32)
  return {to_source(k): v for k, v in out.items()}


@pytest.mark.parametrize('to_source', [_pycls_key, timm_key],
                         ids=['pycls', 'timm'])
def test_converter_restores_backbone_from_renamed_state_dict(to_source):
  backbone = regnet.RegNet(
      model_id='regnetx_200mf', channel_attention=True,
      input_specs=tf_keras.layers.InputSpec(shape=[None, 64, 64, 3]))
  attention = {v.ref() for v in
               convert_checkpoint.attention_variables(backbone)}
  assert attention
  others = [v for v in backbone.variables if v.ref() not in attention]
  rng = np.random.default_rng(0)
  for variable in backbone.variables:
    variable.assign(rng.normal(size=variable.shape).astype(np.float32))
  originals = {v.ref(): v.numpy() for v in backbone.variables}
  bgr = to_source is _pycls_key
  source = _export(backbone, to_source, bgr=bgr)
  for variable in others:
    variable.assign(tf.zeros_like(variable))

  renamed, form = backbone_namings.to_mmdet(source)
  assert form.bgr is bgr
  convert_checkpoint.assign(
      convert_checkpoint.backbone_targets(
          backbone, rgb_from_bgr=form.bgr, with_attention=False),
      renamed, others, 'test', skipped=form.skipped)

  for variable in backbone.variables:
    np.testing.assert_array_equal(variable.numpy(),
                                  originals[variable.ref()], variable.name)
  stem = backbone.get_layer('stem_conv').kernel.numpy()
  source_stem = source[to_source('conv1.weight')]
  red = 2 if bgr else 0  # Index of the red input channel in the source.
  np.testing.assert_array_equal(stem[:, :, 0, :],
                                np.transpose(source_stem[:, red], (1, 2, 0)))
