"""Tests of serving/predict.py: inputs, outputs, errors, the command."""

import json
import os
import sys

import numpy as np
from PIL import Image
from pycocotools import coco
from pycocotools import mask as mask_api
import pytest
import tensorflow as tf

from data import shapes_dataset
from common import panoptic_png
from serving import conftest
from serving import predict
from serving import visualize


def _write(path, array, **kwargs):
  Image.fromarray(array).save(path, **kwargs)
  return str(path)


def test_find_images_expands_folders_and_globs(tmp_path):
  folder = tmp_path / 'pics'
  folder.mkdir()
  image = conftest.random_image(8, 8)
  a = _write(folder / 'a.png', image)
  b = _write(folder / 'b.JPG', image, format='JPEG')
  (folder / 'notes.txt').write_text('not an image')
  empty = tmp_path / 'empty'
  empty.mkdir()
  paths, errors = predict.find_images(
      [str(folder), str(folder / '*.png'), str(tmp_path / 'none*.png'),
       str(empty), str(tmp_path / 'missing.png')])
  # Duplicates once; a plain path is kept (its read reports it).
  assert paths == [a, b, str(tmp_path / 'missing.png')]
  assert len(errors) == 2
  assert 'none*.png: pattern matches no file' in errors[0]
  assert 'empty: folder holds no' in errors[1]


def test_read_image_gives_rgb_for_gray_rgba_palette_and_jpeg(tmp_path):
  gray = conftest.random_image(6, 9)[..., 0]
  rgba = np.dstack([conftest.random_image(6, 9), np.full([6, 9], 9, np.uint8)])
  palette = Image.fromarray(gray).convert('P')
  palette.save(tmp_path / 'p.png')
  images = {
      'gray': predict.read_image(_write(tmp_path / 'g.png', gray)),
      'rgba': predict.read_image(_write(tmp_path / 'r.png', rgba)),
      'palette': predict.read_image(str(tmp_path / 'p.png')),
      'jpeg': predict.read_image(_write(tmp_path / 'j.jpg', gray,
                                        format='JPEG', quality=100)),
  }
  for name, image in images.items():
    assert image.shape == (6, 9, 3) and image.dtype == np.uint8, name
  np.testing.assert_array_equal(images['gray'], np.dstack([gray] * 3))
  np.testing.assert_array_equal(images['rgba'], rgba[..., :3])
  assert np.abs(images['jpeg'].astype(int) - gray[..., None]).max() <= 3


def test_read_image_names_the_bad_file(tmp_path):
  bad = tmp_path / 'broken.png'
  bad.write_bytes(b'\x89PNG\r\n\x1a\n garbage')
  with pytest.raises(ValueError, match='cannot read image .*broken.png'):
    predict.read_image(str(bad))
  with pytest.raises(ValueError, match='missing.jpg'):
    predict.read_image(str(tmp_path / 'missing.jpg'))


@pytest.fixture(scope='module')
def shapes_split(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('shapes'))
  shapes_dataset.generate_split(path, 'val', num_images=6, image_size=64,
                                seed=3)
  return path


def _ground_truth_predictor(shapes_dir):
  """Returns each image's ground truth as its detections."""
  ground_truth = coco.COCO(os.path.join(shapes_dir, 'val.json'))
  by_pixels = {}
  for image_id, info in ground_truth.imgs.items():
    path = os.path.join(shapes_dir, 'val', 'images', info['file_name'])
    anns = ground_truth.loadAnns(ground_truth.getAnnIds(imgIds=[image_id]))
    x, y, w, h = (np.array([a['bbox'] for a in anns]).reshape(-1, 4).T)
    by_pixels[predict.read_image(path).tobytes()] = predict.Detections(
        boxes=np.stack([y, x, y + h, x + w], -1),
        scores=np.linspace(0.9, 0.8, len(anns)),
        classes=np.array([a['category_id'] for a in anns]),
        masks=np.array([ground_truth.annToMask(a) for a in anns]).reshape(
            len(anns), info['height'], info['width']))
  return lambda image: by_pixels[image.tobytes()]


