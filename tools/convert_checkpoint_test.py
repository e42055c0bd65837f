"""tools/convert_checkpoint.py: mapping, error reports, and the commands."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
import yaml

import registry_imports  # pylint: disable=unused-import
from common import testing
from official.core import exp_factory
from official_ext.vision.modeling.backbones import ca_resnet
from tools import backbone_namings_test
from tools import convert_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A small neck and heads, for the conversion tests of every backbone.
TINY_NECK_AND_HEADS = {
    'decoder': {'dilated_encoder': {'num_filters': 16,
                                    'bottleneck_filters': 8}},
    'head': {'num_stacked_convs': 2, 'num_filters': 8,
             'attention_channels': 4, 'branch_channels': 8},
    'mask_head': {'num_convs': 1, 'num_filters': 8},
}
_TINY = {
    'task': {
        'model': {
            'num_classes': 3,
            'input_size': [64, 96, 3],
            'backbone': {'type': 'regnet',
                         'regnet': {'model_id': 'regnetx_200mf',
                                    'channel_attention': True}},
            **TINY_NECK_AND_HEADS,
        },
        'annotation_file': '',
    }
}


def _tiny_params():
  params = exp_factory.get_exp_config('unipercepnet_coco')
  params.override(_TINY, is_strict=True)
  params.task.category_ids = [3, 7, 9]
  return params


def _to_torch(target, variable, value):
  """A variable's value in the reference's layout (inverse of the tool)."""
  kind = target.kind
  if kind in ('bn', 'scale') or value.ndim == 1:
    out = value
  elif kind == 'dense':
    out = value.T[:, :, None, None]
  else:  # conv: [kh, kw, in, out] -> [out, in, kh, kw]; deconv alike.
    out = np.transpose(value, (3, 2, 0, 1))
  del variable
  if target.out_order is not None:
    restored = np.empty_like(out)
    restored[target.out_order] = out
    out = restored
  if target.in_order is not None and out.ndim == 4:
    restored = np.empty_like(out)
    restored[:, target.in_order] = out
    out = restored
  return out


def reference_state_dict(targets):
  """The state dict the reference would hold for these layers' values."""
  state = {}
  for target in targets:
    # pylint: disable=protected-access
    for key, variable, _ in convert_checkpoint._expected(target):
      state[key] = _to_torch(target, variable, variable.numpy())
    # pylint: enable=protected-access
  return state


def _randomise(variables, seed):
  """Distinct values everywhere, small enough to keep activations finite."""
  rng = np.random.default_rng(seed)
  for v in variables:
    if 'moving_variance' in v.name or 'gamma' in v.name:
      value = rng.uniform(0.5, 1.5, v.shape)
    else:
      value = rng.normal(0., 0.1, v.shape)
    v.assign(value.astype(np.float32))


