"""Tests for the synthetic shapes dataset generator."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
from pycocotools import coco as coco_lib
from pycocotools import mask as mask_lib
import pytest
import tensorflow as tf

from common import testing
from data import shapes_dataset
from official.vision.dataloaders import tf_example_decoder

_SIZE = 64
_NUM_TRAIN = 12
_NUM_VAL = 6


@pytest.fixture(scope='module')
def generated(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('shapes'))
  result = shapes_dataset.generate(out, num_train=_NUM_TRAIN,
                                   num_val=_NUM_VAL, image_size=_SIZE, seed=3)
  return out, result


def _read_bytes(paths):
  contents = []
  for path in paths:
    with open(path, 'rb') as f:
      contents.append(f.read())
  return contents


def _decode_rle(segmentation):
  rle = dict(segmentation, counts=segmentation['counts'].encode('ascii'))
  return mask_lib.decode(rle).astype(bool)


def test_layout_and_counts(generated):
  out, result = generated
  assert result['categories'] == {1: 'circle', 2: 'square', 4: 'triangle'}
  for split, num, shards in (('train', _NUM_TRAIN, 2), ('val', _NUM_VAL, 1)):
    info = result[split]
    assert info['json'] == os.path.join(out, f'{split}.json')
    assert len(glob.glob(os.path.join(info['image_dir'], '*.png'))) == num
    assert info['tfrecords'] == [
        os.path.join(out, f'{split}-{i:05d}-of-{shards:05d}.tfrecord')
        for i in range(shards)]
    assert info['stats']['images'] == num
    num_records = sum(
        1 for _ in tf.data.TFRecordDataset(info['tfrecords']))
    assert num_records == num


def test_determinism(tmp_path, generated):
  out, result = generated
  again = shapes_dataset.generate(str(tmp_path / 'a'), num_train=_NUM_TRAIN,
                                  num_val=_NUM_VAL, image_size=_SIZE, seed=3)
  other = shapes_dataset.generate(str(tmp_path / 'b'), num_train=_NUM_TRAIN,
                                  num_val=_NUM_VAL, image_size=_SIZE, seed=4)
  for split in shapes_dataset.SPLITS:
    first = _read_bytes([result[split]['json']] + result[split]['tfrecords'])
    second = _read_bytes([again[split]['json']] + again[split]['tfrecords'])
    third = _read_bytes([other[split]['json']] + other[split]['tfrecords'])
    assert first == second
    assert first[0] != third[0]
    assert first[1:] != third[1:]
    for name in sorted(os.listdir(result[split]['image_dir'])):
      assert _read_bytes([os.path.join(result[split]['image_dir'], name)]) == (
          _read_bytes([os.path.join(again[split]['image_dir'], name)]))
  assert result['train']['stats'] == again['train']['stats']


def test_coco_json(generated):
  _, result = generated
  for split in shapes_dataset.SPLITS:
    coco = coco_lib.COCO(result[split]['json'])
    assert sorted(coco.getCatIds()) == [1, 2, 4]
    assert {c['id']: c['name'] for c in coco.loadCats(coco.getCatIds())} == (
        shapes_dataset.CATEGORIES)
    empty = 0
    for image_id in coco.getImgIds():
      image = coco.loadImgs(image_id)[0]
      assert (image['height'], image['width']) == (_SIZE, _SIZE)
      anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
      # Deterministic empty images: index % 10 == 0 (ids are index + 1).
      if (image_id - 1) % 10 == 0:
        assert not anns
      empty += int(not anns)
      union = np.zeros((_SIZE, _SIZE), dtype=np.int32)
      for ann in anns:
        assert ann['iscrowd'] == 0
        assert ann['category_id'] in shapes_dataset.CATEGORIES
        m = _decode_rle(ann['segmentation'])
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), m)
        assert ann['area'] == m.sum() >= shapes_dataset.MIN_VISIBLE_AREA
        ys, xs = np.nonzero(m)
        assert ann['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                               ys.max() - ys.min() + 1]
        union += m
      assert union.max() <= 1  # Occlusion removes overlaps.
    assert empty == result[split]['stats']['empty_images'] >= 1
  stats = result['train']['stats']
  assert stats['overlapping_pairs'] >= 1
  assert stats['occluded'] >= 1
  assert stats['annotations'] == sum(stats['per_category'].values())


def test_render_is_deterministic_and_occludes():
  image, instances, stats = shapes_dataset.render_image(0, 'train', 5, 128)
  image2, instances2, _ = shapes_dataset.render_image(0, 'train', 5, 128)
  np.testing.assert_array_equal(image, image2)
  assert image.dtype == np.uint8 and image.shape == (128, 128, 3)
  assert len(instances) == len(instances2)
  # Image 5 of every ten forces its second shape onto the first one.
  assert stats['overlapping_pairs'] >= 1
  assert shapes_dataset.render_image(0, 'train', 10, 128)[1] == []


def test_tfrecord_matches_json(generated):
  _, result = generated
  decoder = tf_example_decoder.TfExampleDecoder(include_mask=True)
  for split in shapes_dataset.SPLITS:
    with open(result[split]['json']) as f:
      coco = json.load(f)
    images = {str(im['id']): im for im in coco['images']}
    anns = {}
    for ann in coco['annotations']:
      anns.setdefault(str(ann['image_id']), []).append(ann)
    seen = set()
    for record in tf.data.TFRecordDataset(result[split]['tfrecords']):
      example = tf.train.Example.FromString(record.numpy())
      assert example.features.feature['image/format'].bytes_list.value == [
          b'png']
      decoded = decoder.decode(record)
      source_id = decoded['source_id'].numpy().decode()
      seen.add(source_id)
      image_ann = anns.get(source_id, [])
      png = Image.open(os.path.join(result[split]['image_dir'],
                                    images[source_id]['file_name']))
      np.testing.assert_array_equal(decoded['image'].numpy(), np.asarray(png))
      assert decoded['height'].numpy() == _SIZE
      assert decoded['width'].numpy() == _SIZE
      classes = decoded['groundtruth_classes'].numpy()
      assert classes.tolist() == [a['category_id'] for a in image_ann]
      boxes = decoded['groundtruth_boxes'].numpy()
      masks = decoded['groundtruth_instance_masks'].numpy()
      assert boxes.shape == (len(image_ann), 4)
      assert masks.shape[0] == len(image_ann)
      for box, m, ann in zip(boxes, masks, image_ann):
        x, y, w, h = ann['bbox']
        expected = np.array([y, x, y + h, x + w], np.float32) / _SIZE
        np.testing.assert_allclose(box, expected, atol=1.0 / _SIZE)
        np.testing.assert_array_equal(m.astype(bool),
                                      _decode_rle(ann['segmentation']))
        assert set(np.unique(m)) <= {0.0, 1.0}
      np.testing.assert_allclose(decoded['groundtruth_area'].numpy(),
                                 [a['area'] for a in image_ann])
    assert seen == set(images)


def test_cli(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = tmp_path / 'cli'
  proc = subprocess.run(
      [sys.executable, '-m', 'data.shapes_dataset', f'--output_dir={out}',
       '--num_train=3', '--num_val=2', '--image_size=48', '--seed=1'],
      cwd=root, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'), check=False)
  assert proc.returncode == 0, proc.stderr
  lines = [s for s in proc.stdout.splitlines() if s.strip()]
  assert len(lines) == 1
  assert lines[0].startswith(f'shapes dataset -> {out}: train: 3 images')
  assert 'val: 2 images' in lines[0]
  assert (out / 'train.json').exists() and (out / 'val.json').exists()
  assert (out / 'val-00000-of-00001.tfrecord').exists()



def test_a_split_failing_midway_leaves_nothing_and_keeps_the_old_one(
    tmp_path, monkeypatch):
  out = str(tmp_path / 'shapes')
  os.mkdir(out)
  real_example = shapes_dataset.coco_tfrecord._serialized_example
  calls = []

  def third_example_fails(*args):
    calls.append(args[0]['file_name'])
    if len(calls) == 3:
      raise RuntimeError('encoding failed')
    return real_example(*args)

  monkeypatch.setattr(shapes_dataset.coco_tfrecord, '_serialized_example',
                      third_example_fails)
  with pytest.raises(RuntimeError, match='encoding failed'):
    shapes_dataset.generate_split(out, 'val', 4, image_size=32, num_shards=2)
  assert calls == ['val_000000.png', 'val_000001.png', 'val_000002.png']
  assert not os.listdir(out)  # Nor images, nor temporaries.
  monkeypatch.undo()

  # A split written before is unchanged by a failed rewrite, images too.
  shapes_dataset.generate_split(out, 'val', 4, image_size=32, num_shards=2)
  before = testing.files_under(out)
  assert sorted(before) == [
      'val-00000-of-00002.tfrecord', 'val-00001-of-00002.tfrecord',
      'val.json'] + [f'val/images/val_00000{i}.png' for i in range(4)]
  calls.clear()
  monkeypatch.setattr(shapes_dataset.coco_tfrecord, '_serialized_example',
                      third_example_fails)
  with pytest.raises(RuntimeError, match='encoding failed'):
    shapes_dataset.generate_split(out, 'val', 4, image_size=32, seed=1,
                                  num_shards=2)
  monkeypatch.undo()
  assert testing.files_under(out) == before
  assert sorted(os.listdir(out)) == [
      'val', 'val-00000-of-00002.tfrecord', 'val-00001-of-00002.tfrecord',
      'val.json']

  # Nor is an image whose writing fails halfway left half-written.
  real_save = Image.Image.save
  saved = []

  def save_half_of_the_second(image, path, *args, **kwargs):
    if len(saved) == 1:
      with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n')
      raise OSError('disk full')
    saved.append(path)
    return real_save(image, path, *args, **kwargs)

  monkeypatch.setattr(Image.Image, 'save', save_half_of_the_second)
  with pytest.raises(OSError, match='disk full'):
    shapes_dataset.generate(out, num_train=4, num_val=2, image_size=32)
  assert testing.files_under(out) == before
