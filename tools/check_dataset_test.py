"""Tests for tools/check_dataset.py: counts, every problem kind, the CLI."""

import copy
import io
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
from pycocotools import mask as mask_lib
import pytest

from tools import check_dataset

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SCRIPT = os.path.join(_ROOT, 'tools', 'check_dataset.py')
_HEIGHT, _WIDTH = 120, 160  # Of every image; not square to catch swaps.


def _polygon(x, y, w, h):
  """A rectangle as a COCO polygon."""
  return [x, y, x + w, y, x + w, y + h, x, y + h]


def _rect_mask(x, y, w, h, height=_HEIGHT, width=_WIDTH):
  mask = np.zeros((height, width), np.uint8)
  mask[y:y + h, x:x + w] = 1
  return mask


def _compressed(mask):
  rle = mask_lib.encode(np.asfortranarray(mask))
  return {'counts': rle['counts'].decode('ascii'), 'size': list(mask.shape)}


def _uncompressed(mask):
  flat = mask.ravel(order='F')
  counts, value, run = [], 0, 0
  for pixel in flat:
    if pixel != value:
      counts.append(run)
      value, run = pixel, 0
    run += 1
  counts.append(run)
  return {'counts': [int(c) for c in counts], 'size': list(mask.shape)}


def _ann(ann_id, image_id, category_id, bbox, segmentation, area, **extra):
  return dict(id=ann_id, image_id=image_id, category_id=category_id,
              bbox=bbox, segmentation=segmentation, area=area, iscrowd=0,
              **extra)


def _dataset():
  """4 images (one empty), 7 annotations of every mask kind, 3 categories.

  person (1): instances 1 (small), 2 (medium), 6 (large); crowd 4.
  car (2): instances 3 (large), 5 (small, two polygons); ignored 7.
  bus (5): none.
  """
  images = [{'id': i, 'file_name': name, 'height': _HEIGHT, 'width': _WIDTH}
            for i, name in ((1, 'a.png'), (2, 'b.png'), (3, 'c.png'),
                            (4, 'empty.png'))]
  anns = [
      _ann(1, 1, 1, [10, 10, 20, 20], [_polygon(10, 10, 20, 20)], 400),
      _ann(2, 1, 1, [40, 20, 50, 40], [_polygon(40, 20, 50, 40)], 2000),
      _ann(3, 1, 2, [0, 0, 110, 100],
           _compressed(_rect_mask(0, 0, 110, 100)), 11000),
      _ann(4, 2, 1, [5, 5, 60, 50],
           _uncompressed(_rect_mask(5, 5, 60, 50)), 3000),
      _ann(5, 2, 2, [100, 100, 30, 10],
           [_polygon(100, 100, 10, 10), _polygon(120, 100, 10, 10)], 200),
      _ann(6, 3, 1, [20, 10, 100, 100],
           _compressed(_rect_mask(20, 10, 100, 100)), 10000),
      _ann(7, 3, 2, [60, 60, 20, 20], [_polygon(60, 60, 20, 20)], 400,
           ignore=1),
  ]
  anns[3]['iscrowd'] = 1
  categories = [{'id': 1, 'name': 'person'}, {'id': 2, 'name': 'car'},
                {'id': 5, 'name': 'bus'}]
  return {'images': images, 'annotations': anns, 'categories': categories}


def _ann_by_id(coco, ann_id):
  return next(a for a in coco['annotations'] if a['id'] == ann_id)


def _problems(report):
  return [(p.kind, p.annotation_id, p.image_id, p.category_id)
          for p in report.problems]


def _write_json(path, coco):
  with open(path, 'w') as f:
    json.dump(coco, f)
  return str(path)


def _write_images(image_dir, coco, sizes=None):
  os.makedirs(image_dir, exist_ok=True)
  for image in coco['images']:
    width, height = (sizes or {}).get(image['file_name'],
                                      (image['width'], image['height']))
    Image.new('RGB', (width, height), (90, 120, 150)).save(
        os.path.join(image_dir, image['file_name']))


def test_counts_of_a_clean_dataset():
  report = check_dataset.check_annotations(_dataset(), 'data/train.json')

  assert report.problems == []
  rows = {c.name: (c.category_id, c.instances, c.crowd, c.images, c.small,
                   c.medium, c.large) for c in report.classes}
  assert rows == {'person': (1, 3, 1, 2, 1, 1, 1),
                  'car': (2, 2, 1, 2, 1, 0, 1),
                  'bus': (5, 0, 0, 0, 0, 0, 0)}
  assert (report.num_images, report.num_annotations) == (4, 7)
  assert report.empty_images == 1
  assert report.empty_image_examples == ['empty.png']
  assert [c.category_id for c in report.unused_categories] == [5]
  assert report.segmentation_kinds == {
      'polygons': 4, 'compressed RLE': 2, 'uncompressed RLE': 1}


