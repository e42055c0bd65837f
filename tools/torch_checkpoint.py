"""Reads `torch.save`'s zip format (torch >= 1.6) without torch.

A `.pth`/`.pt`/`.bin`/`.ckpt` file written by `torch.save` is a zip of
`<prefix>/data.pkl` (a pickle), `<prefix>/data/<key>` (raw storages),
optionally `<prefix>/byteorder` ('little' or 'big') and `<prefix>/version`.
`read_torch_zip` returns the unpickled object, tensors as numpy arrays.

The pickle is read by a restricted unpickler: it imports nothing and calls
only the rebuild functions of `torch_tensors` (`torch._utils._rebuild_tensor`,
`_rebuild_tensor_v2`, `_rebuild_tensor_v3`, `_rebuild_parameter`,
`_rebuild_parameter_with_state`, `torch._tensor._rebuild_from_type_v2`),
`collections.OrderedDict` and a few harmless builtins. Every other global
(`mmengine...HistoryBuffer`, `numpy.core.multiarray._reconstruct`,
`builtins.eval`, `os.system`, ...) becomes an inert `RefusedGlobal`
placeholder recording its name and swallowing its arguments and state, so
mmengine / timm checkpoints read, while nothing in them runs. Legacy (pre-1.6,
non-zip) files and TorchScript archives are refused. Every problem is a
`WeightsFileError` naming the file.
"""

import _compat_pickle
import collections
import io
import pickle
import pickletools
import struct
import zipfile
import zlib
from typing import Any, Callable, Dict

import numpy as np

from tools.torch_tensors import RefusedGlobal
from tools.torch_tensors import refused_global
from tools.torch_tensors import TORCH_GLOBALS
from tools.torch_tensors import torch_type
from tools.torch_tensors import TorchStorage
from tools.torch_tensors import TorchType
from tools.weights_base import NUMPY_CODES
from tools.weights_base import WeightsFileError

# Pickle opcodes refused before unpickling: the extension registry opcodes
# fetch globals from a process-wide cache that bypasses `find_class`.
_REFUSED_OPCODES = frozenset(('EXT1', 'EXT2', 'EXT4'))

_LEGACY_HINT = (
    "it is in PyTorch's legacy (pre-1.6, non-zip) serialization format, which "
    'is not read; re-save it with a recent torch: '
    "`torch.save(torch.load(f, map_location='cpu'), g)` (the default zip "
    'format), or save its state dict as .safetensors')


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
    **TORCH_GLOBALS,
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
    self._storages: Dict[str, TorchStorage] = {}
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
    marker = torch_type(module, name)
    if marker is not None:
      return marker
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
    if not isinstance(storage_type, TorchType):
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
      storage = TorchStorage(key, storage_type.element,
                             storage.as_element(storage_type.element))
    return storage

  def _read_storage(self, key: str, element: str, numel: int) -> TorchStorage:
    name = f'{self._prefix}data/{key}'
    try:
      raw = self._zip.read(name)
    except KeyError:
      raise WeightsFileError(f'the zip lacks storage {name}') from None
    dtype = np.dtype(self._byteorder + NUMPY_CODES[element])
    if len(raw) < numel * dtype.itemsize:
      raise WeightsFileError(
          f'storage {name} has {len(raw)} bytes, fewer than its {numel} '
          f'{element} elements need')
    return TorchStorage(key, element, np.frombuffer(raw, dtype, count=numel))


def _check_opcodes(data: bytes) -> None:
  """Parses the pickle without running it; refuses extension opcodes."""
  for opcode, _, _ in pickletools.genops(data):
    if opcode.name in _REFUSED_OPCODES:
      raise WeightsFileError(f'refused pickle opcode {opcode.name}')


def _looks_legacy(head: bytes) -> bool:
  # A pickle (torch's legacy format starts with a protocol-2 pickle of its
  # magic number), or the even older tar format.
  return head[:1] == b'\x80' or head[257:262] == b'ustar'


def read_torch_zip(path: str) -> Any:
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
