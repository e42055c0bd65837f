r"""Runs UniPercepNet-S on image files: COCO results JSON and annotated PNGs.

  # An exported SavedModel (serving/export_saved_model.py):
  python serving/predict.py --saved_model=EXPORT_DIR \
      --images=photos/,more/*.jpg,one.png --output_dir=OUT
  # Or a training checkpoint (params from the run's params.yaml):
  python serving/predict.py --checkpoint_path=RUN --images=... --output_dir=OUT
  # Or a TFLite export (params.yaml beside it) or an ONNX one:
  python serving/predict.py --tflite=DIR/unipercepnet_int8.tflite ...
  python serving/predict.py --onnx=RUN/unipercepnet.onnx ...
  # With an annotation file: COCO image ids and class names from it, and
  # the box and mask AP of the predictions.
  python serving/predict.py ... --annotation_file=data/shapes/val.json
  # A panoptic model's stuff names, from a COCO panoptic file:
  python serving/predict.py ... \
      --categories_file=data/shapes_panoptic/panoptic_val.json

`--images` takes files, folders (their JPEG / PNG / BMP files) and globs,
comma-separated. Any size; grayscale, palette and RGBA images are converted
to RGB. Writes:

  OUT/detections.json  COCO results: image_id, category_id (the dataset's),
                       bbox [x, y, w, h], score, segmentation (RLE)
  OUT/images.json      COCO `images` entries (id, file_name, height, width)
  OUT/images/*.png     each image with its detections drawn (--draw)
  OUT/grid.png         the first --grid annotated images in one PNG (the
                       panoptic drawings of a panoptic model)
  OUT/metrics.json     with --annotation_file: the 12 box and 12 mask AP

A panoptic model (its outputs have 'category_mask' and 'instance_mask')
also writes:

  OUT/panoptic/*.png   each image with its panoptic segmentation drawn
                       (--draw): stuff tinted, each thing instance in its
                       own colour and outlined, one label per segment
  OUT/panoptic_predictions/*.png
                       COCO panoptic segment ids of each pixel, id = R +
                       256 G + 256^2 B (0: void), at the image's size
  OUT/panoptic_predictions.json
                       {"annotations": [{"image_id", "file_name",
                       "segments_info": [{"id", "category_id", "isthing",
                       "area", "bbox" [x, y, w, h]}]}]}, for panopticapi
                       (isthing: the segment is a detected instance)

An image that cannot be read is reported with its path and reason and
skipped; the others are still processed, and the exit status is 1.
"""

import dataclasses
import glob
import json
import os
import sys
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from pycocotools import coco
from pycocotools import cocoeval
from pycocotools import mask as mask_api
from official.vision.ops import box_ops
from common import atomic_io
from common import panoptic_png
from dataloaders import image_io
from dataloaders.ops import preprocess_ops
from serving import detection
from serving import export_onnx
from serving import export_saved_model_lib as export_lib
from serving import export_tflite
from serving import visualize
from serving import warmup

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')
FLAGS = flags.FLAGS
COCO_METRIC_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'ARmax1',
                     'ARmax10', 'ARmax100', 'ARs', 'ARm', 'ARl')

@dataclasses.dataclass
class Detections:
  """Detections of one image, in its pixels, valid ones only.

  A panoptic model's also have `category_mask` (the dataset category id of
  each pixel, 0 void) and `instance_mask` (i + 1 on the pixels of detection
  i, 0 for stuff and void), int32 [H, W] at the image's size.
  """
  boxes: np.ndarray    # [N, 4] float yxyx.
  scores: np.ndarray   # [N].
  classes: np.ndarray  # [N] dataset category ids.
  masks: Optional[np.ndarray]  # [N, H, W] uint8 0/1, the image's size.
  category_mask: Optional[np.ndarray] = None  # [H, W] int32.
  instance_mask: Optional[np.ndarray] = None  # [H, W] int32.


