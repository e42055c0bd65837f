"""Tests for the BDD100K instance-segmentation converter."""

import glob
import json
import os
import subprocess
import sys

from absl import app
import numpy as np
from PIL import Image
from pycocotools import coco as coco_lib
from pycocotools import mask as mask_lib
import pytest
import tensorflow as tf

from common import testing
from data import bdd100k
from data import bdd100k_labels
from official.vision.dataloaders import tf_example_decoder

_H, _W = 24, 32
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CATEGORIES = [
    {'id': 1, 'name': 'pedestrian', 'supercategory': 'human'},
    {'id': 2, 'name': 'rider', 'supercategory': 'human'},
    {'id': 3, 'name': 'car', 'supercategory': 'vehicle'},
    {'id': 4, 'name': 'truck', 'supercategory': 'vehicle'},
    {'id': 5, 'name': 'bus', 'supercategory': 'vehicle'},
    {'id': 6, 'name': 'train', 'supercategory': 'vehicle'},
    {'id': 7, 'name': 'motorcycle', 'supercategory': 'bike'},
    {'id': 8, 'name': 'bicycle', 'supercategory': 'bike'},
]


def _rect(y0, y1, x0, x1, height=_H, width=_W):
  mask = np.zeros((height, width), dtype=bool)
  mask[y0:y1, x0:x1] = True
  return mask


def _triangle():
  """Rows 14..23, row y covers x = 20 .. 20 + (y - 14): 55 pixels."""
  mask = np.zeros((_H, _W), dtype=bool)
  for y in range(14, 24):
    mask[y, 20:21 + (y - 14)] = True
  return mask


def _rle(mask):
  rle = mask_lib.encode(np.asfortranarray(mask.astype(np.uint8)))
  return {'counts': rle['counts'].decode('ascii'),
          'size': [int(v) for v in rle['size']]}


def _decode(segmentation):
  rle = dict(segmentation, counts=segmentation['counts'].encode('ascii'))
  return mask_lib.decode(rle).astype(bool)


# Frame a.jpg: (label id, category, attributes, mask or None for no rle,
# expected (category id, iscrowd, ignore, bbox, area) or None when skipped).
_L_SHAPE = _rect(12, 20, 0, 4) | _rect(16, 20, 4, 12)
_CORNER = _rect(23, 24, 31, 32)
_FRAME_A = [
    ('1', 'person', {'crowd': False, 'occluded': True}, _rect(2, 10, 3, 11),
     (1, 0, 0, [3, 2, 8, 8], 64.0)),
    ('2', 'van', {}, _L_SHAPE, (3, 0, 0, [0, 12, 12, 8], 64.0)),
    ('3', 'other vehicle', {'crowd': False}, _rect(0, 5, 20, 32),
     (3, 1, 1, [20, 0, 12, 5], 60.0)),
    ('4', 'car', {'crowd': True}, _rect(10, 24, 14, 30),
     (3, 1, 0, [14, 10, 16, 14], 224.0)),
    ('5', 'traffic light', {}, _rect(0, 2, 0, 2), None),
    ('6', 'car', {}, None, None),
    ('7', 'bus', {}, np.zeros((_H, _W), bool), None),
    ('8', 'bike', None, _CORNER, (8, 0, 0, [31, 23, 1, 1], 1.0)),
]
# Frame c.jpg: label k covers rows 2k..2k+1 and columns 3k..3k+2.
_FRAME_C = [
    ('c0', 'motor', 7, 0), ('c1', 'caravan', 3, 0), ('c2', 'trailer', 4, 1),
    ('c3', 'other person', 1, 1), ('c4', 'rider', 2, 0), ('c5', 'train', 6, 0),
    ('c6', 'truck', 4, 0), ('c7', 'bus', 5, 0), ('c8', 'pedestrian', 1, 0),
]
_SIZES = {'a.jpg': (_H, _W), 'b.jpg': (20, 28), 'c.jpg': (_H, _W),
          'd.jpg': (16, 12), 'e.jpg': (_H, _W), 'f.jpg': (_H, _W)}


