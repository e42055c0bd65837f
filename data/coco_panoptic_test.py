"""Tests for data/coco_panoptic.py: Model Garden's converter on COCO
panoptic files, with the NumPy 2 mend."""

import json
import os
import subprocess
import sys

from absl import flags
import numpy as np
import pytest
import tensorflow as tf

from data import coco_panoptic
from data import coco_utils
from data import shapes_panoptic
from official.vision.data import create_coco_tf_record
from official.vision.data import tfrecord_lib

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_KEYS = ('image/panoptic/category_mask', 'image/panoptic/instance_mask',
         'image/object/class/label')


def _records(pattern):
  features = {k: tf.io.VarLenFeature(tf.string) for k in _KEYS[:2]}
  features[_KEYS[2]] = tf.io.VarLenFeature(tf.int64)
  out = []
  for path in sorted(tf.io.gfile.glob(pattern)):
    for record in tf.data.TFRecordDataset(path):
      parsed = tf.io.parse_single_example(record, features)
      out.append([tf.sparse.to_dense(parsed[k]).numpy() for k in _KEYS])
  return out


def test_command_converts_coco_panoptic_files(tmp_path):
  """The shapes panoptic set is COCO panoptic files: converting them with
  Model Garden's flags gives the records its own writer made."""
  data = str(tmp_path / 'shapes')
  shapes_panoptic.generate(data, num_train=2, num_val=6, image_size=64)
  # COCO's own instance JSONs hold polygons and uncompressed RLE, which
  # Model Garden's converter reads (not compressed RLE, which ours holds).
  with open(os.path.join(data, 'val.json')) as f:
    instances = json.load(f)
  for ann in instances['annotations']:
    rle = coco_utils.uncompressed_rle(coco_utils.annotation_mask(
        ann['segmentation'], 64, 64))
    ann['segmentation'] = rle if ann['iscrowd'] else [rle]
  with open(tmp_path / 'instances_val.json', 'w') as f:
    json.dump(instances, f)
  prefix = str(tmp_path / 'out' / 'val')
  command = [
      sys.executable, '-m', 'data.coco_panoptic',
      f'--image_dir={data}/val/images',
      f'--object_annotations_file={tmp_path}/instances_val.json',
      f'--panoptic_annotations_file={data}/panoptic_val.json',
      f'--panoptic_masks_dir={data}/val/panoptic',
      '--include_masks', '--include_panoptic_masks',
      f'--output_file_prefix={prefix}', '--num_shards=1']
  with open(tmp_path / 'log', 'w') as log:
    code = subprocess.call(command, cwd=_ROOT, stdout=log, stderr=log)
  assert code == 0, (tmp_path / 'log').read_text()[-3000:]
  converted = _records(prefix + '*')
  written = _records(os.path.join(data, 'val-*'))
  assert len(converted) == len(written) == 6
  # Crowd images (index % 7 == 3) are among them: crowd segments are kept.
  for a, b in zip(sorted(converted, key=lambda r: r[0][0]),
                  sorted(written, key=lambda r: r[0][0])):
    for x, y in zip(a, b):
      if x.dtype == object:
        x, y = [tf.io.decode_png(v[0]).numpy() for v in (x, y)]
      np.testing.assert_array_equal(x, y)


def test_without_the_mend_model_garden_fails_on_numpy_2(tmp_path):
  data = str(tmp_path / 'shapes')
  shapes_panoptic.generate(data, num_train=2, num_val=2, image_size=32)
  mask_path = os.path.join(data, 'val', 'panoptic', 'val_000001.png')
  segments = []
  with coco_panoptic.model_garden_panoptic():
    masks = create_coco_tf_record.generate_coco_panoptics_masks(
        segments, mask_path, True, {})
  assert set(masks) == {'semantic_segmentation_mask', 'category_mask',
                        'instance_mask'}
  if np.lib.NumpyVersion(np.__version__) >= '2.0.0':
    with pytest.raises(OverflowError):
      create_coco_tf_record.generate_coco_panoptics_masks(
          segments, mask_path, True, {})


def test_state_is_restored():
  read_image = tfrecord_lib.read_image
  offset = create_coco_tf_record._STUFF_CLASSES_OFFSET  # pylint: disable=protected-access
  with coco_panoptic.model_garden_panoptic(stuff_offset=-1, skip_crowd=True):
    assert tfrecord_lib.read_image is not read_image
    assert flags.FLAGS.panoptic_skip_crowd
    assert create_coco_tf_record._STUFF_CLASSES_OFFSET == -1  # pylint: disable=protected-access
  assert tfrecord_lib.read_image is read_image
  assert create_coco_tf_record._STUFF_CLASSES_OFFSET == offset  # pylint: disable=protected-access
  assert not flags.FLAGS['panoptic_skip_crowd'].value
