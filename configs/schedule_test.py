"""Tests for the schedule in epochs and the step settings derived from it."""

import json
import math
import os

from absl import flags
import numpy as np
import pytest
import tensorflow as tf

from official.core import exp_factory
from official.core import task_factory
from official.modeling import hyperparams
from official.modeling.optimization import optimizer_factory
import registry_imports  # pylint: disable=unused-import
from configs import schedule
import train

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NEVER = 2**31 - 1

# What each experiment gave before the schedule was in epochs (computed from
# the code at commit b3f6ff5): steps per epoch, train steps, validation and
# checkpoint intervals, steps per loop and summary interval, learning-rate
# boundaries, warm-up steps.
_PINNED = {
    'unipercepnet_coco': (7392, 266112, 7392, 7392, 500, 500,
                          [0, 147840, 266112, _NEVER], 500),
    'unipercepnet_r50_coco': (7392, 266112, 7392, 7392, 500, 500,
                              [0, 147840, 266112, _NEVER], 500),
    # The one change: steps_per_loop and summary_interval were 500, more
    # than BDD100K's 437-step epoch; they are now at most an epoch.
    'unipercepnet_bdd100k': (437, 15732, 437, 437, 437, 437,
                             [0, 8740, 15732, _NEVER], 500),
    # Since: 12 epochs, not 16.
    'unipercepnet_shapes': (125, 1500, 1500, 250, 25, 25,
                            [0, 0, 1500, _NEVER], 100),
}


def _steps(params):
  trainer = params.trainer
  return (params.task.steps_per_epoch, trainer.train_steps,
          trainer.validation_interval, trainer.checkpoint_interval,
          trainer.steps_per_loop, trainer.summary_interval,
          trainer.optimizer_config.learning_rate.step_cosine_with_offset
          .boundaries,
          trainer.optimizer_config.warmup.linear.warmup_steps)


def _resolved(name, *overrides, cache_dir=None):
  """Experiment `name` with overrides (dicts, strings, YAML files), resolved
  against the experiment as train.py does."""
  params = exp_factory.get_exp_config(name)
  for override in overrides:
    params = hyperparams.override_params_dict(params, override,
                                              is_strict=True)
  return schedule.resolve(params, base=exp_factory.get_exp_config(name),
                          cache_dir=cache_dir)


def _lr(params):
  config = params.trainer.optimizer_config
  lr = optimizer_factory.OptimizerFactory(config).build_learning_rate()
  return lambda step: float(lr(step))


def _cosine(step, start, end, high, low):
  return low + (high - low) * (1 + math.cos(math.pi * (step - start) /
                                            (end - start))) / 2


def _write_records(path, count):
  with tf.io.TFRecordWriter(path) as writer:
    for i in range(count):
      writer.write(f'record {i}'.encode())


@pytest.mark.parametrize('name', sorted(_PINNED))
def test_experiments_keep_their_step_values(name):
  assert _steps(exp_factory.get_exp_config(name)) == _PINNED[name]
  assert _steps(_resolved(name)) == _PINNED[name]
  # Resolving twice (a run's params.yaml read back) changes nothing.
  assert _steps(_resolved(name, _resolved(name).as_dict())) == _PINNED[name]


def test_yamls_state_epochs_and_the_steps_follow():
  custom = os.path.join(_ROOT, 'configs', 'experiments', 'custom',
                        'coco_format_dataset.yaml')
  params = _resolved('unipercepnet_coco', custom,
                     'task.train_data.num_examples=7000')
  # The issue: the boundaries stayed COCO's [0, 147840, 266112, ...].
  assert _steps(params) == (437, 15732, 437, 437, 437, 437,
                            [0, 8740, 15732, _NEVER], 500)
  for row in ('r50_base', 'regnetx4gf_ca_sam'):
    path = os.path.join(_ROOT, 'configs', 'experiments', 'coco',
                        f'ablation_{row}_1x.yaml')
    params = _resolved('unipercepnet_coco', path)
    trainer = params.trainer
    assert (trainer.train_steps, trainer.validation_interval,
            trainer.checkpoint_interval) == (88704, 7392, 7392)
    assert trainer.optimizer_config.learning_rate.type == 'constant'


