"""Reads PyTorch-style weight files into numpy arrays, without torch.

`load_state_dict(path)` returns a flat `{name: numpy array}` state dict from:

  * `.pth`, `.pt`, `.bin`, `.ckpt`: `torch.save`'s zip format (torch >= 1.6):
    `<prefix>/data.pkl` (a pickle), `<prefix>/data/<key>` (raw storages),
    optionally `<prefix>/byteorder` ('little' or 'big') and `<prefix>/version`.
    The pickle is read by a restricted unpickler: it imports nothing and calls
    only this module's own rebuild functions (`torch._utils._rebuild_tensor`,
    `_rebuild_tensor_v2`, `_rebuild_tensor_v3`, `_rebuild_parameter`,
    `_rebuild_parameter_with_state`, `torch._tensor._rebuild_from_type_v2`),
    `collections.OrderedDict` and a few harmless builtins. Every other global
    (`mmengine...HistoryBuffer`, `numpy.core.multiarray._reconstruct`,
    `builtins.eval`, `os.system`, ...) becomes an inert placeholder recording
    its name and swallowing its arguments and state, so mmengine / timm
    checkpoints read, while nothing in them runs. A placeholder found where a
    weight should be is an error naming the key and the refused global.
    Legacy (pre-1.6, non-zip) files and TorchScript archives are refused.
  * `.safetensors`: parsed here (no safetensors package).
  * `.npz`: `numpy.load(path, allow_pickle=False)`.

Arrays keep the dtype they were stored with (float16 stays float16, int64
stays int64); only bfloat16, which numpy lacks, becomes float32 (exactly).
Every problem is a `WeightsFileError` (a `ValueError`) naming the file.
"""

import _compat_pickle
import collections
import io
import json
import os
import pickle
import pickletools
import struct
import zipfile
import zlib
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

TORCH_EXTENSIONS = ('.pth', '.pt', '.bin', '.ckpt')
SAFETENSORS_EXTENSION = '.safetensors'
NPZ_EXTENSION = '.npz'

# numpy type codes (without byte order) of the element types read; bfloat16 is
# read as its uint16 bit pattern and widened to float32.
_NUMPY_CODES = {
    'float64': 'f8', 'float32': 'f4', 'float16': 'f2', 'bfloat16': 'u2',
    'int64': 'i8', 'int32': 'i4', 'int16': 'i2', 'int8': 'i1',
    'uint64': 'u8', 'uint32': 'u4', 'uint16': 'u2', 'uint8': 'u1',
    'bool': 'b1', 'complex64': 'c8', 'complex128': 'c16',
}

# torch's storage classes, as pickled in a storage's persistent id.
_TORCH_STORAGES = {
    'DoubleStorage': 'float64', 'FloatStorage': 'float32',
    'HalfStorage': 'float16', 'BFloat16Storage': 'bfloat16',
    'LongStorage': 'int64', 'IntStorage': 'int32', 'ShortStorage': 'int16',
    'CharStorage': 'int8', 'ByteStorage': 'uint8', 'BoolStorage': 'bool',
    'ComplexFloatStorage': 'complex64', 'ComplexDoubleStorage': 'complex128',
    # Raw bytes; `_rebuild_tensor_v3` names the element type.
    'UntypedStorage': 'uint8',
}
_STORAGE_MODULES = ('torch', 'torch.storage', 'torch.cuda')

# torch's dtype globals (`torch.float32` pickles as GLOBAL 'torch float32').
_TORCH_DTYPES = {
    'float64': 'float64', 'double': 'float64',
    'float32': 'float32', 'float': 'float32',
    'float16': 'float16', 'half': 'float16',
    'bfloat16': 'bfloat16',
    'int64': 'int64', 'long': 'int64',
    'int32': 'int32', 'int': 'int32',
    'int16': 'int16', 'short': 'int16',
    'int8': 'int8', 'uint8': 'uint8', 'bool': 'bool',
    'uint16': 'uint16', 'uint32': 'uint32', 'uint64': 'uint64',
    'complex64': 'complex64', 'cfloat': 'complex64',
    'complex128': 'complex128', 'cdouble': 'complex128',
}

