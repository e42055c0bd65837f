"""Tests for tools/safetensors_io.py: safetensors files parsed by hand."""

import json
import struct

import numpy as np
import pytest

from tools import torch_checkpoint_testutil as testutil
from tools import weights_io
from tools.weights_io import WeightsFileError


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
      'bf16': ('BF16', bf16.shape,
               testutil.bf16_bits(bf16).astype('<u2').tobytes()),
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
