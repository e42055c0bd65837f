"""Tests for the COCO-to-TFRecord converter (library and command)."""

import io
import json
import os
import re
import subprocess
import sys

import numpy as np
from PIL import Image
from pycocotools import coco as coco_lib
from pycocotools import mask as mask_lib
import pytest
import tensorflow as tf

from common import testing
from data import coco_tfrecord
from data import coco_utils
from official.vision.dataloaders import tf_example_decoder

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mask(height, width, *rects):
  mask = np.zeros((height, width), np.uint8)
  for y0, x0, y1, x1 in rects:
    mask[y0:y1, x0:x1] = 1
  return mask


def _compressed(mask):
  rle = mask_lib.encode(np.asfortranarray(mask))
  return {'size': list(mask.shape), 'counts': rle['counts'].decode('ascii')}


def _annotation(ann_id, image, category_id, segmentation, iscrowd=0):
  """An annotation whose bbox and area are its mask's, as pycocotools has it."""
  rle = coco_utils.to_rle(segmentation, image['height'], image['width'])
  ann = {'id': ann_id, 'image_id': image['id'], 'category_id': category_id,
         'segmentation': segmentation, 'iscrowd': iscrowd,
         'bbox': [float(v) for v in mask_lib.toBbox(rle)],
         'area': float(mask_lib.area(rle))}
  if iscrowd is None:  # As LVIS writes them.
    del ann['iscrowd']
  return ann


def _dataset():
  """6 images (2 without annotations), every mask kind, categories 3, 7, 12."""
  sizes = {1: (24, 32, 'a.png'), 2: (20, 28, 'b.jpg'), 3: (24, 32, 'c.png'),
           4: (16, 40, 'd.jpg'), 5: (24, 32, 'e.jpeg'), 6: (30, 20, 'f.png')}
  images = [{'id': i, 'height': h, 'width': w, 'file_name': name}
            for i, (h, w, name) in sizes.items()]
  im = {image['id']: image for image in images}
  two_squares = [[1, 2, 9, 2, 9, 10, 1, 10], [20, 4, 30, 4, 30, 8, 20, 8]]
  annotations = [
      _annotation(101, im[1], 3, two_squares),
      _annotation(205, im[1], 7, _compressed(_mask(24, 32, (12, 3, 20, 15)))),
      _annotation(17, im[1], 12, coco_utils.uncompressed_rle(
          _mask(24, 32, (0, 16, 6, 32))), iscrowd=1),
      _annotation(4, im[2], 12, coco_utils.uncompressed_rle(
          _mask(20, 28, (2, 2, 18, 9), (5, 12, 9, 20)))),
      _annotation(5, im[2], 3, _compressed(_mask(20, 28, (10, 10, 20, 28))),
                  iscrowd=1),
      _annotation(6, im[2], 7, [[0, 0, 27, 0, 14, 9]], iscrowd=1),
      _annotation(7, im[4], 7, [[2, 1, 38, 3, 20, 15, 5, 12]]),
      _annotation(8, im[4], 3, two_squares, iscrowd=1),
      _annotation(9, im[4], 12, _compressed(_mask(16, 40, (1, 30, 15, 39))),
                  iscrowd=None),
      _annotation(10, im[6], 3, _compressed(_mask(30, 20, (0, 0, 30, 1)))),
  ]
  categories = [{'id': 12, 'name': 'truck'}, {'id': 3, 'name': 'person'},
                {'id': 7, 'name': 'car'}]
  return {'images': images, 'annotations': annotations,
          'categories': categories}


@pytest.fixture
def files(tmp_path):
  """(annotation file, image dir, output prefix) of `_dataset`."""
  image_dir = tmp_path / 'images'
  image_dir.mkdir()
  rng = np.random.default_rng(0)
  coco = _dataset()
  for image in coco['images']:
    pixels = rng.integers(0, 255, (image['height'], image['width'], 3))
    Image.fromarray(pixels.astype(np.uint8)).save(
        image_dir / image['file_name'])
  annotation_file = tmp_path / 'train.json'
  annotation_file.write_text(json.dumps(coco))
  return str(annotation_file), str(image_dir), str(tmp_path / 'out' / 'train')


def _records(paths):
  """{source_id: decoded example} of every record, and the formats seen."""
  decoder = tf_example_decoder.TfExampleDecoder(include_mask=True)
  records, formats = {}, {}
  for record in tf.data.TFRecordDataset(paths):
    example = decoder.decode(record)
    source_id = int(example['source_id'].numpy())
    assert source_id not in records
    records[source_id] = example
    formats[source_id] = tf.train.Example.FromString(
        record.numpy()).features.feature['image/format'].bytes_list.value[0]
  return records, formats


