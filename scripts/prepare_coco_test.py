"""COCO 2017 preparation: official layout -> TFRecords -> the experiment."""

import glob
import json
import os
import subprocess

import numpy as np
from PIL import Image
from pycocotools import mask as mask_lib
import pytest
import tensorflow as tf

from official.core import exp_factory
from official.core import task_factory
from official.vision.dataloaders import tf_example_decoder
import registry_imports  # pylint: disable=unused-import

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SCRIPT = os.path.join(_ROOT, 'scripts', 'prepare_coco.sh')
# COCO's own ids: person 1, bottle 44, toothbrush 90.
_CATEGORIES = [{'id': 1, 'name': 'person', 'supercategory': 'person'},
               {'id': 44, 'name': 'bottle', 'supercategory': 'kitchen'},
               {'id': 90, 'name': 'toothbrush', 'supercategory': 'indoor'}]
_H, _W = 30, 40


def _crowd_rle(mask):
  """Uncompressed RLE, as COCO stores crowd regions."""
  flat = mask.ravel(order='F')
  change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
  counts = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
  if flat[0]:
    counts = [0] + counts
  return {'counts': counts, 'size': [_H, _W]}


def _split(root, split, image_ids, annotations):
  os.makedirs(os.path.join(root, f'{split}2017'), exist_ok=True)
  images = []
  for image_id in image_ids:
    name = f'{image_id:012d}.jpg'
    pixels = np.full((_H, _W, 3), 10 * image_id, np.uint8)
    Image.fromarray(pixels).save(os.path.join(root, f'{split}2017', name),
                                 quality=95)
    images.append({'id': image_id, 'file_name': name, 'height': _H,
                   'width': _W})
  path = os.path.join(root, 'annotations', f'instances_{split}2017.json')
  with open(path, 'w') as f:
    json.dump({'images': images, 'annotations': annotations,
               'categories': _CATEGORIES}, f)


def _ann(ann_id, image_id, category_id, bbox, segmentation, iscrowd=0):
  return {'id': ann_id, 'image_id': image_id, 'category_id': category_id,
          'bbox': bbox, 'area': float(bbox[2] * bbox[3]),
          'segmentation': segmentation, 'iscrowd': iscrowd}


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  coco = str(tmp_path_factory.mktemp('coco2017'))
  os.makedirs(os.path.join(coco, 'annotations'))
  crowd = np.zeros((_H, _W), np.uint8)
  crowd[20:30, 0:16] = 1
  train_anns = [
      # A person as two polygons (rectangles 2..10 x 4..12 and 14..18 x 4..8).
      _ann(1, 7, 1, [4., 2., 8., 16.],
           [[4, 2, 12, 2, 12, 10, 4, 10], [4, 14, 8, 14, 8, 18, 4, 18]]),
      _ann(2, 7, 90, [20., 5., 10., 10.], [[20, 5, 30, 5, 30, 15, 20, 15]]),
      _ann(3, 7, 1, [0., 20., 16., 10.], _crowd_rle(crowd), iscrowd=1),
      _ann(4, 9, 44, [30., 0., 10., 30.], [[30, 0, 40, 0, 40, 30, 30, 30]]),
  ]
  _split(coco, 'train', [7, 9], train_anns)
  val_anns = [_ann(5, 12, 44, [1., 1., 5., 5.], [[1, 1, 6, 1, 6, 6, 1, 6]])]
  _split(coco, 'val', [12, 13], val_anns)  # image 13 has no annotation
  out = str(tmp_path_factory.mktemp('out'))
  env = dict(os.environ, NUM_TRAIN_SHARDS='2', NUM_VAL_SHARDS='1',
             NUM_PROCESSES='0', PYTHON=os.path.join(_ROOT, '.venv', 'bin',
                                                    'python'))
  result = subprocess.run(['bash', _SCRIPT, coco, out], env=env,
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return coco, out, train_anns


def _decode_all(pattern):
  decoder = tf_example_decoder.TfExampleDecoder(include_mask=True)
  files = sorted(glob.glob(pattern))
  return {int(d['source_id']): d for d in (
      decoder.decode(r) for r in tf.data.TFRecordDataset(files))}


def test_layout_and_annotation_file(prepared):
  _, out, _ = prepared
  assert sorted(os.listdir(out)) == [
      'instances_val2017.json', 'train-00000-of-00002.tfrecord',
      'train-00001-of-00002.tfrecord', 'val-00000-of-00001.tfrecord']
  assert set(_decode_all(os.path.join(out, 'val-*'))) == {12, 13}


def test_masks_boxes_classes_and_crowd_come_back_exactly(prepared):
  _, out, anns = prepared
  records = _decode_all(os.path.join(out, 'train-*'))
  assert set(records) == {7, 9}
  by_image = {7: anns[:3], 9: anns[3:]}
  for image_id, expected in by_image.items():
    got = records[image_id]
    np.testing.assert_array_equal(got['groundtruth_classes'].numpy(),
                                  [a['category_id'] for a in expected])
    np.testing.assert_array_equal(got['groundtruth_is_crowd'].numpy(),
                                  [bool(a['iscrowd']) for a in expected])
    boxes = np.array([[y / _H, x / _W, (y + h) / _H, (x + w) / _W]
                      for x, y, w, h in (a['bbox'] for a in expected)])
    np.testing.assert_allclose(got['groundtruth_boxes'].numpy(), boxes,
                               atol=1e-6)
    for mask, ann in zip(got['groundtruth_instance_masks'].numpy(), expected):
      rles = mask_lib.frPyObjects(ann['segmentation'], _H, _W)
      want = mask_lib.decode(rles if isinstance(rles, dict)
                             else mask_lib.merge(rles))
      np.testing.assert_array_equal(mask, want)
  # By hand: the person's two rectangles hold 8*8 + 4*4 pixels.
  assert records[7]['groundtruth_instance_masks'][0].numpy().sum() == 80


def test_experiment_reads_the_prepared_folder(prepared):
  _, out, _ = prepared
  params = exp_factory.get_exp_config('unipercepnet_coco')
  # The default paths are the script's default OUT_DIR, coco/.
  assert params.task.train_data.input_path == os.path.join('coco', 'train*')
  assert params.task.validation_data.input_path == os.path.join('coco',
                                                                'val*')
  assert params.task.annotation_file == os.path.join(
      'coco', 'instances_val2017.json')
  params.override({'task': {
      'model': {'num_classes': 3},
      'category_ids': None,  # Read from the annotation file.
      'annotation_file': os.path.join(out, 'instances_val2017.json'),
      'validation_data': {'input_path': os.path.join(out, 'val*'),
                          'global_batch_size': 2}}}, is_strict=True)
  task = task_factory.get_task(params.task)
  # Evaluation reports COCO's own ids: class 3 is toothbrush, id 90.
  assert task.category_ids == [1, 44, 90]
  images, labels = next(iter(task.build_inputs(params.task.validation_data)))
  assert images.shape == (2, 800, 1344, 3)
  assert sorted(labels['source_id'].numpy().tolist()) == [12, 13]
  row = int(np.flatnonzero(labels['source_id'].numpy() == 12)[0])
  # Bottle (id 44) is contiguous class 2 inside the model.
  assert labels['gt_classes'][row, 0].numpy() == 2
