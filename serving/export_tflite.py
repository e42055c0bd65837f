r"""Exports a trained UniPercepNet-S checkpoint as TFLite models.

  python serving/export_tflite.py --config_file=runs/shapes_demo/params.yaml \
      --checkpoint_path=runs/shapes_demo --output_dir=runs/shapes_demo/tflite \
      [--quantization=float32,float16,dynamic,int8] \
      [--calibration_images=100] [--calibration_data=PATTERN] \
      [--input_image_size=H,W]

Writes `output_dir/unipercepnet_QUANTIZATION.tflite` for each quantization
and `output_dir/params.yaml` (the experiment, with the category ids written
out; `serving/predict.py --tflite=FILE` reads it for the preprocessing).
Files already in output_dir stay, but those of this export are replaced.

Quantizations (TFLite's post-training ones):
  float32  the model as trained.
  float16  weights stored as float16, computed in float32.
  dynamic  weights stored as int8, activations quantized on the fly.
  int8     weights and activations int8, with activation ranges calibrated on
           --calibration_images images of the experiment's training data
           (task.train_data.input_path, or --calibration_data) preprocessed
           as evaluation preprocesses them: the backbone, the neck and
           the heads' convolutions. The rest of the heads (box decoding,
           scores, attention), top-k, NMS and RoI align stay float32 (`float_operations` says why); the input and
           outputs are float32. Calibrated ranges narrower
           than MIN_RANGE (a channel attention's ReLU unit that is never
           positive gives [0, 0]) are widened to [min(lo, 0), lo + 1]:
           TFLite would give them a scale near 1e-8, whose requantization
           ratio XNNPACK refuses ("failed to prepare"), and the model would
           fall back to TFLite's slower int8 kernels (171 ms against 43 ms
           on the demo model). The values of such a tensor stay exact when
           it is constant at 0.

Every model uses TFLite's builtin operations only (TF 2.20 has no Flex
delegate), batch 1, and keeps the post-processing inside: top-k, one NMS
per image (`nms_version` 'offset', TFLite's builtin NON_MAX_SUPPRESSION_V5)
and the masks of the kept detections.

The preprocessing stays outside, as with Model Garden's `tflite` input type.

  Input   float32 [1, H, W, 3]: the image resized to fit H x W keeping its
          aspect ratio (bilinear), placed at the top left, the rest filled
          with `pad_value` (params.yaml: task.validation_data.parser), then
          normalised per channel: (x - MEAN_RGB) / STDDEV_RGB (0..255 RGB,
          configs/unipercepnet.py). `preprocess_ops.preprocess_for_inference`
          does exactly this, and returns the resize scale.
  Outputs (D = max_num_detections, M = the mask size):
    num_detections     int32   [1]
    detection_boxes    float32 [1, D, 4]  ymin, xmin, ymax, xmax in pixels of
                                          the input; divide by the scale for
                                          the original image's
    detection_scores   float32 [1, D]
    detection_classes  int32   [1, D]     dataset category ids, 0: padding
    detection_masks    float32 [1, D, M, M] probabilities inside each box

  from ai_edge_litert.interpreter import Interpreter
  runner = Interpreter(model_path='unipercepnet_float32.tflite')
  outputs = runner.get_signature_runner()(inputs=network_input)
"""

import argparse
import copy
import os
import sys
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.lite.python import convert as tflite_convert
from tensorflow.lite.python import schema_py_generated as schema_fb
from tensorflow.lite.tools import flatbuffer_utils

from official.core import config_definitions as cfg
from official.core import train_utils
from common import atomic_io
from dataloaders import record_check
from dataloaders.ops import preprocess_ops
from serving import detection
from serving import export_saved_model_lib as export_lib

QUANTIZATIONS = ('float32', 'float16', 'dynamic', 'int8')
# Calibrated activation ranges narrower than this are widened (see above).
MIN_RANGE = 1e-4
# Operations int8 quantizes outside the backbone and neck.
_QUANTIZED_KINDS = ('CONV_2D', 'DEPTHWISE_CONV_2D', 'TRANSPOSE_CONV')
# The NMS TFLite runs with a builtin op (see the detection generator).
TFLITE_NMS = 'offset'
PARAMS_FILE = 'params.yaml'


