"""VoVNet ImageNet weights: tools/convert_checkpoint.py --part=backbone.

State dicts in vovnet-detectron2's and timm's naming are made from a built
VoVNet's (randomised) variables in PyTorch layouts, converted into a fresh
VoVNet, and the two compared: values, and outputs on the same image.
"""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import registry_imports  # pylint: disable=unused-import
from configs import unipercepnet as unipercepnet_cfg
from official.core import exp_factory
from official_ext.vision.modeling.backbones import vovnet
from tools import backbone_namings
from tools import convert_checkpoint
from tools import convert_checkpoint_test
from tools import torch_checkpoint_testutil

_STD = np.asarray(unipercepnet_cfg.STDDEV_RGB, np.float32)
# The VoVNet experiment's own backbone, with convert_checkpoint_test's small
# neck and heads.
_TINY = {
    'task': {
        'model': {'input_size': [64, 64, 3],
                  **convert_checkpoint_test.TINY_NECK_AND_HEADS},
        'annotation_file': '',
    }
}
# vovnet-detectron2 layer -> timm module.
_TIMM_OPS = {'conv': 'conv', 'norm': 'bn', 'dw_conv3x3': 'conv_dw',
             'pw_conv1x1': 'conv_pw', 'pw_norm': 'bn'}


def _backbone(model_id, seed=None):
  backbone = vovnet.VoVNet(
      model_id=model_id,
      input_specs=tf_keras.layers.InputSpec(shape=[None, 64, 64, 3]))
  if seed is not None:
    convert_checkpoint_test._randomise(  # pylint: disable=protected-access
        backbone.variables, seed)
  return backbone


def _torch_layout(variable):
  """A variable's value in PyTorch's layout (C-contiguous, as torch's)."""
  value = variable.numpy()
  if 'depthwise_kernel' in variable.name:  # [kh, kw, C, 1] -> [C, 1, kh, kw]
    value = np.transpose(value, (2, 3, 0, 1))
  elif value.ndim == 4:  # [kh, kw, in, out] -> [out, in, kh, kw]
    value = np.transpose(value, (3, 2, 0, 1))
  return np.ascontiguousarray(value)


def detectron2_state(backbone):
  """vovnet-detectron2's state dict holding `backbone`'s values as they are.

  Keys from the converter's mapping; the stem kernel is not reversed nor
  scaled (a source whose own stem holds these values).
  """
  state = {}
  for target in convert_checkpoint.vovnet_targets(backbone):
    # pylint: disable=protected-access
    for key, variable, _ in convert_checkpoint._expected(target):
      # pylint: enable=protected-access
      assert key not in state
      state[key] = _torch_layout(variable)
  return state


def timm_key(key):
  """A vovnet-detectron2 key in timm's naming (written from timm's code)."""
  match = re.fullmatch(r'stem\.stem_(\d)/(\w+)\.(\w+)', key)
  if match:
    n, op, param = match.groups()
    return f'stem.{int(n) - 1}.{_TIMM_OPS[op]}.{param}'
  match = re.fullmatch(r'stage(\d)\.OSA\d_(\d+)\.(.+)', key)
  stage, module, rest = match.groups()
  block = f'stages.{int(stage) - 2}.blocks.{int(module) - 1}'
  match = re.fullmatch(r'ese\.fc\.(\w+)', rest)
  if match:
    return f'{block}.attn.fc.{match.group(1)}'
  unit, op, param = re.fullmatch(
      r'(layers\.\d+|conv_reduction|concat)\.OSA[\d_]+(?:_\d+|_reduction_0|'
      r'_concat)/(\w+)\.(\w+)', rest).groups()
  unit = {'conv_reduction': 'conv_reduction', 'concat': 'conv_concat'}.get(
      unit, unit.replace('layers.', 'conv_mid.'))
  return f'{block}.{unit}.{_TIMM_OPS[op]}.{param}'


