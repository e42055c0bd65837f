"""Tests for the BDD100K panoptic segmentation converter."""

import glob
import json
import os

from absl import flags
import numpy as np
from PIL import Image
from pycocotools import coco as coco_lib
import pytest
import tensorflow as tf

from data import bdd100k_panoptic

_H, _W = 48, 64
_CROWD, _IGNORE, _OCCLUDED, _TRUNCATED = 2, 1, 4, 8


def _rect(y0, y1, x0, x1, height=_H, width=_W):
  mask = np.zeros((height, width), dtype=bool)
  mask[y0:y1, x0:x1] = True
  return mask


# Bitmask a.png: (BDD100K instance id, R = category, G = attributes, mask),
# drawn in order (later ones over earlier ones).
_A = [
    (30, 30, 0, _rect(0, 10, 0, 64)),  # sky
    (10, 10, 0, _rect(10, 20, 0, 20)),  # building
    (300, 10, 0, _rect(10, 20, 44, 64)),  # building, another id: merged
    (29, 29, _IGNORE, _rect(10, 20, 20, 30)),  # vegetation, ignore: void
    (7, 7, 0, _rect(32, 48, 0, 64)),  # road
    (31, 35, _OCCLUDED, _rect(20, 30, 2, 10)),  # car
    (32, 31, _CROWD, _rect(20, 32, 12, 20)),  # person crowd
    (33, 35, _IGNORE, _rect(36, 44, 30, 40)),  # car ignore (over road)
    (258, 40, _TRUNCATED | _OCCLUDED, _rect(22, 40, 44, 60)),  # truck
    (34, 77, 0, _rect(20, 26, 30, 36)),  # unknown category: void
    (35, 0, 0, _rect(27, 30, 30, 36)),  # 'unlabeled' with an id: void
]
# Bitmask b.png (image b.png): a bus, a rider, pixels with a category but
# instance id 0 and an instance of two categories.
_B = [
    (40, 34, 0, _rect(5, 25, 5, 40)),  # bus
    (41, 32, 0, _rect(30, 40, 50, 60)),  # rider
    (0, 7, 0, _rect(44, 48, 0, 10)),  # road without instance id: void
    (42, 33, 0, _rect(0, 4, 50, 64)),  # bicycle ...
    (42, 37, 0, _rect(4, 6, 50, 64)),  # ... and motorcycle: mixed, void
]
# (category, instance id) expected in the records, per BDD100K instance id.
_EXPECTED_A = {30: (30, 0), 10: (10, 0), 300: (10, 0), 29: (0, 0),
               7: (7, 0), 31: (35, 1), 32: (31, 2), 33: (35, 3),
               258: (40, 4), 34: (0, 0), 35: (0, 0)}
_EXPECTED_B = {40: (34, 1), 41: (32, 2), 0: (0, 0), 42: (0, 0)}
# Thing annotations: (BDD100K id, category, iscrowd, ignore).
_THINGS_A = [(31, 35, 0, 0), (32, 31, 1, 0), (33, 35, 1, 1),
             (258, 40, 0, 0)]
_THINGS_B = [(40, 34, 0, 0), (41, 32, 0, 0)]


def _bitmask(spec, height=_H, width=_W):
  bitmask = np.zeros((height, width, 4), dtype=np.uint8)
  for bdd_id, r, g, mask in spec:
    bitmask[mask] = [r, g, bdd_id >> 8, bdd_id & 255]
  return bitmask


def _bdd_ids(spec):
  """int [h, w] BDD100K instance id per pixel (last drawn wins)."""
  ids = np.zeros((_H, _W), dtype=np.int64)
  for bdd_id, _, _, mask in spec:
    ids[mask] = bdd_id
  return ids


