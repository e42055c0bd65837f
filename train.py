"""Trains and evaluates UniPercepNet-S with Model Garden's train driver.

  python train.py --experiment=unipercepnet_coco --mode=train_and_eval \
      --model_dir=DIR [--config_file=x.yaml] [--params_override=...]

Modes: train, eval, train_and_eval, continuous_eval (Model Garden's). A run
in a model_dir that holds checkpoints resumes from the latest one. The last
evaluation's metrics are printed; the Task writes them to
`model_dir/eval_metrics.json` after every evaluation.

The schedule is in epochs (`task.schedule`): once the config files and
--params_override are applied, the training steps, the validation and
checkpoint intervals and the learning-rate boundaries are derived from it
and `task.steps_per_epoch` (see configs/schedule.py).

Several workers (runtime.distribution_strategy=multi_worker_mirrored): one
process per worker, each with its TF_CONFIG (`python -m
common.local_workers` starts them on one machine). The chief (worker 0, or
the 'chief' task) writes model_dir; every other worker writes its
checkpoints, summaries and the Task's files into a temporary directory of
its own, removed when it ends, and resumes from the checkpoint the chief
resumes from: --model_dir must be readable by every worker at the same path
(a shared file system or gs://). A lost worker (killed, crashed,
unreachable) stops the others within seconds (TensorFlow's coordination
service), with an error naming it; restarting all workers resumes.
"""

import json
import os
import pprint
import re
import shutil
import sys
import tempfile
from typing import Optional

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf
# The coordination service's key-value store, as TensorFlow's own
# tf.distribute.experimental.PreemptionCheckpointHandler uses it.
from tensorflow.python.eager import context  # pylint: disable=g-direct-tensorflow-import

from official.common import distribute_utils
from official.common import flags as tfm_flags
from official.core import config_definitions as cfg
from official.core import exp_factory
from official.core import task_factory
from official.core import train_lib
from official.core import train_utils
from official.modeling import performance
from official.vision.utils import summary_manager
import registry_imports  # pylint: disable=unused-import
from configs import schedule
from configs import validation
from dataloaders import record_check
from tasks import divergence
from tasks import unipercepnet as task_lib

FLAGS = flags.FLAGS

# Metrics printed after an evaluation, in this order.
_SUMMARY = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')

# Multi-worker runs: the coordination-service key under which the chief
# gives the checkpoint it resumes from, and how long the others wait for it.
_RESUME_KEY = 'unipercepnet/resume_checkpoint'
_RESUME_KEY_TIMEOUT_MS = 5 * 60 * 1000
# The errors a lost worker causes in the others: MultiWorkerMirroredStrategy
# aborts their collectives when TensorFlow's coordination service misses
# its heartbeats (about 10 s) or a connection to it breaks.
_LOST_WORKER_ERRORS = (tf.errors.UnavailableError,
                       tf.errors.DeadlineExceededError,
                       tf.errors.AbortedError)
_Cluster = tf.distribute.cluster_resolver.TFConfigClusterResolver


def build_params(flags_obj: flags.FlagValues,
                 cache_dir: Optional[str] = None) -> cfg.ExperimentConfig:
  """The experiment the flags give, checked, its schedule resolved; locked.

  As Model Garden's train_utils.parse_configuration, with
  `configs.schedule.resolve` after every override.

  Args:
    flags_obj: the parsed flags (--experiment, --config_file,
      --params_override, --model_dir, ...).
    cache_dir: where record counts are kept; None: --model_dir.

  Returns:
    The locked ExperimentConfig.
  """
  params = train_utils.ExperimentParser(flags_obj).parse()
  validation.check(params)
  base = exp_factory.get_exp_config(flags_obj.experiment)
  params = schedule.resolve(params, base=base,
                            cache_dir=cache_dir or flags_obj.model_dir)
  params.validate()
  params.lock()
  trainer = params.trainer
  logging.info('Schedule: %d epochs of %d steps = %d steps; validation every '
               '%d, checkpoint every %d steps.', params.task.schedule.epochs,
               params.task.steps_per_epoch, trainer.train_steps,
               trainer.validation_interval, trainer.checkpoint_interval)
  logging.info('Final experiment parameters:\n%s',
               pprint.pformat(params.as_dict()))
  return params


