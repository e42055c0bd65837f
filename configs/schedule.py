"""The training schedule in epochs, and the step settings that follow from it.

Model Garden's trainer and optimizer count steps: `trainer.train_steps`,
`trainer.validation_interval`, `trainer.checkpoint_interval`, the
learning-rate boundaries. The recipe counts epochs. `task.schedule` states
the schedule in epochs of `task.steps_per_epoch` steps, and `resolve`, once
every override is applied, derives those step settings from it, so that
changing the epochs, the batch size or the data keeps the schedule's shape.

Precedence:
- `task.steps_per_epoch` as given; 0 (or unchanged from the base experiment):
  `task.train_data.num_examples // task.train_data.global_batch_size`, the
  examples counted from the TFRecords when num_examples is -1 (or unchanged
  from the base experiment while input_path changed).
- The derived step settings (trainer.train_steps, validation_interval,
  checkpoint_interval, the step_cosine_with_offset learning-rate boundaries)
  are outputs: 0 or null, or the base experiment's value, is replaced by the
  derived one; any other value is kept only if it agrees, and rejected
  otherwise (a ValueError naming it).
- trainer.steps_per_loop and summary_interval are capped at an epoch.
- The warm-up stays in steps (the reference's 500 iterations):
  `trainer.optimizer_config.warmup.linear.warmup_steps`, checked against the
  training length.
Whatever cannot be right (a cosine decay or warm-up that would not end, a
stage switch past the last epoch) is rejected, naming the key.
"""

import dataclasses
import json
import os
from typing import Any, Dict, Optional, Tuple

from absl import logging
import tensorflow as tf

from official.core import config_definitions as cfg
from official.core import input_reader
from official.modeling import hyperparams
from common import atomic_io
from dataloaders import record_check

# A step no run reaches (2**31 - 1: optimizer.iterations is an int64 but
# steps are counted in int32 elsewhere).
NEVER_STEP = 2**31 - 1

# Per-file record counts, in the cache directory (train.py: model_dir).
RECORD_COUNTS_FILE = 'record_counts.json'

_COSINE = 'step_cosine_with_offset'
_BOUNDARIES = f'trainer.optimizer_config.learning_rate.{_COSINE}.boundaries'


@dataclasses.dataclass
class Schedule(hyperparams.Config):
  """The training schedule, in epochs of `task.steps_per_epoch` steps."""
  # The training length: trainer.train_steps = epochs * steps_per_epoch.
  epochs: int = 36
  # The step_cosine_with_offset learning rate's boundaries are [0, this
  # epoch, the last step, never]: with values [base, base, final, final],
  # base_lr until this epoch, then a cosine to final_lr at the last step.
  cosine_start_epoch: int = 20
  # Evaluation and checkpoint every this many epochs; 0: once, at the end.
  validation_every_epochs: int = 1
  checkpoint_every_epochs: int = 1


def _get(config: hyperparams.Config, key: str) -> Any:
  for name in key.split('.'):
    config = getattr(config, name)
  return config


def _set(config: hyperparams.Config, key: str, value: Any) -> None:
  *path, name = key.split('.')
  for part in path:
    config = getattr(config, part)
  setattr(config, name, value)


# ----------------------------------------------------------- record counts


def _count_file_records(path: str) -> int:
  """Reads one TFRecord file through, counting its records.

  Raises:
    record_check.DamagedFileError: naming the file and its damaged record.
  """
  scan = record_check.scan_file(path)
  if scan.error:
    raise record_check.DamagedFileError(scan)
  return scan.records


def _read_counts(path: Optional[str]) -> Dict[str, Dict[str, int]]:
  if not path or not tf.io.gfile.exists(path):
    return {}
  try:
    with tf.io.gfile.GFile(path) as f:
      counts = json.load(f)
    return counts if isinstance(counts, dict) else {}
  except (ValueError, tf.errors.OpError) as e:
    logging.warning('Ignoring the unreadable record counts %s: %s', path, e)
    return {}


def _write_counts(path: str, counts: Dict[str, Dict[str, int]]) -> None:
  """Writes the counts; the file appears only complete."""
  tf.io.gfile.makedirs(os.path.dirname(path) or '.')
  atomic_io.write_json(path, counts, indent=1, sort_keys=True)