def _expected_maps(spec, expected):
  ids = _bdd_ids(spec)
  category = np.zeros((_H, _W), np.uint8)
  instance = np.zeros((_H, _W), np.uint8)
  for bdd_id, (cat, inst) in expected.items():
    category[ids == bdd_id] = cat
    instance[ids == bdd_id] = inst
  return category, instance


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp('pan')
  images, bitmasks = root / 'images', root / 'bitmasks'
  images.mkdir()
  bitmasks.mkdir()
  rng = np.random.default_rng(0)

  def image(name, height=_H, width=_W):
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(images / name)

  image('a.jpg')
  image('b.png')
  image('c.jpg')  # Its bitmask is 40 rows high.
  image('e.jpg')  # Its bitmask is RGB.
  Image.fromarray(_bitmask(_A), 'RGBA').save(bitmasks / 'a.png')
  Image.fromarray(_bitmask(_B), 'RGBA').save(bitmasks / 'b.png')
  Image.fromarray(_bitmask(_A[:1])[:40], 'RGBA').save(bitmasks / 'c.png')
  Image.fromarray(_bitmask(_A[:1]), 'RGBA').save(bitmasks / 'd.png')
  Image.fromarray(_bitmask(_A)[:, :, :3], 'RGB').save(bitmasks / 'e.png')
  return {'root': root, 'images': str(images), 'bitmasks': str(bitmasks)}


@pytest.fixture(scope='module')
def converted(data):
  """The split converted once, image b.png being a PNG image."""
  output = str(data['root'] / 'out')
  result = bdd100k_panoptic.write_split(
      data['bitmasks'], data['images'], output, 'val', num_shards=2,
      image_ext='.jpg,.png')
  return output, result


def test_model_garden_state_is_restored(converted):
  del converted  # Converted already: MG ran.
  module = bdd100k_panoptic.create_coco_tf_record
  assert module._STUFF_CLASSES_OFFSET == 90  # pylint: disable=protected-access
  assert module.tfrecord_lib.read_image.__name__ == 'read_image'
  flag = flags.FLAGS['panoptic_skip_crowd']
  assert not flag.value and not flag.present


def test_category_table():
  assert len(bdd100k_panoptic.CATEGORIES) == 40
  assert [c for c, _, _ in bdd100k_panoptic.CATEGORIES] == list(range(1, 41))
  assert bdd100k_panoptic.THING_CATEGORY_IDS == list(range(31, 41))
  assert bdd100k_panoptic.STUFF_CATEGORY_IDS == list(range(1, 31))
  names = {c: n for c, n, _ in bdd100k_panoptic.CATEGORIES}
  assert [names[c] for c in bdd100k_panoptic.THING_CATEGORY_IDS] == [
      'person', 'rider', 'bicycle', 'bus', 'car', 'caravan', 'motorcycle',
      'trailer', 'train', 'truck']
  assert (names[1], names[7], names[27], names[30]) == (
      'dynamic', 'road', 'traffic sign frame', 'sky')
  assert set(bdd100k_panoptic.SUPERCATEGORIES) == set(range(1, 41))


def test_problems_name_the_files(converted, data):
  _, result = converted
  by_file = {}
  for p in result.problems:
    by_file.setdefault(os.path.basename(p.source), []).append(p)
  assert sorted(by_file) == ['a.png', 'b.png', 'c.png', 'd.png', 'e.png']
  (a_problem,) = by_file['a.png']
  assert a_problem.label == '34' and 'unknown category: id 77' in str(
      a_problem)
  assert sorted(p.label for p in by_file['b.png']) == ['0', '42']
  assert 'mixed' in [p for p in by_file['b.png'] if p.label == '42'][0].reason
  (c_problem,) = by_file['c.png']
  assert 'image skipped' in c_problem.reason
  assert '40x64' in c_problem.reason and '48x64' in c_problem.reason
  (d_problem,) = by_file['d.png']
  assert 'missing image' in d_problem.reason and 'd.jpg' in d_problem.reason
  (e_problem,) = by_file['e.png']
  assert 'not RGBA' in e_problem.reason
  assert str(d_problem).startswith(os.path.join(data['bitmasks'], 'd.png'))


