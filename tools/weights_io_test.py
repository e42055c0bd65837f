"""Tests for tools/weights_io.py: torch zip, safetensors and npz, without torch.

torch is not installed, so `_write_torch_file` writes what `torch.save` writes
(torch >= 1.6): a zip of stored (uncompressed) entries `archive/data.pkl`,
`archive/byteorder`, `archive/data/<key>` in key order, `archive/version` and
`archive/.data/serialization_id`, each entry's data aligned to 64 bytes by a
padding extra field, as torch's zip writer does. data.pkl is a protocol 2
pickle: tensors reduce to GLOBAL `torch._utils _rebuild_tensor_v2` with a
storage persistent id `('storage', torch.FloatStorage, key, 'cpu', numel)`.
The GLOBAL opcodes are written by `_TorchPickler` from `_Global` references;
no `torch` module, fake or real, is ever importable.
"""

import collections
import io
import json
import os
import pickle
import struct
import sys
import zipfile

import numpy as np
import pytest

from tools import weights_io
from tools.weights_io import WeightsFileError

# torch's legacy format starts with this number, pickled.
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c

_STORAGE_TYPES = {
    np.dtype(np.float32): 'FloatStorage', np.dtype(np.float64): 'DoubleStorage',
    np.dtype(np.float16): 'HalfStorage', np.dtype(np.int64): 'LongStorage',
    np.dtype(np.int32): 'IntStorage', np.dtype(np.int16): 'ShortStorage',
    np.dtype(np.int8): 'CharStorage', np.dtype(np.uint8): 'ByteStorage',
    np.dtype(np.bool_): 'BoolStorage',
}


class _Global:
  """`module.name`, pickled as a GLOBAL opcode; never imported nor called."""

  def __init__(self, module, name):
    self.module = module
    self.name = name

  def __call__(self, *args):  # pickle only checks that a reducer is callable.
    raise AssertionError('a _Global is never called')


class _Storage:
  """A torch storage: a flat array, pickled as a persistent id."""

  def __init__(self, data, type_name=None):
    self.data = np.ascontiguousarray(data).ravel()
    self.type_name = type_name or _STORAGE_TYPES[self.data.dtype]
    self.type_ref = _Global('torch', self.type_name)

  def to_bytes(self, byteorder):
    order = '<' if byteorder == 'little' else '>'
    return self.data.astype(self.data.dtype.newbyteorder(order)).tobytes()


class _Tensor:
  """A tensor on a storage, reduced the way torch reduces tensors."""

  def __init__(self, storage, offset, size, stride):
    if isinstance(size, list):
      size = tuple(size)
    self.args = (storage, offset, size, tuple(stride))

  def __reduce__(self):
    return (_Global('torch._utils', '_rebuild_tensor_v2'),
            self.args + (False, collections.OrderedDict()))


class _Parameter:
  """An `nn.Parameter`: `_rebuild_parameter(tensor, requires_grad, hooks)`."""

  def __init__(self, tensor):
    self.tensor = tensor

  def __reduce__(self):
    return (_Global('torch._utils', '_rebuild_parameter'),
            (self.tensor, True, collections.OrderedDict()))


class _Foreign:
  """An object of a class this process does not have (e.g. mmengine's)."""

  def __init__(self, module, name, args=(), state=None):
    self.ref = _Global(module, name)
    self.args = args
    self.state = state

  def __reduce__(self):
    return (self.ref, self.args, self.state)


class _TorchPickler(pickle._Pickler):  # pylint: disable=protected-access
  """Protocol 2 pickler with torch's storage persistent ids.

  The pure-Python pickler is used so `_Global`s can be written as GLOBAL
  opcodes without importing their module.
  """

  def __init__(self, file, storages):
    super().__init__(file, protocol=2)
    self._storages = storages  # key -> _Storage, filled while pickling.
    self._keys = {}

  def persistent_id(self, obj):
    if not isinstance(obj, _Storage):
      return None
    key = self._keys.setdefault(id(obj), str(len(self._keys)))
    self._storages[key] = obj
    return ('storage', obj.type_ref, key, 'cpu', obj.data.size)

  def save(self, obj, save_persistent_id=True):
    if isinstance(obj, _Global):
      self.write(pickle.GLOBAL + f'{obj.module}\n{obj.name}\n'.encode('ascii'))
      return
    super().save(obj, save_persistent_id)