def test_every_kind_of_annotation_reads_back_as_the_json_says(files):
  annotation_file, image_dir, prefix = files
  out = io.StringIO()
  summary = coco_tfrecord.convert(annotation_file, image_dir, prefix,
                                  num_shards=3, num_workers=2, out=out)
  assert summary['shards'] == [f'{prefix}-0000{i}-of-00003.tfrecord'
                               for i in range(3)]
  assert sorted(os.listdir(os.path.dirname(prefix))) == [
      os.path.basename(p) for p in summary['shards']]
  records, formats = _records(summary['shards'])
  ground_truth = coco_lib.COCO(annotation_file)
  assert sorted(records) == sorted(ground_truth.getImgIds()) == [1, 2, 3, 4,
                                                                 5, 6]
  for image_id, example in records.items():
    image = ground_truth.imgs[image_id]
    height, width = image['height'], image['width']
    anns = ground_truth.imgToAnns[image_id]
    assert example['image'].shape == (height, width, 3)
    assert example['groundtruth_classes'].numpy().tolist() == [
        a['category_id'] for a in anns]
    assert example['groundtruth_is_crowd'].numpy().tolist() == [
        bool(a.get('iscrowd')) for a in anns]
    boxes = [[y / height, x / width, (y + h) / height, (x + w) / width]
             for x, y, w, h in (a['bbox'] for a in anns)]
    np.testing.assert_allclose(
        example['groundtruth_boxes'].numpy().reshape(-1, 4),
        np.reshape(boxes, (-1, 4)), rtol=1e-6)
    masks = example['groundtruth_instance_masks'].numpy()
    assert masks.shape == (len(anns), height, width)
    for mask, ann in zip(masks, anns):
      np.testing.assert_array_equal(mask, ground_truth.annToMask(ann))
    assert formats[image_id] == (
        b'png' if image['file_name'].endswith('.png') else b'jpeg')
  assert (summary['images'], summary['empty_images'], summary['annotations'],
          summary['crowd'], summary['skipped']) == (6, 2, 10, 4, 0)


def test_workers_write_the_same_bytes(files):
  annotation_file, image_dir, prefix = files
  one = coco_tfrecord.convert(annotation_file, image_dir, prefix + '1',
                              num_shards=2, num_workers=0, out=io.StringIO())
  two = coco_tfrecord.convert(annotation_file, image_dir, prefix + '2',
                              num_shards=2, num_workers=2, out=io.StringIO())
  for a, b in zip(one['shards'], two['shards']):
    assert os.path.getsize(a) > 0
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
      assert fa.read() == fb.read()


def test_progress_lines():
  out = io.StringIO()
  progress = coco_tfrecord.Progress(out, every_fraction=0.25,
                                    every_seconds=1e9)
  for done in range(1, 11):
    progress(done, 10)
  done = [int(re.match(r'\[(\d+)/10 images\] \d+%, [\d.]+ img/s, ETA \d+ s$',
                       line).group(1)) for line in out.getvalue().splitlines()]
  assert done == [1, 3, 5, 7, 9, 10]


def _set(index, **fields):
  def mutate(coco):
    coco['annotations'][index].update(fields)
  return mutate


def _truncate_counts(coco):
  counts = coco['annotations'][1]['segmentation']['counts']
  coco['annotations'][1]['segmentation']['counts'] = counts[:-2]


# mutation of _dataset(), words of the error.
_ERRORS = {
    'unknown_image_id': (
        _set(1, image_id=99),
        'annotation 205 (annotations[1]): image_id 99 is not in images'),
    'unknown_category_id': (
        _set(3, category_id=5), "annotation 4 (annotations[3], image 2 "
        "'b.jpg'): category_id 5 is not in categories"),
    'short_polygon': (
        _set(0, segmentation=[[1, 2, 9, 2]]), "annotation 101 (annotations[0]"
        ", image 1 'a.png'): polygon 0 has 4 coordinates, fewer than 6"),
    'rle_size_mismatch': (
        _set(1, segmentation=_compressed(_mask(10, 32, (1, 3, 8, 15)))),
        "annotation 205 (annotations[1], image 1 'a.png'): RLE size [10, 32] "
        "differs from the image's [height, width] [24, 32]"),
    'rle_counts_cut': (
        _truncate_counts, "annotation 205 (annotations[1], image 1 'a.png'): "
        'RLE counts '),
    'box_outside_the_image': (
        _set(2, bbox=[16, 0, 17, 6]), "annotation 17 (annotations[2], image 1 "
        "'a.png'): bbox [16, 0, 17, 6] ends outside the 32x24 image (x + w = "
        '33 > width 32)'),
    'missing_image_file': (
        lambda coco: coco['images'][3].update(file_name='gone.jpg'),
        "image 4 (images[3]) 'gone.jpg': no file "),
}