# ---------------------------------------------------------------- inputs.
def find_images(specs: Sequence[str]) -> Tuple[List[str], List[str]]:
  """Expands files, folders and globs; returns (paths, error messages)."""
  paths, errors = [], []
  for spec in specs:
    if os.path.isdir(spec):
      found = sorted(
          os.path.join(spec, name) for name in os.listdir(spec)
          if name.lower().endswith(IMAGE_EXTENSIONS))
      what = 'folder holds no JPEG/PNG/BMP image'
    elif glob.has_magic(spec):
      found = sorted(p for p in glob.glob(spec) if os.path.isfile(p))
      what = 'pattern matches no file'
    else:
      found, what = [spec], ''
    if not found:
      errors.append(f'{spec}: {what}.')
    paths.extend(p for p in found if p not in paths)
  return paths, errors


# uint8 RGB [h, w, 3] of an image file (16-bit images scaled, EXIF
# orientation applied); raises ValueError naming the file and the reason.
read_image = image_io.read_image


# ------------------------------------------------------------ predictors.
def _panoptic_masks_of_image(mask: tf.Tensor, height: int, width: int,
                             scale: np.ndarray) -> np.ndarray:
  """int32 [height, width]: a network-resolution panoptic mask's valid
  region (its top-left round(image size x scale) pixels), resized to the
  image."""
  mask = np.asarray(mask)
  valid_height = min(max(int(round(height * float(scale[0]))), 1),
                     mask.shape[0])
  valid_width = min(max(int(round(width * float(scale[1]))), 1),
                    mask.shape[1])
  return visualize.resize_label_map(mask[:valid_height, :valid_width],
                                    height, width).astype(np.int32)


def _to_numpy_detections(outputs: Mapping[str, tf.Tensor], height: int,
                         width: int, full_size_masks: bool,
                         image_info: Optional[tf.Tensor] = None
                         ) -> Detections:
  """The first image of a signature's outputs, masks at the image's size.

  `full_size_masks`: the outputs' masks are already 0/1 masks of the image
  (see `detection.UniPercepNetModule`); else box crops, pasted here as the
  export pastes them. Panoptic masks ('category_mask', 'instance_mask', at
  the network input's resolution) are cut to the image's valid region and
  resized to the image (nearest neighbour); `image_info` ([4, 2], for
  outputs without it) gives the resize scale.
  """
  n = int(outputs['num_detections'][0])
  boxes = outputs['detection_boxes'][0, :n]
  masks = None
  if 'detection_masks' in outputs:
    masks = outputs['detection_masks'][:, :n]
    if not full_size_masks:
      masks = detection.paste_masks_batch(masks, boxes[tf.newaxis],
                                          (height, width))
    masks = masks[0, :, :height, :width].numpy()
  boxes = boxes.numpy()
  panoptic = {}
  if 'category_mask' in outputs and 'instance_mask' in outputs:
    if image_info is None:
      image_info = outputs['image_info'][0]
    scale = np.asarray(image_info)[2]
    for key in ('category_mask', 'instance_mask'):
      panoptic[key] = _panoptic_masks_of_image(outputs[key][0], height,
                                               width, scale)
  return Detections(boxes=boxes,
                    scores=outputs['detection_scores'][0, :n].numpy(),
                    classes=outputs['detection_classes'][0, :n].numpy(),
                    masks=masks, **panoptic)


def sorted_detections(detections: Detections) -> Detections:
  """The detections ordered by class, then box (rounded to 0.01 pixel):
  an order that does not depend on how NMS ranked equal scores. The
  instance mask's ids follow the detections."""
  boxes = np.round(detections.boxes, 2)
  order = np.lexsort(tuple(boxes.T[::-1]) + (detections.classes,))
  instance_mask = detections.instance_mask
  if instance_mask is not None:
    # Old id order[k] + 1 becomes k + 1; ids of no detection are kept.
    table = np.arange(max(len(order), int(instance_mask.max(initial=0))) + 1)
    table[order + 1] = np.arange(1, len(order) + 1)
    instance_mask = table[instance_mask].astype(instance_mask.dtype)
  return Detections(
      boxes=detections.boxes[order], scores=detections.scores[order],
      classes=detections.classes[order],
      masks=None if detections.masks is None else detections.masks[order],
      category_mask=detections.category_mask, instance_mask=instance_mask)


def _yxyx_to_xywh(boxes: np.ndarray) -> np.ndarray:
  """[n, 4] float64 COCO boxes (Model Garden's conversion)."""
  return box_ops.yxyx_to_xywh(np.asarray(boxes, np.float64).reshape(-1, 4))


Predictor = Callable[[np.ndarray], Detections]