def test_model_round_trip_through_the_reference_layout():
  params = _tiny_params()
  _, source = convert_checkpoint.build_task_and_model(params)
  _randomise(source.variables, 0)
  state = reference_state_dict(convert_checkpoint.model_targets(source))
  # One tensor per variable, plus nothing else.
  assert len(state) == len(source.variables)
  # The reference's stem reads BGR, its boxes are x-first.
  np.testing.assert_array_equal(
      state['backbone.conv1.weight'][:, ::-1],
      np.transpose(source.backbone.get_layer('stem_conv').kernel.numpy(),
                   (3, 2, 0, 1)))
  _, target = convert_checkpoint.convert_model(params, state)
  for a, b in zip(source.variables, target.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
  images = tf.random.stateless_normal([1, 64, 96, 3], [1, 2])
  np.testing.assert_allclose(
      source(images, training=False)['detection_boxes'].numpy(),
      target(images, training=False)['detection_boxes'].numpy(), rtol=1e-6)


def test_resnet50_backbone_naming():
  backbone = ca_resnet.CAResNet(
      model_id=50, channel_attention=True,
      input_specs=tf_keras.layers.InputSpec(shape=[None, 64, 64, 3]))
  targets = convert_checkpoint.backbone_targets(backbone, 'backbone.')
  keys = set(reference_state_dict(targets))
  # mmdet's ResNet-50 names: 3/4/6/3 blocks, projection on each first.
  assert {'backbone.conv1.weight', 'backbone.bn1.running_var',
          'backbone.layer3.5.conv3.weight',
          'backbone.layer4.0.downsample.0.weight',
          'backbone.layer4.0.downsample.1.bias',
          'backbone.layer1.2.channel_attention.excitation.1.conv.bias'} <= keys
  assert not any(k.startswith('backbone.layer3.6.') for k in keys)
  assert not any('layer1.1.downsample' in k for k in keys)
  trainable = sum(int(np.prod(v.shape)) for v in backbone.trainable_variables)
  assert len(keys) == len(backbone.variables)
  assert trainable > 0


def test_errors_list_every_problem():
  params = _tiny_params()
  _, model = convert_checkpoint.build_task_and_model(params)
  state = reference_state_dict(convert_checkpoint.model_targets(model))
  del state['neck.fpn_norm.running_var']
  state['bbox_head.tood_cls.bias'] = np.zeros([7], np.float32)
  state['roi_head.extra.weight'] = np.zeros([2, 2], np.float32)
  state['neck.lateral_norm.num_batches_tracked'] = np.array(1, np.int64)
  with pytest.raises(convert_checkpoint.ConversionError) as error:
    convert_checkpoint.convert_model(params, state, 'x.pth')
  message = str(error.value)
  assert message.startswith('x.pth: 3 problem(s)')
  assert 'missing source tensor neck.fpn_norm.running_var' in message
  assert 'bbox_head.tood_cls.bias: shape (7,) does not fit' in message
  assert 'source tensor roi_head.extra.weight (2, 2) matches no variable' in (
      message)
  assert 'num_batches_tracked' not in message


def _run(args, cwd):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=ROOT)
  result = subprocess.run([sys.executable] + args, cwd=cwd, env=env,
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.mark.slow
def test_commands_convert_and_export(tmp_path):
  """The tool's command writes what export and training read."""
  params = _tiny_params()
  _, model = convert_checkpoint.build_task_and_model(params)
  _randomise(model.variables, 1)
  state = reference_state_dict(convert_checkpoint.model_targets(model))
  np.savez(tmp_path / 'weights.npz', **state)
  config = tmp_path / 'tiny.yaml'
  config.write_text(yaml.safe_dump(params.as_dict()))
  out = tmp_path / 'converted'
  _run([os.path.join(ROOT, 'tools', 'convert_checkpoint.py'),
        f'--checkpoint={tmp_path / "weights.npz"}',
        f'--config_file={config}', f'--output_dir={out}'], tmp_path)
  assert (out / 'params.yaml').exists()
  assert tf.train.latest_checkpoint(str(out)).endswith('ckpt-0')
  _run([os.path.join(ROOT, 'serving', 'export_saved_model.py'),
        f'--config_file={out / "params.yaml"}', f'--checkpoint_path={out}',
        f'--export_dir={tmp_path / "export"}'], tmp_path)
  imported = tf.saved_model.load(str(tmp_path / 'export' / 'saved_model'))
  image = np.random.default_rng(0).integers(0, 255, [1, 64, 96, 3], np.uint8)
  served = imported.signatures['serving_default'](inputs=tf.constant(image))
  # The EMA averages written are the converted weights: the same detections.
  module_boxes = model(
      tf.constant(((image - np.array([123.675, 116.28, 103.53])) /
                   np.array([58.395, 57.12, 57.375])).astype(np.float32)),
      training=False)['detection_boxes'].numpy()
  np.testing.assert_allclose(served['detection_boxes'].numpy(), module_boxes,
                             rtol=1e-4, atol=1e-2)
  classes = served['detection_classes'].numpy()
  assert set(classes[classes > 0].tolist()) <= {3, 7, 9}


def _mask_iou(a, b):
  inter = np.logical_and(a, b).sum()
  union = np.logical_or(a, b).sum()
  return inter / union if union else 1.


@pytest.mark.slow
def test_reference_weights_end_to_end(refparity_dir, tmp_path):
  """Fixture weights -> converter -> SavedModel -> the reference's image.

  The reference's final detections (original-image pixels) and binary
  masks, against `serving_default` run on the raw image: the export must
  resize and pad as the reference's test pipeline does.
  """
  from modeling import refparity_test  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'converted'
  _run([os.path.join(ROOT, 'tools', 'convert_checkpoint.py'),
        f'--checkpoint={os.path.join(refparity_dir, "weights.safetensors")}',
        '--experiment=unipercepnet_coco', f'--output_dir={out}'], tmp_path)
  _run([os.path.join(ROOT, 'serving', 'export_saved_model.py'),
        f'--config_file={out / "params.yaml"}', f'--checkpoint_path={out}',
        f'--export_dir={tmp_path / "export"}',
        '--input_image_size=800,1344', '--full_size_masks'], tmp_path)
  fixture = np.load(os.path.join(refparity_dir, 'image.npz'))
  imported = tf.saved_model.load(str(tmp_path / 'export' / 'saved_model'))
  served = imported.signatures['serving_default'](
      inputs=tf.constant(fixture['image'][None]))
  assert int(served['num_detections'][0]) == 100
  boxes = served['detection_boxes'].numpy()[0][:, [1, 0, 3, 2]]
  # COCO's category ids (1..90) back to the reference's 0-based labels.
  ids = list(exp_factory.get_exp_config('unipercepnet_coco').task.category_ids)
  labels = np.array([ids.index(c) for c in
                     served['detection_classes'].numpy()[0]])
  index, iou = refparity_test.match_detections(
      fixture['bboxes'], fixture['labels'], boxes, labels)
  matched = iou >= 0.9
  assert matched.sum() >= 90
  assert (iou >= 0.99).sum() >= 90
  ref_masks = np.unpackbits(fixture['masks_packed'], axis=-1)[..., :640] > 0
  masks = served['detection_masks'].numpy()[0] > 0
  assert masks.shape == ref_masks.shape == (100, 427, 640)
  mask_iou = [_mask_iou(masks[j], ref_masks[i])
              for i, j in enumerate(index) if matched[i]]
  assert np.median(mask_iou) >= 0.9
  print(f'matched {matched.sum()} / 100 (IoU >= 0.9), '
        f'{(iou >= 0.999).sum()} at IoU >= 0.999, min IoU {iou.min():.5f}; '
        f'mask IoU median {np.median(mask_iou):.5f}, min {min(mask_iou):.5f}')


def test_imagenet_backbone_for_init_checkpoint(tmp_path):
  params = _tiny_params()
  _, model = convert_checkpoint.build_task_and_model(params)
  _randomise(model.backbone.variables, 2)
  mmdet_named = reference_state_dict(convert_checkpoint.backbone_targets(
      model.backbone, with_attention=False))
  state = {backbone_namings_test.timm_key(k): v
           for k, v in mmdet_named.items()}
  assert 's2.b1.conv2.conv.weight' in state and 'stem.bn.running_var' in state
  state['head.fc.weight'] = np.zeros([1000, 368], np.float32)
  state['head.fc.bias'] = np.zeros([1000], np.float32)
  backbone = convert_checkpoint.convert_backbone(params, state, 'timm.npz')
  path = convert_checkpoint.write_backbone(backbone, str(tmp_path))

  params.task.init_checkpoint = path
  params.task.init_checkpoint_modules = 'backbone'
  task, fresh = convert_checkpoint.build_task_and_model(params)
  attention = {v.ref() for v in convert_checkpoint.attention_variables(
      fresh.backbone)}
  task.initialize(fresh)
  for a, b in zip(model.backbone.variables, fresh.backbone.variables):
    if b.ref() not in attention:  # Channel attention: not in ImageNet files.
      np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=b.name)


