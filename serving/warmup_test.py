"""TF Serving warm-up requests and the TensorFlow-only replay tool."""

import base64
import io
import json
import os
import sys
import textwrap

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from official.core import export_base
from common import testing
from serving import conftest
from serving import export_saved_model_lib
from serving import tf_serving_replay
from serving import warmup

_OUTPUTS = ('num_detections', 'detection_boxes', 'detection_scores',
            'detection_classes', 'detection_masks', 'image_info')
_SIGNATURES = {'image_tensor': 'serving_default',
               'image_bytes': 'serving_bytes',
               'tf_example': 'serving_examples',
               'tflite': 'serving_tflite'}
_TOOL = os.path.join(conftest.ROOT, 'serving', 'tf_serving_replay.py')
# Serialized by tensorflow-serving-api 2.20.0's own protos:
#   PredictionLog(predict_log=PredictLog(request=PredictRequest(
#       model_spec=ModelSpec(name='unipercepnet',
#                            signature_name='serving_default'),
#       inputs={'inputs': tf.make_tensor_proto(uint8 [[[[1, 2, 3]]]])})))
_OFFICIAL_RECORD = (
    b'2H\nF\n\x1f\n\x0cunipercepnet\x1a\x0fserving_default\x12#\n\x06inputs'
    b'\x12\x19\x08\x04\x12\x10\x12\x02\x08\x01\x12\x02\x08\x01\x12\x02\x08'
    b'\x01\x12\x02\x08\x03"\x03\x01\x02\x03')


def _png(image):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='PNG')
  return buffer.getvalue()


def _b64(data):
  return base64.b64encode(data).decode('ascii')


# ------------------------------------------------------------ wire format
def test_records_are_byte_identical_to_tensorflow_serving_protos():
  tensor = tf.make_tensor_proto(np.array([[[[1, 2, 3]]]], np.uint8))
  assert tf_serving_replay.encode_prediction_log(
      'unipercepnet', 'serving_default', {'inputs': tensor}) == (
          _OFFICIAL_RECORD)
  record = tf_serving_replay.decode_prediction_log(_OFFICIAL_RECORD)
  assert record['model_name'] == 'unipercepnet'
  assert record['signature_name'] == 'serving_default'
  np.testing.assert_array_equal(tf.make_ndarray(record['inputs']['inputs']),
                                [[[[1, 2, 3]]]])


def test_round_trip_and_malformed_records():
  inputs = {'b': tf.make_tensor_proto(np.array([b'\xff' * 300], object)),
            'a': tf.make_tensor_proto(np.ones([2, 3], np.float32))}
  data = tf_serving_replay.encode_prediction_log('m', 'sig', inputs)
  record = tf_serving_replay.decode_prediction_log(data)
  assert (record['model_name'], record['signature_name']) == ('m', 'sig')
  assert record['inputs'] == inputs
  # A ClassifyLog (PredictionLog field 2) is not a predict request.
  with pytest.raises(ValueError, match='not a PredictionLog with a '
                     'predict_log'):
    tf_serving_replay.decode_prediction_log(b'\x12\x00')
  with pytest.raises(ValueError, match='truncated'):
    tf_serving_replay.decode_prediction_log(data[:-5])


def test_records_parse_with_tensorflow_serving_api_when_installed():
  apis = pytest.importorskip('tensorflow_serving.apis.prediction_log_pb2')
  tensor = tf.make_tensor_proto(np.arange(6, dtype=np.float32))
  data = tf_serving_replay.encode_prediction_log('m', 's', {'x': tensor})
  log = apis.PredictionLog.FromString(data)
  request = log.predict_log.request
  assert request.model_spec.name == 'm'
  assert request.model_spec.signature_name == 's'
  assert request.inputs['x'] == tensor
  assert log.SerializeToString(deterministic=True) == data