def timm_state(backbone):
  """timm's `ese_vovnet*` state dict of `backbone` (eSE on last modules).

  With timm's classifier and BatchNorm's `num_batches_tracked`.
  """
  last = dict(zip('2345', backbone.architecture.modules_per_stage))
  state = {}
  for key, value in detectron2_state(backbone).items():
    match = re.match(r'stage(\d)\.OSA\d_(\d+)\.ese\.', key)
    if match and int(match.group(2)) != last[match.group(1)]:
      continue
    state[timm_key(key)] = value
    if key.endswith('.running_var'):
      state[timm_key(key).replace('running_var', 'num_batches_tracked')] = (
          np.array(1000, np.int64))
  channels = backbone.output_specs['5'][-1]
  state['head.fc.weight'] = np.ones([1000, channels], np.float32)
  state['head.fc.bias'] = np.ones([1000], np.float32)
  return state


def _gate_one_where_timm_has_no_ese(backbone):
  """Kernel 0, bias 3 on the eSE of every stage's non-last module."""
  names = []
  for stage, count in zip('2345', backbone.architecture.modules_per_stage):
    for m in range(1, count):
      # pylint: disable=protected-access
      fc = backbone.get_layer(f'stage{stage}_OSA{stage}_{m}_ese')._fc
      # pylint: enable=protected-access
      fc.kernel.assign(np.zeros(fc.kernel.shape, np.float32))
      fc.bias.assign(np.full(fc.bias.shape, 3., np.float32))
      names += [fc.kernel.name, fc.bias.name]
  return names


def _image(seed=0):
  return tf.random.stateless_normal([2, 64, 64, 3], [seed, 7])


def _assert_same_outputs(a, b, rtol=1e-5, atol=1e-5):
  for level in ('2', '3', '4', '5'):
    np.testing.assert_allclose(a[level].numpy(), b[level].numpy(), rtol=rtol,
                               atol=atol, err_msg=level)


def _assert_same_variables(a, b, except_names=()):
  assert len(a.variables) == len(b.variables)
  for x, y in zip(a.variables, b.variables):
    assert x.name == y.name
    if x.name not in except_names:
      np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=x.name)


def test_detectron2_names_cover_every_variable_once():
  backbone = _backbone('V-19-slim-dw-eSE')
  state = detectron2_state(backbone)
  assert len(state) == len(backbone.variables)
  # vovnet-detectron2's module names and PyTorch shapes (slim dw: stem
  # 64-64-64, stage conv widths 64/80/96/112, outputs 112/256/384/512).
  expected = {
      'stem.stem_1/conv.weight': (64, 3, 3, 3),
      'stem.stem_1/norm.running_var': (64,),
      'stem.stem_2/dw_conv3x3.weight': (64, 1, 3, 3),
      'stem.stem_2/pw_conv1x1.weight': (64, 64, 1, 1),
      'stem.stem_3/pw_norm.weight': (64,),
      'stage2.OSA2_1.layers.2.OSA2_1_2/dw_conv3x3.weight': (64, 1, 3, 3),
      'stage2.OSA2_1.concat.OSA2_1_concat/conv.weight': (112, 64 + 3 * 64,
                                                         1, 1),
      'stage3.OSA3_1.conv_reduction.OSA3_1_reduction_0/conv.weight': (
          80, 112, 1, 1),
      'stage3.OSA3_1.conv_reduction.OSA3_1_reduction_0/norm.bias': (80,),
      'stage3.OSA3_1.layers.0.OSA3_1_0/pw_norm.running_mean': (80,),
      'stage5.OSA5_1.ese.fc.weight': (512, 512, 1, 1),
      'stage5.OSA5_1.ese.fc.bias': (512,),
  }
  for key, shape in expected.items():
    assert state[key].shape == shape, key
  # Stage 2's input (the stem, 64) is as wide as its convs: no reduction.
  assert not any('OSA2_1.conv_reduction' in k for k in state)


