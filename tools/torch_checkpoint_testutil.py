"""Writes what `torch.save` writes, for the tests of the weight file readers.

torch is not installed, so `write_torch_file` writes what `torch.save` writes
(torch >= 1.6): a zip of stored (uncompressed) entries `archive/data.pkl`,
`archive/byteorder`, `archive/data/<key>` in key order, `archive/version` and
`archive/.data/serialization_id`, each entry's data aligned to 64 bytes by a
padding extra field, as torch's zip writer does. data.pkl is a protocol 2
pickle: tensors reduce to GLOBAL `torch._utils _rebuild_tensor_v2` with a
storage persistent id `('storage', torch.FloatStorage, key, 'cpu', numel)`.
The GLOBAL opcodes are written by `_TorchPickler` from `Global` references;
no `torch` module, fake or real, is ever importable. `bf16_bits` gives the
bfloat16 bit patterns the torch and safetensors tests store.
"""

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

_STORAGE_TYPES = {
    np.dtype(np.float32): 'FloatStorage', np.dtype(np.float64): 'DoubleStorage',
    np.dtype(np.float16): 'HalfStorage', np.dtype(np.int64): 'LongStorage',
    np.dtype(np.int32): 'IntStorage', np.dtype(np.int16): 'ShortStorage',
    np.dtype(np.int8): 'CharStorage', np.dtype(np.uint8): 'ByteStorage',
    np.dtype(np.bool_): 'BoolStorage',
}


class Global:
  """`module.name`, pickled as a GLOBAL opcode; never imported nor called."""

  def __init__(self, module, name):
    self.module = module
    self.name = name

  def __call__(self, *args):  # pickle only checks that a reducer is callable.
    raise AssertionError('a Global is never called')


class Storage:
  """A torch storage: a flat array, pickled as a persistent id."""

  def __init__(self, data, type_name=None):
    self.data = np.ascontiguousarray(data).ravel()
    self.type_name = type_name or _STORAGE_TYPES[self.data.dtype]
    self.type_ref = Global('torch', self.type_name)

  def to_bytes(self, byteorder):
    order = '<' if byteorder == 'little' else '>'
    return self.data.astype(self.data.dtype.newbyteorder(order)).tobytes()


class Tensor:
  """A tensor on a storage, reduced the way torch reduces tensors."""

  def __init__(self, storage, offset, size, stride):
    if isinstance(size, list):
      size = tuple(size)
    self.args = (storage, offset, size, tuple(stride))

  def __reduce__(self):
    return (Global('torch._utils', '_rebuild_tensor_v2'),
            self.args + (False, collections.OrderedDict()))


class Parameter:
  """An `nn.Parameter`: `_rebuild_parameter(tensor, requires_grad, hooks)`."""

  def __init__(self, tensor):
    self.tensor = tensor

  def __reduce__(self):
    return (Global('torch._utils', '_rebuild_parameter'),
            (self.tensor, True, collections.OrderedDict()))


class Foreign:
  """An object of a class this process does not have (e.g. mmengine's)."""

  def __init__(self, module, name, args=(), state=None):
    self.ref = Global(module, name)
    self.args = args
    self.state = state

  def __reduce__(self):
    return (self.ref, self.args, self.state)


class _TorchPickler(pickle._Pickler):  # pylint: disable=protected-access
  """Protocol 2 pickler with torch's storage persistent ids.

  The pure-Python pickler is used so `Global`s can be written as GLOBAL
  opcodes without importing their module.
  """

  def __init__(self, file, storages):
    super().__init__(file, protocol=2)
    self._storages = storages  # key -> Storage, filled while pickling.
    self._keys = {}

  def persistent_id(self, obj):
    if not isinstance(obj, Storage):
      return None
    key = self._keys.setdefault(id(obj), str(len(self._keys)))
    self._storages[key] = obj
    return ('storage', obj.type_ref, key, 'cpu', obj.data.size)

  def save(self, obj, save_persistent_id=True):
    if isinstance(obj, Global):
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


def torch_bytes(obj, byteorder='little', prefix='archive'):
  """The bytes `torch.save(obj)` writes, storages in `byteorder`."""
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


def write_torch_file(path, obj, **kwargs):
  """Writes `torch_bytes(obj, **kwargs)` to `path`; returns it as a str."""
  with open(path, 'wb') as f:
    f.write(torch_bytes(obj, **kwargs))
  return str(path)


def tensor(array, type_name=None):
  """A contiguous tensor of its own storage (a view, e.g. a transpose, is
  copied: its storage holds the values in C order)."""
  # order='C' copies a view into C order and, unlike ascontiguousarray,
  # keeps a 0-d array 0-d.
  array = np.asarray(array, order='C')
  strides = tuple(s // array.itemsize for s in array.strides)
  return Tensor(Storage(array, type_name), 0, array.shape, strides)


def bf16_bits(values):
  """The bfloat16 bit patterns (uint16) of `values`, truncated."""
  return (np.asarray(values, np.float32).view(np.uint32) >> 16).astype(
      np.uint16)