def _params_fail_halfway(params, model_dir):
  """serialize_config, failing after the checkpoint was written."""
  del params
  assert sorted(os.listdir(model_dir)) == [
      'checkpoint', 'ckpt-0.data-00000-of-00001', 'ckpt-0.index']
  with open(os.path.join(model_dir, 'params.yaml'), 'w') as f:
    f.write('task:\n  model: {')
  raise OSError('disk full')


def test_converted_model_appears_only_complete(tmp_path, monkeypatch):
  params = _tiny_params()
  task, model = convert_checkpoint.build_task_and_model(params)
  out = str(tmp_path / 'converted')
  serialize_config = convert_checkpoint.train_utils.serialize_config
  monkeypatch.setattr(convert_checkpoint.train_utils, 'serialize_config',
                      _params_fail_halfway)
  with pytest.raises(OSError, match='disk full'):
    convert_checkpoint.write_model(task, model, params, out)
  assert os.listdir(tmp_path) == []

  monkeypatch.setattr(convert_checkpoint.train_utils, 'serialize_config',
                      serialize_config)
  assert convert_checkpoint.write_model(task, model, params, out) == (
      os.path.join(out, 'ckpt-0'))
  assert tf.train.latest_checkpoint(out) == os.path.join(out, 'ckpt-0')
  with open(os.path.join(out, 'source.pth'), 'w') as f:
    f.write('the user\'s')
  before = testing.files_under(out)
  assert sorted(before) == [
      'checkpoint', 'ckpt-0.data-00000-of-00001', 'ckpt-0.index',
      'params.yaml', 'source.pth']
  assert yaml.safe_load(before['params.yaml'])['task']['category_ids'] == [
      3, 7, 9]

  # A failed conversion into it leaves it as it was; a complete one
  # replaces the conversion's files, and the others stay.
  _randomise(model.variables, 3)
  monkeypatch.setattr(convert_checkpoint.train_utils, 'serialize_config',
                      _params_fail_halfway)
  with pytest.raises(OSError, match='disk full'):
    convert_checkpoint.write_model(task, model, params, out)
  assert testing.files_under(out) == before
  monkeypatch.setattr(convert_checkpoint.train_utils, 'serialize_config',
                      serialize_config)
  convert_checkpoint.write_model(task, model, params, out)
  after = testing.files_under(out)
  assert sorted(after) == sorted(before)
  assert after['source.pth'] == before['source.pth']
  assert after['ckpt-0.data-00000-of-00001'] != (
      before['ckpt-0.data-00000-of-00001'])
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(out))
  kernel = model.backbone.get_layer('stem_conv').kernel
  names = [n for n, _ in tf.train.list_variables(out)
           if n.startswith('model/') and n.endswith('VARIABLE_VALUE')]
  assert any(np.array_equal(reader.get_tensor(n), kernel.numpy())
             for n in names)