# safetensors dtype names.
_SAFETENSORS_DTYPES = {
    'F64': 'float64', 'F32': 'float32', 'F16': 'float16', 'BF16': 'bfloat16',
    'I64': 'int64', 'I32': 'int32', 'I16': 'int16', 'I8': 'int8',
    'U8': 'uint8', 'BOOL': 'bool',
}

# Keys of a checkpoint dict that hold its state dict, in order of preference:
# mmengine / timm `state_dict`, then `model` (DeiT, detectron2-style, ...),
# then the EMA copies timm saves beside them.
# Where checkpoints keep their weights, in order of preference: mmengine and
# most tools, timm / Lightning, timm's EMA, pycls (`model_state`).
STATE_DICT_KEYS = ('state_dict', 'model', 'state_dict_ema', 'model_ema',
                   'model_state')
_MAX_NESTING = 4

# Pickle opcodes refused before unpickling: the extension registry opcodes
# fetch globals from a process-wide cache that bypasses `find_class`.
_REFUSED_OPCODES = frozenset(('EXT1', 'EXT2', 'EXT4'))

_LEGACY_HINT = (
    "it is in PyTorch's legacy (pre-1.6, non-zip) serialization format, which "
    'is not read; re-save it with a recent torch: '
    "`torch.save(torch.load(f, map_location='cpu'), g)` (the default zip "
    'format), or save its state dict as .safetensors')


class WeightsFileError(ValueError):
  """A weight file cannot be read: unknown, corrupt, unsafe or not weights."""


class RefusedGlobal:
  """Base of the placeholders standing for globals that were not imported.

  The unpickler creates one subclass per refused global, named after it, with
  the global's qualified name in `qualname`. Calling the class (pickle's REDUCE
  or NEWOBJ) makes an instance that keeps the arguments (`args`, `kwargs`);
  BUILD state goes to `state`, APPENDS and SETITEMS to `items`. Nothing of the
  real global is imported or run.
  """

  qualname = '?'

  def __new__(cls, *args, **kwargs):
    obj = super().__new__(cls)
    obj.args = args
    obj.kwargs = kwargs
    obj.state = None
    obj.items = []
    return obj

  def __init__(self, *args, **kwargs):
    del args, kwargs  # Kept by __new__.

  def __setstate__(self, state: Any) -> None:
    self.state = state

  def append(self, item: Any) -> None:
    self.items.append(item)

  def extend(self, items: Sequence[Any]) -> None:
    self.items.extend(items)

  def __setitem__(self, key: Any, value: Any) -> None:
    self.items.append((key, value))

  def __reduce__(self):
    raise TypeError(f'placeholder for {self.qualname} cannot be pickled')

  def __repr__(self) -> str:
    return f'<refused {self.qualname}>'


def refused_global(value: Any) -> Optional[str]:
  """The refused global's name if `value` is a placeholder (or its class)."""
  if isinstance(value, RefusedGlobal):
    return value.qualname
  if isinstance(value, type) and issubclass(value, RefusedGlobal):
    return value.qualname
  return None


class _TorchType:
  """A torch storage class or dtype, by the element type it stands for."""

  __slots__ = ('name', 'element')

  def __init__(self, name: str, element: str):
    self.name = name
    self.element = element

  def __setstate__(self, state: Any) -> None:
    raise pickle.UnpicklingError(f'{self.name} takes no state')

  def __repr__(self) -> str:
    return self.name


class _Storage:
  """A storage read from the zip: a 1-D array in the file's byte order."""

  __slots__ = ('key', 'element', 'data')

  def __init__(self, key: str, element: str, data: np.ndarray):
    self.key = key
    self.element = element
    self.data = data

  def __setstate__(self, state: Any) -> None:
    raise pickle.UnpicklingError('storages take no state')

  def as_element(self, element: str) -> np.ndarray:
    """The storage's bytes as `element`s (for `_rebuild_tensor_v3`)."""
    if element == self.element:
      return self.data
    byteorder = self.data.dtype.byteorder
    if byteorder not in '<>':
      byteorder = '<' if np.little_endian else '>'
    dtype = np.dtype(byteorder + _NUMPY_CODES[element])
    raw = self.data.view(np.uint8)
    if raw.size % dtype.itemsize:
      raise WeightsFileError(
          f'storage data/{self.key} has {raw.size} bytes, not a whole number '
          f'of {element} elements')
    return raw.view(dtype)


