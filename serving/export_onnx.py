r"""Exports a UniPercepNet-S checkpoint as ONNX, and runs it with ONNX Runtime.

  python serving/export_onnx.py \
      --config_file=runs/shapes_demo/params.yaml \
      --checkpoint_path=runs/shapes_demo --output=runs/shapes_demo/model.onnx \
      [--experiment=unipercepnet_shapes] [--params_override=...] \
      [--input_image_size=H,W] [--opset=17]

The model converted (with tf2onnx) is the `tflite` input type of
`serving/detection.py` (`inference_for_tflite`), with a dynamic batch:

  input   inputs              float32 [B, H, W, 3]  network inputs, already
                                                   resized, padded and
                                                   normalised as
                                                   `preprocess_ops.
                                                   preprocess_for_inference`
                                                   does
  outputs num_detections      int32   [B]
          detection_boxes     float32 [B, D, 4]  ymin, xmin, ymax, xmax in
                                                 pixels of the network input
                                                 (divide by the resize scale
                                                 for the original image's)
          detection_scores    float32 [B, D]
          detection_classes   int32   [B, D]     dataset category ids, 0:
                                                 padding
          detection_masks     float32 [B, D, M, M] probabilities in each box
  panoptic models also
          category_mask       int32   [B, H, W]  dataset category ids of
                                                 things and stuff, 0: void
          instance_mask       int32   [B, H, W]  d + 1 where detection d
                                                 owns the pixel, 0: none

The weights are the checkpoint's inference weights (the EMA averages when
training kept them). What a caller needs to prepare the inputs (input size,
mean/std, pad value, test scale), the category ids and the mask size are in
the model's metadata_props under `unipercepnet` (a JSON object; see
`read_metadata`). The .onnx is written under a temporary name beside
--output and renamed to it once complete.

  runner = OnnxRunner('model.onnx', intra_op_threads=2)
  outputs = runner(float32_inputs)     # {'num_detections': ..., ...}
"""

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

# The metadata_props key of the JSON object `export_onnx` records.
METADATA_KEY = 'unipercepnet'
DEFAULT_OPSET = 17
INPUT_NAME = 'inputs'
OUTPUT_NAMES = ('num_detections', 'detection_boxes', 'detection_scores',
                'detection_classes', 'detection_masks')
PANOPTIC_OUTPUT_NAMES = ('category_mask', 'instance_mask')


def _output_names(structured_outputs: Mapping[str, Any]) -> List[str]:
  """The outputs the model has of OUTPUT_NAMES and PANOPTIC_OUTPUT_NAMES."""
  return [n for n in OUTPUT_NAMES + PANOPTIC_OUTPUT_NAMES
          if n in structured_outputs]


# ------------------------------------------------------------- conversion.


def _fix_negative_gather_axes(graph, ops):
  """tf2onnx rewriter: GatherV2 with batch_dims gets a non-negative axis.

  tf2onnx 1.17 converts GatherV2 with batch_dims != 0 to a GatherND between
  two Transposes whose permutations it computes from the axis as given: a
  negative axis (the mask head's `tf.gather(..., axis=-1, batch_dims=2)`)
  yields a permutation with repeated entries, which ONNX Runtime refuses
  ("Attribute perm for Transpose has repeated value"). The axis + rank is
  the same gather.
  """
  for node in graph.get_nodes():
    if (node.type != 'GatherV2' or not node.get_attr_value('batch_dims', 0)
        or not node.inputs[2].is_const()):
      continue
    axis_value = node.inputs[2].get_tensor_value(as_list=False)
    rank = graph.get_rank(node.input[0])
    if int(axis_value) >= 0 or rank is None:
      continue
    from tf2onnx import utils  # pylint: disable=g-import-not-at-top
    axis = graph.make_const(
        utils.make_name(node.name + '/nonnegative_axis'),
        np.array(int(axis_value) + rank, dtype=axis_value.dtype))
    graph.replace_input(node, node.input[2], axis.output[0], 2)
  return ops


class _ErrorRecords(logging.Handler):
  """Collects the ERROR records of tf2onnx's loggers.

  `tf2onnx.convert.from_function` converts with continue_on_error: a node
  it cannot convert is logged and left in the graph, not raised.
  """

  def __init__(self):
    super().__init__(logging.ERROR)
    self.messages: List[str] = []

  def emit(self, record):
    self.messages.append(record.getMessage().splitlines()[0])


@contextlib.contextmanager
def _collect_errors():
  handler = _ErrorRecords()
  logger = logging.getLogger('tf2onnx')
  logger.addHandler(handler)
  try:
    yield handler.messages
  finally:
    logger.removeHandler(handler)