def test_detectron2_weights_read_as_bgr_with_std_one():
  source = _backbone('V-19-slim-dw-eSE', seed=0)
  state = detectron2_state(source)
  state['classifier.weight'] = np.ones([1000, 512], np.float32)
  state['classifier.bias'] = np.ones([1000], np.float32)
  target = _backbone('V-19-slim-dw-eSE')
  names = convert_checkpoint.fill_vovnet(target, state, 'd2.pth')
  assert names == []  # vovnet-detectron2 has every eSE module.

  # The stem kernel: input channels reversed (BGR -> RGB), times the std
  # the source does not divide by; the rest as it was.
  stem = source.get_layer('stem_1_conv').kernel.numpy()
  np.testing.assert_allclose(
      target.get_layer('stem_1_conv').kernel.numpy(),
      stem[:, :, ::-1, :] * _STD[None, None, :, None], rtol=1e-6)
  stem_name = target.get_layer('stem_1_conv').kernel.name
  _assert_same_variables(source, target, except_names=(stem_name,))
  dw = target.get_layer('stage3_OSA3_1_layer1_dw_conv3x3').depthwise_kernel
  np.testing.assert_array_equal(
      dw.numpy()[:, :, :, 0],
      np.transpose(state['stage3.OSA3_1.layers.1.OSA3_1_1/dw_conv3x3.weight']
                   [:, 0], (1, 2, 0)))

  # This project's RGB input, normalised by MEAN_RGB / STDDEV_RGB, gives
  # what the source computes on the same image in BGR minus the mean.
  image = _image()
  _assert_same_outputs(
      target(image, training=False),
      source(tf.reverse(image * _STD, axis=[-1]), training=False))


def test_detectron2_prefixes_are_removed():
  source = _backbone('V-19-slim-dw-eSE', seed=1)
  state = {f'module.backbone.bottom_up.{k}': v
           for k, v in detectron2_state(source).items()}
  renamed, form = backbone_namings.to_vovnet(state)
  assert form is backbone_namings.VOVNET_DETECTRON2
  assert 'stem.stem_1/conv.weight' in renamed
  assert renamed['stage2.OSA2_1.ese.fc.bias'] is state[
      'module.backbone.bottom_up.stage2.OSA2_1.ese.fc.bias']


def test_timm_depthwise_naming():
  source = _backbone('V-19-slim-dw-eSE', seed=2)
  state = timm_state(source)
  assert {'stem.1.conv_dw.weight', 'stem.1.conv_pw.weight',
          'stem.2.bn.running_var', 'stages.1.blocks.0.conv_reduction.conv.'
          'weight', 'stages.0.blocks.0.conv_mid.2.conv_dw.weight',
          'stages.3.blocks.0.attn.fc.bias'} <= set(state)
  renamed, form = backbone_namings.to_vovnet(state)
  assert form is backbone_namings.TIMM_VOVNET
  # A `bn` after conv_dw / conv_pw is the pointwise norm.
  assert renamed['stem.stem_2/pw_norm.weight'] is state['stem.1.bn.weight']
  assert renamed['stem.stem_1/norm.weight'] is state['stem.0.bn.weight']
  assert renamed['classifier.weight'] is state['head.fc.weight']
  target = _backbone('V-19-slim-dw-eSE')
  assert convert_checkpoint.fill_vovnet(target, state, 'timm.pth') == []
  # RGB: nothing reversed nor scaled.
  _assert_same_variables(source, target)
  image = _image(1)
  _assert_same_outputs(target(image, training=False),
                       source(image, training=False), rtol=0, atol=0)


