"""Tests for tools/weights_io.py: dispatch, npz, and finding the state dict.

The torch zip format is tested in torch_checkpoint_test.py and
torch_tensors_test.py, safetensors in safetensors_io_test.py.
"""

import numpy as np
import pytest

from tools import torch_checkpoint_testutil as testutil
from tools import weights_io
from tools.weights_io import WeightsFileError


def test_module_prefix_is_stripped_only_when_on_every_key(tmp_path):
  a, b = np.ones(2, np.float32), np.zeros(3, np.float32)
  path = testutil.write_torch_file(tmp_path / 'dp.pth', {'state_dict': {
      'module.a': testutil.tensor(a), 'module.b': testutil.tensor(b)}})
  assert sorted(weights_io.load_state_dict(path)) == ['a', 'b']
  sd = weights_io.extract_state_dict({'module.a': a, 'b': b})
  assert sorted(sd) == ['b', 'module.a']
  sd = weights_io.extract_state_dict({'module.module.a': a})
  assert list(sd) == ['module.a']  # One prefix, as DataParallel adds one.


def test_extract_state_dict_chooses_the_weights():
  w, e = np.ones(1, np.float32), np.zeros(1, np.float32)
  timm = {'epoch': 3, 'arch': 'resnet50', 'state_dict': {'fc.weight': w},
          'state_dict_ema': {'fc.weight': e}, 'optimizer': {}}
  assert weights_io.extract_state_dict(timm)['fc.weight'] is w
  assert weights_io.extract_state_dict(
      {'model': {'x': w}, 'model_ema': {'x': e}, 'epoch': 1})['x'] is w
  assert weights_io.extract_state_dict(
      {'model_ema': {'x': e}, 'epoch': 1})['x'] is e
  pycls = {'epoch': 99, 'model_state': {'stem.conv.weight': w},
           'optimizer_state': {'state': {}}}
  assert weights_io.extract_state_dict(pycls)['stem.conv.weight'] is w
  assert weights_io.extract_state_dict({'model': w, 'x': e})['model'] is w
  with pytest.raises(WeightsFileError, match=r'epoch: holds a int'):
    weights_io.extract_state_dict({'epoch': 1, 'weights': {'x': w}})
  with pytest.raises(WeightsFileError, match='no tensors'):
    weights_io.extract_state_dict({'state_dict': {}})
  with pytest.raises(WeightsFileError, match='holds a ndarray, not a dict'):
    weights_io.extract_state_dict(w)
  with pytest.raises(WeightsFileError, match='holds a str, not a tensor'):
    weights_io.extract_state_dict({'state_dict': {'x': w, 'name': 'r50'}})


def test_whole_model_object_is_refused(tmp_path):
  # YOLOv5-style {'model': <pickled nn.Module>}.
  model = testutil.Foreign(
      'models.yolo', 'DetectionModel', (),
      {'_parameters': {'w': testutil.tensor(np.ones(2, np.float32))}})
  path = testutil.write_torch_file(tmp_path / 'yolo.pt',
                                   {'model': model, 'epoch': -1})
  with pytest.raises(WeightsFileError,
                     match=r'yolo.pt: model: refused to unpickle '
                     r'models.yolo.DetectionModel; only tensors are read'):
    weights_io.load_state_dict(path)


def test_npz(tmp_path):
  a = np.arange(6, dtype=np.float16).reshape(2, 3)
  b = np.array([1, 2], np.int64)
  path = tmp_path / 'w.npz'
  np.savez(path, **{'layer.a': a, 'layer.b': b})
  sd = weights_io.load_state_dict(str(path))
  np.testing.assert_array_equal(sd['layer.a'], a)
  assert sd['layer.a'].dtype == np.float16 and sd['layer.b'].dtype == np.int64
  np.savez(path, x=np.array([{'a': 1}], dtype=object))
  with pytest.raises(WeightsFileError, match='w.npz: cannot read'):
    weights_io.load_state_dict(str(path))


def test_unknown_extension_and_missing_file(tmp_path):
  path = tmp_path / 'w.h5'
  path.write_bytes(b'\x89HDF')
  with pytest.raises(WeightsFileError, match=r"w.h5: unknown .* '.h5'"):
    weights_io.load_state_dict(str(path))
  with pytest.raises(WeightsFileError, match='nope.pth: no such file'):
    weights_io.load_state_dict(str(tmp_path / 'nope.pth'))
  assert issubclass(WeightsFileError, ValueError)