def _c_mask(k):
  return _rect(2 * k, 2 * k + 2, 3 * k, 3 * k + 3)


def _scalabel_frames():
  labels_a = []
  for label_id, category, attributes, mask, _ in _FRAME_A:
    label = {'id': label_id, 'category': category, 'attributes': attributes}
    if mask is not None:
      label['rle'] = _rle(mask)
    labels_a.append(label)
  labels_c = [{'id': label_id, 'category': category,
               'attributes': {'crowd': False}, 'rle': _rle(_c_mask(k))}
              for k, (label_id, category, _, _) in enumerate(_FRAME_C)]
  labels_c.append({'id': 'c9', 'category': 'car',
                   'rle': _rle(_rect(0, 3, 0, 3, 10, 10))})
  return [
      {'name': 'a.jpg', 'labels': labels_a},
      {'name': 'b.jpg', 'labels': None},
      {'name': 'c.jpg', 'labels': labels_c},
      {'name': 'd.jpg'},
  ]


# Bitmask e.png: (instance id, R, G, mask, expected (category id, iscrowd,
# ignore, bbox, area) or None when skipped).
_BITMASK_E = [
    (1, 3, 0, _rect(0, 6, 0, 8), (3, 0, 0, [0, 0, 8, 6], 48.0)),
    (2, 3, bdd100k_labels.OCCLUDED_BIT | bdd100k_labels.TRUNCATED_BIT,
     _rect(8, 12, 0, 32), (3, 0, 0, [0, 8, 32, 4], 128.0)),
    (3, 3, bdd100k_labels.IGNORE_BIT, _rect(14, 20, 10, 16),
     (3, 1, 1, [10, 14, 6, 6], 36.0)),
    (4, 9, 0, _rect(0, 2, 28, 32), None),
    (256, 8, bdd100k_labels.TRUNCATED_BIT, _triangle(),
     (8, 0, 0, [20, 14, 10, 10], 55.0)),
    (258, 1, bdd100k_labels.CROWD_BIT | bdd100k_labels.OCCLUDED_BIT,
     _rect(14, 24, 0, 5), (1, 1, 0, [0, 14, 5, 10], 50.0)),
]
_MIXED = 5  # Instance 5: left half bus, right half truck.


def _bitmask_e():
  bitmask = np.zeros((_H, _W, 4), dtype=np.uint8)
  for instance_id, r, g, mask, _ in _BITMASK_E:
    bitmask[mask] = [r, g, instance_id >> 8, instance_id & 255]
  bitmask[2:6, 10:12] = [5, 0, 0, _MIXED]
  bitmask[2:6, 12:14] = [4, 0, 0, _MIXED]
  return bitmask


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  """Images, both Scalabel layouts and bitmasks in a temporary folder."""
  root = tmp_path_factory.mktemp('bdd100k')
  image_dir = root / 'images'
  bitmask_dir = root / 'bitmasks'
  image_dir.mkdir()
  bitmask_dir.mkdir()
  rng = np.random.default_rng(0)
  for name, (height, width) in _SIZES.items():
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image_dir / name, quality=95)
  frames = _scalabel_frames()
  with open(root / 'list.json', 'w') as f:
    json.dump(frames, f)
  with open(root / 'dict.json', 'w') as f:
    json.dump({'frames': frames, 'config': {'imageSize': {
        'height': _H, 'width': _W}}}, f)
  Image.fromarray(_bitmask_e(), mode='RGBA').save(bitmask_dir / 'e.png')
  Image.fromarray(np.zeros((_H, _W, 4), np.uint8), mode='RGBA').save(
      bitmask_dir / 'f.png')
  return {'root': root, 'images': str(image_dir),
          'bitmasks': str(bitmask_dir), 'list': str(root / 'list.json'),
          'dict': str(root / 'dict.json')}


