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
"""

import json
import os
import pprint
import re
import sys
from typing import Optional

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

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


def build_params(flags_obj: flags.FlagValues) -> cfg.ExperimentConfig:
  """The experiment the flags give, checked, its schedule resolved; locked.

  As Model Garden's train_utils.parse_configuration, with
  `configs.schedule.resolve` after every override (record counts are kept
  in --model_dir).

  Args:
    flags_obj: the parsed flags (--experiment, --config_file,
      --params_override, --model_dir, ...).

  Returns:
    The locked ExperimentConfig.
  """
  params = train_utils.ExperimentParser(flags_obj).parse()
  validation.check(params)
  base = exp_factory.get_exp_config(flags_obj.experiment)
  params = schedule.resolve(params, base=base, cache_dir=flags_obj.model_dir)
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
  params = build_params(FLAGS)
  model_dir = FLAGS.model_dir
  if 'train' in FLAGS.mode:
    # As Model Garden: eval-only jobs do not write params.yaml.
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
  with strategy.scope():
    task = task_factory.get_task(params.task, logging_dir=model_dir)
  try:
    train_lib.run_experiment(
        distribution_strategy=strategy,
        task=task,
        mode=FLAGS.mode,
        params=params,
        model_dir=model_dir,
        eval_summary_manager=summary_manager.maybe_build_eval_summary_manager(
            params=params, model_dir=model_dir))
  except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
    explained = explain_failure(e, params)
    if explained is None:
      raise
    logging.error('%s', explained)
    sys.exit(f'ERROR: {explained}')
  if FLAGS.mode != 'train':
    _report(model_dir)


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
  """Prints the COCO summary of the last evaluation the Task recorded."""
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
  logging.info('Evaluation:\n%s', '\n'.join(lines))
  print(f'Evaluation at step {metrics.get("global_step")} (COCO AP is '
        'AP@[.5:.95]):\n' + '\n'.join(lines) + f'\nAll metrics: {path}',
        flush=True)


if __name__ == '__main__':
  tfm_flags.define_flags()
  flags.mark_flags_as_required(['experiment', 'mode', 'model_dir'])
  app.run(main)