def main(_):
  model_dir = FLAGS.model_dir
  cluster = _cluster()
  chief = _is_chief(cluster)
  # Only the chief writes model_dir (Model Garden's convention); another
  # worker writes the same files into a directory of its own.
  write_dir = model_dir if chief else tempfile.mkdtemp(
      prefix=f'unipercepnet-{cluster.task_type}{cluster.task_id}-')
  try:
    _run(model_dir, write_dir, cluster)
  finally:
    if write_dir != model_dir:
      shutil.rmtree(write_dir, ignore_errors=True)


def _run(model_dir: str, write_dir: str, cluster: Optional[_Cluster]) -> None:
  """Trains and/or evaluates; a non-chief worker writes only `write_dir`."""
  chief = _is_chief(cluster)
  if not chief:
    # The chief's record counts, if any: this worker's cache starts there.
    counts = os.path.join(model_dir, schedule.RECORD_COUNTS_FILE)
    if tf.io.gfile.exists(counts):
      tf.io.gfile.copy(counts, os.path.join(write_dir,
                                            schedule.RECORD_COUNTS_FILE))
  params = build_params(FLAGS, cache_dir=write_dir)
  if cluster:
    _check_multi_worker(params, FLAGS.mode, cluster)
    logging.info('%s %d of a cluster of %d; it writes into %s.',
                 cluster.task_type, cluster.task_id,
                 _num_tasks(cluster), write_dir)
  if 'train' in FLAGS.mode:
    # As Model Garden: eval-only jobs do not write params.yaml.
    if chief:
      train_utils.serialize_config(params, model_dir)
    # (scripts/progress.py reads this line for its ETA.)
    print(f'Training to step {params.trainer.train_steps}: '
          f'{params.task.schedule.epochs} epochs of '
          f'{params.task.steps_per_epoch} steps.', flush=True)
  if params.runtime.mixed_precision_dtype:
    performance.set_mixed_precision_policy(params.runtime.mixed_precision_dtype)
  strategy = distribute_utils.get_distribution_strategy(
      distribution_strategy=params.runtime.distribution_strategy,
      all_reduce_alg=params.runtime.all_reduce_alg,
      num_gpus=params.runtime.num_gpus,
      tpu_address=params.runtime.tpu)
  if cluster:
    _resume_where_the_chief_does(model_dir, write_dir, chief)
  with strategy.scope():
    task = task_factory.get_task(params.task, logging_dir=write_dir)
  try:
    _Runner(
        distribution_strategy=strategy,
        task=task,
        mode=FLAGS.mode,
        params=params,
        model_dir=write_dir,
        eval_summary_manager=summary_manager.maybe_build_eval_summary_manager(
            params=params, model_dir=write_dir)).run()
  except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
    explained = explain_failure(e, params)
    if explained is None:
      raise
    logging.error('%s', explained)
    sys.exit(f'ERROR: {explained}')
  except _LOST_WORKER_ERRORS as e:
    explained = cluster and explain_lost_worker(e, cluster, model_dir)
    if not explained:
      raise
    logging.error('%s\nThe error: %s', explained, e)
    sys.exit(f'ERROR: {explained}')
  if FLAGS.mode != 'train' and chief:
    _report(model_dir)


# ------------------------------------------------------------ multi-worker


def _cluster() -> Optional[_Cluster]:
  """TF_CONFIG's cluster, if it has two tasks or more; else None."""
  resolver = _Cluster()
  return resolver if _num_tasks(resolver) > 1 else None


def _num_tasks(resolver: _Cluster) -> int:
  spec = resolver.cluster_spec()
  return sum(spec.num_tasks(job) for job in spec.jobs)