def _to_native(array: np.ndarray, element: str) -> np.ndarray:
  """A C-contiguous native-order copy; bfloat16 bits become float32."""
  out = np.array(array, dtype=array.dtype.newbyteorder('='), order='C')
  if element == 'bfloat16':
    out = (out.astype(np.uint32) << 16).view(np.float32)
  return out


def _as_ints(values: Any, what: str) -> Tuple[int, ...]:
  """`values` as a tuple of Python ints, or an unpickling error."""
  if not isinstance(values, (tuple, list)):
    raise pickle.UnpicklingError(f'tensor {what} is {type(values).__name__}, '
                                 'not a tuple')
  out = []
  for v in values:
    if isinstance(v, bool) or not isinstance(v, int):
      raise pickle.UnpicklingError(f'tensor {what} holds {v!r}')
    out.append(v)
  return tuple(out)


def _tensor_from_storage(storage: Any, storage_offset: Any, size: Any,
                         stride: Any, element: Optional[str] = None
                        ) -> np.ndarray:
  """The tensor `storage[offset + sum(i_k * stride_k)]` of shape `size`."""
  if not isinstance(storage, _Storage):
    name = refused_global(storage)
    raise pickle.UnpicklingError(
        'a tensor is built on ' +
        (f'a refused global {name}' if name else type(storage).__name__) +
        ', not on a storage of the file')
  element = element or storage.element
  data = storage.as_element(element)
  size = _as_ints(size, 'size')
  stride = _as_ints(stride, 'stride')
  (offset,) = _as_ints((storage_offset,), 'storage offset')
  if len(size) != len(stride):
    raise pickle.UnpicklingError(f'tensor size {size} and stride {stride} '
                                 'differ in rank')
  if offset < 0 or any(n < 0 for n in size) or any(s < 0 for s in stride):
    raise pickle.UnpicklingError(
        f'negative tensor offset, size or stride: {offset}, {size}, {stride}')
  if 0 in size:
    return _to_native(np.empty(size, data.dtype), element)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= data.size:
    raise pickle.UnpicklingError(
        f'a tensor of size {size}, stride {stride} at offset {offset} reaches '
        f'element {last} of storage data/{storage.key}, which has {data.size}')
  view = np.lib.stride_tricks.as_strided(
      data[offset:], shape=size,
      strides=tuple(s * data.itemsize for s in stride), writeable=False)
  return _to_native(view, element)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any,
                    stride: Any) -> np.ndarray:
  """`torch._utils._rebuild_tensor`."""
  return _tensor_from_storage(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any,
                       stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None,
                       metadata: Any = None) -> np.ndarray:
  """`torch._utils._rebuild_tensor_v2`; gradient flag, hooks are dropped."""
  del requires_grad, backward_hooks, metadata
  return _tensor_from_storage(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage: Any, storage_offset: Any, size: Any,
                       stride: Any, requires_grad: Any, backward_hooks: Any,
                       dtype: Any, metadata: Any = None) -> np.ndarray:
  """`torch._utils._rebuild_tensor_v3`: an untyped storage and a dtype."""
  del requires_grad, backward_hooks, metadata
  if not isinstance(dtype, _TorchType):
    raise pickle.UnpicklingError(f'unsupported tensor dtype {dtype!r}')
  return _tensor_from_storage(storage, storage_offset, size, stride,
                              dtype.element)


def _rebuild_parameter(data: Any, requires_grad: Any = False,
                       backward_hooks: Any = None) -> Any:
  """`torch._utils._rebuild_parameter`: the parameter's tensor."""
  del requires_grad, backward_hooks
  return data


def _rebuild_parameter_with_state(data: Any, requires_grad: Any,
                                  backward_hooks: Any, state: Any) -> Any:
  """`torch._utils._rebuild_parameter_with_state`: the tensor; no state."""
  del requires_grad, backward_hooks, state
  return data