def export_params(path: str):
  """The params.yaml of an export directory (or of its saved_model/'s)."""
  for directory in (path, os.path.dirname(os.path.normpath(path))):
    params_file = os.path.join(directory, 'params.yaml')
    if os.path.exists(params_file):
      return export_lib.load_params(None, [params_file])
  raise ValueError(f'{path} has no params.yaml beside its SavedModel: give '
                   'the directory serving/export_saved_model.py wrote.')


def saved_model_predictor(path: str,
                          signature: str = 'serving_default') -> Predictor:
  """Runs a signature of an exported SavedModel on one image at a time.

  The signature's input type and mask format are read from the export's
  params.yaml (`task.export`).
  """
  params = export_params(path)
  if os.path.isdir(os.path.join(path, export_lib.SAVED_MODEL_SUBDIR)):
    path = os.path.join(path, export_lib.SAVED_MODEL_SUBDIR)
  if not tf.saved_model.contains_saved_model(path):
    raise ValueError(f'{path!r} holds no SavedModel.')
  loaded = tf.saved_model.load(path)
  if signature not in loaded.signatures:
    raise ValueError(f'{path} has no signature {signature!r}; it has '
                     f'{sorted(loaded.signatures)}.')
  exported = params.task.export
  input_types = {name: input_type for input_type, name in
                 export_lib.parse_function_keys(exported.function_keys).items()}
  if signature not in input_types:
    raise ValueError(f'params.yaml of {path} does not say the input type of '
                     f'signature {signature!r} (task.export.function_keys is '
                     f'{exported.function_keys!r}); export it again.')
  input_type = input_types[signature]
  if input_type == detection.PREPROCESSED_INPUT:
    raise ValueError(f'Signature {signature!r} of {path} takes preprocessed '
                     'network inputs; give one of images, image bytes or '
                     'tf.Examples.')
  fn = loaded.signatures[signature]
  (name, _), = fn.structured_input_signature[1].items()
  parser = params.task.validation_data.parser

  def predict(image: np.ndarray) -> Detections:
    # Encoded as the warm-up requests are (PNG bytes, tf.Examples).
    outputs = fn(**{name: tf.constant(warmup.signature_input(
        input_type, image, params.task.model.input_size[:2],
        parser.pad_value, parser.test_scale))})
    return _to_numpy_detections(outputs, *image.shape[:2],
                                full_size_masks=exported.full_size_masks)

  predict.model = loaded  # Keeps the loaded object (and its variables) alive.
  predict.params = params
  return predict


def preprocessed_predictor(run_model: Callable[[np.ndarray],
                                              Mapping[str, np.ndarray]],
                           input_size: Sequence[int],
                           pad_value: float,
                           test_scale: Optional[Sequence[int]] = None
                           ) -> Predictor:
  """Runs a model of preprocessed inputs (TFLite, ONNX) on one image.

  The image is preprocessed as the SavedModel's signatures do
  (`preprocess_ops.preprocess_for_inference` with the exported input size,
  pad value and test scale), boxes are scaled back to the image and masks
  pasted as for the SavedModel: the same outputs from any format.

  Args:
    run_model: float32 [1, H, W, 3] network input -> the outputs of
      `UniPercepNetModule.inference_for_tflite` as arrays.
    input_size: [H, W].
    pad_value: task.validation_data.parser.pad_value of the export.
    test_scale: its test_scale (None or empty: none).
  """
  size = [int(s) for s in input_size]
  test_scale = list(test_scale or []) or None

  def predict(image: np.ndarray) -> Detections:
    network_input, image_info, _ = preprocess_ops.preprocess_for_inference(
        tf.constant(image), size, pad_value, test_scale)
    outputs = {k: tf.constant(v) for k, v in
               run_model(network_input.numpy()[np.newaxis]).items()}
    scale = tf.tile(image_info[2], [2])
    outputs['detection_boxes'] = outputs['detection_boxes'] / scale
    return _to_numpy_detections(outputs, *image.shape[:2],
                                full_size_masks=False, image_info=image_info)

  predict.model = run_model
  return predict