def _expected_scalabel():
  """(file_name, label id, mask, category, iscrowd, ignore, bbox, area)."""
  expected = []
  for label_id, _, _, mask, result in _FRAME_A:
    if result is not None:
      expected.append(('a.jpg', label_id, mask) + result)
  for k, (label_id, _, category_id, ignore) in enumerate(_FRAME_C):
    expected.append(('c.jpg', label_id, _c_mask(k), category_id, ignore,
                     ignore, [3 * k, 2 * k, 3, 2], 6.0))
  return expected


def _expected_bitmask():
  return [('e.jpg', instance_id, mask) + result
          for instance_id, _, _, mask, result in _BITMASK_E
          if result is not None]


def _check_annotations(coco, expected):
  images = {im['id']: im['file_name'] for im in coco['images']}
  assert [a['id'] for a in coco['annotations']] == list(
      range(1, len(expected) + 1))
  assert len(coco['annotations']) == len(expected)
  for ann, exp in zip(coco['annotations'], expected):
    file_name, label_id, mask, category_id, iscrowd, ignore, bbox, area = exp
    assert images[ann['image_id']] == file_name
    assert ann['bdd100k_id'] == label_id
    assert (ann['category_id'], ann['iscrowd'], ann['ignore']) == (
        category_id, iscrowd, ignore), label_id
    assert ann['bbox'] == bbox, label_id
    assert ann['area'] == area, label_id
    assert isinstance(ann['segmentation']['counts'], str)
    assert ann['segmentation']['size'] == list(mask.shape)
    np.testing.assert_array_equal(_decode(ann['segmentation']), mask)


def test_scalabel_to_coco(data):
  coco, problems = bdd100k_labels.scalabel_file_to_coco(data['list'],
                                                        data['images'])
  assert coco['categories'] == _CATEGORIES
  assert coco['images'] == [
      {'id': 1, 'file_name': 'a.jpg', 'height': 24, 'width': 32},
      {'id': 2, 'file_name': 'b.jpg', 'height': 20, 'width': 28},
      {'id': 3, 'file_name': 'c.jpg', 'height': 24, 'width': 32},
      {'id': 4, 'file_name': 'd.jpg', 'height': 16, 'width': 12},
  ]
  _check_annotations(coco, _expected_scalabel())
  src = data['list']
  assert problems == [
      bdd100k_labels.Problem(src, 'a.jpg', '5',
                             "unknown category: 'traffic light'"),
      bdd100k_labels.Problem(src, 'a.jpg', '6', 'no rle'),
      bdd100k_labels.Problem(src, 'a.jpg', '7', 'empty mask'),
      bdd100k_labels.Problem(src, 'c.jpg', 'c9',
                             'size mismatch: rle 10x10, frame 24x32'),
  ]
  assert str(problems[1]) == f'{src}: frame a.jpg: label 6: no rle'
  summary = bdd100k.summarize(coco, problems)
  assert summary == {
      'images': 4, 'empty_images': 2, 'annotations': 14,
      'per_category': {'pedestrian': 3, 'rider': 1, 'car': 4, 'truck': 2,
                       'bus': 1, 'train': 1, 'motorcycle': 1, 'bicycle': 1},
      'crowd': 1, 'ignored': 3, 'skipped': 4,
      'skipped_by_reason': {'unknown category': 1, 'no rle': 1,
                            'empty mask': 1, 'size mismatch': 1}}


def test_scalabel_layouts_agree(data):
  frames = bdd100k_labels.load_scalabel(data['dict'])
  assert frames == bdd100k_labels.load_scalabel(data['list'])
  assert [f['name'] for f in frames] == ['a.jpg', 'b.jpg', 'c.jpg', 'd.jpg']
  from_list, problems_list = bdd100k_labels.scalabel_file_to_coco(
      data['list'], data['images'])
  from_dict, problems_dict = bdd100k_labels.scalabel_file_to_coco(
      data['dict'], data['images'])
  assert from_dict == from_list
  assert [p._replace(source='') for p in problems_dict] == [
      p._replace(source='') for p in problems_list]
  assert problems_dict[0].source == data['dict']


