"""Reads `.safetensors` weight files without the safetensors package.

A safetensors file is an 8-byte little-endian header size, a JSON header
(`{name: {'dtype', 'shape', 'data_offsets'}}`, optionally `__metadata__`) and
the tensors' little-endian bytes. `read_safetensors` parses it by hand,
checking every entry's dtype, shape and offsets against the data, and returns
native-order numpy arrays in their stored dtype (bfloat16 becomes float32).
Every problem is a `WeightsFileError` naming the file and tensor.
"""

import json
import struct
from typing import Dict

import numpy as np

from tools.weights_base import NUMPY_CODES
from tools.weights_base import to_native
from tools.weights_base import WeightsFileError

# safetensors dtype names.
_SAFETENSORS_DTYPES = {
    'F64': 'float64', 'F32': 'float32', 'F16': 'float16', 'BF16': 'bfloat16',
    'I64': 'int64', 'I32': 'int32', 'I16': 'int16', 'I8': 'int8',
    'U8': 'uint8', 'BOOL': 'bool',
}


def read_safetensors(path: str) -> Dict[str, np.ndarray]:
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
    dtype = np.dtype('<' + NUMPY_CODES[element])
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if offsets[1] - offsets[0] != nbytes:
      raise WeightsFileError(
          f'{where}: {offsets[1] - offsets[0]} bytes for a {dtype_name} '
          f'tensor of shape {shape}, which needs {nbytes}')
    array = np.frombuffer(body[offsets[0]:offsets[1]], dtype).reshape(shape)
    tensors[name] = to_native(array, element)
  return tensors
