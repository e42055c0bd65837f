"""Tests for tools/torch_checkpoint.py: torch.save's zip format, without torch.

Files are written by `torch_checkpoint_testutil` (what `torch.save` writes,
without torch). The restricted unpickler must read mmengine checkpoints,
keep refused globals inert, run nothing of a malicious pickle, and refuse
legacy, TorchScript, truncated and corrupt files with clear errors.
"""

import collections
import io
import os
import pickle
import struct
import sys
import zipfile

import numpy as np
import pytest

from tools import torch_checkpoint
from tools import torch_checkpoint_testutil as testutil
from tools import weights_io
from tools.weights_io import WeightsFileError

# torch's legacy format starts with this number, pickled.
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


def test_writer_is_laid_out_like_torch_save(tmp_path):
  path = testutil.write_torch_file(tmp_path / 'w.pth',
                                   {'a': testutil.tensor(np.ones(3))})
  with zipfile.ZipFile(path) as zf:
    assert zf.namelist() == [
        'archive/data.pkl', 'archive/byteorder', 'archive/data/0',
        'archive/version', 'archive/.data/serialization_id']
    info = zf.getinfo('archive/data/0')
    with open(path, 'rb') as f:
      f.seek(info.header_offset + 26)
      name_len, extra_len = struct.unpack('<HH', f.read(4))
    assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0
    assert zf.read('archive/data.pkl').startswith(b'\x80\x02')


def test_a_transposed_view_is_written_with_its_values(tmp_path):
  weight = np.arange(6, dtype=np.float32).reshape(2, 3)
  path = testutil.write_torch_file(tmp_path / 't.pth',
                                   {'w': testutil.tensor(weight.T)})
  np.testing.assert_array_equal(weights_io.load_state_dict(path)['w'],
                                weight.T)


def _history_buffer():
  return testutil.Foreign(
      'mmengine.logging.history_buffer', 'HistoryBuffer', (),
      {'max_length': 1000, '_log_history': np.array([0.5, 0.4]),
       '_count_history': np.array([1, 1])})


def test_mmengine_checkpoint_takes_state_dict(tmp_path):
  weight = np.full((2, 3), 0.25, np.float32)
  ckpt = {
      'meta': {
          'epoch': 12, 'iter': 3000, 'mmengine_version': '0.10.3',
          'seed': np.int64(42),  # numpy scalar: numpy.core...scalar refused.
          'dataset_meta': {'classes': ('cat', 'dog')},
          'cfg': testutil.Foreign('mmengine.config.config', 'ConfigDict',
                                  ({},)),
          'hooks': {'a', 'b'}, 'tag': b'\x00\xff'},
      'state_dict': collections.OrderedDict([
          ('backbone.conv.weight', testutil.tensor(weight)),
          ('head.ema_step', testutil.tensor(np.array(5, np.int64)))]),
      'optimizer': {
          'state': {0: {
              'step': testutil.tensor(np.array(3.)),
              'exp_avg': testutil.tensor(np.zeros((2, 3), np.float32))}},
          'param_groups': [{'lr': 0.01, 'params': [0]}]},
      'message_hub': {
          'log_scalars': {'train/loss': _history_buffer()},
          'runtime_info': {'epoch': 12, 'arr': np.arange(3)},
          'resumed_keys': {'epoch': True}},
  }
  path = testutil.write_torch_file(tmp_path / 'epoch_12.pth', ckpt)
  before = set(sys.modules)
  sd = weights_io.load_state_dict(path)
  assert list(sd) == ['backbone.conv.weight', 'head.ema_step']
  np.testing.assert_array_equal(sd['backbone.conv.weight'], weight)
  # Nothing was imported for the refused globals.
  new = set(sys.modules) - before
  assert not any(m.startswith(('mmengine', 'torch')) for m in new), new

  # The non-weight parts hold inert placeholders that kept their state.
  raw = torch_checkpoint.read_torch_zip(path)
  buffer = raw['message_hub']['log_scalars']['train/loss']
  assert isinstance(buffer, weights_io.RefusedGlobal)
  assert (weights_io.refused_global(buffer) ==
          'mmengine.logging.history_buffer.HistoryBuffer')
  assert buffer.state['max_length'] == 1000
  assert weights_io.refused_global(
      buffer.state['_log_history']).endswith('multiarray._reconstruct')
  assert raw['meta']['epoch'] == 12
  assert raw['meta']['dataset_meta'] == {'classes': ('cat', 'dog')}
  assert raw['meta']['hooks'] == {'a', 'b'}
  assert raw['meta']['tag'] == b'\x00\xff'
  assert weights_io.refused_global(raw['meta']['seed']).endswith('scalar')


class _Evil:
  """Runs a shell command when unpickled by a plain unpickler."""

  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return (os.system, (self.command,))


class _EvilEval:

  def __init__(self, code):
    self.code = code

  def __reduce__(self):
    return (eval, (self.code,))


