"""Tests for tools/torch_tensors.py: torch's tensors read back as numpy arrays.

Files are written by `torch_checkpoint_testutil` (what `torch.save` writes,
without torch) and read through `weights_io.load_state_dict`: dtypes, views
of shared storages, parameters, byte order and the tolerated variants of
torch's tensor rebuild globals.
"""

import collections
import zipfile

import numpy as np

from tools import torch_checkpoint_testutil as testutil
from tools import weights_io


def test_dtypes_are_kept_and_bfloat16_widens(tmp_path):
  f32 = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
  f16 = np.array([[0.5, -1.25], [65504., 0.]], np.float16)
  i64 = np.array([0, -1, 2**40], np.int64)
  bf16_values = np.array([1.5, -2., 3.140625, 1e-3], np.float32)
  bf16 = testutil.Tensor(
      testutil.Storage(testutil.bf16_bits(bf16_values), 'BFloat16Storage'),
      0, (2, 2), (2, 1))
  path = testutil.write_torch_file(tmp_path / 'dtypes.pth', {
      'f32': testutil.tensor(f32), 'f16': testutil.tensor(f16),
      'i64': testutil.tensor(i64),
      'bf16': bf16, 'mask': testutil.tensor(np.array([True, False])),
      'i8': testutil.tensor(np.array([-128, 127], np.int8)),
      'steps': testutil.tensor(np.array(7, np.int64)),  # A 0-d tensor.
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
  storage = testutil.Storage(base)
  path = testutil.write_torch_file(
      tmp_path / 'views.pt', collections.OrderedDict([
          ('full', testutil.Tensor(storage, 0, (3, 4), (4, 1))),
          ('transposed', testutil.Tensor(storage, 0, (4, 3), (1, 4))),
          # Rows 1-2, cols 1-2.
          ('block', testutil.Tensor(storage, 5, (2, 2), (4, 1))),
          ('every_other', testutil.Tensor(storage, 1, (3,), (4,))),
          ('broadcast', testutil.Tensor(storage, 2, (2, 3), (0, 1))),
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
      ('conv.weight', testutil.Parameter(testutil.tensor(weight))),
      ('conv.bias',
       testutil.Parameter(testutil.tensor(np.zeros(4, np.float32)))),
      ('bn.num_batches_tracked', testutil.tensor(np.array(100, np.int64))),
  ])
  # torch 1.6 named the zip's top folder after the file, not 'archive'.
  path = testutil.write_torch_file(tmp_path / 'params.pth', sd_in,
                                   prefix='resnet50-19c8e357')
  sd = weights_io.load_state_dict(path)
  assert list(sd) == ['conv.weight', 'conv.bias', 'bn.num_batches_tracked']
  np.testing.assert_array_equal(sd['conv.weight'], weight)
  assert sd['bn.num_batches_tracked'] == 100


def test_big_endian_byteorder(tmp_path):
  values = np.array([[1.25, -3.5], [1e30, 0.]], np.float32)
  ints = np.array([1, -2, 2**33], np.int64)
  path = testutil.write_torch_file(
      tmp_path / 'be.pth',
      {'w': testutil.tensor(values), 'i': testutil.tensor(ints)},
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
      return (testutil.Global('torch._utils', '_rebuild_tensor_v3'),
              (testutil.Storage(raw.view(np.uint8), 'UntypedStorage'), 0,
               (3,), (1,), False, collections.OrderedDict(),
               testutil.Global('torch', 'int16')))

  class _Size:

    def __reduce__(self):
      return (testutil.Global('torch', 'Size'), ((2, 2),))

  by_dtype = testutil.Tensor(
      testutil.Storage(np.arange(4, dtype=np.float32)), 0, _Size(), (2, 1))
  by_dtype.args[0].type_ref = testutil.Global('torch', 'float32')
  path = testutil.write_torch_file(tmp_path / 'v3.pt',
                                   {'v3': _TensorV3(), 'by_dtype': by_dtype})
  sd = weights_io.load_state_dict(path)
  assert sd['v3'].dtype == np.int16 and sd['v3'].tolist() == [1, -2, 300]
  np.testing.assert_array_equal(sd['by_dtype'], [[0., 1.], [2., 3.]])