def tflite_predictor(path: str, num_threads: Optional[int] = None
                     ) -> Predictor:
  """Runs a .tflite export (serving/export_tflite.py) on one image; its
  params.yaml, beside it, gives the preprocessing."""
  runner = export_tflite.TFLiteRunner(path, num_threads=num_threads)
  params = export_params(os.path.dirname(os.path.abspath(path)))
  parser = params.task.validation_data.parser
  predict = preprocessed_predictor(runner, runner.input_size,
                                   parser.pad_value, parser.test_scale)
  predict.params = params
  return predict


def onnx_predictor(path: str, num_threads: Optional[int] = None
                   ) -> Predictor:
  """Runs an ONNX export (serving/export_onnx.py) on one image; its
  metadata gives the preprocessing."""
  runner = export_onnx.OnnxRunner(path, intra_op_threads=num_threads or 0)
  meta = runner.metadata
  if not meta:
    raise ValueError(f'{path} has no {export_onnx.METADATA_KEY!r} metadata: '
                     'export it with serving/export_onnx.py.')
  predict = preprocessed_predictor(runner, meta['input_size'],
                                   meta['pad_value'], meta['test_scale'])
  predict.params = None
  return predict


def checkpoint_predictor(checkpoint_path: str,
                         params=None) -> Tuple[Predictor, object]:
  """Runs the in-process export module of a checkpoint (EMA weights).

  Args:
    checkpoint_path: a checkpoint prefix or a training run directory.
    params: the experiment; default: params.yaml beside the checkpoint.

  Returns:
    (predictor, the experiment params used).
  """
  if params is None:
    directory = (checkpoint_path if os.path.isdir(checkpoint_path) else
                 os.path.dirname(checkpoint_path))
    params_file = os.path.join(directory, 'params.yaml')
    if not os.path.exists(params_file):
      raise ValueError(f'{params_file} not found: give --experiment (and '
                       '--config_file) for this checkpoint.')
    params = export_lib.load_params(None, [params_file])
  module = export_lib.build_module(params, checkpoint_path)
  fn = module.inference_from_image_tensors.get_concrete_function(
      tf.TensorSpec([None, None, None, 3], tf.uint8))

  def predict(image: np.ndarray) -> Detections:
    return _to_numpy_detections(fn(tf.constant(image[np.newaxis])),
                                *image.shape[:2], full_size_masks=False)

  predict.model = module
  return predict, module.params


# --------------------------------------------------------------- outputs.
def coco_results(image_id: int, detections: Detections) -> List[Dict]:
  """COCO result entries (RLE masks) of one image."""
  results = []
  xywh = _yxyx_to_xywh(detections.boxes)
  for i in range(len(detections.scores)):
    result = {'image_id': int(image_id),
              'category_id': int(detections.classes[i]),
              'bbox': [round(float(v), 3) for v in xywh[i]],
              'score': round(float(detections.scores[i]), 5)}
    if detections.masks is not None:
      rle = mask_api.encode(np.asfortranarray(detections.masks[i]))
      rle['counts'] = rle['counts'].decode('ascii')
      result['segmentation'] = rle
    results.append(result)
  return results