def test_category_mapping():
  assert bdd100k_labels.map_category('person') == (1, False)
  assert bdd100k_labels.map_category('van') == (3, False)
  assert bdd100k_labels.map_category('bike') == (8, False)
  assert bdd100k_labels.map_category('other vehicle') == (3, True)
  assert bdd100k_labels.map_category('other person') == (1, True)
  assert bdd100k_labels.map_category('trailer') == (4, True)
  assert bdd100k_labels.map_category('traffic light') == (None, False)
  assert bdd100k_labels.map_category(None) == (None, False)


def test_bitmasks_to_coco(data):
  coco, problems = bdd100k_labels.bitmasks_to_coco(data['bitmasks'])
  assert coco['categories'] == _CATEGORIES
  assert coco['images'] == [
      {'id': 1, 'file_name': 'e.jpg', 'height': 24, 'width': 32},
      {'id': 2, 'file_name': 'f.jpg', 'height': 24, 'width': 32},
  ]
  _check_annotations(coco, _expected_bitmask())
  src = os.path.join(data['bitmasks'], 'e.png')
  assert problems == [
      bdd100k_labels.Problem(src, 'e.jpg', '4', 'unknown category: id 9'),
      bdd100k_labels.Problem(src, 'e.jpg', '5', 'mixed values: pixels of '
                             'several categories or attributes'),
  ]


def test_bitmask_must_be_rgba(tmp_path):
  Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / 'x.png')
  with pytest.raises(ValueError, match='x.png.*RGBA'):
    bdd100k_labels.bitmasks_to_coco(str(tmp_path))


def _decode_records(paths):
  decoder = tf_example_decoder.TfExampleDecoder(include_mask=True)
  records = {}
  for record in tf.data.TFRecordDataset(paths):
    example = tf.train.Example.FromString(record.numpy())
    decoded = {k: v.numpy() for k, v in decoder.decode(record).items()}
    decoded['encoded'] = example.features.feature[
        'image/encoded'].bytes_list.value[0]
    decoded['format'] = example.features.feature[
        'image/format'].bytes_list.value[0]
    records[decoded['source_id'].decode()] = decoded
  return records


def _check_records(records, coco, expected, image_dir):
  """The records hold the images and the expected annotations."""
  assert sorted(records) == sorted(str(im['id']) for im in coco['images'])
  by_image = {}
  for ann, exp in zip(coco['annotations'], expected):
    by_image.setdefault(ann['image_id'], []).append(exp)
  for image in coco['images']:
    rec = records[str(image['id'])]
    height, width = image['height'], image['width']
    with open(os.path.join(image_dir, image['file_name']), 'rb') as f:
      assert rec['encoded'] == f.read()
    assert rec['format'] == b'jpeg'
    assert rec['image'].shape == (height, width, 3)
    assert (rec['height'], rec['width']) == (height, width)
    exp = by_image.get(image['id'], [])
    assert rec['groundtruth_classes'].tolist() == [e[3] for e in exp]
    assert rec['groundtruth_is_crowd'].tolist() == [bool(e[4]) for e in exp]
    np.testing.assert_allclose(rec['groundtruth_area'], [e[7] for e in exp])
    boxes = np.array([[y / height, x / width, (y + h) / height,
                       (x + w) / width] for x, y, w, h in (e[6] for e in exp)],
                     np.float32).reshape(-1, 4)
    np.testing.assert_allclose(rec['groundtruth_boxes'], boxes, atol=1e-6)
    masks = rec['groundtruth_instance_masks']
    assert masks.shape == (len(exp), height, width)
    for m, e in zip(masks, exp):
      np.testing.assert_array_equal(m, e[2].astype(np.float32))


