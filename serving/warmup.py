"""TF Serving warm-up requests of an export.

TensorFlow Serving runs the requests of `SAVED_MODEL/assets.extra/
tf_serving_warmup_requests` once when it loads a model version, before it
serves it, so that the first real requests do not pay for the lazy
initialisations (graph optimisation, kernel selection, memory pools). The
file is a TFRecord file of serialized `tensorflow.serving.PredictionLog`
protos, each holding a `PredictLog` whose `PredictRequest` names the model
and signature (`model_spec`) and gives the signature's input as a
TensorProto (`inputs`).

`write_warmup_requests` writes one such request per signature and warm-up
image (repeated `requests_per_image` times), each image given as the
signature's input type takes it:

  image_tensor  uint8 [B, h, w, 3]
  image_bytes   string [B], the image as PNG bytes
  tf_example    string [B], a serialized tf.Example with the PNG as
                image/encoded
  tflite        float32 [B, H, W, 3], the network input made by
                `preprocess_ops.preprocess_for_inference` with the
                validation parser's pad_value and test_scale

(B: the export's fixed batch size, the image repeated; else 1). Without
images, a fixed pseudo-random image of the network input size is used.

The PredictionLog messages are encoded by `serving/tf_serving_replay.py`
(protobuf wire format written by hand, so neither this project nor a
reader of the file needs the `tensorflow-serving-api` package); that tool
also replays the requests. `read_warmup_requests` decodes them back.
"""

import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from dataloaders import image_io
from dataloaders.ops import preprocess_ops
from serving import detection
from serving import tf_serving_replay

# The file TF Serving reads, relative to the SavedModel directory.
WARMUP_FILE = tf_serving_replay.WARMUP_FILE
MAX_RECORDS = tf_serving_replay.MAX_WARMUP_RECORDS
DEFAULT_MODEL_NAME = 'unipercepnet'
DEFAULT_INPUT_NAME = 'inputs'


def synthetic_image(size: Sequence[int], seed: int = 0) -> np.ndarray:
  """A fixed uint8 [height, width, 3] pseudo-random image (the default).

  Random pixels rather than a flat colour: the model then yields many
  candidate boxes, so the warm-up also runs non-maximum suppression and the
  mask head on a full set of detections.
  """
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, [int(size[0]), int(size[1]), 3],
                      dtype=np.uint8)


def load_images(specs: Sequence[str]) -> List[np.ndarray]:
  """Files, folders (their JPEG/PNG/BMP files) and globs -> uint8 images.

  Raises:
    ValueError: naming the folder or pattern that gives no image, or the
      file that cannot be read ("cannot read image PATH: REASON").
  """
  from serving import predict  # pylint: disable=g-import-not-at-top
  paths, errors = predict.find_images([s for s in specs if s])
  if errors:
    raise ValueError('Warm-up images: ' + ' '.join(errors))
  return [image_io.read_image(path) for path in paths]


def _png(image: np.ndarray) -> bytes:
  return tf.io.encode_png(tf.constant(image, tf.uint8)).numpy()


def _tf_example(encoded: bytes) -> bytes:
  feature = {'image/encoded': tf.train.Feature(
      bytes_list=tf.train.BytesList(value=[encoded]))}
  return tf.train.Example(features=tf.train.Features(
      feature=feature)).SerializeToString()


def check_count(num_signatures: int, num_images: int,
                requests_per_image: int) -> int:
  """The number of warm-up records; ValueError if TF Serving refuses it."""
  if requests_per_image < 0:
    raise ValueError(f'warmup_requests is {requests_per_image}; give 0 '
                     'or more.')
  if requests_per_image and not num_images:
    raise ValueError('No warm-up image given.')
  count = num_signatures * num_images * requests_per_image
  if count > MAX_RECORDS:
    raise ValueError(
        f'{count} warm-up requests ({num_signatures} signatures x '
        f'{num_images} images x {requests_per_image}); TF Serving refuses '
        f'more than {MAX_RECORDS} (give fewer images or requests).')
  return count