_TENSOR_REBUILDERS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3,
                      _rebuild_parameter, _rebuild_parameter_with_state)


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any,
                          state: Any) -> Any:
  """`torch._tensor._rebuild_from_type_v2`: a tensor subclass, as a tensor."""
  del new_type, state
  if not any(func is f for f in _TENSOR_REBUILDERS):
    name = refused_global(func) or type(func).__name__
    raise pickle.UnpicklingError(f'refused to rebuild a tensor with {name}')
  if not isinstance(args, tuple):
    raise pickle.UnpicklingError('tensor rebuild arguments are not a tuple')
  return func(*args)


def _torch_size(dims: Any = ()) -> Tuple[int, ...]:
  """`torch.Size`, as a tuple."""
  return _as_ints(tuple(dims) if isinstance(dims, list) else dims, 'size')


def _codecs_encode(text: Any, encoding: Any = 'utf-8') -> bytes:
  """`_codecs.encode` as protocol 2 uses it for bytes: (str, 'latin1')."""
  if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
    raise pickle.UnpicklingError('refused _codecs.encode call')
  return text.encode('latin-1')


def _bytes(value: Any = b'') -> bytes:
  """`builtins.bytes`, for bytes-like arguments only."""
  if not isinstance(value, (bytes, bytearray)):
    raise pickle.UnpicklingError('refused builtins.bytes call')
  return bytes(value)


def _bytearray(value: Any = b'', encoding: Any = None) -> bytearray:
  """`builtins.bytearray` as pickle uses it: bytes, or (str, 'latin1')."""
  if isinstance(value, str) and encoding in ('latin1', 'latin-1'):
    return bytearray(value.encode('latin-1'))
  if not isinstance(value, (bytes, bytearray)):
    raise pickle.UnpicklingError('refused builtins.bytearray call')
  return bytearray(value)


# The only globals ever returned by `find_class`, besides placeholders and
# torch type markers. None of them imports anything or runs file content.
_SAFE_GLOBALS: Dict[str, Callable[..., Any]] = {
    'torch._utils._rebuild_tensor': _rebuild_tensor,
    'torch._utils._rebuild_tensor_v2': _rebuild_tensor_v2,
    'torch._utils._rebuild_tensor_v3': _rebuild_tensor_v3,
    'torch._utils._rebuild_parameter': _rebuild_parameter,
    'torch._utils._rebuild_parameter_with_state':
        _rebuild_parameter_with_state,
    'torch._tensor._rebuild_from_type_v2': _rebuild_from_type_v2,
    'torch.Size': _torch_size,
    'collections.OrderedDict': collections.OrderedDict,
    '_codecs.encode': _codecs_encode,
    'builtins.bytes': _bytes,
    'builtins.bytearray': _bytearray,
    'builtins.set': set,
    'builtins.frozenset': frozenset,
}