# ------------------------------------------------------------- requests
def test_requests_of_each_input_type(small_module, tmp_path):
  params = small_module.params
  parser = params.task.validation_data.parser
  image = conftest.random_image(30, 50, seed=4)
  path = warmup.write_warmup_requests(
      str(tmp_path), small_module, _SIGNATURES, images=[image],
      requests_per_image=2, model_name='shapes', batch_size=2)
  assert path == str(tmp_path / 'assets.extra' / 'tf_serving_warmup_requests')
  requests = warmup.read_warmup_requests(str(tmp_path))
  assert [name for name, _ in requests] == [
      name for name in _SIGNATURES.values() for _ in range(2)]
  assert all(list(inputs) == ['inputs'] for _, inputs in requests)
  assert {r['model_name'] for r in tf_serving_replay.read_warmup_file(path)
         } == {'shapes'}
  tensor, encoded, example, network = [requests[i][1]['inputs']
                                       for i in (0, 2, 4, 6)]
  np.testing.assert_array_equal(tensor, np.stack([image, image]))
  assert encoded.shape == (2,) and example.shape == (2,)
  np.testing.assert_array_equal(tf.io.decode_png(encoded[0]).numpy(), image)
  parsed = tf.io.parse_single_example(example[1], {
      'image/encoded': tf.io.FixedLenFeature((), tf.string)})
  np.testing.assert_array_equal(
      tf.io.decode_png(parsed['image/encoded']).numpy(), image)
  assert network.dtype == np.float32 and network.shape == (2, 64, 64, 3)
  expected, _ = small_module.preprocess(tf.constant(image[None]))
  np.testing.assert_allclose(network[0], expected[0].numpy(), atol=1e-5)
  assert parser.pad_value == 114.  # What the padding was made with.

  # The default image: synthetic, of the input size; 0 requests: no file.
  assert warmup.write_warmup_requests(
      str(tmp_path / 'none'), small_module, _SIGNATURES,
      requests_per_image=0) is None
  assert not os.path.exists(tmp_path / 'none')
  warmup.write_warmup_requests(str(tmp_path / 'default'), small_module,
                               {'image_tensor': 'serving_default'})
  (name, inputs), = warmup.read_warmup_requests(str(tmp_path / 'default'))
  assert name == 'serving_default'
  np.testing.assert_array_equal(inputs['inputs'][0],
                                warmup.synthetic_image([64, 64]))
  with pytest.raises(ValueError, match='TF Serving refuses more than 1000'):
    warmup.check_count(4, 300, 1)
  with pytest.raises(ValueError, match='give 0 or more'):
    warmup.check_count(4, 1, -1)


