"""Stops a diverging training run before it writes a bad checkpoint.

Model Garden's trainer stops at a loss above `trainer.loss_upper_bound`
(1e6) after a loop of steps. A run whose learning rate is far too high can
stay below that and still be ruined: with a learning rate of 50 the
shapes experiment's loss fell from 356 to 30 while its BatchNorm variances
reached 2.5e8. `check` runs in the training step and fails it, naming the
step, the value and its limit, and the probable cause; the step's weights
are never checkpointed (checkpoints are written after the loop), so the
last good checkpoint stays the latest one.
"""

from typing import Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

# Every failure message starts with this (train.py recognises it).
PREFIX = 'Training diverged'


def _limit_checks(variables: Sequence[tf.Variable], max_abs_weight: float,
                  max_bn_variance: float):
  """(names, maxima, limits) of the variables that have a limit."""
  names, maxima, limits = [], [], []
  for v in variables:
    if not v.dtype.is_floating:
      continue
    limit = max_bn_variance if 'moving_variance' in v.name else max_abs_weight
    if not limit:
      continue
    names.append(v.name)
    maxima.append(tf.cast(tf.reduce_max(tf.abs(v)), tf.float32))
    limits.append(limit)
  return names, maxima, limits


def _first_failure(names, values, limits):
  """(name, value, limit) of the first value not <= its limit."""
  values = tf.stack(values)
  limits = tf.constant(limits, tf.float32)
  # NaN compares false: a NaN value fails as an infinite one does.
  bad = tf.logical_not(values <= limits)
  index = tf.argmax(tf.cast(bad, tf.int32), output_type=tf.int32)
  return (tf.reduce_any(bad), tf.gather(tf.constant(names), index),
          tf.gather(values, index), tf.gather(limits, index))


def check(step: tf.Tensor,
          losses: Mapping[str, tf.Tensor],
          variables: Sequence[tf.Variable],
          max_loss: float,
          max_abs_weight: float,
          max_bn_variance: float,
          learning_rate: Optional[tf.Tensor] = None) -> tf.Operation:
  """Fails (InvalidArgumentError starting with PREFIX) on a diverged step.

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
  loss_names = sorted(losses)
  loss_values = [tf.cast(losses[k], tf.float32) for k in loss_names]
  # Finite values pass the largest float32; inf and NaN do not.
  finite = float(np.finfo(np.float32).max)
  loss_limits = [max_loss if (k == 'total_loss' and max_loss) else finite
                 for k in loss_names]
  names, maxima, limits = _limit_checks(variables, max_abs_weight,
                                        max_bn_variance)
  loss_bad, loss_name, loss_value, _ = _first_failure(
      loss_names, loss_values, loss_limits)
  if names:
    var_bad, var_name, var_value, var_limit = _first_failure(
        names, maxima, limits)
  else:
    var_bad = tf.constant(False)
    var_name, var_value, var_limit = tf.constant(''), 0., 0.
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


def check_step(step: tf.Tensor, losses: Mapping[str, tf.Tensor],
               model, optimizer, config) -> tf.Operation:
  """`check` with a task's DivergenceGuard config, model and optimizer."""
  return check(step, losses, model.variables, config.max_loss,
               config.max_abs_weight, config.max_bn_variance,
               learning_rate=current_learning_rate(optimizer, step))


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
