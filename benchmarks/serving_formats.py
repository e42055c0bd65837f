r"""Every deployment format of one model side by side: latency, size, AP.

  python benchmarks/serving_formats.py --saved_model=RUN/export \
      --tflite_dir=RUN/tflite --onnx=RUN/onnx/unipercepnet.onnx \
      --images=data/shapes/val/images --annotation_file=data/shapes/val.json \
      [--runs=30] [--num_threads=2] [--json_out=F]

Runs the SavedModel (serving/export_saved_model.py), each .tflite of
--tflite_dir (serving/export_tflite.py) and the ONNX model
(serving/export_onnx.py) through `serving/predict.py`'s predictors, so every
format gets the same preprocessing, box scaling and mask pasting, and
prints per format:

  * latency: the model call alone on one image, median of --runs calls
    timed interleaved (A, B, C, A, B, C, ...) after two warm-up calls: the
    SavedModel's `serving_default` on the uint8 image (its resize and
    normalisation are in its graph), the others on the preprocessed input;
  * size on disk;
  * COCO box and mask AP on the images;
  * agreement with the SavedModel's detections: the fraction of the
    SavedModel's detections that have a detection of the same class at box
    IoU >= 0.99 (one-to-one, greedy by IoU), over all detections and over
    those scoring at least 0.3 (the ones drawn), and the largest |score|
    difference of the matched ones.
"""

import argparse
import datetime
import json
import os
import sys
import time
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from benchmarks import bench_lib
from dataloaders.ops import preprocess_ops
from serving import export_onnx
from serving import export_tflite
from serving import predict

MATCH_IOU = 0.99
DRAWN_SCORE = 0.3


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """[n, m] IoU of yxyx boxes."""
  ymin = np.maximum(a[:, None, 0], b[None, :, 0])
  xmin = np.maximum(a[:, None, 1], b[None, :, 1])
  ymax = np.minimum(a[:, None, 2], b[None, :, 2])
  xmax = np.minimum(a[:, None, 3], b[None, :, 3])
  inter = np.maximum(ymax - ymin, 0) * np.maximum(xmax - xmin, 0)
  area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
  union = area(a)[:, None] + area(b)[None, :] - inter
  return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.)


def match(reference: predict.Detections, other: predict.Detections,
          min_score: float = 0.) -> Dict[str, float]:
  """Reference detections (score >= min_score) matched one-to-one to
  `other`'s of the same class at IoU >= MATCH_IOU, greedily by IoU."""
  keep = reference.scores >= min_score
  boxes, classes, scores = (reference.boxes[keep], reference.classes[keep],
                            reference.scores[keep])
  iou = _iou(boxes, other.boxes)
  iou[classes[:, None] != other.classes[None, :]] = 0.
  matched, score_diff = 0, 0.
  while iou.size and iou.max() >= MATCH_IOU:
    i, j = np.unravel_index(np.argmax(iou), iou.shape)
    matched += 1
    score_diff = max(score_diff, abs(float(scores[i] - other.scores[j])))
    iou[i, :] = 0.
    iou[:, j] = 0.
  return {'reference': int(keep.sum()), 'matched': matched,
          'max_score_diff': score_diff}


def _size_mb(path: str) -> float:
  if os.path.isfile(path):
    return os.path.getsize(path) / 1e6
  return sum(os.path.getsize(os.path.join(d, f))
             for d, _, files in os.walk(path) for f in files) / 1e6


