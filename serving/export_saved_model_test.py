"""The export command: files, signatures, weights, and a clean-room load."""

import io
import os
import sys
import textwrap

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import yaml

from official.core import export_base
from official.core import train_utils
from common import testing
from serving import conftest
from serving import export_saved_model_lib

_OUTPUTS = ('num_detections', 'detection_boxes', 'detection_scores',
            'detection_classes', 'detection_masks', 'image_info')


def test_export_dir_holds_saved_model_checkpoint_and_params(export_dir):
  assert sorted(os.listdir(export_dir)) == ['checkpoint', 'params.yaml',
                                            'saved_model']
  # The export was renamed into place; its temporary is gone.
  name = os.path.basename(export_dir)
  assert not [n for n in os.listdir(os.path.dirname(export_dir))
              if n.startswith(f'.{name}.')]
  assert tf.saved_model.contains_saved_model(
      os.path.join(export_dir, 'saved_model'))
  assert tf.train.latest_checkpoint(os.path.join(export_dir, 'checkpoint'))
  with open(os.path.join(export_dir, 'params.yaml')) as f:
    task = yaml.safe_load(f)['task']
  assert task['category_ids'] == conftest.CATEGORY_IDS
  assert task['model']['input_size'] == [64, 64, 3]


def test_exported_weights_are_the_ema_averages(export_dir, small_checkpoint):
  _, _, raw, averages = small_checkpoint
  reader = tf.train.load_checkpoint(os.path.join(export_dir, 'checkpoint'))
  saved = {}
  for name, _ in tf.train.list_variables(os.path.join(export_dir,
                                                      'checkpoint')):
    if name.startswith('model/') and name.endswith('.ATTRIBUTES/VARIABLE_VALUE'):
      saved[name] = reader.get_tensor(name)
  values = list(saved.values())
  assert len(values) >= len(averages)

  def found(array):
    return any(v.shape == array.shape and np.array_equal(v, array)
               for v in values)

  # Every average is among the exported weights, no raw weight is (but for
  # constant initial values, which variables outside the EMA also hold).
  assert all(found(a) for a in averages)
  assert not any(found(r) for r in raw if np.ptp(r) > 0)


_CLEAN_ROOM = textwrap.dedent('''
    import sys
    import numpy as np
    import tensorflow as tf
    inputs = np.load(sys.argv[2])
    fn = tf.saved_model.load(sys.argv[1]).signatures['serving_default']
    out = fn(inputs=tf.constant(inputs))
    np.savez(sys.argv[3], **{k: v.numpy() for k, v in out.items()})
    imported = sorted(m.split('.')[0] for m in sys.modules)
    banned = {'official', 'tf_keras', 'orbit', 'serving', 'modeling',
              'tasks', 'dataloaders', 'configs', 'official_ext'}
    print('BANNED', sorted(banned & set(imported)))
''')


def test_clean_process_reproduces_the_in_process_model(
    export_dir, small_module, tmp_path):
  images = np.stack([conftest.random_image(48, 80, seed=1),
                     conftest.random_image(48, 80, seed=2)])
  np.save(tmp_path / 'inputs.npy', images)
  script = tmp_path / 'clean_room.py'
  script.write_text(_CLEAN_ROOM)
  # Outside the repository, without its path: only tensorflow and numpy.
  stdout, _ = conftest.run_command(
      [sys.executable, str(script), os.path.join(export_dir, 'saved_model'),
       str(tmp_path / 'inputs.npy'), str(tmp_path / 'out.npz')],
      cwd=str(tmp_path))
  assert 'BANNED []' in stdout
  loaded = np.load(tmp_path / 'out.npz')
  # In graph mode, as the SavedModel runs (eager op-by-op rounds differently).
  expected = small_module.inference_from_image_tensors(tf.constant(images))
  assert sorted(loaded.files) == sorted(_OUTPUTS)
  assert (loaded['num_detections'] > 0).all()
  for key in ('detection_boxes', 'detection_scores'):
    np.testing.assert_allclose(loaded[key], expected[key].numpy(), atol=1e-4,
                               err_msg=key)
  np.testing.assert_array_equal(loaded['detection_classes'],
                                expected['detection_classes'].numpy())