def _write_aligned(zf, name, data):
  """A stored entry whose data starts at a multiple of 64, as torch does."""
  info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
  info.compress_type = zipfile.ZIP_STORED
  header_end = zf.fp.tell() + 30 + len(name.encode('utf-8')) + 4
  pad = -header_end % 64
  info.extra = b'FB' + struct.pack('<H', pad) + b'Z' * pad
  zf.writestr(info, data)


def _torch_bytes(obj, byteorder='little', prefix='archive'):
  storages = {}
  buf = io.BytesIO()
  _TorchPickler(buf, storages).dump(obj)
  out = io.BytesIO()
  with zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as zf:
    _write_aligned(zf, f'{prefix}/data.pkl', buf.getvalue())
    _write_aligned(zf, f'{prefix}/byteorder', byteorder.encode('ascii'))
    for key in sorted(storages):  # torch sorts the keys as strings.
      _write_aligned(zf, f'{prefix}/data/{key}',
                     storages[key].to_bytes(byteorder))
    _write_aligned(zf, f'{prefix}/version', b'3\n')
    _write_aligned(zf, f'{prefix}/.data/serialization_id', b'1234567890')
  return out.getvalue()


def _write_torch_file(path, obj, **kwargs):
  with open(path, 'wb') as f:
    f.write(_torch_bytes(obj, **kwargs))
  return str(path)