def model_file(quantization: str) -> str:
  """The file name of a quantization's model."""
  return f'unipercepnet_{quantization}.tflite'


def tflite_params(params: cfg.ExperimentConfig) -> cfg.ExperimentConfig:
  """A copy of `params` with the post-processing TFLite runs."""
  params = copy.deepcopy(params)
  params.task.model.detection_generator.nms_version = TFLITE_NMS
  return params


def build_module(params: cfg.ExperimentConfig, checkpoint_path: str,
                 input_image_size: Optional[Sequence[int]] = None
                 ) -> detection.UniPercepNetModule:
  """The batch-1 export module of preprocessed inputs (`tflite`)."""
  return export_lib.build_module(
      tflite_params(params), checkpoint_path,
      input_type=detection.PREPROCESSED_INPUT, batch_size=1,
      input_image_size=input_image_size)


def calibration_inputs(params: cfg.ExperimentConfig,
                       num_images: int,
                       input_path: Optional[str] = None
                       ) -> Iterator[List[np.ndarray]]:
  """Yields [float32 [1, H, W, 3]] network inputs of training images.

  The first `num_images` images of `input_path` (default
  `task.train_data.input_path`: TFRecords with `image/encoded`), each
  preprocessed as evaluation does, for int8 calibration.

  Raises:
    ValueError: if the files match nothing or hold fewer images.
  """
  input_path = input_path or params.task.train_data.input_path
  files = record_check.input_files(input_path)
  if not files:
    raise ValueError(f'The calibration data {input_path!r} matches no file: '
                     'give --calibration_data=TFRECORD_PATTERN.')
  size = params.task.model.input_size[:2]
  parser = params.task.validation_data.parser
  test_scale = list(parser.test_scale) or None
  count = 0
  for record in tf.data.TFRecordDataset(files).take(num_images):
    encoded = tf.io.parse_single_example(
        record, {'image/encoded': tf.io.FixedLenFeature((), tf.string)})
    image = detection.decode_image_bytes(encoded['image/encoded'],
                                         tf.constant('a calibration image'))
    network_input, _, _ = preprocess_ops.preprocess_for_inference(
        image, size, parser.pad_value, test_scale)
    count += 1
    yield [network_input.numpy()[np.newaxis]]
  if count < num_images:
    raise ValueError(f'The calibration data {input_path!r} holds {count} '
                     f'images, fewer than the {num_images} asked for.')


def convert(module: detection.UniPercepNetModule, quantization: str,
            representative_inputs=None) -> bytes:
  """The module's preprocessed-input signature as a TFLite flatbuffer.

  Args:
    module: from `build_module` (batch 1, `tflite` input type).
    quantization: one of QUANTIZATIONS.
    representative_inputs: for 'int8', a callable returning an iterator of
      [float32 [1, H, W, 3]] inputs (`calibration_inputs`).
  """
  if quantization not in QUANTIZATIONS:
    raise ValueError(f'quantization {quantization!r} is not one of '
                     f'{", ".join(QUANTIZATIONS)}.')
  size = list(module.params.task.model.input_size[:2])
  function = module.inference_for_tflite.get_concrete_function(
      tf.TensorSpec([1] + size + [3], tf.float32, name='inputs'))
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [function], module)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  if quantization != 'float32':
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if quantization == 'float16':
    converter.target_spec.supported_types = [tf.float16]
  elif quantization == 'int8':
    if representative_inputs is None:
      raise ValueError('int8 quantization needs representative inputs.')
    converter.representative_dataset = representative_inputs
    # Calibrated (a float model with each activation's range), the ranges
    # mended, then quantized as `convert()` would, but for the operations
    # kept float (see `float_operations`).
    converter._experimental_calibrate_only = True  # pylint: disable=protected-access
    calibrated, _ = widen_degenerate_ranges(converter.convert())
    model = module.model
    float_nodes, float_kinds = float_operations(
        calibrated,
        [model.backbone.name] + ([model.decoder.name] if model.decoder else []))
    return tflite_convert.mlir_quantize(
        calibrated, input_data_type=tf.float32,
        output_data_type=tf.float32, denylisted_nodes=float_nodes,
        denylisted_ops=float_kinds)
  return converter.convert()