def signature_input(input_type: str, image: np.ndarray,
                    input_size: Sequence[int], pad_value: float,
                    test_scale: Optional[Sequence[int]],
                    batch_size: int = 1) -> np.ndarray:
  """One image as the `input_type` signature takes it (see the module doc).

  Args:
    input_type: image_tensor, image_bytes, tf_example or tflite.
    image: uint8 RGB [h, w, 3].
    input_size: [height, width] of the network input (tflite).
    pad_value: the validation parser's pad_value (tflite).
    test_scale: the validation parser's test_scale (tflite).
    batch_size: the leading dimension (the image repeated).

  Returns:
    The batch: uint8, float32 or object (bytes) array.
  """
  image = np.asarray(image, np.uint8)
  if image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f'A warm-up image must be [height, width, 3], got '
                     f'{list(image.shape)}.')
  if input_type == 'image_tensor':
    one = image
  elif input_type == 'image_bytes':
    one = np.array(_png(image), dtype=object)
  elif input_type == 'tf_example':
    one = np.array(_tf_example(_png(image)), dtype=object)
  elif input_type == detection.PREPROCESSED_INPUT:
    one, _, _ = preprocess_ops.preprocess_for_inference(
        tf.constant(image), list(input_size), pad_value,
        list(test_scale) if test_scale else None)
    one = one.numpy().astype(np.float32)
  else:
    raise ValueError(f'Unknown input type {input_type!r}.')
  return np.stack([one] * batch_size)


def build_requests(module: detection.UniPercepNetModule,
                   function_keys: Mapping[str, str],
                   images: Optional[Sequence[np.ndarray]] = None,
                   requests_per_image: int = 1,
                   input_name: Optional[str] = None,
                   batch_size: Optional[int] = None
                   ) -> List[Tuple[str, Dict[str, np.ndarray]]]:
  """(signature name, {input name: array}) of each warm-up request.

  Args:
    module: the export module (its input size, batch size, parser).
    function_keys: {input_type: signature name}, as exported.
    images: uint8 RGB images; default `synthetic_image` of the input size.
    requests_per_image: copies of each (signature, image) request.
    input_name: the signatures' input name (default `inputs`).
    batch_size: the export's fixed batch size (None: dynamic, batches of
      one image).

  Returns:
    Signature by signature (in `function_keys` order), image by image.
  """
  params = module.params
  size = list(params.task.model.input_size[:2])
  parser = params.task.validation_data.parser
  images = list(images) if images is not None else [synthetic_image(size)]
  check_count(len(function_keys), len(images), requests_per_image)
  batch_size = batch_size or 1
  name = input_name or DEFAULT_INPUT_NAME
  requests = []
  for input_type, signature_name in function_keys.items():
    for image in images:
      array = signature_input(input_type, image, size, parser.pad_value,
                              parser.test_scale, batch_size)
      requests.extend([(signature_name, {name: array})] * requests_per_image)
  return requests


def write_warmup_requests(
    saved_model_dir: str,
    module: detection.UniPercepNetModule,
    function_keys: Mapping[str, str],
    images: Optional[Sequence[np.ndarray]] = None,
    requests_per_image: int = 1,
    model_name: str = DEFAULT_MODEL_NAME,
    input_name: Optional[str] = None,
    batch_size: Optional[int] = None) -> Optional[str]:
  """Writes SAVED_MODEL/assets.extra/tf_serving_warmup_requests.

  Args: see `build_requests`; `model_name` is each request's
  model_spec.name (TF Serving's --model_name).

  Returns:
    The file's path, or None when `requests_per_image` is 0 (no file).
  """
  requests = build_requests(module, function_keys, images,
                            requests_per_image, input_name, batch_size)
  if not requests:
    return None
  path = os.path.join(saved_model_dir, WARMUP_FILE)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.TFRecordWriter(path) as writer:
    for signature_name, inputs in requests:
      protos = {k: tf.make_tensor_proto(v) for k, v in inputs.items()}
      writer.write(tf_serving_replay.encode_prediction_log(
          model_name, signature_name, protos))
  return path


def read_warmup_requests(path: str) -> List[Tuple[str, Dict[str, np.ndarray]]]:
  """(signature name, {input name: array}) of each record of a warm-up file.

  Args:
    path: the file, or the SavedModel directory holding it.
  """
  if tf.io.gfile.isdir(path):
    path = os.path.join(path, WARMUP_FILE)
  return [(record['signature_name'],
           {k: tf.make_ndarray(v) for k, v in record['inputs'].items()})
          for record in tf_serving_replay.read_warmup_file(path)]