def main(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--saved_model', required=True,
                      help='Export directory of serving/export_saved_model.py')
  parser.add_argument('--tflite_dir', default=None)
  parser.add_argument('--onnx', default=None)
  parser.add_argument('--images', required=True)
  parser.add_argument('--annotation_file', required=True)
  parser.add_argument('--runs', type=int, default=30)
  parser.add_argument('--num_threads', type=int, default=2,
                      help='Threads of TFLite and ONNX Runtime (TensorFlow '
                      'uses its default: all cores).')
  parser.add_argument('--json_out', default=None)
  args = parser.parse_args(argv)

  paths, errors = predict.find_images(args.images.split(','))
  if errors or not paths:
    print('ERROR', *errors, file=sys.stderr)
    return 1
  saved_model = predict.saved_model_predictor(args.saved_model)
  predictors = {'SavedModel': (saved_model, os.path.join(
      args.saved_model, 'saved_model'))}
  if args.tflite_dir:
    for quantization in export_tflite.QUANTIZATIONS:
      path = os.path.join(args.tflite_dir,
                          export_tflite.model_file(quantization))
      if os.path.exists(path):
        predictors[f'TFLite {quantization}'] = (
            predict.tflite_predictor(path, args.num_threads), path)
  if args.onnx:
    predictors['ONNX Runtime'] = (
        predict.onnx_predictor(args.onnx, args.num_threads), args.onnx)

  # Accuracy: every format on every image.
  file_ids, _ = predict._annotation_index(args.annotation_file)  # pylint: disable=protected-access
  images = [predict.read_image(p) for p in paths]
  ids = [file_ids[os.path.basename(p)] for p in paths]
  detections = {}
  report = {'machine': bench_lib.machine_info(),
            'date': datetime.date.today().isoformat(),
            'images': len(paths), 'formats': {}}
  for name, (predictor, path) in predictors.items():
    start = time.time()
    detections[name] = [predictor(image) for image in images]
    results = [r for i, d in zip(ids, detections[name])
               for r in predict.coco_results(i, d)]
    metrics = predict.evaluate(args.annotation_file, results, ids)
    entry = {'path': path, 'size_mb': _size_mb(path),
             'box_AP': metrics['AP'], 'mask_AP': metrics.get('mask_AP'),
             'predict_seconds': time.time() - start}
    for label, min_score in (('all', 0.), ('drawn', DRAWN_SCORE)):
      counts = [match(r, d, min_score) for r, d in
                zip(detections['SavedModel'], detections[name])]
      reference = sum(c['reference'] for c in counts)
      entry[f'matched_{label}'] = (
          sum(c['matched'] for c in counts) / max(reference, 1))
      entry[f'reference_{label}'] = reference
      entry[f'max_score_diff_{label}'] = max(
          c['max_score_diff'] for c in counts)
    report['formats'][name] = entry
    print(f'{name}: box AP {entry["box_AP"]:.4f}, mask AP '
          f'{entry["mask_AP"]:.4f}, matched {entry["matched_all"]:.4f} of '
          f'{entry["reference_all"]} ({time.time() - start:.0f} s)',
          flush=True)

  # Latency: the model call alone, interleaved.
  image = images[0]
  size = list(saved_model.params.task.model.input_size[:2])
  val_parser = saved_model.params.task.validation_data.parser
  network_input, _, _ = preprocess_ops.preprocess_for_inference(
      tf.constant(image), size, val_parser.pad_value,
      list(val_parser.test_scale) or None)
  network_input = network_input.numpy()[np.newaxis]
  signature = saved_model.model.signatures['serving_default']
  uint8 = tf.constant(image[np.newaxis])
  calls = {'SavedModel': lambda: signature(inputs=uint8)}
  for name, (predictor, _) in predictors.items():
    if name != 'SavedModel':
      calls[name] = (lambda run: lambda: run(network_input))(
          predictor.model)
  times = bench_lib.interleaved_times(calls, args.runs)
  base = bench_lib.summary(times['SavedModel'])['median_ms']
  print(f'\n{report["machine"]["cpu"]}, {report["machine"]["cores"]} cores, '
        f'{report["date"]}; {len(paths)} images, latency of one '
        f'{size[0]}x{size[1]} input, median of {args.runs}')
  print('| format | latency (ms) | vs SavedModel | size (MB) | box AP | '
        'mask AP | matched (all / score >= 0.3) |')
  print('|---|---|---|---|---|---|---|')
  for name, entry in report['formats'].items():
    entry['latency'] = bench_lib.summary(times[name])
    ms = entry['latency']['median_ms']
    entry['speedup'] = base / ms
    print(f'| {name} | {ms:.1f} | {base / ms:.2f}x | {entry["size_mb"]:.1f} '
          f'| {entry["box_AP"]:.4f} | {entry["mask_AP"]:.4f} | '
          f'{entry["matched_all"]:.4f} / {entry["matched_drawn"]:.4f} |')
  if args.json_out:
    with open(args.json_out, 'w') as f:
      json.dump(report, f, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