def test_run_writes_coco_results_and_scores_perfect_predictions(
    shapes_split, tmp_path):
  images = os.path.join(shapes_split, 'val', 'images')
  broken = tmp_path / 'broken.jpg'
  broken.write_bytes(b'not a jpeg')
  paths, _ = predict.find_images([images])
  paths.insert(2, str(broken))
  logged = []
  summary = predict.run(
      _ground_truth_predictor(shapes_split), paths, str(tmp_path / 'out'),
      annotation_file=os.path.join(shapes_split, 'val.json'), grid=4,
      log=logged.append)
  # The unreadable image is named, the other six are done.
  assert summary['images'] == 6
  assert len(summary['errors']) == 1 and 'broken.jpg' in summary['errors'][0]
  assert any('ERROR' in m and 'broken.jpg' in m for m in logged)
  assert summary['metrics']['AP'] == pytest.approx(1.0)
  assert summary['metrics']['mask_AP'] == pytest.approx(1.0)
  with open(os.path.join(shapes_split, 'val.json')) as f:
    annotations = json.load(f)['annotations']
  with open(tmp_path / 'out' / 'detections.json') as f:
    results = json.load(f)
  assert len(results) == len(annotations)
  first = min(annotations, key=lambda a: (a['image_id'], a['id']))
  result = [r for r in results if r['image_id'] == first['image_id']][0]
  np.testing.assert_allclose(result['bbox'], first['bbox'], atol=1e-3)
  assert result['category_id'] == first['category_id']
  decoded = mask_api.decode(dict(result['segmentation'],
                                 counts=result['segmentation']['counts']))
  assert decoded.shape == (64, 64) and decoded.sum() == pytest.approx(
      first['area'], rel=0.01)
  assert sorted(os.listdir(tmp_path / 'out' / 'images')) == sorted(
      os.path.splitext(os.path.basename(p))[0] + '.png'
      for p in paths if p != str(broken))
  assert os.path.exists(tmp_path / 'out' / 'grid.png')
  # An instance model writes no panoptic outputs.
  assert summary['panoptic_images'] == 0
  for name in ('panoptic', 'panoptic_predictions',
               'panoptic_predictions.json'):
    assert not os.path.exists(tmp_path / 'out' / name)
  with open(tmp_path / 'out' / 'metrics.json') as f:
    assert len(json.load(f)) == 24


def test_command_on_a_saved_model_goes_on_past_a_bad_image(
    export_dir, small_checkpoint, tmp_path):
  folder = tmp_path / 'in'
  folder.mkdir()
  _write(folder / 'wide.png', conftest.random_image(40, 90, seed=4))
  _write(folder / 'gray.jpg', conftest.random_image(50, 30)[..., 0],
         format='JPEG')
  (folder / 'zz_bad.png').write_bytes(b'broken')
  out = tmp_path / 'out'
  stdout, stderr = conftest.run_command(
      [sys.executable, os.path.join(conftest.ROOT, 'serving', 'predict.py'),
       f'--saved_model={export_dir}', f'--images={folder}',
       f'--output_dir={out}'], expect_status=1)
  assert 'zz_bad.png' in stdout + stderr
  assert '2 images' in stdout
  with open(out / 'images.json') as f:
    images = json.load(f)
  assert [os.path.basename(i['file_name']) for i in images] == [
      'gray.jpg', 'wide.png']
  assert (images[1]['height'], images[1]['width']) == (40, 90)
  with open(out / 'detections.json') as f:
    results = json.load(f)
  assert results and {r['category_id'] for r in results} <= set(
      conftest.CATEGORY_IDS)
  # The checkpoint gives the same detections in-process.
  _, run_dir, _, _ = small_checkpoint
  from_checkpoint, _ = predict.checkpoint_predictor(run_dir)
  from_saved_model = predict.saved_model_predictor(export_dir)
  image = predict.read_image(str(folder / 'wide.png'))
  a, b = from_checkpoint(image), from_saved_model(image)
  np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-4)
  np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
  assert a.masks.shape == (len(a.scores), 40, 90)


