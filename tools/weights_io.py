"""Reads PyTorch-style weight files into numpy arrays, without torch.

`load_state_dict(path)` returns a flat `{name: numpy array}` state dict from:

  * `.pth`, `.pt`, `.bin`, `.ckpt`: `torch.save`'s zip format (torch >= 1.6),
    read by `torch_checkpoint` with a restricted unpickler that imports and
    runs nothing of the file: tensors become arrays (`torch_tensors`), every
    other global an inert `RefusedGlobal` placeholder, so mmengine / timm
    checkpoints read. A placeholder found where a weight should be is an error
    naming the key and the refused global. Legacy (pre-1.6, non-zip) files and
    TorchScript archives are refused.
  * `.safetensors`: parsed by `safetensors_io` (no safetensors package).
  * `.npz`: `numpy.load(path, allow_pickle=False)`.

This module dispatches on the extension and finds the weights in the object
read (`extract_state_dict`: the checkpoint dict's state dict, a `module.`
prefix on every key removed). Arrays keep the dtype they were stored with
(float16 stays float16, int64 stays int64); only bfloat16, which numpy lacks,
becomes float32 (exactly). Every problem is a `WeightsFileError` (a
`ValueError`) naming the file.
"""

import collections
import os
import zipfile
import zlib
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from tools.safetensors_io import read_safetensors
from tools.torch_checkpoint import read_torch_zip
from tools.torch_tensors import RefusedGlobal  # pylint: disable=unused-import
from tools.torch_tensors import refused_global
from tools.weights_base import WeightsFileError

TORCH_EXTENSIONS = ('.pth', '.pt', '.bin', '.ckpt')
SAFETENSORS_EXTENSION = '.safetensors'
NPZ_EXTENSION = '.npz'

# Keys of a checkpoint dict that hold its state dict, in order of preference:
# mmengine / timm `state_dict`, then `model` (DeiT, detectron2-style, ...),
# then the EMA copies timm saves beside them.
# Where checkpoints keep their weights, in order of preference: mmengine and
# most tools, timm / Lightning, timm's EMA, pycls (`model_state`).
STATE_DICT_KEYS = ('state_dict', 'model', 'state_dict_ema', 'model_ema',
                   'model_state')
_MAX_NESTING = 4


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
  readers = {**{e: read_torch_zip for e in TORCH_EXTENSIONS},
             SAFETENSORS_EXTENSION: read_safetensors,
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