def test_write_split_scalabel(data, tmp_path):
  coco, _ = bdd100k_labels.scalabel_file_to_coco(data['list'], data['images'])
  calls = []
  result = bdd100k.write_split(coco, data['images'], str(tmp_path / 'out'),
                               'val', num_shards=2,
                               progress=lambda *a: calls.append(a))
  assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
  assert result['json'] == str(tmp_path / 'out' / 'val.json')
  assert result['tfrecords'] == [
      str(tmp_path / 'out' / f'val-0000{i}-of-00002.tfrecord')
      for i in range(2)]
  with open(result['json']) as f:
    assert json.load(f) == coco
  # pycocotools reads it back.
  loaded = coco_lib.COCO(result['json'])
  assert loaded.getAnnIds(iscrowd=True) == [3, 4, 8, 9]
  # Two shards, images round-robin.
  assert [sum(1 for _ in tf.data.TFRecordDataset(p))
          for p in result['tfrecords']] == [2, 2]
  _check_records(_decode_records(result['tfrecords']), coco,
                 _expected_scalabel(), data['images'])


def test_write_split_bitmasks(data, tmp_path):
  coco, _ = bdd100k_labels.bitmasks_to_coco(data['bitmasks'])
  result = bdd100k.write_split(coco, data['images'], str(tmp_path), 'train')
  assert result['tfrecords'] == [
      str(tmp_path / 'train-00000-of-00001.tfrecord')]
  _check_records(_decode_records(result['tfrecords']), coco,
                 _expected_bitmask(), data['images'])


def _fail_after_two(done, total):
  del total
  if done == 2:
    raise RuntimeError('interrupted at image 2')


def test_write_split_failing_midway_leaves_neither_json_nor_shards(
    data, tmp_path):
  coco, _ = bdd100k_labels.scalabel_file_to_coco(data['list'], data['images'])
  out = tmp_path / 'out'
  with pytest.raises(RuntimeError, match='interrupted at image 2'):
    bdd100k.write_split(coco, data['images'], str(out), 'val', num_shards=2,
                        progress=_fail_after_two)
  assert os.listdir(out) == []
  # A split written before stays as it was when its rewrite fails.
  bdd100k.write_split(coco, data['images'], str(out), 'val', num_shards=2)
  before = testing.files_under(out)
  assert sorted(before) == ['val-00000-of-00002.tfrecord',
                            'val-00001-of-00002.tfrecord', 'val.json']
  changed = dict(coco, images=coco['images'][::-1])
  with pytest.raises(RuntimeError, match='interrupted at image 2'):
    bdd100k.write_split(changed, data['images'], str(out), 'val',
                        num_shards=2, progress=_fail_after_two)
  assert testing.files_under(out) == before


def test_missing_images(data, tmp_path):
  coco, _ = bdd100k_labels.scalabel_file_to_coco(data['list'], data['images'])
  coco['images'][2]['file_name'] = 'gone.jpg'
  coco['images'][3]['file_name'] = 'lost.jpg'
  out = tmp_path / 'out'
  with pytest.raises(FileNotFoundError,
                     match=r'2 image file\(s\) missing .*: gone.jpg, lost.jpg'):
    bdd100k.write_split(coco, data['images'], str(out), 'val')
  assert not out.exists()
  # The converter checks every frame's image when given image_dir.
  label = {'id': '1', 'category': 'car', 'rle': _rle(_rect(0, 2, 0, 2))}
  frames = [{'name': 'a.jpg', 'labels': [label]},
            {'name': 'gone.jpg', 'labels': [label]},
            {'name': 'nowhere.jpg'}]
  with pytest.raises(FileNotFoundError, match=(
      r'2 image file\(s\) missing from .*: gone.jpg, nowhere.jpg$')):
    bdd100k_labels.scalabel_to_coco(frames, data['images'])
  # Without image_dir, only frames with RLE have a size.
  with pytest.raises(ValueError, match='1 frame.*nowhere.jpg.*image_dir'):
    bdd100k_labels.scalabel_to_coco(frames)
  coco, problems = bdd100k_labels.scalabel_to_coco(frames[:2])
  assert [(im['file_name'], im['height'], im['width'])
          for im in coco['images']] == [('a.jpg', 24, 32), ('gone.jpg', 24, 32)]
  assert len(coco['annotations']) == 2 and not problems