def _tensor(array, type_name=None):
  """A contiguous tensor of its own storage."""
  array = np.asarray(array)
  strides = tuple(s // array.itemsize for s in array.strides)
  return _Tensor(_Storage(array, type_name), 0, array.shape, strides)


def _bf16_bits(values):
  return (np.asarray(values, np.float32).view(np.uint32) >> 16).astype(
      np.uint16)


# --- torch zip files ---------------------------------------------------------


def test_writer_is_laid_out_like_torch_save(tmp_path):
  path = _write_torch_file(tmp_path / 'w.pth', {'a': _tensor(np.ones(3))})
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


def test_dtypes_are_kept_and_bfloat16_widens(tmp_path):
  f32 = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
  f16 = np.array([[0.5, -1.25], [65504., 0.]], np.float16)
  i64 = np.array([0, -1, 2**40], np.int64)
  bf16_values = np.array([1.5, -2., 3.140625, 1e-3], np.float32)
  bf16 = _Tensor(_Storage(_bf16_bits(bf16_values), 'BFloat16Storage'), 0,
                 (2, 2), (2, 1))
  path = _write_torch_file(tmp_path / 'dtypes.pth', {
      'f32': _tensor(f32), 'f16': _tensor(f16), 'i64': _tensor(i64),
      'bf16': bf16, 'mask': _tensor(np.array([True, False])),
      'i8': _tensor(np.array([-128, 127], np.int8)),
      'steps': _tensor(np.array(7, np.int64)),  # A 0-d tensor.
  })
  sd = weights_io.load_state_dict(path)
  assert list(sd) == ['f32', 'f16', 'i64', 'bf16', 'mask', 'i8', 'steps']
  np.testing.assert_array_equal(sd['f32'], f32)
  assert sd['f32'].dtype == np.float32
  np.testing.assert_array_equal(sd['f16'], f16)
  assert sd['f16'].dtype == np.float16
  np.testing.assert_array_equal(sd['i64'], i64)
  assert sd['i64'].dtype == np.int64
  assert sd['bf16'].dtype == np.float32
  # 1e-3 truncated to bfloat16's 8 mantissa bits.
  np.testing.assert_array_equal(
      sd['bf16'], [[1.5, -2.], [3.140625, 0.00099945068359375]])
  assert sd['mask'].dtype == np.bool_ and sd['mask'].tolist() == [True, False]
  assert sd['i8'].tolist() == [-128, 127]
  assert sd['steps'].shape == () and sd['steps'] == 7
  for value in sd.values():
    assert value.flags.c_contiguous and value.flags.writeable


def test_transposed_and_shared_storage_views(tmp_path):
  base = np.arange(12, dtype=np.float32) * 1.5
  storage = _Storage(base)
  path = _write_torch_file(tmp_path / 'views.pt', collections.OrderedDict([
      ('full', _Tensor(storage, 0, (3, 4), (4, 1))),
      ('transposed', _Tensor(storage, 0, (4, 3), (1, 4))),
      ('block', _Tensor(storage, 5, (2, 2), (4, 1))),  # Rows 1-2, cols 1-2.
      ('every_other', _Tensor(storage, 1, (3,), (4,))),
      ('broadcast', _Tensor(storage, 2, (2, 3), (0, 1))),
  ]))
  with zipfile.ZipFile(path) as zf:  # One storage for all five tensors.
    assert [n for n in zf.namelist() if '/data/' in n] == ['archive/data/0']
  sd = weights_io.load_state_dict(path)
  full = base.reshape(3, 4)
  np.testing.assert_array_equal(sd['full'], full)
  np.testing.assert_array_equal(sd['transposed'], full.T)
  np.testing.assert_array_equal(sd['block'], full[1:3, 1:3])
  np.testing.assert_array_equal(sd['every_other'], [1.5, 7.5, 13.5])
  np.testing.assert_array_equal(sd['broadcast'], [[3., 4.5, 6.]] * 2)
  assert sd['transposed'].flags.c_contiguous
  sd['block'][0, 0] = -1.  # Copies: no tensor aliases another.
  assert sd['full'][1, 1] == 7.5


def test_ordered_dict_of_parameters(tmp_path):
  weight = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(
      np.float32)
  sd_in = collections.OrderedDict([
      ('conv.weight', _Parameter(_tensor(weight))),
      ('conv.bias', _Parameter(_tensor(np.zeros(4, np.float32)))),
      ('bn.num_batches_tracked', _tensor(np.array(100, np.int64))),
  ])
  # torch 1.6 named the zip's top folder after the file, not 'archive'.
  path = _write_torch_file(tmp_path / 'params.pth', sd_in,
                           prefix='resnet50-19c8e357')
  sd = weights_io.load_state_dict(path)
  assert list(sd) == ['conv.weight', 'conv.bias', 'bn.num_batches_tracked']
  np.testing.assert_array_equal(sd['conv.weight'], weight)
  assert sd['bn.num_batches_tracked'] == 100


def test_big_endian_byteorder(tmp_path):
  values = np.array([[1.25, -3.5], [1e30, 0.]], np.float32)
  ints = np.array([1, -2, 2**33], np.int64)
  path = _write_torch_file(
      tmp_path / 'be.pth', {'w': _tensor(values), 'i': _tensor(ints)},
      byteorder='big')
  sd = weights_io.load_state_dict(path)
  np.testing.assert_array_equal(sd['w'], values)
  np.testing.assert_array_equal(sd['i'], ints)
  assert sd['w'].dtype == np.float32 and sd['w'].dtype.isnative


def test_dtype_storage_types_and_rebuild_tensor_v3(tmp_path):
  # Tolerated variants: a dtype global as storage type, an untyped (byte)
  # storage with `_rebuild_tensor_v3`'s dtype, and `torch.Size` sizes.
  raw = np.array([1, -2, 300], np.int16)

  class _TensorV3:

    def __reduce__(self):
      return (_Global('torch._utils', '_rebuild_tensor_v3'),
              (_Storage(raw.view(np.uint8), 'UntypedStorage'), 0, (3,), (1,),
               False, collections.OrderedDict(), _Global('torch', 'int16')))

  class _Size:

    def __reduce__(self):
      return (_Global('torch', 'Size'), ((2, 2),))

  by_dtype = _Tensor(_Storage(np.arange(4, dtype=np.float32)), 0, _Size(),
                     (2, 1))
  by_dtype.args[0].type_ref = _Global('torch', 'float32')
  path = _write_torch_file(tmp_path / 'v3.pt',
                           {'v3': _TensorV3(), 'by_dtype': by_dtype})
  sd = weights_io.load_state_dict(path)
  assert sd['v3'].dtype == np.int16 and sd['v3'].tolist() == [1, -2, 300]
  np.testing.assert_array_equal(sd['by_dtype'], [[0., 1.], [2., 3.]])


def _history_buffer():
  return _Foreign('mmengine.logging.history_buffer', 'HistoryBuffer', (),
                  {'max_length': 1000, '_log_history': np.array([0.5, 0.4]),
                   '_count_history': np.array([1, 1])})


def test_mmengine_checkpoint_takes_state_dict(tmp_path):
  weight = np.full((2, 3), 0.25, np.float32)
  ckpt = {
      'meta': {
          'epoch': 12, 'iter': 3000, 'mmengine_version': '0.10.3',
          'seed': np.int64(42),  # numpy scalar: numpy.core...scalar refused.
          'dataset_meta': {'classes': ('cat', 'dog')},
          'cfg': _Foreign('mmengine.config.config', 'ConfigDict', ({},)),
          'hooks': {'a', 'b'}, 'tag': b'\x00\xff'},
      'state_dict': collections.OrderedDict([
          ('backbone.conv.weight', _tensor(weight)),
          ('head.ema_step', _tensor(np.array(5, np.int64)))]),
      'optimizer': {
          'state': {0: {'step': _tensor(np.array(3.)),
                        'exp_avg': _tensor(np.zeros((2, 3), np.float32))}},
          'param_groups': [{'lr': 0.01, 'params': [0]}]},
      'message_hub': {
          'log_scalars': {'train/loss': _history_buffer()},
          'runtime_info': {'epoch': 12, 'arr': np.arange(3)},
          'resumed_keys': {'epoch': True}},
  }
  path = _write_torch_file(tmp_path / 'epoch_12.pth', ckpt)
  before = set(sys.modules)
  sd = weights_io.load_state_dict(path)
  assert list(sd) == ['backbone.conv.weight', 'head.ema_step']
  np.testing.assert_array_equal(sd['backbone.conv.weight'], weight)
  # Nothing was imported for the refused globals.
  new = set(sys.modules) - before
  assert not any(m.startswith(('mmengine', 'torch')) for m in new), new

  # The non-weight parts hold inert placeholders that kept their state.
  raw = weights_io._read_torch_zip(path)  # pylint: disable=protected-access
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


def test_module_prefix_is_stripped_only_when_on_every_key(tmp_path):
  a, b = np.ones(2, np.float32), np.zeros(3, np.float32)
  path = _write_torch_file(tmp_path / 'dp.pth', {'state_dict': {
      'module.a': _tensor(a), 'module.b': _tensor(b)}})
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
  model = _Foreign('models.yolo', 'DetectionModel', (),
                   {'_parameters': {'w': _tensor(np.ones(2, np.float32))}})
  path = _write_torch_file(tmp_path / 'yolo.pt', {'model': model, 'epoch': -1})
  with pytest.raises(WeightsFileError,
                     match=r'yolo.pt: model: refused to unpickle '
                     r'models.yolo.DetectionModel; only tensors are read'):
    weights_io.load_state_dict(path)


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
  path = _write_torch_file(tmp_path / 'evil.pth', {'state_dict': {
      'model.w': _tensor(np.ones(2, np.float32)),
      'model.foo': _Evil(command)}})
  with pytest.raises(WeightsFileError) as info:
    weights_io.load_state_dict(path)
  message = str(info.value)
  assert 'model.foo: refused to unpickle' in message
  assert f'{os.system.__module__}.system' in message  # posix.system.
  assert 'only tensors are read' in message

  path = _write_torch_file(tmp_path / 'eval.pth',
                           {'model.foo': _EvilEval(code)})
  with pytest.raises(WeightsFileError,
                     match='model.foo: refused to unpickle builtins.eval'):
    weights_io.load_state_dict(path)

  # At the top level.
  path = _write_torch_file(tmp_path / 'top.pth', _Evil(command))
  with pytest.raises(WeightsFileError, match='refused to unpickle'):
    weights_io.load_state_dict(path)

  # In the non-weight parts: read as inert placeholders.
  path = _write_torch_file(tmp_path / 'meta.pth', {
      'meta': {'x': _Evil(command), 'y': _EvilEval(code)},
      'state_dict': {'w': _tensor(np.ones(2, np.float32))}})
  assert list(weights_io.load_state_dict(path)) == ['w']

  # As a storage type, a tensor rebuilder, or via the extension registry.
  evil_storage = _Storage(np.ones(2, np.float32))
  evil_storage.type_ref = _Global('os', 'system')
  path = _write_torch_file(tmp_path / 'storage.pth',
                           {'w': _Tensor(evil_storage, 0, (2,), (1,))})
  with pytest.raises(WeightsFileError, match='unsupported storage type '
                     'os.system'):
    weights_io.load_state_dict(path)

  class _EvilRebuild:

    def __reduce__(self):
      return (_Global('torch._tensor', '_rebuild_from_type_v2'),
              (os.system, _Global('torch', 'Tensor'), (command,), {}))

  path = _write_torch_file(tmp_path / 'rebuild.pth', {'w': _EvilRebuild()})
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
  data = _torch_bytes({'w': _tensor(np.arange(1000, dtype=np.float32))})
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
  storage = _Storage(np.arange(4, dtype=np.float32))
  zip_path = tmp_path / 'short.pth'
  zip_path.write_bytes(_torch_bytes({'w': _Tensor(storage, 0, (4,), (1,))}))
  with zipfile.ZipFile(zip_path) as zf:
    entries = {n: zf.read(n) for n in zf.namelist()}
  entries['archive/data/0'] = entries['archive/data/0'][:8]
  with zipfile.ZipFile(zip_path, 'w') as zf:
    for name, content in entries.items():
      zf.writestr(name, content)
  with pytest.raises(WeightsFileError, match='fewer than its 4 float32'):
    weights_io.load_state_dict(str(zip_path))
  path = _write_torch_file(tmp_path / 'past.pth', {
      'w': _Tensor(storage, 2, (2, 2), (2, 1))})
  with pytest.raises(WeightsFileError, match='reaches element 5 of storage'):
    weights_io.load_state_dict(path)

  path = tmp_path / 'script.pt'
  with zipfile.ZipFile(path, 'w') as zf:
    zf.writestr('model/data.pkl', b'\x80\x02}q\x00.')
    zf.writestr('model/constants.pkl', b'\x80\x02).')
  with pytest.raises(WeightsFileError, match='TorchScript'):
    weights_io.load_state_dict(str(path))


# --- safetensors, npz, dispatch ----------------------------------------------


def _write_safetensors(path, tensors, metadata=None):
  """Writes {name: (dtype name, shape, raw bytes)} as a safetensors file."""
  header, chunks, offset = {}, [], 0
  if metadata is not None:
    header['__metadata__'] = metadata
  for name, (dtype, shape, raw) in tensors.items():
    header[name] = {'dtype': dtype, 'shape': list(shape),
                    'data_offsets': [offset, offset + len(raw)]}
    chunks.append(raw)
    offset += len(raw)
  text = json.dumps(header).encode('utf-8')
  text += b' ' * (-len(text) % 8)  # The format pads the header to 8 bytes.
  with open(path, 'wb') as f:
    f.write(struct.pack('<Q', len(text)) + text + b''.join(chunks))
  return str(path)


def test_safetensors_round_trip(tmp_path):
  f32 = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
  f16 = np.array([1., -0.5, 2048.], np.float16)
  i64 = np.array([[2**50, -7]], np.int64)
  bf16 = np.array([[1.5, -2.], [0.09375, 256.]], np.float32)
  u8 = np.arange(5, dtype=np.uint8)
  mask = np.array([True, False, True])
  path = _write_safetensors(tmp_path / 'model.safetensors', {
      'f32': ('F32', f32.shape, f32.astype('<f4').tobytes()),
      'f16': ('F16', f16.shape, f16.astype('<f2').tobytes()),
      'i64': ('I64', i64.shape, i64.astype('<i8').tobytes()),
      'bf16': ('BF16', bf16.shape, _bf16_bits(bf16).astype('<u2').tobytes()),
      'u8': ('U8', u8.shape, u8.tobytes()),
      'mask': ('BOOL', mask.shape, mask.tobytes()),
      'scalar': ('F64', (), np.float64(2.5).tobytes()),
      'empty': ('F32', (0, 3), b''),
  }, metadata={'format': 'pt'})
  sd = weights_io.load_state_dict(path)
  for name, expected in [('f32', f32), ('f16', f16), ('i64', i64),
                         ('bf16', bf16), ('u8', u8), ('mask', mask)]:
    np.testing.assert_array_equal(sd[name], expected)
    assert sd[name].dtype == expected.dtype, name
  assert sd['scalar'].shape == () and sd['scalar'] == 2.5
  assert sd['empty'].shape == (0, 3)
  assert '__metadata__' not in sd


def test_safetensors_errors(tmp_path):
  raw = np.zeros(4, np.float32).tobytes()
  path = _write_safetensors(tmp_path / 'f8.safetensors',
                            {'x': ('F8_E4M3', (4,), raw[:4])})
  with pytest.raises(WeightsFileError,
                     match="'x': unsupported dtype 'F8_E4M3'"):
    weights_io.load_state_dict(path)
  path = _write_safetensors(tmp_path / 'size.safetensors',
                            {'x': ('F32', (5,), raw)})
  with pytest.raises(WeightsFileError, match='needs 20'):
    weights_io.load_state_dict(path)
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:20])
  with pytest.raises(WeightsFileError, match='truncated'):
    weights_io.load_state_dict(path)
  with open(path, 'wb') as f:
    f.write(struct.pack('<Q', 4) + b'{{{{')
  with pytest.raises(WeightsFileError, match='not JSON'):
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