def _metadata(module, params, checkpoint_path: str, opset: int,
              mask_size: Optional[int],
              output_names: Sequence[str]) -> Dict[str, Any]:
  """What a runner needs to prepare inputs and read outputs."""
  from configs import unipercepnet as unipercepnet_cfg  # pylint: disable=g-import-not-at-top
  import tf2onnx  # pylint: disable=g-import-not-at-top
  parser = params.task.validation_data.parser
  generator = params.task.model.detection_generator
  return {
      'input_name': INPUT_NAME,
      'input_size': [int(s) for s in params.task.model.input_size[:2]],
      'input_format': 'float32 [B, H, W, 3] RGB: (pixel - mean_rgb) / '
                      'stddev_rgb after preprocess_for_inference\'s resize '
                      'and padding',
      'mean_rgb': [float(v) for v in unipercepnet_cfg.MEAN_RGB],
      'stddev_rgb': [float(v) for v in unipercepnet_cfg.STDDEV_RGB],
      'pad_value': float(parser.pad_value),
      'test_scale': ([int(s) for s in parser.test_scale]
                     if parser.test_scale else None),
      'category_ids': module.category_ids,
      'output_names': list(output_names),
      'max_num_detections': int(generator.max_num_detections),
      'mask_size': mask_size,
      'boxes': 'ymin, xmin, ymax, xmax in pixels of the network input',
      'nms_version': generator.nms_version,
      'checkpoint': checkpoint_path,
      'opset': opset,
      'tf2onnx': tf2onnx.__version__,
  }


def export_onnx(params,
                checkpoint_path: str,
                output_path: str,
                opset: int = DEFAULT_OPSET,
                input_image_size: Optional[Sequence[int]] = None
                ) -> Dict[str, Any]:
  """Converts the checkpoint's `tflite` function to ONNX at `output_path`.

  Args:
    params: the experiment the checkpoint was trained with
      (`export_saved_model_lib.load_params`).
    checkpoint_path: a checkpoint prefix or a directory (its latest).
    output_path: the .onnx file to write (replaced if it exists); its
      directory is created.
    opset: the ONNX opset.
    input_image_size: [height, width]; default `task.model.input_size`.

  Returns:
    The metadata recorded in the model (`read_metadata`), with
    'conversion_seconds' (all of it: model, checkpoint, tracing, tf2onnx,
    writing) and 'tf2onnx_seconds' added.

  Raises:
    ValueError: on the arguments or the checkpoint.
    RuntimeError: if tf2onnx could not convert some operation.
  """
  # pylint: disable=g-import-not-at-top
  import onnx
  import tensorflow as tf
  import tf2onnx
  from common import atomic_io
  from modeling import checkpoints
  from serving import detection
  from serving import export_saved_model_lib
  # pylint: enable=g-import-not-at-top
  start = time.time()
  # Before the model is built: a missing checkpoint fails at once.
  prefix = checkpoints.checkpoint_prefix(checkpoint_path)
  if not tf.io.gfile.exists(prefix + '.index'):
    raise ValueError(f'Cannot read checkpoint {checkpoint_path!r}: there is '
                     f'no {prefix}.index.')
  module = export_saved_model_lib.build_module(
      params, checkpoint_path, input_type=detection.PREPROCESSED_INPUT,
      batch_size=None, input_image_size=input_image_size)
  size = list(module.params.task.model.input_size[:2])
  spec = tf.TensorSpec([None] + size + [3], tf.float32, name=INPUT_NAME)

  @tf.function(input_signature=[spec])
  def function(inputs):
    return module.inference_for_tflite(inputs)

  outputs = function.get_concrete_function().structured_outputs
  mask_size = (int(outputs['detection_masks'].shape[-1])
               if 'detection_masks' in outputs else None)
  expected = _output_names(outputs)
  tf2onnx_start = time.time()
  with _collect_errors() as errors:
    model, _ = tf2onnx.convert.from_function(
        function, input_signature=[spec], opset=opset,
        custom_rewriter=[_fix_negative_gather_axes])
  tf2onnx_seconds = time.time() - tf2onnx_start
  if errors:
    raise RuntimeError('tf2onnx could not convert the model: ' +
                       '; '.join(errors[:5]))
  names = sorted(o.name for o in model.graph.output)
  if names != sorted(expected):
    raise RuntimeError(f'The ONNX outputs are {names}, not '
                       f'{sorted(expected)}.')
  metadata = _metadata(module, module.params, checkpoint_path, opset,
                       mask_size, expected)
  entry = model.metadata_props.add()
  entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
  model.doc_string = ('UniPercepNet-S detections of preprocessed float32 '
                      'inputs; see metadata_props "unipercepnet".')
  onnx.checker.check_model(model)
  directory = os.path.dirname(os.path.abspath(output_path))
  os.makedirs(directory, exist_ok=True)
  with atomic_io.atomic_path(output_path) as temporary:
    with open(temporary, 'wb') as f:
      f.write(model.SerializeToString())
  metadata['conversion_seconds'] = time.time() - start
  metadata['tf2onnx_seconds'] = tf2onnx_seconds
  return metadata