class _TorchUnpickler(pickle.Unpickler):
  """Unpickles a torch zip's data.pkl without importing or running globals."""

  def __init__(self, data: bytes, zip_file: zipfile.ZipFile, prefix: str,
               byteorder: str):
    super().__init__(io.BytesIO(data), encoding='utf-8')
    self._zip = zip_file
    self._prefix = prefix
    self._byteorder = '<' if byteorder == 'little' else '>'
    self._storages: Dict[str, _Storage] = {}
    self._placeholders: Dict[str, type] = {}

  def find_class(self, module: str, name: str) -> Any:
    # Protocol 2 pickles (torch's default) name Python 2 modules, e.g.
    # `__builtin__.set`; map them as the stock unpickler does (no import).
    if (module, name) in _compat_pickle.NAME_MAPPING:
      module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
      module = _compat_pickle.IMPORT_MAPPING[module]
    qualname = f'{module}.{name}'
    if qualname in _SAFE_GLOBALS:
      return _SAFE_GLOBALS[qualname]
    if module in _STORAGE_MODULES and name in _TORCH_STORAGES:
      return _TorchType(qualname, _TORCH_STORAGES[name])
    if module == 'torch' and name in _TORCH_DTYPES:
      return _TorchType(qualname, _TORCH_DTYPES[name])
    if qualname not in self._placeholders:
      self._placeholders[qualname] = type(
          str(name), (RefusedGlobal,),
          {'qualname': qualname, '__module__': __name__})
    return self._placeholders[qualname]

  def persistent_load(self, pid: Any) -> Any:
    if not isinstance(pid, tuple) or not pid:
      raise pickle.UnpicklingError(f'unsupported persistent id {pid!r}')
    kind = pid[0].decode('ascii') if isinstance(pid[0], bytes) else pid[0]
    if kind != 'storage' or len(pid) < 5:
      raise pickle.UnpicklingError(f'unsupported persistent id {pid!r}')
    storage_type, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(storage_type, _TorchType):
      name = refused_global(storage_type) or repr(storage_type)
      raise WeightsFileError(f'unsupported storage type {name} (quantized or '
                             'other special tensors are not read)')
    key = key.decode('ascii') if isinstance(key, bytes) else str(key)
    if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
      raise pickle.UnpicklingError(f'storage {key} has size {numel!r}')
    storage = self._storages.get(key)
    if storage is None:
      storage = self._read_storage(key, storage_type.element, numel)
      self._storages[key] = storage
    elif storage.element != storage_type.element:
      storage = _Storage(key, storage_type.element,
                         storage.as_element(storage_type.element))
    return storage

  def _read_storage(self, key: str, element: str, numel: int) -> _Storage:
    name = f'{self._prefix}data/{key}'
    try:
      raw = self._zip.read(name)
    except KeyError:
      raise WeightsFileError(f'the zip lacks storage {name}') from None
    dtype = np.dtype(self._byteorder + _NUMPY_CODES[element])
    if len(raw) < numel * dtype.itemsize:
      raise WeightsFileError(
          f'storage {name} has {len(raw)} bytes, fewer than its {numel} '
          f'{element} elements need')
    return _Storage(key, element, np.frombuffer(raw, dtype, count=numel))


def _check_opcodes(data: bytes) -> None:
  """Parses the pickle without running it; refuses extension opcodes."""
  for opcode, _, _ in pickletools.genops(data):
    if opcode.name in _REFUSED_OPCODES:
      raise WeightsFileError(f'refused pickle opcode {opcode.name}')


def _looks_legacy(head: bytes) -> bool:
  # A pickle (torch's legacy format starts with a protocol-2 pickle of its
  # magic number), or the even older tar format.
  return head[:1] == b'\x80' or head[257:262] == b'ustar'


def _read_torch_zip(path: str) -> Any:
  """The unpickled object of a `torch.save` zip file; placeholders inside."""
  with open(path, 'rb') as f:
    head = f.read(512)
  if not head.startswith((b'PK\x03\x04', b'PK\x05\x06')):
    if _looks_legacy(head):
      raise WeightsFileError(f'{path}: {_LEGACY_HINT}')
    raise WeightsFileError(f'{path}: not a PyTorch file (neither the zip '
                           "format of torch.save nor PyTorch's legacy format)")
  try:
    with zipfile.ZipFile(path) as zf:
      names = zf.namelist()
      pickles = [n for n in names
                 if n == 'data.pkl' or (n.endswith('/data.pkl') and
                                        n.count('/') == 1)]
      if len(pickles) != 1:
        raise WeightsFileError(
            'a zip file without exactly one <prefix>/data.pkl, so not written '
            f'by torch.save (entries: {", ".join(names[:5])}...)')
      prefix = pickles[0][:-len('data.pkl')]
      if prefix + 'constants.pkl' in names:
        raise WeightsFileError(
            'a TorchScript archive (torch.jit.save), which is not read; save '
            'the model\'s state_dict() with torch.save instead')
      byteorder = 'little'
      if prefix + 'byteorder' in names:
        byteorder = zf.read(prefix + 'byteorder').decode('ascii').strip()
        if byteorder not in ('little', 'big'):
          raise WeightsFileError(f'unknown byteorder {byteorder!r}')
      data = zf.read(pickles[0])
      _check_opcodes(data)
      return _TorchUnpickler(data, zf, prefix, byteorder).load()
  except WeightsFileError as e:
    raise WeightsFileError(f'{path}: {e}') from None
  except (zipfile.BadZipFile, zlib.error, EOFError) as e:
    raise WeightsFileError(f'{path}: corrupt or truncated zip file ({e})'
                          ) from e
  except (pickle.UnpicklingError, AttributeError, IndexError, KeyError,
          TypeError, ValueError, struct.error, OverflowError,
          RecursionError) as e:
    raise WeightsFileError(
        f'{path}: cannot read data.pkl ({type(e).__name__}: {e})') from e