def test_backbone_checkpoint_appears_only_complete(tmp_path, monkeypatch):
  _, model = convert_checkpoint.build_task_and_model(_tiny_params())
  backbone = model.backbone
  out = tmp_path / 'pretrained'
  write = tf.train.Checkpoint.write

  def data_then_fail(checkpoint, file_prefix, *args, **kwargs):
    del checkpoint, args, kwargs
    with open(f'{file_prefix}.data-00000-of-00001', 'wb') as f:
      f.write(b'half')
    raise OSError('disk full')

  monkeypatch.setattr(tf.train.Checkpoint, 'write', data_then_fail)
  with pytest.raises(OSError, match='disk full'):
    convert_checkpoint.write_backbone(backbone, str(out))
  assert os.listdir(tmp_path) == []

  # The source weights often sit in the output directory: they stay.
  out.mkdir()
  with open(out / 'regnetx.pth', 'w') as f:
    f.write('source')
  with pytest.raises(OSError, match='disk full'):
    convert_checkpoint.write_backbone(backbone, str(out))
  assert testing.files_under(out) == {'regnetx.pth': b'source'}
  monkeypatch.setattr(tf.train.Checkpoint, 'write', write)
  path = convert_checkpoint.write_backbone(backbone, str(out))
  assert path == str(out / 'backbone')
  before = testing.files_under(out)
  assert sorted(before) == ['backbone.data-00000-of-00001', 'backbone.index',
                            'regnetx.pth']
  # A failed rewrite leaves the earlier backbone checkpoint.
  monkeypatch.setattr(tf.train.Checkpoint, 'write', data_then_fail)
  with pytest.raises(OSError, match='disk full'):
    convert_checkpoint.write_backbone(backbone, str(out))
  assert testing.files_under(out) == before
  assert tf.train.list_variables(path)