def test_load_images_from_files_folders_and_globs(tmp_path):
  images = [conftest.random_image(20, 30, seed=s) for s in range(3)]
  (tmp_path / 'folder').mkdir()
  Image.fromarray(images[0]).save(tmp_path / 'folder' / 'a.png')
  Image.fromarray(images[1]).save(tmp_path / 'folder' / 'b.png')
  Image.fromarray(images[2]).save(tmp_path / 'c.png')
  loaded = warmup.load_images([str(tmp_path / 'folder'),
                               str(tmp_path / '*.png')])
  assert len(loaded) == 3
  for got, image in zip(loaded, images):
    np.testing.assert_array_equal(got, image)
  (tmp_path / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n broken')
  with pytest.raises(ValueError, match='cannot read image .*broken.png'):
    warmup.load_images([str(tmp_path / 'broken.png')])
  with pytest.raises(ValueError, match='missing.png'):
    warmup.load_images([str(tmp_path / 'missing.png')])
  with pytest.raises(ValueError, match='pattern matches no file'):
    warmup.load_images([str(tmp_path / '*.jpg')])


def test_the_command_names_an_unreadable_warmup_image(small_checkpoint,
                                                      tmp_path):
  _, run_dir, _, _ = small_checkpoint
  (tmp_path / 'bad.jpg').write_bytes(b'not an image')
  _, stderr = conftest.run_command([
      sys.executable, os.path.join(conftest.ROOT, 'serving',
                                   'export_saved_model.py'),
      f'--config_file={os.path.join(run_dir, "params.yaml")}',
      f'--checkpoint_path={run_dir}', f'--export_dir={tmp_path / "out"}',
      f'--warmup_images={tmp_path / "bad.jpg"}'], expect_status=1)
  assert f'cannot read image {tmp_path / "bad.jpg"}' in stderr
  assert not os.path.exists(tmp_path / 'out')


def test_warmup_records_are_written_before_the_rename(small_checkpoint,
                                                      tmp_path, monkeypatch):
  params, run_dir, _, _ = small_checkpoint
  module = export_saved_model_lib.build_module(params, run_dir)
  monkeypatch.setattr(export_saved_model_lib, 'build_module',
                      lambda *args, **kwargs: module)

  def quick_saved_model(export_module, function_keys, export_savedmodel_dir,
                        **kwargs):
    del export_module, function_keys, kwargs
    os.makedirs(export_savedmodel_dir)
    return export_savedmodel_dir

  monkeypatch.setattr(export_base, 'export', quick_saved_model)
  target = str(tmp_path / 'export')
  export_saved_model_lib.export(params, run_dir, target, warmup_requests=3)
  assert len(warmup.read_warmup_requests(
      os.path.join(target, 'saved_model'))) == 3
  before = testing.files_under(target)
  # Writing the records fails: the earlier export stays as it was.
  with pytest.raises(ValueError, match='must be .height, width, 3.'):
    export_saved_model_lib.export(params, run_dir, target, warmup_requests=1,
                                  warmup_images=[np.zeros([4, 4], np.uint8)])
  assert testing.files_under(target) == before
  assert os.listdir(tmp_path) == ['export']
  # Checked before anything is built.
  with pytest.raises(ValueError, match='refuses more than 1000'):
    export_saved_model_lib.export(params, run_dir, target,
                                  warmup_requests=1001)


# ---------------------------------------- an export, replayed with TF alone
@pytest.fixture(scope='module')
def warmup_images(tmp_path_factory):
  folder = tmp_path_factory.mktemp('warmup_images')
  images = [conftest.random_image(48, 80, seed=1),
            conftest.random_image(60, 44, seed=3)]
  for name, image in zip(('a.png', 'b.png'), images):
    Image.fromarray(image).save(folder / name)
  return str(folder), images


@pytest.fixture(scope='module')
def warmup_export(small_checkpoint, warmup_images, tmp_path_factory):
  """The command's export with the four signatures and two warm-up images."""
  _, run_dir, _, _ = small_checkpoint
  path = str(tmp_path_factory.mktemp('warmup_export'))
  conftest.run_command([
      sys.executable, os.path.join(conftest.ROOT, 'serving',
                                   'export_saved_model.py'),
      f'--config_file={os.path.join(run_dir, "params.yaml")}',
      f'--checkpoint_path={run_dir}', f'--export_dir={path}',
      '--function_keys=' + export_saved_model_lib.format_function_keys(
          _SIGNATURES),
      f'--warmup_images={warmup_images[0]}', '--model_name=shapes'])
  return os.path.join(path, 'saved_model')


# Runs the tool as a script, with neither the repository nor its serving/
# folder on the path, and lists the top-level modules it imported.
_RUN_TOOL = textwrap.dedent('''
    import json, runpy, sys
    tool, modules_file = sys.argv[1], sys.argv[2]
    sys.argv = [tool] + sys.argv[3:]
    try:
      runpy.run_path(tool, run_name='__main__')
      status = 0
    except SystemExit as e:
      status = e.code
    with open(modules_file, 'w') as f:
      json.dump(sorted({m.split('.')[0] for m in sys.modules}), f)
    sys.exit(status)
''')


@pytest.fixture(scope='module')
def replay(warmup_export, warmup_images, tmp_path_factory):
  """The tool's results on the warm-up requests and REST bodies."""
  folder = tmp_path_factory.mktemp('replay')
  image_a, image_b = warmup_images[1]
  bodies = {
      'bytes_rows': {'signature_name': 'serving_bytes',
                     'instances': [{'b64': _b64(_png(image_a))},
                                   {'b64': _b64(_png(image_b))}]},
      'bytes_columns': {'signature_name': 'serving_bytes',
                        'inputs': {'inputs': [{'b64': _b64(_png(image_a))}]}},
      'tensor_rows': {'instances': [image_a.tolist()]},
      'bad_b64': {'signature_name': 'serving_bytes',
                  'instances': [{'b64': 'not base64!'}]},
      'not_an_image': {'signature_name': 'serving_bytes',
                       'instances': [{'b64': _b64(b'hello')}]},
  }
  args = []
  for name, body in bodies.items():
    (folder / f'{name}.json').write_text(json.dumps(body))
    args.append(f'--request={folder / name}.json')
  (folder / 'run_tool.py').write_text(_RUN_TOOL)
  stdout, _ = conftest.run_command(
      [sys.executable, str(folder / 'run_tool.py'), _TOOL,
       str(folder / 'modules.json'), f'--saved_model={warmup_export}',
       f'--output={folder / "replay.json"}'] + args, cwd=str(folder))
  assert '8 warm-up requests replayed (0 failed), 5 REST requests' in stdout
  with open(folder / 'replay.json') as f:
    results = json.load(f)
  with open(folder / 'modules.json') as f:
    modules = set(json.load(f))
  rest = {os.path.basename(r['request'])[:-5]: r for r in results['rest']}
  return results['warmup'], rest, modules


def _check_detections(outputs, expected):
  """JSON outputs (lists) against the in-process module's tensors."""
  for name in ('detection_boxes', 'detection_scores'):
    np.testing.assert_allclose(np.array(outputs[name], np.float32),
                               expected[name].numpy(), atol=1e-4,
                               err_msg=name)
  for name in ('num_detections', 'detection_classes'):
    np.testing.assert_array_equal(outputs[name], expected[name].numpy(),
                                  err_msg=name)
  assert np.all(np.array(outputs['num_detections']) > 0)


def test_the_tool_imports_only_tensorflow(replay):
  _, _, modules = replay
  banned = {'official', 'tf_keras', 'orbit', 'serving', 'modeling', 'tasks',
            'dataloaders', 'configs', 'official_ext', 'common',
            'registry_imports', 'tensorflow_serving', 'detection', 'warmup'}
  assert not banned & modules
  assert 'tensorflow' in modules


def test_every_warmup_request_runs_as_in_process(replay, warmup_images,
                                                 small_module):
  records, _, _ = replay
  images = warmup_images[1]
  assert [r['signature_name'] for r in records] == [
      name for name in _SIGNATURES.values() for _ in images]
  assert {r['model_name'] for r in records} == {'shapes'}
  assert [r for r in records if 'error' in r] == []
  shapes = [r['inputs']['inputs'] for r in records]
  assert shapes == [
      {'dtype': 'uint8', 'shape': [1, 48, 80, 3]},
      {'dtype': 'uint8', 'shape': [1, 60, 44, 3]},
      {'dtype': 'string', 'shape': [1]}, {'dtype': 'string', 'shape': [1]},
      {'dtype': 'string', 'shape': [1]}, {'dtype': 'string', 'shape': [1]},
      {'dtype': 'float32', 'shape': [1, 64, 64, 3]},
      {'dtype': 'float32', 'shape': [1, 64, 64, 3]}]
  # In graph mode, as the SavedModel runs.
  expected = [small_module.inference_from_image_tensors(
      tf.constant(image[None])) for image in images]
  for i, record in enumerate(records[:6]):
    assert sorted(record['outputs']) == sorted(_OUTPUTS)
    _check_detections(record['outputs'], expected[i % 2])
  for image, record in zip(images, records[6:]):
    network = warmup.signature_input('tflite', image, [64, 64], 114., None)
    _check_detections(record['outputs'], small_module.inference_for_tflite(
        tf.constant(network)))
    assert 'image_info' not in record['outputs']


def test_rest_responses_as_tf_serving_formats_them(replay, warmup_images,
                                                   small_module):
  _, rest, _ = replay
  images = warmup_images[1]
  expected = [small_module.inference_from_image_tensors(
      tf.constant(image[None])) for image in images]
  detections = small_module.params.task.model.detection_generator
  count = detections.max_num_detections
  mask_shape = tuple(expected[0]['detection_masks'].shape[1:])

  rows = rest['bytes_rows']
  assert rows['status'] == 200 and list(rows['response']) == ['predictions']
  predictions = rows['response']['predictions']
  assert len(predictions) == 2
  for prediction, want in zip(predictions, expected):
    assert sorted(prediction) == sorted(_OUTPUTS)
    assert isinstance(prediction['num_detections'], int)
    assert np.shape(prediction['detection_boxes']) == (count, 4)
    assert np.shape(prediction['detection_scores']) == (count,)
    assert np.shape(prediction['detection_classes']) == (count,)
    assert np.shape(prediction['image_info']) == (4, 2)
    assert np.shape(prediction['detection_masks']) == mask_shape
    # One instance's outputs: the module's, less the batch dimension.
    _check_detections({k: [v] for k, v in prediction.items()}, want)

  columns = rest['bytes_columns']
  assert columns['status'] == 200 and list(columns['response']) == ['outputs']
  outputs = columns['response']['outputs']
  assert sorted(outputs) == sorted(_OUTPUTS)
  assert np.shape(outputs['detection_boxes']) == (1, count, 4)
  assert outputs['num_detections'] == [predictions[0]['num_detections']]
  _check_detections(outputs, expected[0])

  tensor_rows = rest['tensor_rows']
  assert tensor_rows['status'] == 200
  _check_detections({k: [v] for k, v in
                     tensor_rows['response']['predictions'][0].items()},
                    expected[0])

  bad = rest['bad_b64']
  assert bad['status'] == 400 and list(bad['response']) == ['error']
  assert 'instances[0]: Unable to base64 decode' in bad['response']['error']
  not_image = rest['not_an_image']
  assert not_image['status'] == 400
  assert ('image_bytes element 0 is not a JPEG, PNG, GIF, BMP or WebP image'
          in not_image['response']['error'])
