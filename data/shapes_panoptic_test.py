"""Tests for the synthetic shapes panoptic dataset generator."""

import json
import os
import subprocess
import sys

from absl import flags
import numpy as np
from PIL import Image
from pycocotools import coco as coco_lib
import pytest
import tensorflow as tf

from common import testing
from data import shapes_panoptic
from official.vision.data import create_coco_tf_record
from official.vision.data import tfrecord_lib
from official.vision.dataloaders import tf_example_decoder

_SIZE = 64
_NUM_TRAIN = 12
_NUM_VAL = 8
_SEED = 3
_PANOPTIC_KEYS = ('image/panoptic/category_mask',
                  'image/panoptic/instance_mask',
                  'image/segmentation/class/encoded')


@pytest.fixture(scope='module')
def generated(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('panoptic'))
  result = shapes_panoptic.generate(out, num_train=_NUM_TRAIN,
                                    num_val=_NUM_VAL, image_size=_SIZE,
                                    seed=_SEED)
  return out, result


def _load(path):
  with open(path) as f:
    return json.load(f)


def _segment_ids(png_path):
  rgb = np.asarray(Image.open(png_path)).astype(np.int64)
  return rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]


def _split_data(info):
  """[(image, instance annotations, panoptic annotation, id map)]."""
  coco = _load(info['json'])
  panoptic = _load(info['panoptic_json'])
  anns = {}
  for ann in coco['annotations']:
    anns.setdefault(ann['image_id'], []).append(ann)
  pan = {a['image_id']: a for a in panoptic['annotations']}
  return [(image, anns.get(image['id'], []), pan[image['id']],
           _segment_ids(os.path.join(info['panoptic_dir'],
                                     pan[image['id']]['file_name'])))
          for image in coco['images']]


def _records(info):
  out = {}
  for record in tf.data.TFRecordDataset(info['tfrecords']):
    parsed = tf.io.parse_single_example(record, {
        key: tf.io.FixedLenFeature([], tf.string)
        for key in _PANOPTIC_KEYS + ('image/source_id',)})
    masks = {key: tf.io.decode_png(parsed[key], channels=1).numpy()[..., 0]
             for key in _PANOPTIC_KEYS}
    out[int(parsed['image/source_id'].numpy())] = (record, masks)
  return out


def test_layout_and_categories(generated):
  out, result = generated
  assert result['thing_categories'] == {1: 'circle', 2: 'square',
                                        4: 'triangle'}
  assert result['stuff_categories'] == shapes_panoptic.STUFF_CATEGORIES
  assert not set(shapes_panoptic.THING_CATEGORIES) & set(
      shapes_panoptic.STUFF_CATEGORIES)
  assert sorted(os.listdir(out)) == [
      'panoptic_train.json', 'panoptic_val.json', 'train',
      'train-00000-of-00002.tfrecord', 'train-00001-of-00002.tfrecord',
      'train.json', 'val', 'val-00000-of-00001.tfrecord', 'val.json']
  for split, num in (('train', _NUM_TRAIN), ('val', _NUM_VAL)):
    info = result[split]
    names = [f'{split}_{i:06d}.png' for i in range(num)]
    assert sorted(os.listdir(info['image_dir'])) == names
    assert sorted(os.listdir(info['panoptic_dir'])) == names
    panoptic = _load(info['panoptic_json'])
    assert panoptic['categories'] == [
        {'id': c, 'name': n, 'isthing': int(c in (1, 2, 4)),
         'supercategory': 'shape' if c in (1, 2, 4) else 'scene'}
        for c, n in sorted(shapes_panoptic.CATEGORIES.items())]
    assert [c['id'] for c in _load(info['json'])['categories']] == [1, 2, 4]
    assert sum(1 for _ in tf.data.TFRecordDataset(info['tfrecords'])) == num
    image = np.asarray(Image.open(os.path.join(info['image_dir'], names[0])))
    assert image.shape == (_SIZE, _SIZE, 3) and image.dtype == np.uint8


