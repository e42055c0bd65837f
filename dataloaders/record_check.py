"""Finds the corrupt TFRecord files of a data config, by name and record.

TensorFlow reports a truncated or damaged record as `DataLossError:
truncated record at 860899` (or `corrupted record at ...`), naming neither
the file nor the record; among 256 COCO shards nobody can tell which one is
bad. `scan` reads files through and says where each one breaks.
"""

import dataclasses
import re
from typing import Any, List, Optional, Sequence

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class FileScan:
  path: str
  # Records read before the first damaged one (all of them when intact).
  records: int
  # TensorFlow's message for the first damaged record; None when intact.
  error: Optional[str] = None

  def describe(self) -> str:
    return (f'{self.path}: record {self.records} (0-based) is damaged, '
            f'after {self.records} good ones: {self.error}')


class DamagedFileError(ValueError):
  """A TFRecord file with a damaged record (`scan` says where)."""

  def __init__(self, scan: FileScan):
    super().__init__(scan.describe())
    self.scan = scan


def input_files(input_path: Any) -> List[str]:
  """The files a DataConfig's input_path (patterns, comma-separated or a
  list) names, sorted."""
  patterns = [input_path] if isinstance(input_path, str) else list(
      input_path)
  files = []
  for pattern in patterns:
    for part in str(pattern).split(','):
      if part:
        files.extend(sorted(tf.io.gfile.glob(part)))
  return files


def _short(message: str) -> str:
  """'truncated record at 234' from TensorFlow's longer message."""
  found = re.search(r'(truncated|corrupted) record at \d+', message)
  return found.group(0) if found else message


def scan_file(path: str) -> FileScan:
  """Reads one TFRecord file through; where its first damaged record is."""
  dataset = tf.data.TFRecordDataset(path, buffer_size=1 << 22)
  try:
    return FileScan(path, int(dataset.reduce(np.int64(0),
                                              lambda n, _: n + 1)))
  except tf.errors.DataLossError:
    pass
  # Damaged: read again one record at a time to find which.
  records = 0
  iterator = iter(dataset)
  while True:
    try:
      next(iterator)
    except StopIteration:  # Not reproduced (e.g. the file was replaced).
      return FileScan(path, records)
    except tf.errors.DataLossError as e:
      return FileScan(path, records, _short(e.message))
    records += 1


def damaged_files(input_paths: Sequence[Any]) -> List[FileScan]:
  """The damaged files among those the input paths name."""
  scans = [scan_file(p) for input_path in input_paths
           for p in input_files(input_path)]
  return [s for s in scans if s.error]


def report(damaged: Sequence[FileScan]) -> str:
  """A message naming each damaged file, and what the user can do."""
  return ('Damaged TFRecord file(s):\n  ' +
          '\n  '.join(s.describe() for s in damaged) +
          '\nWrite them again (e.g. `python -m data.coco_tfrecord`), remove '
          'them from the input_path, or set '
          'task.train_data.skip_corrupt_records=true to train on without '
          'their damaged records (a damaged file is read up to its first '
          'damaged record).')
