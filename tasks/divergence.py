"""Stops a diverging training run before it writes a bad checkpoint.

Model Garden's trainer stops at a loss above `trainer.loss_upper_bound`
(1e6) after a loop of steps. A run whose learning rate is far too high can
stay below that and still be ruined: with a learning rate of 50 the
shapes experiment's loss fell from 356 to 30 while its BatchNorm variances
reached 2.5e8. `check` runs in the training step and fails it, naming the
step, the value and its limit, and the probable cause; the step's weights
are never checkpointed (checkpoints are written after the loop), so the
last good checkpoint stays the latest one.

Under XLA (`jit_compile`, TPU) strings cannot be formatted and assertions
are dropped: the compiled step then only measures (`measure_step`, numbers
only) and returns the numbers, which `check_measured_step` judges outside
the compiled function, with the same message.
"""

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

# Every failure message starts with this (train.py recognises it).
PREFIX = 'Training diverged'

# The key of a training step's logs that holds `measure_step`'s numbers
# when the step was compiled by XLA (see `UniPercepNetTask.train_step`).
MEASURED_KEY = 'divergence_guard'


def _limited_variables(variables: Sequence[tf.Variable],
                       max_abs_weight: float, max_bn_variance: float):
  """(variables, limits) of the variables that have a limit."""
  limited, limits = [], []
  for v in variables:
    if not v.dtype.is_floating:
      continue
    limit = max_bn_variance if 'moving_variance' in v.name else max_abs_weight
    if not limit:
      continue
    limited.append(v)
    limits.append(limit)
  return limited, limits


def _first_failure(names, values, limits):
  """(name, value, limit) of the first value not <= its limit."""
  values = tf.convert_to_tensor(values)
  limits = tf.constant(limits, tf.float32)
  # NaN compares false: a NaN value fails as an infinite one does.
  bad = tf.logical_not(values <= limits)
  index = tf.argmax(tf.cast(bad, tf.int32), output_type=tf.int32)
  return (tf.reduce_any(bad), tf.gather(tf.constant(names), index),
          tf.gather(values, index), tf.gather(limits, index))


def measure(step: tf.Tensor,
            losses: Mapping[str, tf.Tensor],
            variables: Sequence[tf.Variable],
            max_abs_weight: float,
            max_bn_variance: float,
            learning_rate: Optional[tf.Tensor] = None) -> Dict[str, Any]:
  """The numbers `check` judges: numeric ops only, so XLA compiles them.

  Args:
    step, losses, variables, max_abs_weight, max_bn_variance,
      learning_rate: as `check` takes them (the weight limits say which
      variables are measured).

  Returns:
    'step', 'losses' (name -> float32 value), 'variable_maxima' (float32
    `[V]`, max |value| of each variable with a limit, in order) and, when
    given, 'learning_rate'.
  """
  limited, _ = _limited_variables(variables, max_abs_weight, max_bn_variance)
  measured = {
      'step': tf.convert_to_tensor(step),
      'losses': {k: tf.cast(v, tf.float32) for k, v in losses.items()},
      'variable_maxima': (
          tf.stack([tf.cast(tf.reduce_max(tf.abs(v)), tf.float32)
                    for v in limited])
          if limited else tf.zeros([0], tf.float32)),
  }
  if learning_rate is not None:
    measured['learning_rate'] = tf.cast(learning_rate, tf.float32)
  return measured