def test_timm_missing_ese_gets_a_gate_of_exactly_one():
  source = _backbone('V-39-eSE', seed=3)
  gate_one = _gate_one_where_timm_has_no_ese(source)
  state = timm_state(source)
  # V-39: 1, 1, 2, 2 modules; timm has eSE on OSA2_1, OSA3_1, OSA4_2, OSA5_2.
  ese = sorted(k for k in state if '.attn.' in k)
  assert ese == sorted(f'stages.{i}.blocks.{b}.attn.fc.{p}'
                       for i, b in ((0, 0), (1, 0), (2, 1), (3, 1))
                       for p in ('weight', 'bias'))
  target = _backbone('V-39-eSE')
  names = convert_checkpoint.fill_vovnet(target, state, 'timm.pth')
  assert sorted(names) == sorted(gate_one) and len(names) == 4
  assert all(re.match(r'stage[45]_OSA[45]_1_ese/(fc/)?(kernel|bias)', n)
             for n in names), names
  _assert_same_variables(source, target)

  features = tf.random.stateless_normal([2, 4, 4, 768], [5, 6]) * 3.
  gated = target.get_layer('stage4_OSA4_1_ese')(features)
  np.testing.assert_array_equal(gated.numpy(), features.numpy())
  # Where timm has eSE, the gate is the source's, not 1.
  last = target.get_layer('stage4_OSA4_2_ese')(features)
  assert not np.allclose(last.numpy(), features.numpy())
  image = _image(2)
  _assert_same_outputs(target(image, training=False),
                       source(image, training=False), rtol=0, atol=0)


def test_missing_and_extra_keys_are_named_and_nothing_is_filled():
  source = _backbone('V-19-slim-dw-eSE', seed=4)
  state = detectron2_state(source)
  del state['stage3.OSA3_1.concat.OSA3_1_concat/norm.running_var']
  state['stage3.OSA3_1.extra.weight'] = np.zeros([2, 2], np.float32)
  state['stage2.OSA2_1.ese.fc.bias'] = np.zeros([7], np.float32)
  target = _backbone('V-19-slim-dw-eSE')
  before = [v.numpy() for v in target.variables]
  with pytest.raises(convert_checkpoint.ConversionError) as error:
    convert_checkpoint.fill_vovnet(target, state, 'd2.pth')
  message = str(error.value)
  assert message.startswith('d2.pth: 3 problem(s)'), message
  assert ('missing source tensor stage3.OSA3_1.concat.OSA3_1_concat/'
          'norm.running_var') in message
  assert ('source tensor stage3.OSA3_1.extra.weight (2, 2) matches no '
          'variable') in message
  assert 'stage2.OSA2_1.ese.fc.bias: shape (7,) does not fit' in message
  for value, v in zip(before, target.variables):
    np.testing.assert_array_equal(value, v.numpy(), err_msg=v.name)


def test_timm_checkpoint_of_another_depth_is_refused():
  """V-19 weights for V-39: the extra modules' variables are listed."""
  state = timm_state(_backbone('V-19-eSE', seed=5))
  with pytest.raises(convert_checkpoint.ConversionError) as error:
    convert_checkpoint.fill_vovnet(_backbone('V-39-eSE'), state, 'v19.pth')
  message = str(error.value)
  assert 'missing source tensor stage4.OSA4_1.layers.3.OSA4_1_3/conv.weight' \
      in message
  assert 'stage4.OSA4_1.concat.OSA4_1_concat/conv.weight: shape' in message


def test_unrecognised_namings_are_refused_with_their_keys():
  regnet = {'conv1.weight': np.zeros([32, 3, 3, 3], np.float32),
            'layer1.0.conv1.weight': np.zeros([32, 32, 1, 1], np.float32)}
  with pytest.raises(ValueError, match=r'Unrecognised VoVNet state dict '
                     r'naming; 2 keys, e\.g\. conv1\.weight, layer1\.0\.'
                     r'conv1\.weight\. Supported: vovnet-detectron2.*It '
                     r'looks like MMDetection RegNet weights'):
    backbone_namings.to_vovnet(regnet)
  with pytest.raises(ValueError, match='empty'):
    backbone_namings.to_vovnet({})

  timm = timm_state(_backbone('V-19-slim-dw-eSE'))
  eca = dict(timm)
  eca['stages.0.blocks.0.attn.conv.weight'] = np.zeros([1, 1, 3])
  with pytest.raises(ValueError, match=r'1 key\(s\) are not VoVNet-v2 .*'
                     r'stages\.0\.blocks\.0\.attn\.conv\.weight'):
    backbone_namings.to_vovnet(eca)
  v1 = {k: v for k, v in timm.items() if '.attn.' not in k}
  with pytest.raises(ValueError, match='VoVNet-v1'):
    backbone_namings.to_vovnet(v1)
  mixed = dict(timm)
  mixed['stem.stem_1/conv.weight'] = np.zeros([64, 3, 3, 3])
  with pytest.raises(ValueError, match='mixes namings'):
    backbone_namings.to_vovnet(mixed)