def _is_chief(cluster: Optional[_Cluster]) -> bool:
  """As MultiWorkerMirroredStrategy: the 'chief' task, or worker 0 without
  one; True outside a cluster."""
  if cluster is None:
    return True
  if 'chief' in cluster.cluster_spec().jobs:
    return cluster.task_type == 'chief'
  return cluster.task_type == 'worker' and cluster.task_id == 0


def _check_multi_worker(params: cfg.ExperimentConfig, mode: str,
                        cluster: _Cluster) -> None:
  """Rejects what a TF_CONFIG cluster cannot run."""
  strategy = params.runtime.distribution_strategy
  if strategy != 'multi_worker_mirrored':
    raise ValueError(
        f'TF_CONFIG names a cluster of {_num_tasks(cluster)} tasks, but '
        f'runtime.distribution_strategy is {strategy!r}: every process would '
        'train alone. Set runtime.distribution_strategy='
        'multi_worker_mirrored (or unset TF_CONFIG).')
  if mode == 'continuous_eval':
    raise ValueError('--mode=continuous_eval runs in one process: start it '
                     'without TF_CONFIG.')


def _resume_where_the_chief_does(model_dir: str, write_dir: str,
                                 chief: bool) -> None:
  """Gives every worker the checkpoint the chief resumes from.

  All workers must restore the same checkpoint: MultiWorkerMirroredStrategy
  creates the restored optimizer slots with collectives, so a worker that
  restores nothing while the chief restores waits for ever. The chief gives
  the latest checkpoint in model_dir through the cluster's coordination
  service; another worker copies it into its write directory, where its
  CheckpointManager (`_Runner`) and the Task (the input pipeline's stage)
  find it.

  Raises:
    ValueError: on a worker that cannot read that checkpoint.
  """
  if chief:
    context.context().set_config_key_value(
        _RESUME_KEY, tf.train.latest_checkpoint(model_dir) or '')
    return
  path = context.context().get_config_key_value(
      _RESUME_KEY, timeout_in_ms=_RESUME_KEY_TIMEOUT_MS)
  if not path:
    return
  files = tf.io.gfile.glob(path + '.*')
  if path + '.index' not in files:
    raise ValueError(
        f'This worker cannot read {path}, the checkpoint the chief resumes '
        'from: --model_dir must be readable by every worker at the same path '
        '(a shared file system, or gs://...).')
  for name in files:
    tf.io.gfile.copy(name, os.path.join(write_dir, os.path.basename(name)),
                     overwrite=True)
  with open(os.path.join(write_dir, 'checkpoint'), 'w') as f:
    f.write(f'model_checkpoint_path: "{os.path.basename(path)}"\n')
  logging.info('Resuming from the chief\'s checkpoint %s.', path)


class _Runner(train_lib.OrbitExperimentRunner):
  """Model Garden's runner (train_lib.run_experiment's); a non-chief worker
  checkpoints into its write directory (the runner's model_dir).

  Model Garden gives it a new tempfile.mkdtemp() instead, never removed and
  without the checkpoint to resume from.
  """

  def _maybe_build_checkpoint_manager(self):
    if self.strategy.extended.should_checkpoint or not self.trainer.checkpoint:
      return super()._maybe_build_checkpoint_manager()
    # As Model Garden's for a non-chief worker, in model_dir.
    return tf.train.CheckpointManager(
        self.trainer.checkpoint,
        directory=self.model_dir,
        max_to_keep=1,
        step_counter=self.trainer.global_step,
        checkpoint_interval=self.params.trainer.checkpoint_interval,
        init_fn=self.trainer.initialize)