def test_every_pixel_is_one_thing_stuff_or_void(generated):
  _, result = generated
  for split in shapes_panoptic.SPLITS:
    for image, anns, pan, ids in _split_data(result[split]):
      infos = pan['segments_info']
      assert pan['file_name'] == image['file_name']
      assert set(np.unique(ids)) <= {0} | {s['id'] for s in infos}
      assert len({s['id'] for s in infos}) == len(infos)
      things = [s for s in infos if s['category_id'] in (1, 2, 4)]
      # Things first (the instance JSON's order), then stuff by id.
      assert infos[:len(things)] == things
      assert [s['category_id'] for s in infos[len(things):]] == sorted(
          s['category_id'] for s in infos[len(things):])
      assert {s['category_id'] for s in infos[len(things):]} <= {92, 93, 94}
      assert len(things) == len(anns)
      for s in infos:
        m = ids == s['id']
        assert s['area'] == m.sum() > 0
        ys, xs = np.nonzero(m)
        assert s['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                             ys.max() - ys.min() + 1]
        assert s['iscrowd'] in (0, 1)
        if s['category_id'] not in (1, 2, 4):
          assert s['iscrowd'] == 0
          assert s['area'] >= 1
        else:
          assert s['area'] >= shapes_panoptic.MIN_VISIBLE_AREA
      assert sum(s['area'] for s in infos) + (ids == 0).sum() == _SIZE**2


def test_void_crowd_and_empty_images_where_promised(generated):
  _, result = generated
  for split, num in (('train', _NUM_TRAIN), ('val', _NUM_VAL)):
    stats = result[split]['stats']
    crowd_images = void_images = empty = 0
    for image, anns, pan, ids in _split_data(result[split]):
      index = image['id'] - 1
      crowds = [s for s in pan['segments_info'] if s['iscrowd']]
      if shapes_panoptic.has_void(index):
        assert (ids == 0).sum() > 0
      if not shapes_panoptic.has_things(index):
        assert not anns and len(pan['segments_info']) == 3
      if shapes_panoptic.has_crowd(index):
        assert len(crowds) == 1 and crowds[0]['category_id'] in (1, 2, 4)
        assert [a['iscrowd'] for a in anns].count(1) == 1
        assert anns[0]['iscrowd'] == 1  # Drawn first.
      else:
        assert not crowds and not any(a['iscrowd'] for a in anns)
      crowd_images += len(crowds)
      void_images += int((ids == 0).any())
      empty += int(not anns)
    assert crowd_images == sum(shapes_panoptic.has_crowd(i)
                               for i in range(num)) >= 1
    assert stats['crowd_segments'] == crowd_images
    assert stats['void_images'] == void_images >= sum(
        shapes_panoptic.has_void(i) for i in range(num)) >= 2
    assert stats['images_without_things'] == empty >= 1
    assert sum(stats['pixel_fractions'].values()) == pytest.approx(1.0)
    assert min(stats['pixel_fractions'][n]
               for n in ('sky', 'road', 'grass')) > 0.1


def test_instance_json_masks_are_the_thing_segments(generated):
  _, result = generated
  for split in shapes_panoptic.SPLITS:
    coco = coco_lib.COCO(result[split]['json'])
    assert sorted(coco.getCatIds()) == [1, 2, 4]
    for image, anns, pan, ids in _split_data(result[split]):
      loaded = coco.loadAnns(coco.getAnnIds(imgIds=image['id']))
      assert [a['id'] for a in loaded] == [a['id'] for a in anns]
      for ann, segment in zip(loaded, pan['segments_info']):
        assert ann['category_id'] == segment['category_id']
        assert ann['iscrowd'] == segment['iscrowd']
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool),
                                      ids == segment['id'])
        assert ann['area'] == segment['area']
        assert ann['bbox'] == segment['bbox']