def test_signature_outputs_become_image_sized_masks():
  boxes = np.array([[[10., 20., 30., 50.], [0., 0., 0., 0.]]], np.float32)
  outputs = {
      'num_detections': np.array([1]),
      'detection_boxes': boxes,
      'detection_scores': np.array([[0.9, 0.]], np.float32),
      'detection_classes': np.array([[4, 0]], np.int32),
  }
  as_tensors = lambda d: {k: tf.constant(v) for k, v in d.items()}
  # Full-size uint8 masks (padded to the batch's largest image) are cut to
  # the image; box probabilities are pasted into it.
  full = np.zeros([1, 2, 50, 70], np.uint8)
  full[0, 0, 10:30, 20:50] = 1
  cut = predict._to_numpy_detections(  # pylint: disable=protected-access
      as_tensors(dict(outputs, detection_masks=full)), 40, 60,
      full_size_masks=True)
  assert cut.masks.shape == (1, 40, 60) and cut.masks.sum() == 20 * 30
  np.testing.assert_array_equal(cut.classes, [4])
  probs = np.ones([1, 2, 28, 28], np.float32)
  pasted = predict._to_numpy_detections(  # pylint: disable=protected-access
      as_tensors(dict(outputs, detection_masks=probs)), 40, 60,
      full_size_masks=False)
  assert pasted.masks.shape == (1, 40, 60) and pasted.masks.dtype == np.uint8
  # The reference's pasting (the export's) fills exactly the box's pixels:
  # their centres fall inside the crop, their neighbours' outside.
  rows, cols = np.nonzero(pasted.masks[0])
  assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10, 29, 20, 49)
  assert pasted.masks.sum() == 20 * 30


def test_each_signature_is_fed_as_the_export_recorded(export_dir, tmp_path):
  # The export's params.yaml says which input each signature takes.
  params = predict.export_params(export_dir)
  assert params.task.export.function_keys == (
      'image_tensor:serving_default,image_bytes:serving_bytes,'
      'tf_example:serving_examples')
  assert not params.task.export.full_size_masks
  image = conftest.random_image(40, 90, seed=4)
  results = [predict.saved_model_predictor(export_dir, name)(image)
             for name in ('serving_default', 'serving_bytes',
                          'serving_examples')]
  for other in results[1:]:
    np.testing.assert_allclose(other.boxes, results[0].boxes, atol=1e-4)
    np.testing.assert_array_equal(other.classes, results[0].classes)
    np.testing.assert_array_equal(other.masks, results[0].masks)
  # An export whose params.yaml does not name the signature's input.
  copy = tmp_path / 'copy'
  tf.io.gfile.makedirs(str(copy))
  os.symlink(os.path.join(export_dir, 'saved_model'), copy / 'saved_model')
  with open(os.path.join(export_dir, 'params.yaml')) as f:
    text = f.read()
  (copy / 'params.yaml').write_text(text.replace(
      'image_bytes:serving_bytes,', ''))
  with pytest.raises(ValueError, match="input type of signature "
                     "'serving_bytes'.*export it again"):
    predict.saved_model_predictor(str(copy), 'serving_bytes')


def test_evaluation_without_ground_truth_says_why(shapes_split, tmp_path,
                                                  capsys):
  with open(os.path.join(shapes_split, 'val.json')) as f:
    data = json.load(f)
  data['annotations'] = []
  annotation_file = str(tmp_path / 'empty.json')
  with open(annotation_file, 'w') as f:
    json.dump(data, f)
  image_ids = [image['id'] for image in data['images']]
  result = {'image_id': image_ids[0], 'category_id': 1, 'score': 0.9,
            'bbox': [1., 2., 10., 10.]}
  metrics = predict.evaluate(annotation_file, [result], image_ids)
  assert metrics['AP'] == -1.
  assert (f'WARNING: {annotation_file} has no annotations of these 6 images: '
          'with no ground truth, COCO reports every AP and AR as -1.'
          in capsys.readouterr().err)