def count_records(input_path: Any, cache_dir: Optional[str] = None,
                  skip_damaged: bool = False) -> int:
  """Number of records in the TFRecord files `input_path` names.

  Each file is read once: with `cache_dir`, its count is kept in
  `cache_dir/record_counts.json` under its path with its size and
  modification time, and read from there while both are unchanged.

  Args:
    input_path: a DataConfig's input_path (patterns, comma-separated or a
      list).
    cache_dir: where the counts are kept; None: counted every time.
    skip_damaged: count a damaged file's records up to its first damaged
      one (as `DataConfig.skip_corrupt_records` reads it), with a warning.

  Returns:
    The records in all files.

  Raises:
    ValueError: if a pattern matches no file, or (without `skip_damaged`)
      naming every damaged file and record.
  """
  files = sorted(set(input_reader.match_files(input_path)))
  cache_path = cache_dir and os.path.join(cache_dir, RECORD_COUNTS_FILE)
  counts = _read_counts(cache_path)
  total, changed, damaged = 0, False, []
  for path in files:
    key = path if '://' in path else os.path.abspath(path)
    stat = tf.io.gfile.stat(path)
    stamp = {'size': int(stat.length), 'mtime_nsec': int(stat.mtime_nsec)}
    entry = counts.get(key)
    if not entry or {k: entry.get(k) for k in stamp} != stamp:
      logging.info('Counting the records of %s.', path)
      try:
        entry = dict(stamp, records=_count_file_records(path))
      except record_check.DamagedFileError as e:
        entry = dict(stamp, records=e.scan.records, damaged=e.scan.error)
      counts[key], changed = entry, True
    if entry.get('damaged'):
      damaged.append(record_check.FileScan(path, entry['records'],
                                           entry['damaged']))
    total += entry['records']
  if cache_path and changed:
    _write_counts(cache_path, counts)
  if damaged and not skip_damaged:
    raise ValueError(record_check.report(damaged))
  for scan in damaged:
    logging.warning('Skipping the damaged records of %s', scan.describe())
  return total


# --------------------------------------------------------- steps per epoch