def test_records_match_the_panoptic_png_and_json(generated):
  _, result = generated
  decoder = tf_example_decoder.TfExampleDecoder(include_mask=True)
  for split in shapes_panoptic.SPLITS:
    records = _records(result[split])
    data = _split_data(result[split])
    assert sorted(records) == [image['id'] for image, *_ in data]
    for image, anns, pan, ids in data:
      record, masks = records[image['id']]
      category = np.zeros_like(ids)
      instance = np.zeros_like(ids)
      semantic = np.zeros_like(ids)
      for k, s in enumerate(pan['segments_info']):
        thing = s['category_id'] in (1, 2, 4)
        category[ids == s['id']] = s['category_id']
        instance[ids == s['id']] = k + 1 if thing else 0
        semantic[ids == s['id']] = 1 if thing else s['category_id'] - 90
      np.testing.assert_array_equal(
          masks['image/panoptic/category_mask'], category)
      np.testing.assert_array_equal(
          masks['image/panoptic/instance_mask'], instance)
      np.testing.assert_array_equal(
          masks['image/segmentation/class/encoded'], semantic)
      # One instance id per thing segment: 1..T, in the objects' order.
      assert sorted(set(np.unique(instance)) - {0}) == list(
          range(1, len(anns) + 1))

      decoded = decoder.decode(record)
      png = Image.open(os.path.join(result[split]['image_dir'],
                                    image['file_name']))
      np.testing.assert_array_equal(decoded['image'].numpy(), np.asarray(png))
      assert decoded['groundtruth_classes'].numpy().tolist() == [
          a['category_id'] for a in anns]
      assert decoded['groundtruth_is_crowd'].numpy().tolist() == [
          bool(a['iscrowd']) for a in anns]
      object_masks = decoded['groundtruth_instance_masks'].numpy()
      assert object_masks.shape == (len(anns), _SIZE, _SIZE)
      for k, m in enumerate(object_masks):
        np.testing.assert_array_equal(m.astype(bool), instance == k + 1)


def test_determinism(tmp_path, generated):
  _, result = generated
  again = shapes_panoptic.generate(str(tmp_path / 'a'), num_train=_NUM_TRAIN,
                                   num_val=_NUM_VAL, image_size=_SIZE,
                                   seed=_SEED)
  other = shapes_panoptic.generate(str(tmp_path / 'b'), num_train=_NUM_TRAIN,
                                   num_val=_NUM_VAL, image_size=_SIZE,
                                   seed=_SEED + 1)
  assert testing.files_under(str(tmp_path / 'a')) == testing.files_under(
      os.path.dirname(result['train']['json']))
  for split in shapes_panoptic.SPLITS:
    for key in ('json', 'panoptic_json'):
      with open(result[split][key], 'rb') as f, open(again[split][key],
                                                     'rb') as g:
        assert f.read() == g.read()
      with open(result[split][key], 'rb') as f, open(other[split][key],
                                                     'rb') as g:
        assert f.read() != g.read()
  assert result['train']['stats'] == again['train']['stats']


def test_stuff_regions_are_large_and_textures_distinct():
  colours = {92: [], 93: [], 94: []}
  for index in range(30):
    rendered = shapes_panoptic.render_panoptic(0, 'train', index, 128)
    rng = np.random.default_rng([0, 0, index, 17])
    stuff, _, _ = shapes_panoptic._stuff_layout(rng, 128)
    for c in (92, 93, 94):
      assert (stuff == c).mean() >= shapes_panoptic.MIN_STUFF_FRACTION
    for s in rendered['segments']:
      if s['category_id'] in colours:
        pixels = rendered['image'][s['mask']].astype(float)
        colours[s['category_id']].append(pixels.mean(axis=0))
  sky, road, grass = (np.mean(colours[c], axis=0) for c in (92, 93, 94))
  assert sky[2] > sky[0] + 60  # Blue.
  assert grass[1] > grass[0] + 40 and grass[1] > grass[2] + 40  # Green.
  assert np.ptp(road) < 15  # Grey.


def test_crowd_members_touch():
  for size in (64, 128):
    for index in range(40):
      rng = np.random.default_rng([index, size])
      category_id, members = shapes_panoptic._crowd_members(rng, size)
      assert category_id in (1, 2, 4) and 3 <= len(members) <= 5
      # Members overlap in a chain: the overlap graph is connected. (A
      # sharp triangle corner can rasterise as a lone pixel, so the union
      # itself need not be one connected component.)
      reached, frontier = {0}, [0]
      while frontier:
        a = frontier.pop()
        for b in range(len(members)):
          if b not in reached and (members[a] & members[b]).any():
            reached.add(b)
            frontier.append(b)
      assert reached == set(range(len(members)))