def _panoptic_outputs(category, instance, network_size, scale, pad_id=99):
  """Signature outputs of one image whose panoptic masks at the image's
  size are `category` and `instance`, at a network input of
  `network_size` resized by `scale` (an integer or 1 / integer), the
  padding filled with `pad_id`."""
  def to_network(mask):
    if scale >= 1:
      resized = np.kron(mask, np.ones((scale, scale), np.int32))
    else:
      step = int(round(1 / scale))
      resized = mask[step // 2::step, step // 2::step]
    network = np.full(network_size, pad_id, np.int32)
    network[:resized.shape[0], :resized.shape[1]] = resized
    return network[np.newaxis]
  height, width = category.shape
  return {
      'num_detections': tf.constant([2]),
      'detection_boxes': tf.zeros([1, 3, 4]),
      'detection_scores': tf.constant([[0.9, 0.8, 0.]]),
      'detection_classes': tf.constant([[4, 4, 0]]),
      'category_mask': tf.constant(to_network(category)),
      'instance_mask': tf.constant(to_network(instance)),
      'image_info': tf.constant([[[height, width], list(network_size),
                                  [scale, scale], [0., 0.]]], tf.float32),
  }


def _hand_built_panoptic(height, width, block=1):
  """Category and instance masks in blocks of `block` pixels: stuff 9 on
  top, void at the bottom-left, instances 1 and 2 of class 4, stuff 10."""
  category = np.zeros((height // block, width // block), np.int32)
  instance = np.zeros_like(category)
  h, w = category.shape
  category[:h // 2] = 9
  category[h // 2:, w // 3:] = 10
  category[h // 2 + 1:h - 1, w // 3 + 1:w - 4] = 4
  instance[h // 2 + 1:h - 1, w // 3 + 1:w // 2 + 2] = 1
  instance[h // 2 + 1:h - 1, w // 2 + 2:w - 4] = 2
  expand = lambda m: np.kron(m, np.ones((block, block), np.int32))
  return expand(category), expand(instance)


def test_signature_panoptic_masks_are_cut_to_the_image_and_resized():
  # Scale 2: the 20 x 30 image fills 40 x 60 of a 64 x 64 input.
  category, instance = _hand_built_panoptic(20, 30)
  outputs = _panoptic_outputs(category, instance, (64, 64), 2)
  got = predict._to_numpy_detections(  # pylint: disable=protected-access
      outputs, 20, 30, full_size_masks=False)
  assert got.category_mask.shape == (20, 30)
  assert got.category_mask.dtype == np.int32
  np.testing.assert_array_equal(got.category_mask, category)
  np.testing.assert_array_equal(got.instance_mask, instance)
  assert set(np.unique(got.instance_mask)) == {0, 1, 2}
  # Scale 1/2: a 100 x 120 image in 50 x 60 of the input; each network
  # pixel becomes 2 x 2 image pixels.
  category, instance = _hand_built_panoptic(100, 120, block=2)
  outputs = _panoptic_outputs(category, instance, (64, 64), 0.5)
  image_info = outputs.pop('image_info')[0]  # As TFLite outputs are.
  got = predict._to_numpy_detections(  # pylint: disable=protected-access
      outputs, 100, 120, full_size_masks=False, image_info=image_info)
  np.testing.assert_array_equal(got.category_mask, category)
  np.testing.assert_array_equal(got.instance_mask, instance)
  # Without panoptic outputs, none.
  del outputs['category_mask'], outputs['instance_mask']
  got = predict._to_numpy_detections(  # pylint: disable=protected-access
      outputs, 100, 120, full_size_masks=False, image_info=image_info)
  assert got.category_mask is None and got.instance_mask is None


def test_sorted_detections_renumber_the_instance_mask():
  instance = np.array([[0, 1, 2, 3]], np.int32)
  detections = predict.Detections(
      boxes=np.array([[5., 5, 9, 9], [1, 1, 2, 2], [0, 0, 1, 1]]),
      scores=np.array([0.9, 0.8, 0.7]), classes=np.array([2, 2, 1]),
      masks=None, category_mask=np.array([[0, 2, 2, 1]], np.int32),
      instance_mask=instance)
  got = predict.sorted_detections(detections)
  np.testing.assert_array_equal(got.classes, [1, 2, 2])
  np.testing.assert_array_equal(got.instance_mask, [[0, 3, 2, 1]])
  np.testing.assert_array_equal(got.category_mask, [[0, 2, 2, 1]])


def test_run_writes_coco_panoptic_segments_and_drawings(tmp_path):
  category, instance = _hand_built_panoptic(24, 36)
  category[0, 0] = 0  # A void pixel inside stuff 9's bounds.
  images = {
      'street': conftest.random_image(24, 36, seed=1),
      'plain': conftest.random_image(16, 16, seed=2),
  }
  paths = [_write(tmp_path / f'{name}.png', image)
           for name, image in images.items()]
  no_boxes = dict(boxes=np.zeros((0, 4)), scores=np.zeros(0),
                  classes=np.zeros(0, np.int32), masks=None)
  boxes = np.array([[13., 13, 23, 20], [13., 20, 23, 32]])

  def predictor(image):
    if image.shape[:2] == (16, 16):  # An instance model's output.
      return predict.Detections(**no_boxes)
    return predict.Detections(
        boxes=boxes, scores=np.array([0.9, 0.8]), classes=np.array([4, 4]),
        masks=None, category_mask=category, instance_mask=instance)

  out = tmp_path / 'out'
  summary = predict.run(predictor, paths, str(out), grid=2,
                        class_names={4: 'car', 9: 'sky', 10: 'road'},
                        log=lambda _: None)
  assert summary['panoptic_images'] == 1
  assert os.path.exists(out / 'images' / 'street.png')
  assert os.listdir(out / 'panoptic') == ['street.png']
  assert os.listdir(out / 'panoptic_predictions') == ['street.png']
  with open(out / 'images.json') as f:
    street_id = json.load(f)[0]['id']
  with open(out / 'panoptic_predictions.json') as f:
    annotations = json.load(f)['annotations']
  assert len(annotations) == 1
  annotation = annotations[0]
  assert annotation['image_id'] == street_id
  assert annotation['file_name'] == 'street.png'
  with Image.open(out / 'panoptic_predictions' / 'street.png') as png:
    assert png.mode == 'RGB'
    ids = panoptic_png.decode_segment_ids(np.asarray(png))
  # Every segment: its pixels are those of one (category, instance) pair;
  # area and bbox [x, y, w, h] agree; void pixels are id 0.
  np.testing.assert_array_equal(ids == 0, category == 0)
  segments = annotation['segments_info']
  assert sorted(s['id'] for s in segments) == sorted(
      set(np.unique(ids)) - {0})
  expected = {(4, 1): True, (4, 2): True, (9, 0): False, (10, 0): False}
  found = {}
  for segment in segments:
    pixels = ids == segment['id']
    pair = (int(category[pixels][0]), int(instance[pixels][0]))
    np.testing.assert_array_equal(
        pixels, (category == pair[0]) & (instance == pair[1]))
    assert segment['category_id'] == pair[0]
    rows, cols = np.nonzero(pixels)
    assert segment['area'] == rows.size
    assert segment['bbox'] == [cols.min(), rows.min(),
                               cols.max() - cols.min() + 1,
                               rows.max() - rows.min() + 1]
    found[pair] = segment['isthing']
  assert found == expected
  # Instance 1: rows 13..22, columns 13..19 of the hand-built masks.
  thing = [s for s in segments if s['isthing']][0]
  assert thing['bbox'] == [13, 13, 7, 10] and thing['area'] == 70
  # The overlay is draw_panoptic's, and the grid shows it.
  with Image.open(out / 'panoptic' / 'street.png') as png:
    overlay = np.asarray(png)
  np.testing.assert_array_equal(overlay, visualize.draw_panoptic(
      images['street'], category, instance,
      class_names={4: 'car', 9: 'sky', 10: 'road'}))
  with Image.open(out / 'grid.png') as png:
    grid = np.asarray(png)
  np.testing.assert_array_equal(grid[4:28, 4:40], overlay)
  with Image.open(out / 'images' / 'plain.png') as png:
    np.testing.assert_array_equal(grid[4:20, 44:60], np.asarray(png))


def test_panoptic_segments_encode_ids_beyond_one_byte():
  category = np.full((3, 300), 5, np.int32)
  instance = np.tile(np.arange(1, 301, dtype=np.int32), (3, 1))
  ids, segments = predict.panoptic_segments(category, instance)
  assert len(segments) == 300 and ids.max() == 300
  rgb = panoptic_png.encode_segment_ids(ids)
  np.testing.assert_array_equal(rgb[0, 299], [300 % 256, 1, 0])
  np.testing.assert_array_equal(panoptic_png.decode_segment_ids(rgb), ids)
  # Things are numbered in instance order.
  np.testing.assert_array_equal(ids[0], instance[0])