def test_image_size_mismatch(data, tmp_path):
  coco, _ = bdd100k_labels.scalabel_file_to_coco(data['list'], data['images'])
  coco['images'][1]['height'] = 21
  with pytest.raises(ValueError, match='b.jpg is 20x28, labels say 21x28'):
    bdd100k.write_split(coco, data['images'], str(tmp_path), 'val')
  assert not os.listdir(tmp_path)


def test_cli(data, tmp_path):
  out = tmp_path / 'cli'
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run(
      [sys.executable, '-m', 'data.bdd100k',
       f'--image_dir={data["images"]}', f'--bitmask_dir={data["bitmasks"]}',
       f'--output_dir={out}', '--split=train', '--num_shards=2'],
      cwd=_ROOT, capture_output=True, text=True, timeout=120, env=env,
      check=False)
  assert proc.returncode == 0, proc.stderr
  lines = [s for s in proc.stdout.splitlines() if s.strip()]
  src = os.path.join(data['bitmasks'], 'e.png')
  assert lines[:2] == [
      f'skipped: {src}: frame e.jpg: label 4: unknown category: id 9',
      f'skipped: {src}: frame e.jpg: label 5: mixed values: pixels of '
      'several categories or attributes']
  assert len(lines) == 3
  assert lines[2].startswith(
      f'bdd100k train -> {out}: 2 images (1 without annotations), 5 '
      'annotations (pedestrian 1, rider 0, car 3, truck 0, bus 0, train 0, '
      'motorcycle 0, bicycle 1), 1 crowd, 1 ignored, 2 skipped labels '
      '(mixed values 1, unknown category 1), 2 shard(s) (')
  coco, _ = bdd100k_labels.bitmasks_to_coco(data['bitmasks'])
  with open(out / 'train.json') as f:
    assert json.load(f) == coco
  paths = sorted(glob.glob(str(out / 'train-*-of-00002.tfrecord')))
  assert len(paths) == 2
  _check_records(_decode_records(paths), coco, _expected_bitmask(),
                 data['images'])


def test_cli_strict_stops_before_writing(data, tmp_path):
  out = tmp_path / 'strict'
  proc = subprocess.run(
      [sys.executable, '-m', 'data.bdd100k',
       f'--image_dir={data["images"]}', f'--bitmask_dir={data["bitmasks"]}',
       f'--output_dir={out}', '--split=train', '--strict'],
      cwd=_ROOT, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'), check=False)
  assert proc.returncode == 1
  src = os.path.join(data['bitmasks'], 'e.png')
  assert proc.stdout.splitlines()[0] == (
      f'skipped: {src}: frame e.jpg: label 4: unknown category: id 9')
  assert proc.stderr.strip().splitlines()[-1] == (
      'error: --strict: 2 label(s) would be skipped (listed above); nothing '
      'was written.')
  assert not out.exists()


def test_flag_checks():
  bdd100k.check_flag_values('x.json', None, 1)
  bdd100k.check_flag_values(None, 'bitmasks', 4)
  for labels, bitmask_dir in (('x.json', 'bitmasks'), (None, None)):
    with pytest.raises(app.UsageError, match='exactly one of --labels'):
      bdd100k.check_flag_values(labels, bitmask_dir, 1)
  with pytest.raises(app.UsageError, match='num_shards'):
    bdd100k.check_flag_values('x.json', None, 0)


def test_cli_missing_image(data, tmp_path):
  frames = bdd100k_labels.load_scalabel(data['list'])
  frames[2]['name'] = 'missing.jpg'
  labels = tmp_path / 'labels.json'
  with open(labels, 'w') as f:
    json.dump(frames, f)
  proc = subprocess.run(
      [sys.executable, '-m', 'data.bdd100k',
       f'--image_dir={data["images"]}', f'--labels={labels}',
       f'--output_dir={tmp_path / "o"}', '--split=val'],
      cwd=_ROOT, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'), check=False)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == (
      f'error: 1 image file(s) missing from {data["images"]}: missing.jpg')
  assert not (tmp_path / 'o').exists()