def test_area_falls_back_to_the_mask_for_size_buckets():
  coco = _dataset()
  # 50x40 = 2000 px (medium) though the area field says 400 (small) ...
  _ann_by_id(coco, 1)['area'] = 'n/a'
  _ann_by_id(coco, 1)['segmentation'] = [_polygon(10, 10, 50, 40)]
  _ann_by_id(coco, 1)['bbox'] = [10, 10, 50, 40]
  report = check_dataset.check_annotations(coco, 'train.json')
  person = report.classes[0]
  assert (person.small, person.medium, person.large) == (0, 2, 1)


def test_format_report_of_a_clean_dataset():
  text = check_dataset.format_report(
      check_dataset.check_annotations(_dataset(), 'data/train.json'))
  lines = text.splitlines()
  assert lines[0] == 'Annotation file: data/train.json'
  header = next(i for i, line in enumerate(lines) if line.lstrip()
                .startswith('id'))
  assert lines[header].split() == ['id', 'name', 'instances',
                                   'crowd/ignored', 'images', 'small',
                                   'medium', 'large']
  assert lines[header + 1].split() == ['1', 'person', '3', '1', '2', '1', '1',
                                       '1']
  assert lines[header + 3].split() == ['5', 'bus', '0', '0', '0', '0', '0',
                                       '0']
  # Images 1, 2 and 3 hold instances; 1 holds both classes.
  assert lines[header + 4].split() == ['total', '5', '2', '3', '2', '1', '2']
  assert "Images without annotations: 1 ('empty.png')" in lines
  assert "Categories: 3; without instances: 5 'bus'" in lines
  assert 'Annotations: 7 (5 instances, 2 crowd/ignored)' in lines
  # Annotations 3 and 6 are compressed RLE, which only Model Garden's
  # converter cannot convert.
  assert lines[-1] == ('No problems found for python -m data.coco_tfrecord '
                       '(warnings above for create_coco_tf_record.py).')
  clean = _dataset()
  for ann in (_ann_by_id(clean, 3), _ann_by_id(clean, 6)):
    ann['segmentation'] = [_polygon(*ann['bbox'])]
  text = check_dataset.format_report(check_dataset.check_annotations(
      clean, 'data/train.json'))
  assert text.endswith('\n\nNo problems found.') and 'Warnings' not in text


def _set(ann_id, **fields):
  def mutate(coco):
    _ann_by_id(coco, ann_id).update(fields)
  return mutate


def _delete(ann_id, field):
  def mutate(coco):
    del _ann_by_id(coco, ann_id)[field]
  return mutate


def _append(key, entry):
  def mutate(coco):
    coco[key].append(entry)
  return mutate


def _duplicate_annotation(coco):
  coco['annotations'].append(copy.deepcopy(_ann_by_id(coco, 1)))


def _image_without_height(coco):
  del coco['images'][2]['height']