def test_overriding_epochs_and_batch_size_moves_the_learning_rate():
  params = _resolved('unipercepnet_coco', {
      'task': {'schedule': {'epochs': 12, 'cosine_start_epoch': 8},
               'train_data': {'global_batch_size': 32,
                              'parser': {'stage2_epoch': 8}}}})
  spe = 118287 // 32
  total, start = 12 * spe, 8 * spe
  assert (params.task.steps_per_epoch, params.trainer.train_steps) == (
      3696, 44352)
  assert params.trainer.validation_interval == spe
  lr = _lr(params)
  np.testing.assert_allclose(lr(0), 1e-7, rtol=1e-4)
  np.testing.assert_allclose(lr(250), (1e-7 + 1e-4) / 2, rtol=1e-4)
  np.testing.assert_allclose(lr(500), 1e-4, rtol=1e-6)  # Warm-up end.
  np.testing.assert_allclose(lr(start - 1), 1e-4, rtol=1e-6)
  np.testing.assert_allclose(lr(start), 1e-4, rtol=1e-6)  # Cosine start.
  middle = (start + total) // 2
  np.testing.assert_allclose(lr(middle), (1e-4 + 1e-6) / 2, rtol=1e-5)
  quarter = start + spe
  np.testing.assert_allclose(
      lr(quarter), _cosine(quarter, start, total, 1e-4, 1e-6), rtol=1e-4)
  np.testing.assert_allclose(  # Last step: the decay has run its course.
      lr(total - 1), _cosine(total - 1, start, total, 1e-4, 1e-6), rtol=1e-3)
  assert lr(total - 1) < 1.001e-6
  np.testing.assert_allclose(lr(total + 1000), 1e-6, rtol=1e-5)


@pytest.fixture
def parse_train_flags():
  """Parses a train.py command line into flag values of its own.

  The flags train.py reads (Model Garden's `tfm_flags`), defined in a
  private FlagValues: absl's global one is shared with other test modules
  in the same process, which may define some of these flags differently.
  """
  def parse(*argv):
    values = flags.FlagValues()
    for name in ('experiment', 'model_dir', 'params_override', 'tpu',
                 'tf_data_service'):
      flags.DEFINE_string(name, None, '', flag_values=values)
    flags.DEFINE_enum('mode', None, ['train', 'eval', 'train_and_eval',
                                     'continuous_eval'], '',
                      flag_values=values)
    flags.DEFINE_multi_string('config_file', None, '', flag_values=values)
    values(['train.py', *argv])
    return values
  return parse


