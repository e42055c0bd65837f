"""Files and directories that appear only when complete.

Whatever the project writes is first written under a hidden temporary name
beside its target and renamed onto the target once complete, so that an
exception or a killed process never leaves a half-written file under the
target's name:

  with atomic_io.atomic_path('out/train.tfrecord') as temporary:
    write_records(temporary)          # Any writer: open, TFRecordWriter...

  atomic_io.write_json('out/counts.json', counts, indent=1)

  with atomic_io.atomic_directory('runs/export') as temporary:
    export_into(temporary)            # The directory's whole content.

  with atomic_io.atomic_files('runs/converted', last=['checkpoint']) as new:
    write_checkpoint_into(new)        # Files added to a directory.

Temporary names are `.NAME.tmp-PID-RANDOM` in the directory of the target
NAME: hidden, matched by no `NAME*` or `PREFIX-*` glob, and distinct for
every process and call. When the block raises, the temporary is removed, the
target is left as it was and the exception propagates. A killed process can
leave a temporary behind, never a partial target; such leftovers can be
deleted. A directory being replaced is first renamed to
`.NAME.old-PID-RANDOM`.

Local paths are renamed with os.replace, which is atomic on POSIX file
systems (the temporary is in the target's directory, so on its file
system). Paths with a scheme (`gs://...`) go through tf.io.gfile; object
stores rename by copying, so there the target still appears only when
complete, but not in one step. Nothing is fsynced: this guards against
failures of the program, not against a power loss.
"""

import contextlib
import json
import os
import secrets
import shutil
from typing import Any, IO, Iterator, List, Sequence, Tuple

from absl import logging
import tensorflow as tf


# ------------------------------------------------ local or tf.io.gfile paths


def _is_remote(path: str) -> bool:
  return '://' in path


def _exists(path: str) -> bool:
  if _is_remote(path):
    return tf.io.gfile.exists(path)
  return os.path.lexists(path)


def _isdir(path: str) -> bool:
  if _is_remote(path):
    return tf.io.gfile.isdir(path)
  return os.path.isdir(path) and not os.path.islink(path)


def _makedirs(path: str) -> None:
  if _is_remote(path):
    tf.io.gfile.makedirs(path)
  else:
    os.makedirs(path, exist_ok=True)


def _listdir(path: str) -> List[str]:
  if _is_remote(path):
    return [name.rstrip('/') for name in tf.io.gfile.listdir(path)]
  return os.listdir(path)


def _rename(source: str, target: str) -> None:
  """Renames `source` onto `target`, replacing a file (not a directory)."""
  if _is_remote(source):
    tf.io.gfile.rename(source, target, overwrite=True)
  else:
    os.replace(source, target)


def _remove(path: str) -> None:
  """Removes a file or a directory tree."""
  if _isdir(path):
    if _is_remote(path):
      tf.io.gfile.rmtree(path)
    else:
      shutil.rmtree(path)
  elif _is_remote(path):
    tf.io.gfile.remove(path)
  else:
    os.remove(path)


def _discard(path: str) -> None:
  """Removes `path` if it exists; logs, not raises, if that fails.

  Called while an exception propagates (which a second one would hide) or
  once the output is in place.
  """
  try:
    if _exists(path):
      _remove(path)
  except (OSError, tf.errors.OpError) as e:
    logging.warning('Could not remove the leftover %s: %s', path, e)


def _open_text(path: str) -> IO[str]:
  if _is_remote(path):
    return tf.io.gfile.GFile(path, 'w')
  return open(path, 'w', encoding='utf-8')


# -------------------------------------------------------------- temporaries


def _split(path: str) -> Tuple[str, str]:
  """(directory, name) of a path naming a file or directory to write."""
  head, tail = os.path.split(path.rstrip('/'))
  if tail in ('', '.', '..'):
    raise ValueError(f'{path!r} does not name a file or directory to write.')
  return head, tail


def _sibling(path: str, kind: str) -> str:
  """`.NAME.KIND-PID-RANDOM` in `path`'s directory: hidden and unique."""
  head, tail = _split(path)
  return os.path.join(
      head, f'.{tail}.{kind}-{os.getpid()}-{secrets.token_hex(4)}')


def _swap(new: str, path: str) -> None:
  """Replaces the existing `path` by `new`: old aside, new in, old deleted."""
  old = _sibling(path, 'old')
  _rename(path, old)
  try:
    _rename(new, path)
  except BaseException:
    _rename(old, path)
    raise
  _discard(old)


def _move(source: str, target: str) -> None:
  """Renames `source` onto `target`, which may be an existing directory."""
  if _isdir(target):
    _swap(source, target)
  else:
    _rename(source, target)