# (mutation, expected [(kind, annotation id, image id, category id)], words of
# the first problem's line).
_CASES = {
    'duplicate_image_id': (
        _append('images', {'id': 2, 'file_name': 'x.png', 'height': _HEIGHT,
                           'width': _WIDTH}),
        [('duplicate_image_id', None, 2, None)],
        "train.json: image 2 'x.png': duplicate image id (first used by "
        "'b.png')"),
    'duplicate_annotation_id': (
        _duplicate_annotation,
        [('duplicate_annotation_id', 1, 1, None)],
        "train.json: annotation 1 (image 1 'a.png'): duplicate annotation id "
        '(first used at annotations[0])'),
    'duplicate_category_id': (
        _append('categories', {'id': 2, 'name': 'truck'}),
        [('duplicate_category_id', None, None, 2)],
        "train.json: category 2 'truck': duplicate category id (first used "
        "by 'car')"),
    'unknown_image_id': (
        _set(5, image_id=99),
        [('unknown_image_id', 5, 99, None)],
        'train.json: annotation 5: image_id 99 is not in images'),
    'unknown_category_id': (
        _set(2, category_id=7),
        [('unknown_category_id', 2, 1, 7)],
        "train.json: annotation 2 (image 1 'a.png'): category_id 7 is not in "
        'categories'),
    'bbox_three_numbers': (
        _set(1, bbox=[10, 10, 20]),
        [('invalid_bbox', 1, 1, None)],
        "train.json: annotation 1 (image 1 'a.png'): bbox [10, 10, 20] is not "
        '4 finite numbers'),
    'bbox_not_a_number': (
        _set(1, bbox=[10, 'x', 20, 20]),
        [('invalid_bbox', 1, 1, None)], 'is not 4 finite numbers'),
    'bbox_zero_width': (
        _set(2, bbox=[40, 20, 0, 40]),
        [('empty_bbox', 2, 1, None), ('converter_skip', 2, 1, None)],
        "train.json: annotation 2 (image 1 'a.png'): bbox [40, 20, 0, 40] has "
        'zero width'),
    'bbox_negative_height': (
        _set(2, bbox=[40, 20, 50, -4]),
        [('empty_bbox', 2, 1, None), ('converter_skip', 2, 1, None)],
        'has negative height'),
    'bbox_outside_image': (
        _set(6, bbox=[20, 10, 145, 100]),
        [('bbox_outside_image', 6, 3, None), ('converter_skip', 6, 3, None)],
        "train.json: annotation 6 (image 3 'c.png'): bbox [20, 10, 145, 100] "
        'lies outside the 160x120 image: ends at x=165'),
    'converter_skip_within_tolerance': (
        _set(1, bbox=[150, 10, 10.5, 20],
             segmentation=[_polygon(150, 10, 10.5, 20)]),
        [('converter_skip', 1, 1, None)],
        "train.json: annotation 1 (image 1 'a.png'): bbox [150, 10, 10.5, 20]:"
        ' create_coco_tf_record.py drops it (x + w = 160.5 > width 160)'),
    'missing_segmentation': (
        _delete(2, 'segmentation'),
        [('missing_segmentation', 2, 1, None)], 'has no segmentation'),
    'empty_segmentation': (
        _set(2, segmentation=[]),
        [('missing_segmentation', 2, 1, None)], 'segmentation is empty'),
    'polygon_too_short': (
        _set(1, segmentation=[[10, 10, 30, 10]]),
        [('invalid_polygon', 1, 1, None)],
        'polygon 0 has 4 coordinates, fewer than 6'),
    'polygon_odd': (
        _set(5, segmentation=[_polygon(100, 100, 10, 10),
                              _polygon(120, 100, 10, 10)[:7]]),
        [('invalid_polygon', 5, 2, None)],
        'polygon 1 has an odd number of coordinates (7)'),
    'polygon_flat': (
        _set(1, segmentation=_polygon(10, 10, 20, 20)),
        [('invalid_polygon', 1, 1, None)],
        'segmentation is a flat list of 8 numbers, not a list of polygons'),
    'rle_size_mismatch': (
        _set(6, segmentation=_compressed(
            _rect_mask(20, 10, 100, 100, height=110))),
        [('rle_size_mismatch', 6, 3, None)],
        "RLE size [110, 160] differs from the image's [height, width] "
        '[120, 160]'),
    'rle_counts_short': (
        _set(4, segmentation={'counts': [5, 10, 3], 'size': [_HEIGHT,
                                                             _WIDTH]}),
        [('invalid_rle', 4, 2, None)],
        'RLE counts cover 18 pixels, its size 120x160 has 19200'),
    'rle_counts_garbage': (
        _set(3, segmentation={'counts': 'ab\x7f', 'size': [_HEIGHT, _WIDTH]}),
        [('invalid_rle', 3, 1, None)],
        'RLE counts string holds characters outside the RLE code'),
    'empty_mask': (
        _set(3, segmentation=_compressed(np.zeros((_HEIGHT, _WIDTH),
                                                  np.uint8))),
        [('empty_mask', 3, 1, None)], 'mask has no pixels'),
    'degenerate_polygon': (
        _set(1, segmentation=[[10, 10, 20, 10, 30, 10]]),
        [('empty_mask', 1, 1, None)], 'mask has no pixels'),
    'mask_bbox_mismatch': (
        _set(2, bbox=[100, 70, 50, 40]),
        [('mask_bbox_mismatch', 2, 1, None)],
        "mask's own box [40, 20, 50, 40] and bbox [100, 70, 50, 40] have IoU "
        '0.00'),
    'rle_mask_bbox_mismatch': (
        _set(6, bbox=[20, 10, 100, 40]),
        [('mask_bbox_mismatch', 6, 3, None)],
        "mask's own box [20, 10, 100, 100] and bbox [20, 10, 100, 40] have "
        'IoU 0.40'),
    'image_without_height': (
        _image_without_height,
        [('invalid_image', None, 3, None)],
        "train.json: image 3 'c.png': lacks height"),
    'annotation_without_iscrowd_area': (
        lambda coco: [_ann_by_id(coco, 5).pop(k) for k in ('iscrowd', 'area')],
        [('invalid_annotation', 5, 2, None)], 'lacks area'),
}