def test_malicious_pickles_run_nothing(tmp_path):
  pwned = tmp_path / 'pwned'
  command = f'touch {pwned}'
  code = f'open({str(pwned)!r}, "w").close()'
  # Sanity check: a plain unpickler would run it.
  assert pickle.dumps(_Evil(command), protocol=2).count(b'system') == 1

  # In the state dict: an error naming the key and the refused global.
  path = testutil.write_torch_file(tmp_path / 'evil.pth', {'state_dict': {
      'model.w': testutil.tensor(np.ones(2, np.float32)),
      'model.foo': _Evil(command)}})
  with pytest.raises(WeightsFileError) as info:
    weights_io.load_state_dict(path)
  message = str(info.value)
  assert 'model.foo: refused to unpickle' in message
  assert f'{os.system.__module__}.system' in message  # posix.system.
  assert 'only tensors are read' in message

  path = testutil.write_torch_file(tmp_path / 'eval.pth',
                                   {'model.foo': _EvilEval(code)})
  with pytest.raises(WeightsFileError,
                     match='model.foo: refused to unpickle builtins.eval'):
    weights_io.load_state_dict(path)

  # At the top level.
  path = testutil.write_torch_file(tmp_path / 'top.pth', _Evil(command))
  with pytest.raises(WeightsFileError, match='refused to unpickle'):
    weights_io.load_state_dict(path)

  # In the non-weight parts: read as inert placeholders.
  path = testutil.write_torch_file(tmp_path / 'meta.pth', {
      'meta': {'x': _Evil(command), 'y': _EvilEval(code)},
      'state_dict': {'w': testutil.tensor(np.ones(2, np.float32))}})
  assert list(weights_io.load_state_dict(path)) == ['w']

  # As a storage type, a tensor rebuilder, or via the extension registry.
  evil_storage = testutil.Storage(np.ones(2, np.float32))
  evil_storage.type_ref = testutil.Global('os', 'system')
  path = testutil.write_torch_file(
      tmp_path / 'storage.pth',
      {'w': testutil.Tensor(evil_storage, 0, (2,), (1,))})
  with pytest.raises(WeightsFileError, match='unsupported storage type '
                     'os.system'):
    weights_io.load_state_dict(path)

  class _EvilRebuild:

    def __reduce__(self):
      return (testutil.Global('torch._tensor', '_rebuild_from_type_v2'),
              (os.system, testutil.Global('torch', 'Tensor'), (command,), {}))

  path = testutil.write_torch_file(tmp_path / 'rebuild.pth',
                                   {'w': _EvilRebuild()})
  with pytest.raises(WeightsFileError, match='refused to rebuild a tensor'):
    weights_io.load_state_dict(path)

  path = tmp_path / 'ext.pth'
  with zipfile.ZipFile(path, 'w') as zf:
    zf.writestr('archive/data.pkl', b'\x80\x02\x82\x01.')
  with pytest.raises(WeightsFileError, match='refused pickle opcode EXT1'):
    weights_io.load_state_dict(str(path))

  assert not pwned.exists()


def test_legacy_format_is_refused_with_how_to_resave(tmp_path):
  path = tmp_path / 'old.pth'
  with open(path, 'wb') as f:
    for part in (_LEGACY_MAGIC, 1001, {'little_endian': True}):
      pickle.dump(part, f, protocol=2)
  with pytest.raises(WeightsFileError) as info:
    weights_io.load_state_dict(str(path))
  message = str(info.value)
  assert str(path) in message and 'legacy' in message
  assert 'torch.save(torch.load(f' in message


def test_truncated_and_corrupt_zips(tmp_path):
  data = testutil.torch_bytes(
      {'w': testutil.tensor(np.arange(1000, dtype=np.float32))})
  path = tmp_path / 'cut.pth'
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(WeightsFileError, match='cut.pth: corrupt or truncated'):
    weights_io.load_state_dict(str(path))

  # Flip a byte of the storage: the CRC check catches it.
  with zipfile.ZipFile(io.BytesIO(data)) as zf:
    info = zf.getinfo('archive/data/0')
  start = info.header_offset + 30 + len(info.filename) + len(info.extra)
  bad = bytearray(data)
  bad[start + 10] ^= 0xff
  path.write_bytes(bytes(bad))
  with pytest.raises(WeightsFileError, match='corrupt or truncated'):
    weights_io.load_state_dict(str(path))

  path.write_bytes(b'')
  with pytest.raises(WeightsFileError, match='not a PyTorch file'):
    weights_io.load_state_dict(str(path))

  # A storage shorter than its declared size, and a tensor past its storage.
  storage = testutil.Storage(np.arange(4, dtype=np.float32))
  zip_path = tmp_path / 'short.pth'
  zip_path.write_bytes(testutil.torch_bytes(
      {'w': testutil.Tensor(storage, 0, (4,), (1,))}))
  with zipfile.ZipFile(zip_path) as zf:
    entries = {n: zf.read(n) for n in zf.namelist()}
  entries['archive/data/0'] = entries['archive/data/0'][:8]
  with zipfile.ZipFile(zip_path, 'w') as zf:
    for name, content in entries.items():
      zf.writestr(name, content)
  with pytest.raises(WeightsFileError, match='fewer than its 4 float32'):
    weights_io.load_state_dict(str(zip_path))
  path = testutil.write_torch_file(tmp_path / 'past.pth', {
      'w': testutil.Tensor(storage, 2, (2, 2), (2, 1))})
  with pytest.raises(WeightsFileError, match='reaches element 5 of storage'):
    weights_io.load_state_dict(path)

  path = tmp_path / 'script.pt'
  with zipfile.ZipFile(path, 'w') as zf:
    zf.writestr('model/data.pkl', b'\x80\x02}q\x00.')
    zf.writestr('model/constants.pkl', b'\x80\x02).')
  with pytest.raises(WeightsFileError, match='TorchScript'):
    weights_io.load_state_dict(str(path))