def float_operations(model_bytes: bytes, quantized_scopes: Sequence[str]
                     ) -> Tuple[List[str], List[str]]:
  """The operations int8 leaves float: all but the operations of
  `quantized_scopes` (the backbone's and neck's layers) and the
  convolutions.

  Quantizing everything puts box coordinates (hundreds of pixels, decoded
  through exp) and the head's scores on int8 grids: on the demo model the
  boxes moved by up to 4,000 pixels and no detection survived. So the
  heads' convolutions are int8, and the box decoding, attention, top-k,
  NMS and RoI align run in float32.

  The quantizer matches a node by its name, which an operation of several
  outputs (top-k, unstack) does not have as any one output's: those are
  also kept float by kind (every kind that is float everywhere). Without
  that, the top-k of the scores and the RoI boxes were int8 and masks moved
  by a pixel.

  Returns:
    (the first outputs' names of the float operations (the quantizer's node
    names), the kinds of operation that are float everywhere).
  """
  model = flatbuffer_utils.read_model_from_bytearray(model_bytes)
  names = {code: name for name, code in
           vars(schema_fb.BuiltinOperator).items() if not name.startswith('_')}
  prefixes = tuple(scope + '/' for scope in quantized_scopes)
  keep_float, float_kinds, quantized_kinds = [], set(), set()
  for subgraph in model.subgraphs:
    for op in subgraph.operators:
      code = model.operatorCodes[op.opcodeIndex]
      kind = names.get(max(code.builtinCode, code.deprecatedBuiltinCode))
      if not len(op.outputs):
        continue
      output = subgraph.tensors[op.outputs[0]].name.decode()
      if output.startswith(prefixes) or kind in _QUANTIZED_KINDS:
        quantized_kinds.add(kind)
      else:
        keep_float.append(output)
        float_kinds.add(kind)
  return keep_float, sorted(float_kinds - quantized_kinds)


def widen_degenerate_ranges(calibrated: bytes) -> Tuple[bytes, int]:
  """Widens calibrated ranges narrower than MIN_RANGE to [min(lo, 0),
  lo + 1]; returns the model and how many were widened."""
  model = flatbuffer_utils.read_model_from_bytearray(calibrated)
  widened = 0
  for subgraph in model.subgraphs:
    for tensor in subgraph.tensors:
      q = tensor.quantization
      if (q is None or q.min is None or q.max is None or len(q.min) != 1 or
          float(q.max[0]) - float(q.min[0]) >= MIN_RANGE):
        continue
      low = min(float(q.min[0]), 0.)
      q.min = np.array([low], np.float32)
      q.max = np.array([max(float(q.max[0]), low + 1.)], np.float32)
      widened += 1
  return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), widened


