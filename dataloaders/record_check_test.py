"""Tests of the damaged-TFRecord finder and of reading past damage."""

import os

import pytest
import tensorflow as tf

from configs import unipercepnet as unipercepnet_cfg
from dataloaders import record_check
from dataloaders import unipercepnet_input
from data import shapes_dataset

# Each record of _write: 8 (length) + 4 (CRC) + 100 (data) + 4 (CRC) bytes.
_RECORD = 116


def _write(path, n):
  with tf.io.TFRecordWriter(path) as writer:
    for i in range(n):
      writer.write(bytes([i]) * 100)
  return path


def test_scan_names_the_first_damaged_record(tmp_path):
  good = _write(str(tmp_path / 'good.tfrecord'), 5)
  data = open(good, 'rb').read()
  assert len(data) == 5 * _RECORD
  truncated = str(tmp_path / 'truncated.tfrecord')
  with open(truncated, 'wb') as f:
    f.write(data[:2 * _RECORD + 50])  # Inside record 2.
  corrupted = str(tmp_path / 'corrupted.tfrecord')
  flipped = bytearray(data)
  flipped[3 * _RECORD + 30] ^= 0xff  # Data of record 3: its CRC fails.
  with open(corrupted, 'wb') as f:
    f.write(bytes(flipped))
  assert record_check.scan_file(good) == record_check.FileScan(good, 5)
  assert record_check.scan_file(truncated) == record_check.FileScan(
      truncated, 2, f'truncated record at {2 * _RECORD}')
  assert record_check.scan_file(corrupted) == record_check.FileScan(
      corrupted, 3, f'corrupted record at {3 * _RECORD + 12}')  # Its data.
  damaged = record_check.damaged_files(
      [str(tmp_path / '*.tfrecord'), good])
  assert [s.path for s in damaged] == [corrupted, truncated]
  message = record_check.report(damaged)
  assert (f'{truncated}: record 2 (0-based) is damaged, after 2 good ones: '
          f'truncated record at {2 * _RECORD}') in message
  assert good not in message


def test_skip_corrupt_records_reads_each_file_up_to_its_damage(tmp_path):
  data_dir = str(tmp_path / 'shapes')
  shapes_dataset.generate(data_dir, num_train=8, num_val=2, image_size=64,
                          num_train_shards=1)
  shard, = tf.io.gfile.glob(os.path.join(data_dir, 'train-*'))
  data = open(shard, 'rb').read()
  bad = str(tmp_path / 'bad.tfrecord')
  with open(bad, 'wb') as f:
    f.write(data[:len(data) // 2])
  readable = record_check.scan_file(bad).records
  assert 0 < readable < 8
  config = unipercepnet_cfg.DataConfig(
      input_path=[shard, bad], global_batch_size=1, is_training=False,
      drop_remainder=False, parser=unipercepnet_cfg.Parser())
  with pytest.raises(tf.errors.DataLossError):
    for _ in unipercepnet_input.build_dataset(config, [64, 64]):
      pass
  config.skip_corrupt_records = True
  count = sum(1 for _ in unipercepnet_input.build_dataset(config, [64, 64]))
  assert count == 8 + readable
