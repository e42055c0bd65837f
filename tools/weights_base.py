"""What the weight file readers share: the error and the element types.

`torch_checkpoint` (with `torch_tensors`) and `safetensors_io` read raw
storages as numpy arrays of the element types in `NUMPY_CODES` and hand them
on through `to_native`; every problem they find is a `WeightsFileError`.
`weights_io` re-exports the error for callers.
"""

import numpy as np

# numpy type codes (without byte order) of the element types read; bfloat16 is
# read as its uint16 bit pattern and widened to float32.
NUMPY_CODES = {
    'float64': 'f8', 'float32': 'f4', 'float16': 'f2', 'bfloat16': 'u2',
    'int64': 'i8', 'int32': 'i4', 'int16': 'i2', 'int8': 'i1',
    'uint64': 'u8', 'uint32': 'u4', 'uint16': 'u2', 'uint8': 'u1',
    'bool': 'b1', 'complex64': 'c8', 'complex128': 'c16',
}


class WeightsFileError(ValueError):
  """A weight file cannot be read: unknown, corrupt, unsafe or not weights."""


def to_native(array: np.ndarray, element: str) -> np.ndarray:
  """A C-contiguous native-order copy; bfloat16 bits become float32."""
  out = np.array(array, dtype=array.dtype.newbyteorder('='), order='C')
  if element == 'bfloat16':
    out = (out.astype(np.uint32) << 16).view(np.float32)
  return out