def test_whole_detectron2_detector_is_refused():
  state = {f'backbone.bottom_up.{k}': v for k, v in detectron2_state(
      _backbone('V-19-slim-dw-eSE')).items()}
  state['backbone.fpn_lateral2.weight'] = np.zeros([256, 112, 1, 1])
  state['roi_heads.box_predictor.cls_score.weight'] = np.zeros([81, 1024])
  with pytest.raises(ValueError, match=r'whole model.*2 key\(s\) of other '
                     r'modules \(backbone\.fpn_lateral2, roi_heads'):
    backbone_namings.to_vovnet(state)


def test_regnet_namings_are_unchanged():
  """The RegNet / ResNet path still refuses VoVNet keys, as before."""
  with pytest.raises(ValueError, match='Unrecognised backbone state dict'):
    backbone_namings.to_mmdet(detectron2_state(_backbone('V-19-slim-dw-eSE')))


def _vovnet_params(model_id=None):
  params = exp_factory.get_exp_config('unipercepnet_vovnet39_coco')
  params.override(_TINY, is_strict=True)
  if model_id:
    params.task.model.backbone.vovnet.model_id = model_id
  return params


def _restored_backbone(params, path):
  params.task.init_checkpoint = path
  params.task.init_checkpoint_modules = 'backbone'
  task, fresh = convert_checkpoint.build_task_and_model(params)
  task.initialize(fresh)
  return fresh.backbone


def test_vovnet_experiment_backbone_for_init_checkpoint(tmp_path):
  params = _vovnet_params('V-19-slim-eSE')
  assert params.task.model.backbone.type == 'vovnet'
  source = _backbone('V-19-slim-eSE', seed=6)
  backbone = convert_checkpoint.convert_backbone(
      params, timm_state(source), 'timm.npz')
  _assert_same_variables(source, backbone)
  path = convert_checkpoint.write_backbone(backbone, str(tmp_path))
  _assert_same_variables(backbone, _restored_backbone(params, path))


@pytest.mark.slow
def test_command_converts_vovnet39_detectron2_pth(tmp_path):
  """A vovnet-detectron2 .pth, through the command, into init_checkpoint."""
  source = _backbone('V-39-eSE', seed=7)
  state = detectron2_state(source)
  checkpoint = torch_checkpoint_testutil.write_torch_file(
      tmp_path / 'vovnet39_ese_detectron2.pth',
      {'model': {k: torch_checkpoint_testutil.tensor(v)
                 for k, v in state.items()}})
  out = tmp_path / 'pretrained'
  result = convert_checkpoint_test._run(  # pylint: disable=protected-access
      [os.path.join(convert_checkpoint_test.ROOT, 'tools',
                    'convert_checkpoint.py'),
       '--part=backbone', '--experiment=unipercepnet_vovnet39_coco',
       f'--params_override={json.dumps(_TINY)}',
       f'--checkpoint={checkpoint}', f'--output_dir={out}'],
      tmp_path)
  assert 'Wrote' in result.stdout
  assert 'vovnet-detectron2 VoVNet naming' in result.stderr

  restored = _restored_backbone(_vovnet_params(), str(out / 'backbone'))
  stem_name = restored.get_layer('stem_1_conv').kernel.name
  _assert_same_variables(source, restored, except_names=(stem_name,))
  np.testing.assert_allclose(
      restored.get_layer('stem_1_conv').kernel.numpy(),
      source.get_layer('stem_1_conv').kernel.numpy()[:, :, ::-1, :] *
      _STD[None, None, :, None], rtol=1e-6)