def check_measured(measured: Mapping[str, Any],
                   variables: Sequence[tf.Variable],
                   max_loss: float,
                   max_abs_weight: float,
                   max_bn_variance: float) -> tf.Operation:
  """Fails (InvalidArgumentError starting with PREFIX) on bad measurements.

  String formatting: not for XLA. Runs where `measure` ran, or outside
  the compiled function that returned its numbers.

  Args:
    measured: `measure`'s output.
    variables: the variables `measure` was given (for their names).
    max_loss, max_abs_weight, max_bn_variance: `check`'s limits.

  Returns:
    The assertion op (in eager mode it has already run).
  """
  step = measured['step']
  losses = measured['losses']
  loss_names = sorted(losses)
  loss_values = tf.stack([tf.cast(losses[k], tf.float32) for k in loss_names])
  # Finite values pass the largest float32; inf and NaN do not.
  finite = float(np.finfo(np.float32).max)
  loss_limits = [max_loss if (k == 'total_loss' and max_loss) else finite
                 for k in loss_names]
  limited, limits = _limited_variables(variables, max_abs_weight,
                                       max_bn_variance)
  loss_bad, loss_name, loss_value, _ = _first_failure(
      loss_names, loss_values, loss_limits)
  if limited:
    var_bad, var_name, var_value, var_limit = _first_failure(
        [v.name for v in limited], measured['variable_maxima'], limits)
  else:
    var_bad = tf.constant(False)
    var_name, var_value, var_limit = tf.constant(''), 0., 0.
  learning_rate = measured.get('learning_rate')
  lr = ('' if learning_rate is None else tf.strings.join([
      ' (at ', tf.strings.format('{}', tf.cast(learning_rate, tf.float32)),
      ' this step)']))
  cause = tf.strings.join([
      'Probable cause: the learning rate', lr, ' is too high for this '
      'model and batch, or its warm-up too short; or bad boxes in the data '
      '(tools/check_dataset.py finds them). The latest checkpoint in the '
      'model_dir is from before this step.'])
  number = lambda x: tf.strings.format('{}', tf.convert_to_tensor(x))
  message = tf.cond(
      loss_bad,
      lambda: tf.strings.join([
          PREFIX, ' at step ', number(step), ': the loss ', loss_name,
          ' is ', number(loss_value), ' (limit: finite, total at most ',
          number(max_loss or finite), '). ']),
      lambda: tf.strings.join([
          PREFIX, ' at step ', number(step), ': ', var_name,
          ' has |value| ', number(var_value), ' (limit ', number(var_limit),
          '). ']))
  return tf.debugging.Assert(
      tf.logical_not(tf.logical_or(loss_bad, var_bad)),
      [tf.strings.join([message, cause])])


def check(step: tf.Tensor,
          losses: Mapping[str, tf.Tensor],
          variables: Sequence[tf.Variable],
          max_loss: float,
          max_abs_weight: float,
          max_bn_variance: float,
          learning_rate: Optional[tf.Tensor] = None) -> tf.Operation:
  """Fails (InvalidArgumentError starting with PREFIX) on a diverged step.

  Not under XLA, which cannot format strings and drops assertions: there
  `measure` in the compiled function and `check_measured` outside it.

  Args:
    step: the step's number (the optimizer's iterations before it).
    losses: the step's named scalar losses; each must be finite, and
      'total_loss' at most `max_loss`.
    variables: the model's variables after the step (weights, BatchNorm
      statistics); each must be finite, a moving variance at most
      `max_bn_variance` and any other value at most `max_abs_weight` in
      magnitude.
    max_loss, max_abs_weight, max_bn_variance: the limits; 0 disables one.
    learning_rate: the step's learning rate, for the message.

  Returns:
    The assertion op (in eager mode it has already run).
  """
  return check_measured(
      measure(step, losses, variables, max_abs_weight, max_bn_variance,
              learning_rate=learning_rate),
      variables, max_loss, max_abs_weight, max_bn_variance)


def check_step(step: tf.Tensor, losses: Mapping[str, tf.Tensor],
               model, optimizer, config) -> tf.Operation:
  """`check` with a task's DivergenceGuard config, model and optimizer."""
  return check(step, losses, model.variables, config.max_loss,
               config.max_abs_weight, config.max_bn_variance,
               learning_rate=current_learning_rate(optimizer, step))


def measure_step(step: tf.Tensor, losses: Mapping[str, tf.Tensor],
                 model, optimizer, config) -> Dict[str, Any]:
  """`measure` with a task's DivergenceGuard config, model and optimizer."""
  return measure(step, losses, model.variables, config.max_abs_weight,
                 config.max_bn_variance,
                 learning_rate=current_learning_rate(optimizer, step))


def check_measured_step(measured: Mapping[str, Any], model,
                        config) -> tf.Operation:
  """`check_measured` of `measure_step`'s numbers (outside XLA)."""
  return check_measured(measured, model.variables, config.max_loss,
                        config.max_abs_weight, config.max_bn_variance)


def current_learning_rate(optimizer, step) -> Optional[tf.Tensor]:
  """The learning rate the (possibly wrapped) optimizer uses at `step`."""
  for _ in range(4):
    lr = getattr(optimizer, 'learning_rate', None)
    if lr is None:
      lr = getattr(optimizer, 'lr', None)
    if lr is not None:
      if callable(lr) and not isinstance(lr, tf.Variable):
        return lr(step)
      return tf.convert_to_tensor(lr)
    optimizer = (getattr(optimizer, 'inner_optimizer', None) or
                 getattr(optimizer, '_optimizer', None))
    if optimizer is None:
      return None
  return None