def panoptic_segments(category_mask: np.ndarray, instance_mask: np.ndarray
                      ) -> Tuple[np.ndarray, List[Dict]]:
  """COCO panoptic segments of one image's panoptic masks.

  Each (category, instance) pair of the non-void pixels (category > 0) is a
  segment; segments are numbered 1, 2, ... things first (by instance id),
  then stuff (by category id).

  Args:
    category_mask: int [H, W] dataset category ids, 0 void.
    instance_mask: int [H, W] instance ids, 0 for stuff and void.

  Returns:
    (int32 [H, W] segment id of each pixel, 0 void; COCO `segments_info`:
    {'id', 'category_id', 'isthing' (the segment has an instance id),
    'area', 'bbox' [x, y, w, h]} of each segment, in id order).
  """
  category_mask = np.asarray(category_mask).astype(np.int64)
  instance_mask = np.asarray(instance_mask).astype(np.int64)
  if category_mask.shape != instance_mask.shape:
    raise ValueError(f'Masks of shapes {category_mask.shape} and '
                     f'{instance_mask.shape}.')
  instance_mask = np.where(category_mask > 0, instance_mask, 0)
  base = int(instance_mask.max(initial=0)) + 1
  keys, inverse = np.unique(category_mask * base + instance_mask,
                            return_inverse=True)
  categories, instances = keys // base, keys % base
  # Things (instance > 0) by instance id, then stuff by category; void out.
  keep = sorted((i for i in range(len(keys)) if categories[i] > 0),
                key=lambda i: (instances[i] == 0, instances[i], categories[i]))
  table = np.zeros(len(keys), np.int32)
  table[keep] = np.arange(1, len(keep) + 1)
  segment_ids = table[inverse.reshape(category_mask.shape)]
  # Area and bounds of every segment in one pass: the rows and columns
  # each segment occupies.
  count = len(keep) + 1
  areas = np.bincount(segment_ids.ravel(), minlength=count)
  bounds = []
  for axis in (0, 1):
    size = segment_ids.shape[axis]
    occupied = np.zeros((count, size), bool)
    coords = np.indices(segment_ids.shape)[axis]
    occupied[segment_ids.ravel(), coords.ravel()] = True
    bounds.append((np.argmax(occupied, axis=1),
                   size - 1 - np.argmax(occupied[:, ::-1], axis=1)))
  (y0, y1), (x0, x1) = bounds
  segments_info = []
  for segment_id, index in enumerate(keep, 1):
    segments_info.append({
        'id': segment_id,
        'category_id': int(categories[index]),
        'isthing': bool(instances[index] > 0),
        'area': int(areas[segment_id]),
        'bbox': [int(x0[segment_id]), int(y0[segment_id]),
                 int(x1[segment_id] - x0[segment_id] + 1),
                 int(y1[segment_id] - y0[segment_id] + 1)]})
  return segment_ids, segments_info


def evaluate(annotation_file: str, results: List[Dict],
             image_ids: Sequence[int]) -> Dict[str, float]:
  """COCO box (and mask) metrics of `results` on `image_ids`."""
  ground_truth = coco.COCO(annotation_file)
  if not ground_truth.getAnnIds(imgIds=list(image_ids)):
    print(f'WARNING: {annotation_file} has no annotations of these '
          f'{len(image_ids)} images: with no ground truth, COCO reports '
          'every AP and AR as -1.', file=sys.stderr)
  metrics = {}
  iou_types = ['bbox']
  if results and 'segmentation' in results[0]:
    iou_types.append('segm')
  for iou_type in iou_types:
    prefix = '' if iou_type == 'bbox' else 'mask_'
    if not results:
      metrics.update({prefix + k: 0. for k in COCO_METRIC_NAMES})
      continue
    evaluator = cocoeval.COCOeval(ground_truth, ground_truth.loadRes(results),
                                  iouType=iou_type)
    evaluator.params.imgIds = list(image_ids)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    metrics.update({prefix + k: float(v)
                    for k, v in zip(COCO_METRIC_NAMES, evaluator.stats)})
  return metrics


def _annotation_index(annotation_file: str):
  """(file name -> image id, category id -> name) of a COCO file."""
  with open(annotation_file) as f:
    data = json.load(f)
  ids = {os.path.basename(i['file_name']): int(i['id'])
         for i in data.get('images', [])}
  names = {int(c['id']): c['name'] for c in data.get('categories', [])}
  return ids, names


def _unique_png_name(path: str, used: set) -> str:
  stem = os.path.splitext(os.path.basename(path))[0]
  name, k = stem + '.png', 1
  while name in used:
    name, k = f'{stem}_{k}.png', k + 1
  used.add(name)
  return name


