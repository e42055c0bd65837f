r"""UniPercepNet-S against Model Garden's Mask R-CNN and the CPU's conv peak.

  python benchmarks/run_all.py [--sizes=640x640,800x1344] [--runs=10] \
      [--sections=latency,train,saved_model] [--train_runs=10] \
      [--json_out=F] [--intra_op_threads=N --inter_op_threads=N]

In one process, with the same threads and inputs:

- latency: batch-1 graph-mode inference, post-processing and 100 masks
  included, warm-up excluded, median of `--runs`, of UniPercepNet-S
  (RegNetX-4GF: `unipercepnet_coco`; ResNet-50: `unipercepnet_r50_coco`)
  and Model Garden's `maskrcnn_resnetfpn_coco`; with 3x3 convs timed
  alongside as the machine's conv peak (1x80x80x256 -> 256, and
  100x14x14x256 -> 256, the mask head's shape, which runs faster), our
  achieved GFLOP/s (2 x MACs / latency) and its efficiency against them.
- train: images/s of each model's real training step (ours: the Task's
  `train_step`; Mask R-CNN: Model Garden's `MaskRCNNTask.train_step`) on
  synthetic batches at `--train_size`, batch `--train_batch_size`.
- saved_model: the exported SavedModel's signature against the in-process
  export module and model.

Random weights, float32; both detectors' score thresholds are 0 so that
each keeps 100 detections and computes 100 masks. Timings are interleaved
model by model within each repetition; figures are medians. Prints tables
and writes everything as JSON to `--json_out`.
"""

import datetime
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging

import tensorflow as tf

from benchmarks import bench_lib
from benchmarks import sections

_SIZES = flags.DEFINE_string('sizes', '640x640,800x1344',
                             'Inference sizes, HEIGHTxWIDTH, comma-separated.')
_RUNS = flags.DEFINE_integer('runs', 10, 'Timed inference runs per model.')
_SECTIONS = flags.DEFINE_list('sections', ['latency', 'train', 'saved_model'],
                              'Which of latency, train, saved_model to run.')
_MODELS = flags.DEFINE_list(
    'models', list(sections.DEFAULT_LATENCY_MODELS),
    'Experiments of the latency section.')
_TRAIN_MODELS = flags.DEFINE_list(
    'train_models', list(sections.DEFAULT_TRAIN_MODELS),
    'Experiments of the training section.')
_TRAIN_SIZE = flags.DEFINE_string('train_size', '640x640',
                                  'Training input size, HEIGHTxWIDTH.')
_TRAIN_BATCH_SIZE = flags.DEFINE_integer('train_batch_size', 2,
                                         'Training batch size.')
_TRAIN_RUNS = flags.DEFINE_integer('train_runs', 10,
                                   'Timed training steps per model.')
_TRAIN_ASSIGNER = flags.DEFINE_string(
    'train_assigner', 'task_aligned',
    'Our assigner stage during the timed steps, a registered name '
    '(task_aligned: 32 of 36 epochs; uniform).')
_SAVED_MODEL_SIZE = flags.DEFINE_string(
    'saved_model_size', '640x640', 'SavedModel comparison size.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed calls of each first.')
_INTRA = flags.DEFINE_integer('intra_op_threads', 0, 'TF intra-op threads '
                              '(0: TF default, one per core).')
_INTER = flags.DEFINE_integer('inter_op_threads', 0,
                              'TF inter-op threads (0: TF default).')
_JSON_OUT = flags.DEFINE_string('json_out', None, 'Write the results here.')


def _name(experiment):
  return bench_lib.MODEL_NAMES.get(experiment, experiment)