@pytest.mark.parametrize('name', sorted(_CASES))
def test_each_malformed_case_is_reported_once(name):
  mutate, expected, words = _CASES[name]
  coco = _dataset()
  mutate(coco)
  report = check_dataset.check_annotations(coco, 'data/train.json')
  assert _problems(report) == expected
  assert words in report.problems[0].message
  assert report.problems[0].message.startswith('train.json: ')


def test_problem_ids_and_file_name():
  coco = _dataset()
  _ann_by_id(coco, 2)['bbox'] = [40, 20, 0, 40]
  problem = check_dataset.check_annotations(coco, 'train.json').problems[0]
  assert (problem.annotation_id, problem.image_id, problem.file_name) == (
      2, 1, 'a.png')


def test_compressed_rle_gets_the_model_garden_warning(tmp_path):
  # The file: one non-crowd compressed RLE, nothing else wrong.
  coco = _dataset()
  coco['annotations'] = [_ann_by_id(coco, 3)]
  out = io.StringIO()
  assert check_dataset.run(_write_json(tmp_path / 'lvis.json', coco),
                           out=out) == 0
  lines = out.getvalue().splitlines()
  assert ("Warnings: 1 (mg_compressed_rle 1) for Model Garden's "
          'create_coco_tf_record.py --include_masks, which cannot convert '
          'these annotations; python -m data.coco_tfrecord can') in lines
  assert ("lvis.json: annotation 3 (image 1 'a.png'): compressed RLE: "
          'create_coco_tf_record.py stops on it; convert with python -m '
          'data.coco_tfrecord instead') in lines
  assert lines[-1] != 'No problems found.'


def test_file_level_errors():
  with pytest.raises(check_dataset.AnnotationFileError,
                     match=r"x\.json: missing 'annotations', 'categories'"):
    check_dataset.check_annotations({'images': []}, 'x.json')
  with pytest.raises(check_dataset.AnnotationFileError,
                     match=r"x\.json: 'images' is a dict"):
    check_dataset.check_annotations(
        {'images': {}, 'annotations': [], 'categories': []}, 'x.json')


def test_image_files(tmp_path):
  coco = _dataset()
  image_dir = str(tmp_path / 'images')
  _write_images(image_dir, coco, sizes={'b.png': (80, 60)})
  os.remove(os.path.join(image_dir, 'c.png'))
  with open(os.path.join(image_dir, 'a.png'), 'wb') as f:
    f.write(b'not a png')

  report = check_dataset.check_annotations(coco, 'train.json', image_dir)
  assert _problems(report) == [('missing_image_file', None, 3, None)]
  assert report.problems[0].message == (
      f"train.json: image 3 'c.png': no file {image_dir}/c.png")

  calls = []
  report = check_dataset.check_annotations(
      coco, 'train.json', image_dir, check_images=True,
      progress=lambda done, total: calls.append((done, total)))
  assert _problems(report) == [('missing_image_file', None, 3, None),
                               ('unreadable_image', None, 1, None),
                               ('image_size_mismatch', None, 2, None)]
  assert report.problems[2].message == (
      f"train.json: image 2 'b.png': {image_dir}/b.png is 80x60 (width x "
      'height), the JSON says 160x120')
  assert calls == [(3, 3)]


def test_max_problems_per_kind():
  coco = _dataset()
  for ann in coco['annotations']:
    del ann['area']
  report = check_dataset.check_annotations(coco, 'train.json')
  text = check_dataset.format_report(report, max_problems=2)
  lines = text.splitlines()
  after = lines[lines.index('Problems: 7 (invalid_annotation 7)'):]
  assert sum(line.startswith('train.json: annotation') for line in after) == 2
  assert lines[-1] == '   ... and 5 more invalid_annotation'


def test_run_exit_status(tmp_path):
  good = _write_json(tmp_path / 'good.json', _dataset())
  out, err = io.StringIO(), io.StringIO()
  assert check_dataset.run(good, out=out, err=err) == 0
  assert out.getvalue().splitlines()[-1].startswith('No problems found')

  coco = _dataset()
  _ann_by_id(coco, 2)['bbox'] = [40, 20, 0, 40]
  bad = _write_json(tmp_path / 'bad.json', coco)
  out = io.StringIO()
  assert check_dataset.run(bad, out=out, err=err) == 1
  assert ("bad.json: annotation 2 (image 1 'a.png'): bbox [40, 20, 0, 40] "
          'has zero width') in out.getvalue().splitlines()

  broken = tmp_path / 'broken.json'
  broken.write_text('{"images": [')
  err = io.StringIO()
  assert check_dataset.run(str(broken), out=out, err=err) == 2
  assert err.getvalue().startswith(f'error: {broken}: not valid JSON')
  err = io.StringIO()
  assert check_dataset.run(str(tmp_path / 'none.json'), err=err) == 2
  assert f'{tmp_path}/none.json: cannot be read' in err.getvalue()
  err = io.StringIO()
  no_keys = _write_json(tmp_path / 'no_keys.json', {'images': []})
  assert check_dataset.run(no_keys, out=out, err=err) == 2
  assert err.getvalue() == (f"error: {no_keys}: missing 'annotations', "
                            "'categories'\n")