@pytest.mark.parametrize('name', sorted(_ERRORS))
def test_json_errors_name_the_entry_and_write_nothing(files, name):
  annotation_file, image_dir, prefix = files
  mutate, words = _ERRORS[name]
  coco = json.loads(open(annotation_file).read())
  mutate(coco)
  with open(annotation_file, 'w') as f:
    json.dump(coco, f)
  with pytest.raises(ValueError) as error:
    coco_tfrecord.convert(annotation_file, image_dir, prefix, num_shards=2,
                          num_workers=2, out=io.StringIO())
  message = str(error.value)
  assert words in message
  assert 'train.json: 1 problem(s) to fix before converting' in message
  assert ('For a full report: python tools/check_dataset.py '
          f'--annotation_file={annotation_file}') in message
  assert os.listdir(os.path.dirname(prefix)) == []


def test_a_failing_image_leaves_no_shard(files):
  annotation_file, image_dir, prefix = files
  Image.new('RGB', (10, 10)).save(os.path.join(image_dir, 'f.png'))
  with pytest.raises(ValueError, match=r"image 6 'f.png': the file is 10x10 "
                     r'\(width x height\), the JSON says 20x30'):
    coco_tfrecord.convert(annotation_file, image_dir, prefix, num_shards=2,
                          num_workers=2, out=io.StringIO())
  assert os.listdir(os.path.dirname(prefix)) == []


def test_a_failure_midway_keeps_the_previous_shards(files):
  """An interrupted rewrite leaves the earlier shards, and no temporaries."""
  annotation_file, image_dir, prefix = files
  coco = json.loads(open(annotation_file).read())
  os.makedirs(os.path.dirname(prefix))
  coco_tfrecord.write_tfrecords(coco, image_dir, prefix, num_shards=3)
  before = testing.files_under(os.path.dirname(prefix))
  assert sorted(before) == [f'train-0000{i}-of-00003.tfrecord'
                            for i in range(3)]

  def stop_after_three(done, total):
    del total
    if done == 3:
      raise KeyboardInterrupt()  # As Ctrl-C would, halfway through.

  coco['images'].reverse()  # Other shards, were they written.
  with pytest.raises(KeyboardInterrupt):
    coco_tfrecord.write_tfrecords(coco, image_dir, prefix, num_shards=3,
                                  progress=stop_after_three)
  assert testing.files_under(os.path.dirname(prefix)) == before
  # Shards of a new prefix, interrupted, are not left either.
  with pytest.raises(KeyboardInterrupt):
    coco_tfrecord.write_tfrecords(coco, image_dir, prefix + '_new',
                                  num_shards=2, progress=stop_after_three)
  assert testing.files_under(os.path.dirname(prefix)) == before


def test_library_callers_validate_too(files, tmp_path):
  coco = _dataset()
  coco['annotations'][0]['bbox'] = [10, 1, 0, 4]
  output_dir = tmp_path / 'library'
  output_dir.mkdir()
  with pytest.raises(ValueError, match=r'COCO dict: 1 problem.*\n  '
                     r'annotation 101 .*bbox \[10, 1, 0, 4\] has zero width'):
    coco_tfrecord.write_tfrecords(coco, files[1], str(output_dir / 'o'))
  assert os.listdir(output_dir) == []


def _command(*args):
  return subprocess.run(
      [sys.executable, '-m', 'data.coco_tfrecord', *args],
      capture_output=True, text=True, cwd=_ROOT, timeout=300, check=False)


def test_command_prints_progress_and_a_summary(files):
  annotation_file, image_dir, prefix = files
  result = _command(f'--annotation_file={annotation_file}',
                    f'--image_dir={image_dir}', f'--output_prefix={prefix}',
                    '--num_shards=2', '--num_workers=2')
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines[0] == (f'{annotation_file}: checking it, then writing 2 '
                      'shard(s) with 2 worker(s)')
  progress = [line for line in lines if line.startswith('[')]
  assert progress and all(re.fullmatch(
      r'\[\d/6 images\] \d+%, [\d.]+ img/s, ETA \d+ s', p) for p in progress)
  assert progress[-1].startswith('[6/6 images] 100%, ')
  assert re.fullmatch(
      re.escape(f'Wrote {prefix}-*-of-00002.tfrecord: 6 images (2 without '
                'annotations), 10 annotations (4 crowd), 0 skipped, 2 '
                'shard(s), ') + r'\d+ s\.', lines[-1])
  assert len(_records(tf.io.gfile.glob(prefix + '-*'))[0]) == 6

  # Model Garden's flags are refused, not ignored.
  result = _command(f'--annotation_file={annotation_file}',
                    f'--image_dir={image_dir}', f'--output_prefix={prefix}',
                    '--include_masks')
  assert result.returncode != 0
  assert 'Unknown command line flag \'include_masks\'' in result.stderr