def test_crowd_kept_when_the_flag_says_skip(tmp_path, monkeypatch):
  flag = flags.FLAGS['panoptic_skip_crowd']
  monkeypatch.setattr(flag, 'value', True)
  monkeypatch.setattr(flag, 'present', 1)
  read_image = tfrecord_lib.read_image
  info = shapes_panoptic.generate_split(str(tmp_path), 'val', 4,
                                        image_size=32)
  assert tfrecord_lib.read_image is read_image
  assert flag.value is True and flag.present == 1
  _, masks = _records(info)[4]
  pan = _load(info['panoptic_json'])['annotations'][3]
  assert pan['segments_info'][0]['iscrowd'] == 1
  assert (masks['image/panoptic/instance_mask'] == 1).sum() == (
      pan['segments_info'][0]['area'])


def test_unparsed_flags_stay_unparsed(tmp_path):
  if flags.FLAGS.is_parsed():
    pytest.skip('absl flags were parsed in this process')
  shapes_panoptic.generate_split(str(tmp_path), 'val', 2, image_size=32)
  assert not flags.FLAGS.is_parsed()
  with pytest.raises(flags.UnparsedFlagAccessError):
    _ = flags.FLAGS.panoptic_skip_crowd


def test_a_split_failing_midway_leaves_nothing(tmp_path, monkeypatch):
  out = str(tmp_path / 'pan')
  os.mkdir(out)
  real = create_coco_tf_record.create_tf_example
  calls = []

  def third_fails(image, *args, **kwargs):
    calls.append(image['file_name'])
    if len(calls) == 3:
      raise RuntimeError('encoding failed')
    return real(image, *args, **kwargs)

  monkeypatch.setattr(create_coco_tf_record, 'create_tf_example',
                      third_fails)
  with pytest.raises(RuntimeError, match='encoding failed'):
    shapes_panoptic.generate_split(out, 'val', 4, image_size=32,
                                   num_shards=2)
  assert calls == ['val_000000.png', 'val_000001.png', 'val_000002.png']
  assert not os.listdir(out)
  monkeypatch.undo()
  shapes_panoptic.generate_split(out, 'val', 4, image_size=32)
  before = testing.files_under(out)
  calls.clear()
  monkeypatch.setattr(create_coco_tf_record, 'create_tf_example',
                      third_fails)
  with pytest.raises(RuntimeError, match='encoding failed'):
    shapes_panoptic.generate_split(out, 'val', 4, image_size=32, seed=1)
  assert testing.files_under(out) == before


def test_cli(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = tmp_path / 'cli'
  proc = subprocess.run(
      [sys.executable, '-m', 'data.shapes_panoptic', f'--output_dir={out}',
       '--num_train=3', '--num_val=2', '--image_size=48', '--seed=1'],
      cwd=root, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'), check=False)
  assert proc.returncode == 0, proc.stderr
  lines = [s for s in proc.stdout.splitlines() if s.strip()]
  assert lines[0] == f'shapes panoptic dataset -> {out}'
  assert lines[1].startswith('train: 3 images, ')
  assert lines[2].startswith('val: 2 images, ')
  assert lines[3].startswith('elapsed ')
  assert (out / 'panoptic_val.json').exists()
  assert (out / 'val-00000-of-00001.tfrecord').exists()


def test_works_when_model_gardens_flag_was_deleted(tmp_path):
  # coco_tfrecord.define_flags deletes Model Garden's flags.
  saved = flags.FLAGS['panoptic_skip_crowd']
  delattr(flags.FLAGS, 'panoptic_skip_crowd')
  try:
    info = shapes_panoptic.generate_split(str(tmp_path), 'val', 4,
                                          image_size=32)
  finally:
    if 'panoptic_skip_crowd' in flags.FLAGS:
      delattr(flags.FLAGS, 'panoptic_skip_crowd')
    flags.FLAGS[saved.name] = saved
  _, masks = _records(info)[4]
  crowd = _load(info['panoptic_json'])['annotations'][3]['segments_info'][0]
  assert crowd['iscrowd'] == 1
  assert (masks['image/panoptic/instance_mask'] == 1).sum() == crowd['area']