def test_files_and_panoptic_json(converted):
  output, result = converted
  assert sorted(os.listdir(output)) == [
      'panoptic_val', 'panoptic_val.json', 'val-00000-of-00002.tfrecord',
      'val-00001-of-00002.tfrecord', 'val.json']
  assert sorted(os.listdir(os.path.join(output, 'panoptic_val'))) == [
      'a.png', 'b.png']
  with open(os.path.join(output, 'panoptic_val.json')) as f:
    panoptic = json.load(f)
  assert panoptic == json.loads(json.dumps(result.panoptic))
  assert [im['file_name'] for im in panoptic['images']] == ['a.jpg', 'b.png']
  assert [im['id'] for im in panoptic['images']] == [1, 2]
  cats = {c['id']: c for c in panoptic['categories']}
  assert len(cats) == 40 and cats[35]['isthing'] == 1
  assert cats[7]['isthing'] == 0 and cats[35]['name'] == 'car'

  ann_a = panoptic['annotations'][0]
  assert ann_a['file_name'] == 'a.png'
  info = [(s['id'], s['category_id'], s['iscrowd'], s['area'])
          for s in ann_a['segments_info']]
  ids = _bdd_ids(_A)
  area = lambda *bdd: float(np.isin(ids, bdd).sum())
  assert info == [
      (1, 35, 0, 80.0), (2, 31, 1, 96.0), (3, 35, 1, 80.0),
      (4, 40, 0, area(258)), (256 * 7, 7, 0, area(7)),
      (256 * 10, 10, 0, 400.0), (256 * 30, 30, 0, 640.0)]
  building = ann_a['segments_info'][5]
  assert building['bdd100k_ids'] == [10, 300]
  assert building['bbox'] == [0, 10, 64, 10]
  # The panoptic PNG: R + 256 G + 256^2 B, pixel by pixel.
  rgb = np.asarray(Image.open(os.path.join(output, 'panoptic_val',
                                           'a.png'))).astype(np.int64)
  segment_ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
  expected = np.zeros((_H, _W), np.int64)
  for s in ann_a['segments_info']:
    expected[np.isin(ids, s['bdd100k_ids'])] = s['id']
  np.testing.assert_array_equal(segment_ids, expected)
  assert (segment_ids == 0).sum() == area(0, 29, 34, 35)  # Void.


def _parse(path):
  features = {
      'image/source_id': tf.io.FixedLenFeature([], tf.string),
      'image/format': tf.io.FixedLenFeature([], tf.string),
      'image/panoptic/category_mask': tf.io.FixedLenFeature([], tf.string),
      'image/panoptic/instance_mask': tf.io.FixedLenFeature([], tf.string),
      'image/segmentation/class/encoded': tf.io.FixedLenFeature(
          [], tf.string),
      'image/object/mask': tf.io.VarLenFeature(tf.string),
      'image/object/class/label': tf.io.VarLenFeature(tf.int64),
      'image/object/is_crowd': tf.io.VarLenFeature(tf.int64),
  }
  out = {}
  for record in tf.data.TFRecordDataset(path):
    ex = tf.io.parse_single_example(record, features)
    decode = lambda key: tf.io.decode_png(ex[key])[..., 0].numpy()
    out[int(ex['image/source_id'].numpy())] = {
        'format': ex['image/format'].numpy(),
        'category': decode('image/panoptic/category_mask'),
        'instance': decode('image/panoptic/instance_mask'),
        'semantic': decode('image/segmentation/class/encoded'),
        'masks': [tf.io.decode_png(m)[..., 0].numpy() for m in
                  tf.sparse.to_dense(ex['image/object/mask']).numpy()],
        'labels': tf.sparse.to_dense(
            ex['image/object/class/label']).numpy().tolist(),
        'crowd': tf.sparse.to_dense(
            ex['image/object/is_crowd']).numpy().tolist(),
    }
  return out


def test_records_pixel_by_pixel(converted):
  output, _ = converted
  shards = sorted(glob.glob(os.path.join(output, 'val-*.tfrecord')))
  first, second = _parse(shards[0]), _parse(shards[1])
  assert sorted(first) == [1] and sorted(second) == [2]
  records = {**first, **second}
  for image_id, spec, expected, things in [
      (1, _A, _EXPECTED_A, _THINGS_A), (2, _B, _EXPECTED_B, _THINGS_B)]:
    record = records[image_id]
    category, instance = _expected_maps(spec, expected)
    np.testing.assert_array_equal(record['category'], category)
    np.testing.assert_array_equal(record['instance'], instance)
    # MG's semantic PNG: 0 void, 1 things, stuff category id + 1.
    semantic = np.where(category > 30, 1,
                        np.where(category > 0, category + 1, 0))
    np.testing.assert_array_equal(record['semantic'], semantic)
    assert record['labels'] == [c for _, c, _, _ in things]
    assert record['crowd'] == [crowd for _, _, crowd, _ in things]
    ids = _bdd_ids(spec)
    for k, (bdd_id, _, _, _) in enumerate(things):
      np.testing.assert_array_equal(record['masks'][k], ids == bdd_id)
      np.testing.assert_array_equal(record['masks'][k],
                                    record['instance'] == k + 1)
  assert records[1]['format'] == b'jpeg' and records[2]['format'] == b'png'