def export(params: cfg.ExperimentConfig,
           checkpoint_path: str,
           output_dir: str,
           quantizations: Sequence[str] = QUANTIZATIONS,
           num_calibration_images: int = 100,
           calibration_data: Optional[str] = None,
           input_image_size: Optional[Sequence[int]] = None,
           log=print) -> Dict[str, str]:
  """Writes a .tflite per quantization and params.yaml into `output_dir`.

  The files appear once all are written (`atomic_io.atomic_files`); other
  files in `output_dir` stay.

  Returns:
    {quantization: path of its model}.
  """
  unknown = sorted(set(quantizations) - set(QUANTIZATIONS))
  if unknown or not quantizations:
    raise ValueError(f'--quantization {",".join(quantizations)!r}: give one '
                     f'or more of {", ".join(QUANTIZATIONS)}.')
  if 'int8' in quantizations and num_calibration_images < 1:
    raise ValueError('int8 needs --calibration_images of at least 1.')
  if (os.path.exists(os.path.join(output_dir, PARAMS_FILE)) and
      not any(os.path.exists(os.path.join(output_dir, model_file(q)))
              for q in QUANTIZATIONS)):
    raise ValueError(f'{output_dir} holds a params.yaml of something else '
                     '(a training run?), which the export would replace: '
                     'give a directory of its own, e.g. RUN/tflite.')
  module = build_module(params, checkpoint_path, input_image_size)
  module.params.task.export.function_keys = export_lib.format_function_keys(
      {detection.PREPROCESSED_INPUT: 'serving_default'})
  representative = None
  if 'int8' in quantizations:
    # Read (and checked) before any conversion.
    images = list(calibration_inputs(module.params, num_calibration_images,
                                     calibration_data))
    representative = lambda: iter(images)
  paths = {}
  with atomic_io.atomic_files(output_dir, last=[PARAMS_FILE]) as staging:
    for quantization in quantizations:
      start = time.time()
      flatbuffer = convert(module, quantization,
                           representative if quantization == 'int8' else None)
      name = model_file(quantization)
      with open(os.path.join(staging, name), 'wb') as f:
        f.write(flatbuffer)
      paths[quantization] = os.path.join(output_dir, name)
      log(f'{name}: {len(flatbuffer) / 2**20:.1f} MiB in '
          f'{time.time() - start:.0f} s')
    train_utils.serialize_config(module.params, staging)
  return paths


class TFLiteRunner:
  """Runs an exported .tflite model (LiteRT's interpreter).

  `runner(network_input)` -> {output name: np.ndarray}, the outputs listed in
  the module docstring; `runner.input_size` is its [H, W].
  """

  def __init__(self, path: str, num_threads: Optional[int] = None):
    # Imported here: only TFLite runs need LiteRT.
    from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
    if not os.path.isfile(path):
      raise ValueError(f'{path} is not a file.')
    try:
      self._interpreter = litert.Interpreter(model_path=path,
                                             num_threads=num_threads)
    except ValueError as e:
      raise ValueError(f'{path} is not a TFLite model: {e}') from e
    self._runner = self._interpreter.get_signature_runner()
    (self._input_name, spec), = self._runner.get_input_details().items()
    self.input_size = [int(s) for s in spec['shape'][1:3]]
    self.path = path

  def __call__(self, network_input: np.ndarray) -> Dict[str, np.ndarray]:
    network_input = np.asarray(network_input, np.float32)
    expected = (1, *self.input_size, 3)
    if network_input.shape != expected:
      raise ValueError(f'{self.path} takes float32 {list(expected)}, got '
                       f'{list(network_input.shape)}.')
    return self._runner(**{self._input_name: network_input})


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  export_lib.add_checkpoint_arguments(parser)
  parser.add_argument('--output_dir', required=True)
  parser.add_argument('--quantization', default=','.join(QUANTIZATIONS),
                      help='Comma-separated: ' + ', '.join(QUANTIZATIONS))
  parser.add_argument('--calibration_images', type=int, default=100,
                      help='Training images calibrating int8.')
  parser.add_argument('--calibration_data', default=None,
                      help='TFRecord pattern for int8 calibration; default '
                      'task.train_data.input_path.')
  return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
  args = _parse_args(argv)
  try:
    size = export_lib.parse_image_size(args.input_image_size)
    params = export_lib.load_params(args.experiment, args.config_file,
                                    args.params_override)
    quantizations = [q.strip() for q in args.quantization.split(',')
                     if q.strip()]
    paths = export(params, args.checkpoint_path, args.output_dir,
                   quantizations, args.calibration_images,
                   args.calibration_data, size)
  except ValueError as e:
    print(f'ERROR: {e}', file=sys.stderr)
    return 1
  for quantization, path in paths.items():
    print(f'{quantization}: {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