def test_cli(tmp_path):
  coco = _dataset()
  _ann_by_id(coco, 6)['bbox'] = [20, 10, 145, 100]
  bad = _write_json(tmp_path / 'train.json', coco)
  # The JSON-only check must not import TensorFlow.
  code = ('import sys, runpy; sys.argv = sys.argv[1:]\n'
          'try:\n  runpy.run_path(sys.argv[0], run_name="__main__")\n'
          'finally:\n  print("tensorflow" in sys.modules, file=sys.stderr)')
  result = subprocess.run(
      [sys.executable, '-c', code, _SCRIPT, f'--annotation_file={bad}'],
      capture_output=True, text=True, cwd=_ROOT, timeout=120, check=False)
  assert result.returncode == 1, result.stderr
  lines = result.stdout.splitlines()
  assert ("train.json: annotation 6 (image 3 'c.png'): bbox [20, 10, 145, "
          '100] lies outside the 160x120 image: ends at x=165') in lines
  assert 'Problems: 2 (bbox_outside_image 1, converter_skip 1)' in lines
  assert result.stderr.splitlines()[-1] == 'False'

  broken = tmp_path / 'broken.json'
  broken.write_text('[1, 2')
  result = subprocess.run(
      [sys.executable, _SCRIPT, f'--annotation_file={broken}'],
      capture_output=True, text=True, cwd=_ROOT, timeout=120, check=False)
  assert result.returncode == 2
  assert f'error: {broken}: not valid JSON' in result.stderr


def test_tfrecords(tmp_path):
  from data import coco_tfrecord  # pylint: disable=g-import-not-at-top
  coco = _dataset()
  image_dir = str(tmp_path / 'images')
  _write_images(image_dir, coco)
  paths = coco_tfrecord.write_tfrecords(coco, image_dir,
                                        str(tmp_path / 'train'), num_shards=2)
  annotation_file = _write_json(tmp_path / 'train.json', coco)

  out = io.StringIO()
  pattern = f'{tmp_path}/train-*'
  assert check_dataset.run(annotation_file, image_dir, tfrecords=pattern,
                           out=out) == 0
  assert (f'TFRecords {pattern}: 4 examples in 2 files (JSON: 4 images); 4 '
          'of the first 4 decode') in out.getvalue().splitlines()

  stats = check_dataset.check_tfrecords(
      f'{paths[1]}, {tmp_path}/val-*', num_images=4, image_ids=[1, 2, 3, 4],
      source_name='train.json')
  assert (stats.files, stats.num_examples) == ([paths[1]], 2)
  assert [p.kind for p in stats.problems] == ['tfrecord_missing',
                                              'tfrecord_count_mismatch']
  assert stats.problems[1].message == (
      f'{paths[1]}, {tmp_path}/val-*: 2 examples, train.json has 4 images')

  stats = check_dataset.check_tfrecords(pattern, num_images=4,
                                        image_ids=[1, 2, 3])
  assert [p.message.split(': ', 1)[1] for p in stats.problems] == [
      "record 1: source_id '4' is not an image id of the JSON"]

  with open(paths[1], 'rb') as f:
    data = f.read()
  with open(paths[1], 'wb') as f:
    f.write(data[:-30])
  stats = check_dataset.check_tfrecords(pattern, num_images=4)
  assert stats.num_examples == 3
  assert [p.kind for p in stats.problems] == ['tfrecord_unreadable',
                                              'tfrecord_count_mismatch']
  assert stats.problems[0].message.startswith(
      f'{paths[1]}: unreadable after 1 records: truncated record at ')

  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  junk = str(tmp_path / 'junk.tfrecord')
  with tf.io.TFRecordWriter(junk) as writer:
    writer.write(b'not an example')
  stats = check_dataset.check_tfrecords(junk)
  assert (stats.num_examples, stats.num_decoded) == (1, 0)
  assert [p.message.split(' does not decode: ')[0]
          for p in stats.problems] == [f'{junk}: record 0']