def test_instances_json_loads_with_pycocotools(converted):
  output, _ = converted
  coco = coco_lib.COCO(os.path.join(output, 'val.json'))
  assert sorted(coco.getCatIds()) == list(range(31, 41))
  anns = coco.loadAnns(sorted(coco.getAnnIds()))
  expected = [(1, t) for t in _THINGS_A] + [(2, t) for t in _THINGS_B]
  assert [a['id'] for a in anns] == list(range(1, len(expected) + 1))
  for ann, (image_id, (bdd_id, cat, crowd, ignore)) in zip(anns, expected):
    spec = _A if image_id == 1 else _B
    assert (ann['image_id'], ann['bdd100k_id'], ann['category_id'],
            ann['iscrowd'], ann['ignore']) == (image_id, bdd_id, cat, crowd,
                                               ignore)
    mask = _bdd_ids(spec) == bdd_id
    np.testing.assert_array_equal(coco.annToMask(ann), mask)
    assert ann['area'] == float(mask.sum())
  assert anns[0]['bbox'] == [2, 20, 8, 10]


def test_parse_bitmask_ignore_as_void():
  parsed = bdd100k_panoptic.parse_bitmask(_bitmask(_A), ignore_as='void')
  assert [(s.segment_id, s.category_id, s.iscrowd)
          for s in parsed.segments[:3]] == [(1, 35, False), (2, 31, True),
                                            (3, 40, False)]
  ids = _bdd_ids(_A)
  assert (parsed.segment_ids[ids == 33] == 0).all()
  assert parsed.void_stuff == 1


def test_too_many_things_is_a_problem(tmp_path):
  images, bitmasks = tmp_path / 'images', tmp_path / 'bitmasks'
  images.mkdir()
  bitmasks.mkdir()
  Image.fromarray(np.zeros((_H, _W, 3), np.uint8)).save(images / 'x.jpg')
  bitmask = np.zeros((_H, _W, 4), np.uint8)
  flat = bitmask.reshape(-1, 4)
  for k in range(255):  # 255 cars of 12 pixels each.
    flat[12 * k:12 * (k + 1)] = [35, 0, (k + 1) >> 8, (k + 1) & 255]
  Image.fromarray(bitmask, 'RGBA').save(bitmasks / 'x.png')
  result = bdd100k_panoptic.write_split(
      str(bitmasks), str(images), str(tmp_path / 'out'), 'val')
  (problem,) = result.problems
  assert 'x.png' in problem.source and '255 thing segments' in str(problem)
  assert result.panoptic['images'] == []


def test_failure_leaves_nothing(data, tmp_path, monkeypatch):
  def fail(*args, **kwargs):
    raise RuntimeError('boom')
  monkeypatch.setattr(bdd100k_panoptic.create_coco_tf_record,
                      'create_tf_example', fail)
  output = tmp_path / 'out'
  with pytest.raises(RuntimeError):
    bdd100k_panoptic.write_split(data['bitmasks'], data['images'],
                                 str(output), 'val')
  assert os.listdir(output) == []


def test_strict_writes_nothing(converted, data, tmp_path):
  output = tmp_path / 'strict'
  with pytest.raises(ValueError, match='e.png'):
    bdd100k_panoptic.write_split(data['bitmasks'], data['images'],
                                 str(output), 'val', strict=True)
  assert os.listdir(output) == []


def test_command(converted, data, tmp_path, capsys):
  output = str(tmp_path / 'cli')
  status = bdd100k_panoptic.main([
      f'--bitmask_dir={data["bitmasks"]}', f'--image_dir={data["images"]}',
      f'--output_dir={output}', '--split=val', '--num_shards=1',
      '--image_ext=.jpg,.png', '--num_processes=2'])
  out = capsys.readouterr().out
  assert status == 0
  assert 'd.png: frame d.jpg' in out and 'missing image' in out
  assert '2 images (3 skipped), 6 thing segments (1 crowd, 1 ignored)' in out
  # Worker processes give the same JSONs as one process.
  reference, _ = converted
  assert sorted(_parse(os.path.join(
      output, 'val-00000-of-00001.tfrecord'))) == [1, 2]
  for name in ('val.json', 'panoptic_val.json'):
    with open(os.path.join(output, name)) as f, open(
        os.path.join(reference, name)) as g:
      assert json.load(f) == json.load(g)