def print_latency(result):
  size = 'x'.join(map(str, result['size']))
  runs = result['conv_peaks'][0]['runs']
  print(f'\nInference latency, batch 1, {size} (median of {runs} interleaved '
        'runs; masks for 100 detections)')
  print(f'{"model":30s} {"median ms":>10s} {"min ms":>9s} {"GMACs":>7s} '
        f'{"GFLOP/s":>8s} {"eff.":>6s} {"eff.*":>6s} {"ratio":>6s}')
  nan = float('nan')
  for name, r in result['models'].items():
    print(f'{_name(name):30s} {r["median_ms"]:10.1f} {r["min_ms"]:9.1f} '
          f'{r.get("gmacs", nan):7.1f} {r.get("gflops", nan):8.1f} '
          f'{100 * r.get("efficiency", nan):5.1f}% '
          f'{100 * r.get("efficiency_best_conv", nan):5.1f}% '
          f'{result["ratios"].get(name, 1.):6.3f}')
  for peak in result['conv_peaks']:
    print(f'{"conv 3x3 " + peak["name"]:30s} {peak["median_ms"]:10.1f} '
          f'{peak["min_ms"]:9.1f} {"":7s} {peak["gflops"]:8.1f}')
  print('eff.: achieved GFLOP/s (2 x MACs / median latency) over the first '
        'conv\'s; eff.*: over the fastest conv\'s. ratio: latency over Mask '
        'R-CNN\'s.')


def print_training(result):
  size = 'x'.join(map(str, result['size']))
  runs = max((r['runs'] for r in result['models'].values()), default=0)
  print(f'\nTraining throughput, {size}, batch {result["batch_size"]} '
        f'(median of {runs} interleaved steps; our assigner: '
        f'{result["stage"]})')
  print(f'{"model":30s} {"step ms":>10s} {"images/s":>9s} {"ratio":>6s}')
  for name, r in result['models'].items():
    ratio = result['ratios'].get(name, 1.)
    print(f'{_name(name):30s} {r["median_ms"]:10.1f} '
          f'{r["images_per_s"]:9.3f} {ratio:6.3f}')


def print_saved_model(result):
  size = 'x'.join(map(str, result['size']))
  print(f'\nSavedModel vs in-process, {_name(result["experiment"])}, {size}, '
        'batch 1')
  for name, r in result['models'].items():
    print(f'{name:30s} {r["median_ms"]:10.1f} ms (min {r["min_ms"]:.1f})')
  print(f'saved / in-process module: {result["ratio_saved_to_module"]:.3f}; '
        f'saved / in-process model: {result["ratio_saved_to_model"]:.3f}; '
        f'max score difference {result["max_score_difference"]:.2e}')


def main(_):
  tf.get_logger().setLevel('ERROR')
  logging.set_verbosity(logging.ERROR)
  bench_lib.set_threads(_INTRA.value, _INTER.value)
  unknown = set(_SECTIONS.value) - {'latency', 'train', 'saved_model'}
  if unknown:
    raise app.UsageError(f'Unknown --sections {sorted(unknown)}.')
  report = {
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      'command': ' '.join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
      'machine': bench_lib.machine_info(),
  }
  print(json.dumps(report))

  def flush():
    if _JSON_OUT.value:
      with open(_JSON_OUT.value, 'w') as f:
        json.dump(report, f, indent=1)

  if 'latency' in _SECTIONS.value:
    report['latency'] = []
    for size in bench_lib.parse_sizes(_SIZES.value):
      result = sections.latency(size, runs=_RUNS.value,
                                models=_MODELS.value, warmup=_WARMUP.value)
      report['latency'].append(result)
      print_latency(result)
      flush()
  if 'train' in _SECTIONS.value:
    size = bench_lib.parse_sizes(_TRAIN_SIZE.value)[0]
    result = sections.training(
        size, batch_size=_TRAIN_BATCH_SIZE.value, runs=_TRAIN_RUNS.value,
        models=_TRAIN_MODELS.value,
        assigner=_TRAIN_ASSIGNER.value, warmup=_WARMUP.value)
    report['training'] = result
    print_training(result)
    flush()
  if 'saved_model' in _SECTIONS.value:
    size = bench_lib.parse_sizes(_SAVED_MODEL_SIZE.value)[0]
    result = sections.saved_model(size, runs=_RUNS.value,
                                  warmup=_WARMUP.value)
    report['saved_model'] = result
    print_saved_model(result)
    flush()
  print()
  print(json.dumps({
      'latency_ratios': {
          'x'.join(map(str, r['size'])): r['ratios']
          for r in report.get('latency', [])},
      'efficiency': {
          'x'.join(map(str, r['size'])): {
              n: m.get('efficiency') for n, m in r['models'].items()}
          for r in report.get('latency', [])},
      'training_ratios': report.get('training', {}).get('ratios'),
      'saved_model_ratio': report.get('saved_model', {}).get(
          'ratio_saved_to_module'),
  }))


if __name__ == '__main__':
  app.run(main)