def _read_safetensors(path: str) -> Dict[str, np.ndarray]:
  """The tensors of a safetensors file, parsed by hand."""
  with open(path, 'rb') as f:
    content = f.read()
  if len(content) < 8:
    raise WeightsFileError(f'{path}: {len(content)} bytes, too short for a '
                           'safetensors header')
  (header_size,) = struct.unpack('<Q', content[:8])
  if header_size > len(content) - 8:
    raise WeightsFileError(f'{path}: header of {header_size} bytes but only '
                           f'{len(content) - 8} follow (truncated?)')
  try:
    header = json.loads(content[8:8 + header_size].decode('utf-8'))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise WeightsFileError(f'{path}: header is not JSON ({e})') from e
  if not isinstance(header, dict):
    raise WeightsFileError(f'{path}: header is not a JSON object')
  body = memoryview(content)[8 + header_size:]
  tensors = {}
  for name, info in header.items():
    if name == '__metadata__':
      continue
    where = f'{path}: tensor {name!r}'
    if not isinstance(info, dict):
      raise WeightsFileError(f'{where}: entry is not an object')
    dtype_name = info.get('dtype')
    if dtype_name not in _SAFETENSORS_DTYPES:
      raise WeightsFileError(
          f'{where}: unsupported dtype {dtype_name!r} (supported: '
          f'{" ".join(_SAFETENSORS_DTYPES)})')
    shape, offsets = info.get('shape'), info.get('data_offsets')
    if (not isinstance(shape, list) or
        not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                for n in shape)):
      raise WeightsFileError(f'{where}: bad shape {shape!r}')
    if (not isinstance(offsets, list) or len(offsets) != 2 or
        not all(isinstance(n, int) and not isinstance(n, bool)
                for n in offsets) or
        not 0 <= offsets[0] <= offsets[1] <= len(body)):
      raise WeightsFileError(f'{where}: bad data_offsets {offsets!r} for '
                             f'{len(body)} bytes of data')
    element = _SAFETENSORS_DTYPES[dtype_name]
    dtype = np.dtype('<' + _NUMPY_CODES[element])
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if offsets[1] - offsets[0] != nbytes:
      raise WeightsFileError(
          f'{where}: {offsets[1] - offsets[0]} bytes for a {dtype_name} '
          f'tensor of shape {shape}, which needs {nbytes}')
    array = np.frombuffer(body[offsets[0]:offsets[1]], dtype).reshape(shape)
    tensors[name] = _to_native(array, element)
  return tensors


def _read_npz(path: str) -> Dict[str, np.ndarray]:
  """The arrays of an .npz archive; pickled (object) arrays are refused."""
  try:
    npz = np.load(path, allow_pickle=False)
    if not isinstance(npz, np.lib.npyio.NpzFile):
      raise WeightsFileError(f'{path}: an .npy array, not an .npz archive')
    with npz:
      return {name: npz[name] for name in npz.files}
  except WeightsFileError:
    raise
  except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error,
          KeyError) as e:
    raise WeightsFileError(f'{path}: cannot read the .npz ({e})') from e


def _is_array(value: Any) -> bool:
  """Whether `value` is a tensor read from the file (no object arrays)."""
  return isinstance(value, np.ndarray) and value.dtype != object


def _describe(value: Any) -> str:
  """What `value` is, for messages."""
  name = refused_global(value)
  if name:
    return f'a pickled {name} object'
  return f'a {type(value).__name__}'