# ----------------------------------------------------------------- running.


def read_metadata(path_or_session) -> Dict[str, Any]:
  """The metadata `export_onnx` recorded in a model ({} if none)."""
  if isinstance(path_or_session, str):
    import onnx  # pylint: disable=g-import-not-at-top
    props = {p.key: p.value for p in
             onnx.load(path_or_session, load_external_data=False)
             .metadata_props}
  else:
    props = path_or_session.get_modelmeta().custom_metadata_map
  return json.loads(props[METADATA_KEY]) if METADATA_KEY in props else {}


class OnnxRunner:
  """An exported model run by ONNX Runtime on the CPU.

  runner(images) takes float32 network inputs [B, H, W, 3] (any B) and
  returns {output name: numpy array} (see the module doc).
  """

  def __init__(self, path: str, intra_op_threads: int = 0,
               inter_op_threads: int = 1):
    """Loads the model.

    Args:
      path: the .onnx file.
      intra_op_threads: ONNX Runtime's threads within an operation (0: its
        default, one per physical core).
      inter_op_threads: threads across operations (sequential execution
        uses one).
    """
    import onnxruntime  # pylint: disable=g-import-not-at-top
    if not os.path.isfile(path):
      raise ValueError(f'ONNX model {path!r} does not exist.')
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    self.session = onnxruntime.InferenceSession(
        path, options, providers=['CPUExecutionProvider'])
    self.metadata = read_metadata(self.session)
    model_input = self.session.get_inputs()[0]
    self.input_name = model_input.name
    self.input_shape = model_input.shape  # [batch (a name), H, W, 3].
    self.output_names = [o.name for o in self.session.get_outputs()]

  def __call__(self, images: np.ndarray) -> Dict[str, np.ndarray]:
    images = np.asarray(images)
    expected = tuple(self.input_shape[1:])
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
      raise ValueError(f'images of shape {images.shape}: expected '
                       f'[batch, {", ".join(map(str, expected))}] network '
                       'inputs.')
    if images.dtype != np.float32:
      raise ValueError(f'images are {images.dtype}: expected float32 network '
                       'inputs (resized, padded and normalised).')
    results = self.session.run(self.output_names, {self.input_name: images})
    return dict(zip(self.output_names, results))


# ------------------------------------------------------------ command line.


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  """The command line (argparse: absl flags would clash with the modules'
  own when tests import this one beside them)."""
  from serving import export_saved_model_lib  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(
      description=__doc__.split('\n\n', 1)[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  export_saved_model_lib.add_checkpoint_arguments(p)
  p.add_argument('--output', required=True, help='The .onnx file to write.')
  p.add_argument('--opset', type=int, default=DEFAULT_OPSET,
                 help='ONNX opset.')
  args = p.parse_args(argv)
  try:
    args.input_image_size = export_saved_model_lib.parse_image_size(
        args.input_image_size)
  except ValueError as e:
    p.error(str(e))
  return args


def main(argv: Optional[Sequence[str]] = None) -> None:
  args = parse_args(argv)
  from serving import export_saved_model_lib  # pylint: disable=g-import-not-at-top
  try:
    params = export_saved_model_lib.load_params(
        args.experiment, args.config_file, args.params_override)
    metadata = export_onnx(params, args.checkpoint_path, args.output,
                           opset=args.opset,
                           input_image_size=args.input_image_size)
  except (ValueError, RuntimeError) as e:
    sys.exit(f'ERROR: {e}')
  size = os.path.getsize(args.output)
  print(f'ONNX model: {args.output} ({size / 2**20:.1f} MiB, opset '
        f'{metadata["opset"]}, input {INPUT_NAME} float32 '
        f'[batch, {metadata["input_size"][0]}, {metadata["input_size"][1]}, '
        f'3]); converted in {metadata["conversion_seconds"]:.1f} s '
        f'(tf2onnx {metadata["tf2onnx_seconds"]:.1f} s).')


if __name__ == '__main__':
  main()