def test_train_params_override_of_epochs_and_batch_size(parse_train_flags,
                                                        tmp_path):
  argv = ['--experiment=unipercepnet_shapes', '--mode=train',
          f'--model_dir={tmp_path}']
  override = ('--params_override=task.schedule.epochs=8,'
              'task.train_data.global_batch_size=4')
  # Stage 2 of the shapes recipe starts at epoch 10.
  with pytest.raises(ValueError,
                     match=r'task\.train_data\.parser\.stage2_epoch \(10\)'):
    train.build_params(parse_train_flags(*argv, override))
  params = train.build_params(parse_train_flags(
      *argv, override + ',task.train_data.parser.stage2_epoch=6'))
  spe, total = 1000 // 4, 8 * 250
  assert params.task.steps_per_epoch == spe
  trainer = params.trainer
  assert (trainer.train_steps, trainer.validation_interval,
          trainer.checkpoint_interval, trainer.steps_per_loop) == (
              total, total, 2 * spe, 25)
  with pytest.raises(ValueError, match='locked'):
    params.override({'trainer': {'train_steps': 1}})
  # The shapes recipe: 100 warm-up steps from 3e-6, a cosine from step 0.
  lr = _lr(params)
  warmup_end = _cosine(100, 0, total, 3e-3, 3e-5)
  np.testing.assert_allclose(lr(50), (3e-6 + warmup_end) / 2, rtol=1e-4)
  np.testing.assert_allclose(lr(100), warmup_end, rtol=1e-5)
  np.testing.assert_allclose(lr(total // 2), (3e-3 + 3e-5) / 2, rtol=1e-5)
  np.testing.assert_allclose(
      lr(total - 1), _cosine(total - 1, 0, total, 3e-3, 3e-5), rtol=1e-3)


def test_steps_per_epoch_is_counted_from_the_records_once(tmp_path,
                                                          monkeypatch):
  data, run = tmp_path / 'data', str(tmp_path / 'run')
  data.mkdir()
  _write_records(str(data / 'train-0'), 30)
  _write_records(str(data / 'train-1'), 21)
  overrides = {'task': {
      'steps_per_epoch': 0,
      'schedule': {'epochs': 4, 'cosine_start_epoch': 2},
      'losses': {'assigner_schedule': [
          {'assigner': 'uniform', 'until_epoch': 1},
          {'assigner': 'task_aligned'}]},
      'train_data': {'input_path': str(data / 'train-*'), 'num_examples': -1,
                     'global_batch_size': 5,
                     'parser': {'stage2_epoch': 3}}},
      'trainer': {'optimizer_config': {'warmup': {'linear': {
          'warmup_steps': 5}}}}}
  params = _resolved('unipercepnet_coco', overrides, cache_dir=run)
  assert params.task.steps_per_epoch == 51 // 5
  assert params.trainer.train_steps == 40
  with open(os.path.join(run, schedule.RECORD_COUNTS_FILE)) as f:
    counts = json.load(f)
  assert sorted(e['records'] for e in counts.values()) == [21, 30]

  def no_reading(path):
    raise AssertionError(f'{path} read again')
  monkeypatch.setattr(schedule, '_count_file_records', no_reading)
  params = _resolved('unipercepnet_coco', overrides, cache_dir=run)
  assert params.task.steps_per_epoch == 10
  # A changed file is counted again, the other one is not.
  monkeypatch.undo()
  _write_records(str(data / 'train-1'), 25)
  read = []
  monkeypatch.setattr(schedule, '_count_file_records',
                      lambda p: read.append(p) or 25)
  assert schedule.count_records(str(data / 'train-*'), run) == 55
  assert read == [str(data / 'train-1')]


def test_record_counts_cache_is_never_half_written(tmp_path, monkeypatch):
  data, run = tmp_path / 'data', tmp_path / 'run'
  data.mkdir()
  _write_records(str(data / 'train-0'), 3)

  def half_then_fail(obj, f, **kwargs):
    del obj, kwargs
    f.write('{"' + str(data))
    raise OSError('no space left on device')

  real_dump = json.dump
  monkeypatch.setattr(json, 'dump', half_then_fail)
  with pytest.raises(OSError, match='no space left'):
    schedule.count_records(str(data / 'train-*'), str(run))
  assert os.listdir(run) == []
  monkeypatch.setattr(json, 'dump', real_dump)
  assert schedule.count_records(str(data / 'train-*'), str(run)) == 3
  cache = run / schedule.RECORD_COUNTS_FILE
  before = cache.read_text()
  assert json.loads(before)[str(data / 'train-0')]['records'] == 3
  # A new file's count fails to be written: the cache stays as it was.
  _write_records(str(data / 'train-1'), 2)
  monkeypatch.setattr(json, 'dump', half_then_fail)
  with pytest.raises(OSError, match='no space left'):
    schedule.count_records(str(data / 'train-*'), str(run))
  assert os.listdir(run) == [schedule.RECORD_COUNTS_FILE]
  assert cache.read_text() == before


def test_a_damaged_file_is_named_when_counting(tmp_path):
  data, run = tmp_path / 'data', str(tmp_path / 'run')
  data.mkdir()
  _write_records(str(data / 'train-0'), 3)
  _write_records(str(data / 'train-1'), 4)
  damaged = str(data / 'train-1')
  with open(damaged, 'rb') as f:
    content = f.read()
  with open(damaged, 'wb') as f:  # Cut inside the third record.
    f.write(content[:len(content) * 5 // 8])
  for _ in range(2):  # Counted, then from the cache.
    with pytest.raises(ValueError) as e:
      schedule.count_records(str(data / 'train-*'), run)
    assert str(e.value).startswith(
        f'Damaged TFRecord file(s):\n  {damaged}: record 2 (0-based) is '
        'damaged, after 2 good ones: truncated record at')
    assert 'train-0:' not in str(e.value)
  assert schedule.count_records(str(data / 'train-*'), run,
                                skip_damaged=True) == 3 + 2


def test_num_examples_of_the_experiments_files_are_not_used_for_others(
    tmp_path, monkeypatch):
  monkeypatch.setattr(schedule, '_count_file_records', lambda p: 1600)
  _write_records(str(tmp_path / 'train-0'), 1)
  custom = os.path.join(_ROOT, 'configs', 'experiments', 'custom',
                        'coco_format_dataset.yaml')
  params = _resolved('unipercepnet_coco', custom, {'task': {
      'train_data': {'input_path': str(tmp_path / 'train-*')}}})
  assert params.task.steps_per_epoch == 1600 // 16
  # Given for the new files, num_examples is used; the batch size counts.
  params = _resolved('unipercepnet_coco', custom, {'task': {
      'train_data': {'input_path': str(tmp_path / 'train-*'),
                     'num_examples': 8000, 'global_batch_size': 32}}})
  assert params.task.steps_per_epoch == 250
  assert params.trainer.train_steps == 36 * 250


def test_explicit_step_settings_must_agree_with_the_schedule():
  # Given and agreeing, or 0 / null: derived. Given steps per epoch win.
  params = _resolved('unipercepnet_coco', {
      'task': {'steps_per_epoch': 1000},
      'trainer': {'train_steps': 36000, 'checkpoint_interval': 0,
                  'optimizer_config': {'learning_rate': {
                      'step_cosine_with_offset': {'boundaries': None}}}}})
  assert _steps(params)[:4] == (1000, 36000, 1000, 1000)
  assert _steps(params)[6] == [0, 20000, 36000, _NEVER]
  cases = [
      ('trainer.train_steps=15732', r'trainer\.train_steps \(15732\) '
       r'disagrees with the schedule, which gives 266112: task\.schedule\.'
       r'epochs \(36\) x task\.steps_per_epoch \(7392\)'),
      ('trainer.validation_interval=1000',
       r'trainer\.validation_interval \(1000\).*validation_every_epochs'),
      ('trainer.optimizer_config.learning_rate.step_cosine_with_offset.'
       'boundaries=[0, 10, 20, 30]',
       r'boundaries \(\[0, 10, 20, 30\]\).*set .*boundaries to null'),
  ]
  for override, message in cases:
    with pytest.raises(ValueError, match=message):
      _resolved('unipercepnet_coco', override)


@pytest.mark.parametrize('override,message', [
    ('task.schedule.cosine_start_epoch=40',
     r'task\.schedule\.cosine_start_epoch \(40\) is not before '
     r'task\.schedule\.epochs \(36\)'),
    ('task.schedule.epochs=0', r'task\.schedule\.epochs must be >= 1'),
    ('task.schedule.epochs=3',  # The cosine start (20) is past the end.
     r'task\.schedule\.cosine_start_epoch \(20\)'),
    ('task.train_data.global_batch_size=8,task.train_data.num_examples=100,'
     'task.schedule.cosine_start_epoch=0',
     r'warmup\.linear\.warmup_steps \(500\) must be less than the training '
     r'steps: 432 \(task\.schedule\.epochs \(36\) x task\.steps_per_epoch '
     r'\(12\)\)'),
    ('task.train_data.parser.stage2_epoch=40',
     r'task\.train_data\.parser\.stage2_epoch \(40\) is past '
     r'task\.schedule\.epochs \(36\)'),
    ('task.schedule.validation_every_epochs=-1',
     r'task\.schedule\.validation_every_epochs must be >= 0'),
    ('task.steps_per_epoch=-5', r'task\.steps_per_epoch must be >= 0'),
    ('task.train_data.global_batch_size=0',
     r'task\.train_data\.global_batch_size must be > 0'),
    ('trainer.optimizer_config.ema.start_step=300000',
     r'ema\.start_step \(300000\)'),
    ('trainer.optimizer_config.learning_rate.type=stepwise,'
     'trainer.optimizer_config.learning_rate.stepwise.boundaries=[1000, '
     '300000],trainer.optimizer_config.learning_rate.stepwise.values=[1.0, '
     '0.1, 0.01]', r'stepwise\.boundaries \[300000\] are past the last step'),
    ('trainer.optimizer_config.learning_rate.step_cosine_with_offset.'
     'values=[0.1, 0.01]', r'step_cosine_with_offset\.values must have 4'),
    ('task.train_data.input_path=/nonexistent/train-*',
     r'counting task\.train_data\.input_path failed'),
])
def test_schedules_that_cannot_be_right_are_rejected(override, message):
  with pytest.raises(ValueError, match=message):
    _resolved('unipercepnet_coco', override)


def test_assigner_stage_past_the_end_is_rejected():
  with pytest.raises(ValueError, match=r'task\.losses\.assigner_schedule\[0\]'
                     r'\.until_epoch \(20\) is past task\.schedule\.epochs'):
    _resolved('unipercepnet_shapes', {'task': {'losses': {
        'assigner_schedule': [{'assigner': 'uniform', 'until_epoch': 20},
                              {'assigner': 'task_aligned'}]}}})


def test_intervals_past_the_end_are_the_end_and_loops_an_epoch_at_most():
  params = _resolved('unipercepnet_shapes', {
      'task': {'schedule': {'validation_every_epochs': 3,
                            'checkpoint_every_epochs': 40},
               'steps_per_epoch': 10},
      'trainer': {'steps_per_loop': 4, 'summary_interval': 100}})
  trainer = params.trainer
  assert (trainer.validation_interval, trainer.checkpoint_interval) == (
      30, 120)
  # Orbit wants the summary interval a multiple of the loop.
  assert (trainer.steps_per_loop, trainer.summary_interval) == (4, 8)


def test_task_derives_steps_per_epoch_when_not_given():
  params = exp_factory.get_exp_config('unipercepnet_shapes')
  params.task.steps_per_epoch = 0
  params.task.train_data.global_batch_size = 4
  task = task_factory.get_task(params.task)
  assert int(task.epoch(tf.constant(499, tf.int64))) == 1  # 250 steps.