def run(predictor: Predictor,
        paths: Sequence[str],
        output_dir: str,
        annotation_file: Optional[str] = None,
        class_names: Optional[Mapping[int, str]] = None,
        draw: bool = True,
        grid: int = 0,
        grid_columns: int = 4,
        draw_scale: float = 1.,
        score_threshold: float = 0.3,
        log: Callable[[str], None] = print) -> Dict:
  """Predicts every image, writes the outputs; returns a summary.

  Predictions with panoptic masks also write their panoptic drawing
  (OUT/panoptic/, with `draw`; the grid shows it) and COCO panoptic
  segments (OUT/panoptic_predictions/ and OUT/panoptic_predictions.json;
  see the module doc).

  Returns:
    {'images': processed count, 'errors': messages of skipped images,
     'detections': count, 'panoptic_images': count of images with panoptic
     masks, 'metrics': COCO metrics or None, 'seconds'}.
  """
  os.makedirs(output_dir, exist_ok=True)
  if draw:
    os.makedirs(os.path.join(output_dir, 'images'), exist_ok=True)
  panoptic_annotations = []
  file_ids, names = {}, dict(class_names or {})
  if annotation_file:
    file_ids, annotated_names = _annotation_index(annotation_file)
    names.update(annotated_names)
  results, images, errors, canvases, used = [], [], [], [], set()
  # Images not in the annotation file (or without one) are numbered after
  # its ids.
  evaluated, first_free_id = [], max(file_ids.values(), default=0)
  start = time.time()
  every = max(1, len(paths) // 20)
  for index, path in enumerate(paths, 1):
    try:
      image = read_image(path)
    except ValueError as e:
      errors.append(str(e))
      log(f'ERROR {e}')
      continue
    image_id = file_ids.get(os.path.basename(path))
    if image_id is not None:
      evaluated.append(image_id)
    else:
      if annotation_file:
        errors.append(f'{path} is not in {annotation_file}; not evaluated.')
        log(f'WARNING {errors[-1]}')
      image_id = first_free_id + index
    detections = predictor(image)
    results.extend(coco_results(image_id, detections))
    images.append({'id': image_id, 'file_name': path,
                   'height': image.shape[0], 'width': image.shape[1]})
    png_name = _unique_png_name(path, used)
    panoptic = detections.category_mask is not None
    if panoptic:
      segment_ids, segments_info = panoptic_segments(
          detections.category_mask, detections.instance_mask)
      visualize.save_png(
          os.path.join(output_dir, 'panoptic_predictions', png_name),
          panoptic_png.encode_segment_ids(segment_ids))
      panoptic_annotations.append({'image_id': image_id,
                                   'file_name': png_name,
                                   'segments_info': segments_info})
    if draw or len(canvases) < grid:
      canvas = visualize.draw_detections(
          image, detections.boxes, detections.classes, detections.scores,
          masks=detections.masks, class_names=names,
          score_threshold=score_threshold, scale=draw_scale)
      if draw:
        visualize.save_png(os.path.join(output_dir, 'images', png_name),
                           canvas)
      if panoptic:
        canvas = visualize.draw_panoptic(
            image, detections.category_mask, detections.instance_mask,
            class_names=names, scale=draw_scale)
        if draw:
          visualize.save_png(os.path.join(output_dir, 'panoptic', png_name),
                             canvas)
      if len(canvases) < grid:
        canvases.append(canvas)
    if index % every == 0 or index == len(paths):
      elapsed = time.time() - start
      log(f'[{index}/{len(paths)}] {len(results)} detections, '
          f'{elapsed / index:.3f} s/image')
  atomic_io.write_json(os.path.join(output_dir, 'detections.json'), results)
  atomic_io.write_json(os.path.join(output_dir, 'images.json'), images,
                       indent=1)
  if panoptic_annotations:
    atomic_io.write_json(
        os.path.join(output_dir, 'panoptic_predictions.json'),
        {'annotations': panoptic_annotations})
  if canvases:
    visualize.save_png(os.path.join(output_dir, 'grid.png'),
                       visualize.make_grid(canvases, grid_columns))
  metrics = None
  if evaluated:
    metrics = evaluate(annotation_file, results, evaluated)
    atomic_io.write_json(os.path.join(output_dir, 'metrics.json'), metrics,
                         indent=1, sort_keys=True)
  return {'images': len(images), 'errors': errors, 'detections': len(results),
          'panoptic_images': len(panoptic_annotations), 'metrics': metrics,
          'seconds': time.time() - start}


def define_flags():
  """The command's flags (defined only when run as a script)."""
  flags.DEFINE_string(
      'saved_model', None, 'An export directory (or its saved_model/).')
  flags.DEFINE_string(
      'signature', 'serving_default', 'Signature of the SavedModel to run.')
  flags.DEFINE_string(
      'checkpoint_path', None,
      'Instead of --saved_model: a checkpoint prefix or a training run '
      'directory (its latest checkpoint, with the EMA weights).')
  flags.DEFINE_string(
      'tflite', None, 'Instead: a .tflite file of serving/export_tflite.py '
      '(params.yaml beside it).')
  flags.DEFINE_string(
      'onnx', None, 'Instead: an .onnx file of serving/export_onnx.py.')
  flags.DEFINE_integer(
      'num_threads', None, 'With --tflite or --onnx: CPU threads '
      '(default: the runtime\'s).')
  flags.DEFINE_string(
      'experiment', None, 'With --checkpoint_path: the experiment; default: '
      "the run's params.yaml.")
  flags.DEFINE_multi_string(
      'config_file', None, 'With --experiment: YAML overrides.')
  flags.DEFINE_string(
      'params_override', '', 'With --experiment: an override string.')
  flags.DEFINE_list(
      'images', None, 'Image files, folders or globs, comma-separated.')
  flags.DEFINE_string('output_dir', None, 'Output directory.')
  flags.DEFINE_string(
      'annotation_file', None,
      'COCO annotations of these images: image ids, class names, evaluation.')
  flags.DEFINE_string(
      'categories_file', None,
      'A JSON with COCO `categories` (e.g. a COCO panoptic file): the names '
      'of categories the annotation file lacks, such as stuff.')
  flags.DEFINE_bool('draw', True, 'Write annotated PNGs.')
  flags.DEFINE_integer(
      'grid', 0, 'Also draw the first N images into OUT/grid.png.')
  flags.DEFINE_integer('grid_columns', 4, 'Columns of the grid.')
  flags.DEFINE_float('draw_scale', 1., 'Scale of the drawings.')
  flags.DEFINE_float(
      'score_threshold', 0.3, 'Smallest score drawn (the JSON keeps all).')


def main(_):
  models = [FLAGS.saved_model, FLAGS.checkpoint_path, FLAGS.tflite,
            FLAGS.onnx]
  if sum(bool(m) for m in models) != 1:
    raise app.UsageError('Give one of --saved_model, --checkpoint_path, '
                         '--tflite and --onnx.')
  paths, errors = find_images(FLAGS.images)
  for error in errors:
    print(f'ERROR {error}', file=sys.stderr)
  if not paths:
    raise app.UsageError('--images matches no image.')
  params = None
  if FLAGS.saved_model:
    predictor = saved_model_predictor(FLAGS.saved_model, FLAGS.signature)
    params = predictor.params
  elif FLAGS.tflite or FLAGS.onnx:
    make = tflite_predictor if FLAGS.tflite else onnx_predictor
    try:
      predictor = make(FLAGS.tflite or FLAGS.onnx, FLAGS.num_threads)
    except ValueError as e:
      raise app.UsageError(str(e)) from e
    params = predictor.params
  else:
    if FLAGS.experiment:
      params = export_lib.load_params(FLAGS.experiment, FLAGS.config_file,
                                      FLAGS.params_override)
    predictor, params = checkpoint_predictor(FLAGS.checkpoint_path, params)
  class_names = None
  if params is not None and params.task.annotation_file and os.path.exists(
      params.task.annotation_file):
    class_names = _annotation_index(params.task.annotation_file)[1]
  if FLAGS.categories_file:
    class_names = {**_annotation_index(FLAGS.categories_file)[1],
                   **(class_names or {})}
  print(f'Predicting {len(paths)} images into {FLAGS.output_dir}.')
  summary = run(predictor, paths, FLAGS.output_dir,
                annotation_file=FLAGS.annotation_file,
                class_names=class_names, draw=FLAGS.draw, grid=FLAGS.grid,
                grid_columns=FLAGS.grid_columns, draw_scale=FLAGS.draw_scale,
                score_threshold=FLAGS.score_threshold,
                log=lambda m: print(m, flush=True))
  print(f'{summary["images"]} images, {summary["detections"]} detections in '
        f'{summary["seconds"]:.1f} s: {FLAGS.output_dir}/detections.json')
  if summary['panoptic_images']:
    print(f'Panoptic segments of {summary["panoptic_images"]} images: '
          f'{FLAGS.output_dir}/panoptic_predictions.json')
  if summary['metrics']:
    m = summary['metrics']
    line = f'COCO box AP {m["AP"]:.3f} (AP50 {m["AP50"]:.3f})'
    if 'mask_AP' in m:
      line += f', mask AP {m["mask_AP"]:.3f} (AP50 {m["mask_AP50"]:.3f})'
    print(line)
  errors += summary['errors']
  if errors:
    print(f'{len(errors)} problem(s):', *errors, sep='\n  ', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['images', 'output_dir'])
  app.run(main)
