r"""The Task's training step, plain and compiled with XLA, side by side.

  python benchmarks/xla_train_step.py [--exp=unipercepnet_shapes] \
      [--size=256x256] [--batch_size=8] [--runs=10] [--warmup=2] \
      [--assigner=task_aligned] [--json_out=F] \
      [--intra_op_threads=N --inter_op_threads=N]

Builds the experiment (random weights, float32) at its own input size and
training batch unless told otherwise, and times, interleaved step by step
(see `bench_lib.interleaved_times`), the Task's real `train_step` (forward
with the mask branch, losses, gradients, AdamW + EMA, divergence guard) as
a plain `tf.function` and as a `tf.function(jit_compile=True)` (the XLA
step's divergence guard is checked outside the compiled function, as it
must be, and timed with it). Each has its own optimizer on the same model.
Warm-up calls (tracing, XLA compilation) are excluded; their first call is
reported apart. Prints the machine, ms/step of each and their ratio.
"""

import datetime
import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging

import tensorflow as tf

from benchmarks import bench_lib
from official.core import exp_factory
from official.modeling import optimization
from tasks import divergence

_EXPERIMENT = flags.DEFINE_string('exp', 'unipercepnet_shapes',
                                  'Our experiment.')
_SIZE = flags.DEFINE_string(
    'size', None, 'Training input HEIGHTxWIDTH (default: the experiment\'s).')
_BATCH_SIZE = flags.DEFINE_integer(
    'batch_size', 0, 'Training batch (0: the experiment\'s).')
_RUNS = flags.DEFINE_integer('runs', 10, 'Timed steps of each.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps of each first.')
_ASSIGNER = flags.DEFINE_string(
    'assigner', 'task_aligned',
    'The assigner stage of the timed steps, a registered name.')
_INTRA = flags.DEFINE_integer('intra_op_threads', 0, 'TF intra-op threads '
                              '(0: TF default, one per core).')
_INTER = flags.DEFINE_integer('inter_op_threads', 0,
                              'TF inter-op threads (0: TF default).')
_JSON_OUT = flags.DEFINE_string('json_out', None, 'Write the results here.')

PLAIN, XLA = 'plain', 'xla'


def step_fns(task, model, params, batch, assigner='task_aligned'):
  """{PLAIN: fn, XLA: fn}: one training step each, without arguments.

  Each has its own optimizer (with its EMA copy, as the trainer makes it);
  the XLA one checks the divergence guard's numbers after the step.
  """
  images, labels = batch
  guard = params.task.divergence_guard
  fns = {}
  for name, jit_compile in ((PLAIN, None), (XLA, True)):
    optimizer = task.create_optimizer(params.trainer.optimizer_config,
                                      params.runtime)
    if isinstance(optimizer, optimization.ExponentialMovingAverage):
      optimizer.shadow_copy(model)
    metrics = task.build_metrics(training=True)

    @tf.function(jit_compile=jit_compile)
    def step(images, labels, optimizer=optimizer, metrics=metrics):
      return task.train_step((images, labels), model, optimizer, metrics,
                             assigner=assigner)

    if jit_compile:
      def run(step=step):
        logs = step(images, labels)
        divergence.check_measured_step(logs[divergence.MEASURED_KEY], model,
                                       guard)
        return logs
    else:
      def run(step=step):
        return step(images, labels)
    fns[name] = run
  return fns


def main(_):
  tf.get_logger().setLevel('ERROR')
  logging.set_verbosity(logging.ERROR)
  bench_lib.set_threads(_INTRA.value, _INTER.value)
  params = exp_factory.get_exp_config(_EXPERIMENT.value)
  size = (bench_lib.parse_sizes(_SIZE.value)[0] if _SIZE.value else
          params.task.model.input_size[:2])
  params = bench_lib.unipercepnet_params(
      _EXPERIMENT.value, size,
      score_threshold=params.task.model.detection_generator
      .pre_nms_score_threshold)
  batch_size = _BATCH_SIZE.value or params.task.train_data.global_batch_size
  report = {
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      'command': ' '.join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
      'machine': bench_lib.machine_info(),
      'experiment': _EXPERIMENT.value,
      'size': list(size),
      'batch_size': batch_size,
      'assigner': _ASSIGNER.value,
  }
  print(json.dumps(report))
  task, model = bench_lib.build(params)
  decoded = [bench_lib.synthetic_decoded_example(
      size[0], size[1], num_instances=4,
      num_classes=params.task.model.num_classes, seed=i)
             for i in range(batch_size)]
  batch = bench_lib.unipercepnet_train_batch(params, decoded)
  fns = step_fns(task, model, params, batch, assigner=_ASSIGNER.value)
  first_call = {}
  for name, fn in fns.items():
    start = time.perf_counter()
    fn()
    first_call[name] = time.perf_counter() - start
  times = bench_lib.interleaved_times(fns, _RUNS.value,
                                      warmup=max(_WARMUP.value - 1, 0))
  results = {name: dict(bench_lib.summary(t),
                        first_call_s=first_call[name])
             for name, t in times.items()}
  ratio = results[XLA]['median_ms'] / results[PLAIN]['median_ms']
  report.update(results=results, xla_over_plain=ratio)
  print(f'\n{_EXPERIMENT.value} training step, {size[0]}x{size[1]}, batch '
        f'{batch_size}, assigner {_ASSIGNER.value}; median of {_RUNS.value} '
        f'interleaved steps after {_WARMUP.value} warm-up steps each')
  print(f'machine: {report["machine"]["cpu"]}, {report["machine"]["cores"]} '
        f'cores, TF {report["machine"]["tensorflow"]}')
  print(f'{"step":8s} {"median ms":>10s} {"min ms":>9s} {"max ms":>9s} '
        f'{"first call s":>13s}')
  for name, r in results.items():
    print(f'{name:8s} {r["median_ms"]:10.1f} {r["min_ms"]:9.1f} '
          f'{r["max_ms"]:9.1f} {r["first_call_s"]:13.1f}')
  print(f'xla / plain: {ratio:.3f} '
        f'({"plain" if ratio > 1 else "xla"} is faster)')
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, 'w') as f:
      json.dump(report, f, indent=1)


if __name__ == '__main__':
  app.run(main)