def explain_lost_worker(error: tf.errors.OpError, cluster: _Cluster,
                        model_dir: str) -> Optional[str]:
  """What a lost worker means for the user, or None if `error` is not that.

  Args:
    error: an error of this worker's training.
    cluster: this worker's TF_CONFIG cluster resolver.
    model_dir: the run's model_dir (where it resumes from).

  Returns:
    If `error` names another task of the cluster or is an abort of the
    collectives: this worker, the lost one(s) as the error names them (the
    coordination service's host, worker 0 or the chief, when it names
    none), the error's first line, and how to resume.
  """
  spec = cluster.cluster_spec()
  me = (cluster.task_type, cluster.task_id)
  lost = []
  for job, task in re.findall(r'/job:(\w+)(?:/replica:\d+)?/task:(\d+)',
                              error.message):
    task = int(task)
    if (job in spec.jobs and task < spec.num_tasks(job) and
        (job, task) != me and (job, task) not in lost):
      lost.append((job, task))
  if not lost and 'Collective ops is aborted' not in error.message:
    return None
  hint = ''
  if not lost and 'CoordinationService' in error.message:
    lost = [('chief' if 'chief' in spec.jobs else 'worker', 0)]
    hint = ', whose coordination service stopped answering'
  names = ' and '.join(f'{job} {task} ({spec.task_address(job, task)})'
                       for job, task in lost) or 'a worker'
  # (In a tf.function, the message starts with 'Graph execution error:'.)
  found = re.search(r'Collective ops is aborted by: [^\n]*', error.message)
  reason = found.group(0) if found else error.message.strip().split('\n')[0]
  latest = tf.train.latest_checkpoint(model_dir)
  resume = (f'the latest checkpoint there ({os.path.basename(latest)})'
            if latest else 'the start (no checkpoint yet)')
  return (f'Training stopped: {me[0]} {me[1]} of {_num_tasks(cluster)} lost '
          f'{names}{hint} ({type(error).__name__}: {reason}). A multi-worker '
          'run stops when any worker is lost (killed, crashed or '
          f'unreachable). Restart all {_num_tasks(cluster)} workers with the '
          f'same TF_CONFIG cluster and --model_dir: they resume from {resume}.')


def explain_failure(error: tf.errors.OpError,
                    params: cfg.ExperimentConfig) -> Optional[str]:
  """What a training failure means for the user, or None if unknown.

  A damaged TFRecord (TensorFlow names neither the file nor the record):
  the damaged files of the train and validation data, by name and record.
  A diverged step: the guard's message (tasks/divergence.py).
  """
  if isinstance(error, tf.errors.DataLossError):
    damaged = record_check.damaged_files(
        [params.task.train_data.input_path,
         params.task.validation_data.input_path])
    if damaged:
      return record_check.report(damaged)
    return None
  found = re.search(divergence.PREFIX + r'.*?before this step\.',
                    error.message, re.S)
  return found.group(0) if found else None


def _report(model_dir):
  """Prints the COCO summary of the last evaluation the Task recorded (and
  a panoptic model's PQ, SQ and RQ: all, things, stuff)."""
  path = os.path.join(model_dir, task_lib.EVAL_METRICS_FILE)
  if not os.path.exists(path):
    return
  with open(path) as f:
    metrics = json.load(f)
  lines = ['  box   ' + '  '.join(f'{k} {metrics[k]:.3f}' for k in _SUMMARY
                                  if k in metrics)]
  if 'mask_AP' in metrics:
    lines.append('  mask  ' + '  '.join(
        f'{k} {metrics["mask_" + k]:.3f}' for k in _SUMMARY
        if 'mask_' + k in metrics))
  if 'PQ' in metrics:
    lines.append('  panoptic  ' + '  '.join(
        f'{k}{part} {metrics[k + part]:.3f}' for part in ('', '_things',
                                                          '_stuff')
        for k in ('PQ', 'SQ', 'RQ')))
  logging.info('Evaluation:\n%s', '\n'.join(lines))
  what = 'COCO AP is AP@[.5:.95]'
  if 'PQ' in metrics:
    what += ', PQ the COCO panoptic quality'
  print(f'Evaluation at step {metrics.get("global_step")} ({what}):\n' +
        '\n'.join(lines) + f'\nAll metrics: {path}', flush=True)


if __name__ == '__main__':
  tfm_flags.define_flags()
  flags.mark_flags_as_required(['experiment', 'mode', 'model_dir'])
  app.run(main)
