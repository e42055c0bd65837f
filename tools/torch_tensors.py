"""What the restricted unpickler of `torch_checkpoint` hands out for globals.

A `torch.save` pickle names globals; `torch_checkpoint`'s unpickler imports
none of them. Instead it takes from here:

  * `TORCH_GLOBALS`: numpy stand-ins for torch's tensor rebuild functions
    (`torch._utils._rebuild_tensor`, `_rebuild_tensor_v2`,
    `_rebuild_tensor_v3`, `_rebuild_parameter`,
    `_rebuild_parameter_with_state`, `torch._tensor._rebuild_from_type_v2`)
    and `torch.Size`. They build C-contiguous native-order numpy arrays from
    the storages of the file (`TorchStorage`), checking sizes, strides and
    offsets against them.
  * `torch_type`: a `TorchType` marker for a storage class or dtype global
    (`torch.FloatStorage`, `torch.float16`, ...), naming its element type.
  * `RefusedGlobal`: the base of the inert placeholders standing for every
    other global; `refused_global` names the global a placeholder stands for.
"""

import pickle
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from tools.weights_base import NUMPY_CODES
from tools.weights_base import to_native
from tools.weights_base import WeightsFileError

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


class TorchType:
  """A torch storage class or dtype, by the element type it stands for."""

  __slots__ = ('name', 'element')

  def __init__(self, name: str, element: str):
    self.name = name
    self.element = element

  def __setstate__(self, state: Any) -> None:
    raise pickle.UnpicklingError(f'{self.name} takes no state')

  def __repr__(self) -> str:
    return self.name


class TorchStorage:
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
    dtype = np.dtype(byteorder + NUMPY_CODES[element])
    raw = self.data.view(np.uint8)
    if raw.size % dtype.itemsize:
      raise WeightsFileError(
          f'storage data/{self.key} has {raw.size} bytes, not a whole number '
          f'of {element} elements')
    return raw.view(dtype)


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
  if not isinstance(storage, TorchStorage):
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
    return to_native(np.empty(size, data.dtype), element)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= data.size:
    raise pickle.UnpicklingError(
        f'a tensor of size {size}, stride {stride} at offset {offset} reaches '
        f'element {last} of storage data/{storage.key}, which has {data.size}')
  view = np.lib.stride_tricks.as_strided(
      data[offset:], shape=size,
      strides=tuple(s * data.itemsize for s in stride), writeable=False)
  return to_native(view, element)


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
  if not isinstance(dtype, TorchType):
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


# The torch globals that rebuild tensors (and their sizes), by qualified name.
TORCH_GLOBALS: Dict[str, Callable[..., Any]] = {
    'torch._utils._rebuild_tensor': _rebuild_tensor,
    'torch._utils._rebuild_tensor_v2': _rebuild_tensor_v2,
    'torch._utils._rebuild_tensor_v3': _rebuild_tensor_v3,
    'torch._utils._rebuild_parameter': _rebuild_parameter,
    'torch._utils._rebuild_parameter_with_state':
        _rebuild_parameter_with_state,
    'torch._tensor._rebuild_from_type_v2': _rebuild_from_type_v2,
    'torch.Size': _torch_size,
}


def torch_type(module: str, name: str) -> Optional[TorchType]:
  """The marker of a torch storage class or dtype global, else None."""
  qualname = f'{module}.{name}'
  if module in _STORAGE_MODULES and name in _TORCH_STORAGES:
    return TorchType(qualname, _TORCH_STORAGES[name])
  if module == 'torch' and name in _TORCH_DTYPES:
    return TorchType(qualname, _TORCH_DTYPES[name])
  return None