# ------------------------------------------------------------------ the API


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path to write, renamed onto `path` on success.

  The block creates a file at the yielded path, with any writer. When it
  ends, the file is renamed onto `path`, replacing a file there. If it
  raises, or the rename fails, the temporary is removed and `path` is left
  as it was. `path`'s directory must exist.

  Args:
    path: the file to write.

  Yields:
    `.NAME.tmp-PID-RANDOM` in `path`'s directory, not yet created.

  Raises:
    FileNotFoundError: if the block created nothing at the yielded path.
    ValueError: if `path` names no file (e.g. '' or 'dir/').
  """
  temporary = _sibling(path, 'tmp')
  try:
    yield temporary
    if not _exists(temporary):
      raise FileNotFoundError(
          f'Nothing was written to {temporary}, the temporary of {path}.')
    _rename(temporary, path)
  except BaseException:
    _discard(temporary)
    raise


def write_json(path: str, obj: Any, **dump_kwargs: Any) -> None:
  """Writes `obj` as JSON (UTF-8) to `path`, which appears only complete.

  Args:
    path: the file to write (replaced if it exists); its directory must
      exist.
    obj: what `json.dump` serialises.
    **dump_kwargs: arguments of `json.dump`, e.g. indent=1, sort_keys=True.

  Raises:
    TypeError, ValueError: if `obj` cannot be serialised; `path` is then left
      as it was.
  """
  with atomic_path(path) as temporary:
    with _open_text(temporary) as f:
      json.dump(obj, f, **dump_kwargs)


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
  """Yields an empty temporary directory, renamed to `path` on success.

  The block writes the directory's whole content into the yielded one.
  When it ends, that one is renamed to `path`. An existing `path` is
  replaced only then: renamed aside to `.NAME.old-PID-RANDOM`, the new one
  renamed into place, the old one deleted (a process killed between the two
  renames leaves no `path`, and both hidden directories). If the block
  raises, the temporary is deleted and `path` is left as it was. Missing
  parents of `path` are created.

  Args:
    path: the directory to write.

  Yields:
    `.NAME.tmp-PID-RANDOM` in `path`'s parent, created empty.

  Raises:
    ValueError: if `path` names no directory (e.g. '' or '.').
  """
  head, _ = _split(path)
  if head:
    _makedirs(head)
  temporary = _sibling(path, 'tmp')
  _makedirs(temporary)
  try:
    yield temporary
    if _exists(path):
      _swap(temporary, path)
    else:
      _rename(temporary, path)
  except BaseException:
    _discard(temporary)
    raise


@contextlib.contextmanager
def atomic_files(directory: str, last: Sequence[str] = ()) -> Iterator[str]:
  """Yields a staging directory whose entries are then moved to `directory`.

  For an output of several files written into a directory that may hold
  other files, which stay. If `directory` does not exist, this is
  `atomic_directory(directory)`: it appears whole. Otherwise the block
  writes into a hidden staging directory inside it, whose entries are
  renamed into `directory` when the block ends, each replacing the entry of
  its name. The entries named in `last` (the ones that make an output
  readable, e.g. a checkpoint's `.index` and `checkpoint` files) go last,
  in that order, and their old versions are removed, in reverse order,
  before any entry moves: a reader never finds new files beside an old
  `last` one. If the block raises, the staging directory is deleted and
  `directory` is left as it was.

  Each rename is atomic, the set of them is not: a process killed while
  they run (after every file was complete) can leave some entries moved and
  the `last` ones missing.

  Args:
    directory: where the files go (created, whole, if missing).
    last: names of entries to move last, in this order; each must be
      written.

  Yields:
    The directory to write the entries into.

  Raises:
    FileNotFoundError: if an entry named in `last` was not written;
      nothing is moved then.
    NotADirectoryError: if `directory` exists and is not a directory.
  """
  if not _exists(directory):
    with atomic_directory(directory) as temporary:
      yield temporary
      _check_written(temporary, last)
    return
  if not _isdir(directory):
    raise NotADirectoryError(f'{directory} exists and is not a directory.')
  staging = _sibling(os.path.join(directory, 'staging'), 'tmp')
  _makedirs(staging)
  try:
    yield staging
    names = _check_written(staging, last)
    for name in reversed(last):
      if _exists(os.path.join(directory, name)):
        _remove(os.path.join(directory, name))
    for name in sorted(set(names) - set(last)) + list(last):
      _move(os.path.join(staging, name), os.path.join(directory, name))
  except BaseException:
    _discard(staging)
    raise
  _discard(staging)


def _check_written(directory: str, names: Sequence[str]) -> List[str]:
  """The entries of `directory`; raises unless `names` are among them."""
  entries = _listdir(directory)
  missing = [name for name in names if name not in entries]
  if missing:
    raise FileNotFoundError(
        f'{", ".join(missing)} not written (in {directory}).')
  return entries