def test_bytes_and_example_signatures_agree(export_dir):
  loaded = tf.saved_model.load(os.path.join(export_dir, 'saved_model'))
  image = conftest.random_image(60, 44, seed=3)
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='PNG')
  example = tf.train.Example(features=tf.train.Features(feature={
      'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[buffer.getvalue()]))})).SerializeToString()
  outputs = [
      loaded.signatures['serving_default'](inputs=tf.constant(image[None])),
      loaded.signatures['serving_bytes'](
          inputs=tf.constant([buffer.getvalue()])),
      loaded.signatures['serving_examples'](inputs=tf.constant([example])),
  ]
  for out in outputs[1:]:
    for key in ('detection_boxes', 'detection_scores'):
      np.testing.assert_allclose(out[key].numpy(), outputs[0][key].numpy(),
                                 atol=1e-5, err_msg=key)


def test_saved_model_cli_lists_the_documented_signature(export_dir):
  cli = os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')
  stdout, _ = conftest.run_command(
      [cli, 'show', '--all', '--dir', os.path.join(export_dir, 'saved_model')])
  default = stdout[stdout.index("signature_def['serving_default']"):]
  default = default[:default.index('Method name')]
  assert "inputs['inputs']" in default
  assert 'DT_UINT8' in default and 'shape: (-1, -1, -1, 3)' in default
  for name in _OUTPUTS:
    assert f"outputs['{name}']" in default, name
  assert "signature_def['serving_bytes']" in stdout
  assert "signature_def['serving_examples']" in stdout


def test_fixed_batch_size_and_bad_arguments(small_checkpoint):
  params, run_dir, _, _ = small_checkpoint
  module = export_saved_model_lib.build_module(params, run_dir, batch_size=2)
  fn = module.get_inference_signatures({'image_tensor': 'serving_default'})
  spec = fn['serving_default'].structured_input_signature[0][0]
  assert spec.shape.as_list() == [2, None, None, 3]
  with pytest.raises(ValueError, match='input_type'):
    export_saved_model_lib.build_module(params, run_dir, input_type='jpeg')
  with pytest.raises(ValueError, match='Cannot read checkpoint'):
    export_saved_model_lib.build_module(params, run_dir + '/ckpt-9')
  with pytest.raises(ValueError, match='holds no checkpoint'):
    export_saved_model_lib.build_module(params, os.path.dirname(run_dir))
  with pytest.raises(ValueError, match='--function_keys'):
    export_saved_model_lib.parse_function_keys('image_tensor:a,jpeg:b')
  assert export_saved_model_lib.parse_function_keys(
      'image_tensor:a, image_bytes:b') == {'image_tensor': 'a',
                                           'image_bytes': 'b'}


def _quick_saved_model(export_module, function_keys, export_savedmodel_dir,
                       **kwargs):
  """Stands in for Model Garden's SavedModel writing, which takes long."""
  del export_module, function_keys, kwargs
  os.makedirs(export_savedmodel_dir)
  with open(os.path.join(export_savedmodel_dir, 'saved_model.pb'), 'w') as f:
    f.write('quick')
  return export_savedmodel_dir


def _params_fail_halfway(params, model_dir):
  """serialize_config, failing after saved_model/ and checkpoint/."""
  del params
  assert sorted(os.listdir(model_dir)) == ['checkpoint', 'saved_model']
  with open(os.path.join(model_dir, 'params.yaml'), 'w') as f:
    f.write('task:\n  model: {')
  raise OSError('disk full')


def test_export_appears_only_complete(small_checkpoint, tmp_path,
                                      monkeypatch):
  params, run_dir, _, _ = small_checkpoint
  target = str(tmp_path / 'export')
  # Built once for the four exports, and no SavedModel traced: quick.
  module = export_saved_model_lib.build_module(params, run_dir)
  monkeypatch.setattr(export_saved_model_lib, 'build_module',
                      lambda *args, **kwargs: module)
  monkeypatch.setattr(export_base, 'export', _quick_saved_model)
  serialize_config = train_utils.serialize_config
  monkeypatch.setattr(train_utils, 'serialize_config', _params_fail_halfway)
  with pytest.raises(OSError, match='disk full'):
    export_saved_model_lib.export(params, run_dir, target)
  assert os.listdir(tmp_path) == []

  monkeypatch.setattr(train_utils, 'serialize_config', serialize_config)
  export_saved_model_lib.export(params, run_dir, target)
  before = testing.files_under(target)
  assert sorted(before) == [
      'checkpoint/checkpoint', 'checkpoint/ckpt-1.data-00000-of-00001',
      'checkpoint/ckpt-1.index', 'params.yaml', 'saved_model/saved_model.pb']
  assert yaml.safe_load(before['params.yaml'])['task']['export'][
      'full_size_masks'] is False
  assert os.listdir(tmp_path) == ['export']

  # A failed export leaves the earlier one as it was.
  monkeypatch.setattr(train_utils, 'serialize_config', _params_fail_halfway)
  with pytest.raises(OSError, match='disk full'):
    export_saved_model_lib.export(params, run_dir, target,
                                  full_size_masks=True)
  assert testing.files_under(target) == before
  assert os.listdir(tmp_path) == ['export']

  # A complete one replaces it.
  monkeypatch.setattr(train_utils, 'serialize_config', serialize_config)
  export_saved_model_lib.export(params, run_dir, target, full_size_masks=True)
  after = testing.files_under(target)
  assert sorted(after) == sorted(before)
  assert yaml.safe_load(after['params.yaml'])['task']['export'][
      'full_size_masks'] is True
  assert os.listdir(tmp_path) == ['export']


def test_export_refuses_a_directory_that_is_not_an_export(small_checkpoint,
                                                          tmp_path):
  params, run_dir, _, _ = small_checkpoint
  with open(tmp_path / 'notes.txt', 'w') as f:
    f.write('mine')
  (tmp_path / 'saved_model').mkdir()
  with pytest.raises(ValueError, match=(
      f'export_dir {tmp_path} holds notes.txt, which are not part of an '
      'export; an export replaces the whole directory')):
    export_saved_model_lib.export(params, run_dir, str(tmp_path))
  assert testing.files_under(tmp_path) == {'notes.txt': b'mine'}
  assert sorted(os.listdir(tmp_path)) == ['notes.txt', 'saved_model']
  with pytest.raises(ValueError, match='notes.txt is a file, not a directory'):
    export_saved_model_lib.export(params, run_dir, str(tmp_path / 'notes.txt'))