def steps_per_epoch(task: cfg.TaskConfig,
                    base: Optional[cfg.TaskConfig] = None,
                    cache_dir: Optional[str] = None) -> int:
  """`task.steps_per_epoch`, or the training examples // global batch size.

  Args:
    task: the task config.
    base: the task config of the experiment `task` was overridden from; its
      steps_per_epoch and train_data.num_examples describe its own batch
      size and files, so where `task` keeps them they are derived again.
    cache_dir: where record counts are kept (see `count_records`).

  Returns:
    The steps per epoch, at least 1.

  Raises:
    ValueError: naming the key that prevents it.
  """
  given = task.steps_per_epoch
  if given < 0:
    raise ValueError(f'task.steps_per_epoch must be >= 0 (0: derived), got '
                     f'{given}.')
  if given > 0 and (base is None or given != base.steps_per_epoch):
    return given
  data = task.train_data
  if data.global_batch_size <= 0:
    raise ValueError('task.train_data.global_batch_size must be > 0 to derive '
                     f'task.steps_per_epoch, got {data.global_batch_size}.')
  examples = data.num_examples
  stale = (base is not None and data.input_path != base.train_data.input_path
           and examples == base.train_data.num_examples)
  if examples <= 0 or stale:
    try:
      examples = count_records(data.input_path, cache_dir,
                               skip_damaged=getattr(data, 'skip_corrupt_records',
                                                    False))
    except ValueError as e:
      raise ValueError(
          'task.steps_per_epoch is derived from the training examples, and '
          'task.train_data.num_examples is not given for these files, but '
          f'counting task.train_data.input_path failed: {e} Give '
          'task.steps_per_epoch or task.train_data.num_examples.') from e
  return max(1, examples // data.global_batch_size)


# ---------------------------------------------------------------- resolve


def _check_epochs(params: cfg.ExperimentConfig) -> None:
  """Rejects epoch settings past the schedule's end."""
  schedule = params.task.schedule
  epochs = schedule.epochs
  if epochs < 1:
    raise ValueError(f'task.schedule.epochs must be >= 1, got {epochs}.')
  for name in ('validation_every_epochs', 'checkpoint_every_epochs'):
    if getattr(schedule, name) < 0:
      raise ValueError(f'task.schedule.{name} must be >= 0 (0: at the end), '
                       f'got {getattr(schedule, name)}.')
  lr = params.trainer.optimizer_config.learning_rate
  if lr.type == _COSINE:
    start = schedule.cosine_start_epoch
    if start < 0:
      raise ValueError(
          f'task.schedule.cosine_start_epoch must be >= 0, got {start}.')
    if start >= epochs:
      raise ValueError(
          f'task.schedule.cosine_start_epoch ({start}) is not before '
          f'task.schedule.epochs ({epochs}): the cosine decay would never '
          'run.')
    values = lr.step_cosine_with_offset.values or []
    if len(values) != 4:
      raise ValueError(
          f'trainer.optimizer_config.learning_rate.{_COSINE}.values must have '
          '4 entries for the 4 derived boundaries [0, cosine start, last '
          f'step, never], got {list(values)}.')
  stage2 = params.task.train_data.parser.stage2_epoch
  if stage2 > epochs:
    raise ValueError(
        f'task.train_data.parser.stage2_epoch ({stage2}) is past '
        f'task.schedule.epochs ({epochs}): stage 2 would never run ({epochs} '
        'says stage 1 throughout).')
  for i, stage in enumerate(params.task.losses.assigner_schedule):
    if stage.until_epoch is not None and stage.until_epoch > epochs:
      raise ValueError(
          f'task.losses.assigner_schedule[{i}].until_epoch '
          f'({stage.until_epoch}) is past task.schedule.epochs ({epochs}): '
          'the next stage would never run.')


def _derived(params: cfg.ExperimentConfig,
             spe: int) -> Dict[str, Tuple[Any, str]]:
  """{key: (value, how it follows from the schedule)} of the step keys."""
  schedule = params.task.schedule
  total = schedule.epochs * spe
  per_epoch = f'task.steps_per_epoch ({spe})'
  derived = {'trainer.train_steps': (
      total, f'task.schedule.epochs ({schedule.epochs}) x {per_epoch}')}
  for key, name in (('trainer.validation_interval', 'validation_every_epochs'),
                    ('trainer.checkpoint_interval',
                     'checkpoint_every_epochs')):
    every = getattr(schedule, name)
    derived[key] = (min((every or schedule.epochs) * spe, total),
                    f'task.schedule.{name} ({every}) x {per_epoch}, at most '
                    'the training steps')
  if params.trainer.optimizer_config.learning_rate.type == _COSINE:
    start = schedule.cosine_start_epoch
    derived[_BOUNDARIES] = (
        [0, start * spe, total, NEVER_STEP],
        f'[0, task.schedule.cosine_start_epoch ({start}) x {per_epoch}, '
        f'the training steps, {NEVER_STEP}]')
  return derived


def _check_steps(params: cfg.ExperimentConfig, length: str) -> None:
  """Rejects step settings of the optimizer past the last step."""
  total = params.trainer.train_steps
  optimizer = params.trainer.optimizer_config
  warmup = optimizer.warmup.get()
  steps = getattr(warmup, 'warmup_steps', None)
  if steps and steps >= total:
    raise ValueError(
        f'trainer.optimizer_config.warmup.{optimizer.warmup.type}.'
        f'warmup_steps ({steps}) must be less than the training steps: '
        f'{length}.')
  lr = optimizer.learning_rate
  if lr.type == 'stepwise':
    past = [b for b in lr.stepwise.boundaries or [] if b >= total]
    if past:
      raise ValueError(
          'trainer.optimizer_config.learning_rate.stepwise.boundaries '
          f'{past} are past the last step: {length}.')
  if optimizer.ema is not None and optimizer.ema.start_step >= total:
    raise ValueError(
        f'trainer.optimizer_config.ema.start_step ({optimizer.ema.start_step}'
        f') must be less than the training steps: {length}.')


def _cap_loops(trainer: cfg.TrainerConfig, spe: int) -> None:
  """steps_per_loop and summary_interval at most an epoch (Orbit wants the
  summary interval a multiple of the loop)."""
  loop, summary = trainer.steps_per_loop, trainer.summary_interval
  if loop > 0:
    loop = min(loop, spe)
    if summary > 0:
      summary = max(loop, min(summary, spe) // loop * loop)
  trainer.steps_per_loop, trainer.summary_interval = loop, summary


def _is_unset(value: Any) -> bool:
  return value is None or (not isinstance(value, bool) and
                           value in (0, []))


def resolve(params: cfg.ExperimentConfig,
            base: Optional[cfg.ExperimentConfig] = None,
            cache_dir: Optional[str] = None) -> cfg.ExperimentConfig:
  """Fills the step settings from `task.schedule`, after all overrides.

  Call it where params are loaded for training, before validate() and
  lock(). See the module docstring for what wins.

  Args:
    params: the experiment with every override applied; changed in place.
    base: the registered experiment `params` were overridden from (its
      step settings are its own schedule's); None: a value already in
      `params` counts as given.
    cache_dir: where record counts are kept (see `count_records`).

  Returns:
    `params`.

  Raises:
    ValueError: naming the key of a schedule that cannot be right, or of a
      given step setting that disagrees with the schedule.
  """
  spe = steps_per_epoch(params.task, base and base.task, cache_dir)
  params.task.steps_per_epoch = spe
  _check_epochs(params)
  for key, (value, how) in _derived(params, spe).items():
    current = _get(params, key)
    if (_is_unset(current) or current == value or
        (base is not None and current == _get(base, key))):
      _set(params, key, value)
    else:
      unset = 'null' if isinstance(value, list) else '0'
      raise ValueError(
          f'{key} ({current}) disagrees with the schedule, which gives '
          f'{value}: {how}. Step settings follow task.schedule and '
          f'task.steps_per_epoch: change those, or set {key} to {unset} to '
          'derive it.')
  length = (f'{params.trainer.train_steps} (task.schedule.epochs '
            f'({params.task.schedule.epochs}) x task.steps_per_epoch ({spe}))')
  _check_steps(params, length)
  _cap_loops(params.trainer, spe)
  return params