def _place(where: str) -> str:
  """`where` ('state_dict/') as named in messages."""
  return where.rstrip('/') or 'the file'


def _select_state_dict(obj: Any, where: str = '', depth: int = 0
                      ) -> Tuple[Mapping[Any, Any], str]:
  """The mapping holding the weights and where it was found."""
  name = refused_global(obj)
  if name:
    raise WeightsFileError(
        f'{_place(where)}: refused to unpickle {name}; only tensors are '
        'read (save the model\'s state_dict(), not the model object)')
  if not isinstance(obj, Mapping):
    raise WeightsFileError(f'{_place(where)} holds {_describe(obj)}, '
                           'not a dict of tensors')
  if obj and all(_is_array(v) for v in obj.values()):
    return obj, where
  if depth < _MAX_NESTING:
    for key in STATE_DICT_KEYS:
      if key in obj and not _is_array(obj[key]):
        return _select_state_dict(obj[key], f'{where}{key}/', depth + 1)
  return obj, where


def extract_state_dict(obj: Any) -> Dict[str, np.ndarray]:
  """Finds the flat state dict in an unpickled checkpoint.

  An mmengine checkpoint (`{'meta', 'state_dict', 'optimizer',
  'message_hub'}`; mmengine swaps EMA weights in before saving) gives its
  `state_dict`; other checkpoint dicts give `state_dict`, else `model`, else
  timm's `state_dict_ema` / `model_ema`, else pycls' `model_state`; a dict
  of arrays is itself the state
  dict. The other parts (meta, optimizer, ...) are dropped. A `module.` prefix
  on every key (DataParallel) is removed.

  Args:
    obj: the unpickled top-level object, e.g. from a torch file, or a dict of
      arrays.

  Returns:
    `{name: array}` in the file's order, dtypes as stored.

  Raises:
    WeightsFileError: no state dict, or one with something else than arrays
      (a refused global is named with its key).
  """
  state, where = _select_state_dict(obj)
  if not state:
    raise WeightsFileError(f'{_place(where)}: no tensors found')
  out = collections.OrderedDict()
  for key, value in state.items():
    if not isinstance(key, str):
      raise WeightsFileError(f'{where}{key!r}: a key that is not a string')
    name = refused_global(value)
    if name:
      raise WeightsFileError(
          f'{where}{key}: refused to unpickle {name}; only tensors are read')
    if not _is_array(value):
      raise WeightsFileError(
          f'{where}{key}: holds {_describe(value)}, not a tensor')
    out[key] = value
  prefix = 'module.'
  if all(k.startswith(prefix) for k in out):
    out = collections.OrderedDict(
        (k[len(prefix):], v) for k, v in out.items())
  return dict(out)


def load_state_dict(path: str) -> Dict[str, np.ndarray]:
  """Reads a weight file's state dict as numpy arrays, without torch.

  Args:
    path: a `.pth`/`.pt`/`.bin`/`.ckpt` file written by `torch.save` (torch
      >= 1.6), a `.safetensors` or an `.npz` file.

  Returns:
    `{name: array}`; dtypes as stored, except bfloat16 -> float32.

  Raises:
    WeightsFileError: unknown extension, missing, corrupt or legacy file,
      a refused global where a tensor should be, or no state dict.
  """
  path = os.fspath(path)
  ext = os.path.splitext(path)[1].lower()
  readers = {**{e: _read_torch_zip for e in TORCH_EXTENSIONS},
             SAFETENSORS_EXTENSION: _read_safetensors,
             NPZ_EXTENSION: _read_npz}
  if ext not in readers:
    raise WeightsFileError(
        f'{path}: unknown weight file extension {ext!r} (supported: '
        f'{" ".join(sorted(readers))})')
  if not os.path.isfile(path):
    raise WeightsFileError(f'{path}: no such file')
  try:
    obj = readers[ext](path)
  except OSError as e:
    raise WeightsFileError(f'{path}: cannot read ({e})') from e
  try:
    return extract_state_dict(obj)
  except WeightsFileError as e:
    raise WeightsFileError(f'{path}: {e}') from None
