"""Tests of the divergence guard: each absurd value is named with its step."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tasks import divergence


def _model():
  model = tf_keras.Sequential([tf_keras.layers.Dense(3),
                               tf_keras.layers.BatchNormalization()])
  model.build([None, 2])
  return model


def _check(model, losses=None, step=7, **limits):
  limits = dict(dict(max_loss=1e4, max_abs_weight=1e4, max_bn_variance=1e7),
                **limits)
  losses = losses or {'total_loss': 2., 'cls_loss': 1.5, 'box_loss': 0.5}
  losses = {k: tf.constant(v, tf.float32) for k, v in losses.items()}
  return divergence.check(tf.constant(step, tf.int64), losses,
                          model.variables, learning_rate=tf.constant(50.),
                          **limits)


def _failure(model, **kwargs) -> str:
  with pytest.raises(tf.errors.InvalidArgumentError) as e:
    _check(model, **kwargs)
  message = e.value.message
  assert divergence.PREFIX + ' at step 7' in message
  assert 'the learning rate (at 50 this step) is too high' in message
  return message


def test_a_sane_step_passes():
  _check(_model())


def test_a_bn_variance_past_its_limit_is_named():
  model = _model()
  variance = model.layers[1].moving_variance
  variance.assign([1., 2.5e8, 3.])
  message = _failure(model)
  assert f'{variance.name} has |value| 2.5e+08 (limit 1e+07)' in message
  # Variances are not held to the weights' limit, and 0 disables a check.
  variance.assign([1., 5e4, 3.])
  _check(model)
  variance.assign([1., 2.5e8, 3.])
  _check(model, max_bn_variance=0.)


@pytest.mark.parametrize('value, shown', [(np.nan, 'nan'), (np.inf, 'inf'),
                                          (-3e4, '30000')])
def test_a_non_finite_or_huge_weight_is_named(value, shown):
  model = _model()
  kernel = model.layers[0].kernel
  weights = kernel.numpy()
  weights[1, 2] = value
  kernel.assign(weights)
  message = _failure(model)
  assert f'{kernel.name} has |value| {shown}' in message


@pytest.mark.parametrize('losses, shown', [
    ({'total_loss': np.nan, 'cls_loss': np.nan, 'box_loss': 0.5},
     'the loss cls_loss is nan'),
    ({'total_loss': 2., 'cls_loss': 1.5, 'box_loss': np.inf},
     'the loss box_loss is inf'),
    ({'total_loss': 356., 'cls_loss': 300., 'box_loss': 56.},
     'the loss total_loss is 356'),
])
def test_a_bad_loss_is_named(losses, shown):
  message = _failure(_model(), losses=losses,
                     **({'max_loss': 100.} if losses['total_loss'] == 356.
                        else {}))
  assert shown in message
  assert 'limit: finite, total at most' in message


def test_the_check_runs_inside_a_compiled_step():
  model = _model()
  model.layers[1].moving_variance.assign([1., 1e9, 1.])

  @tf.function
  def step():
    _check(model)

  with pytest.raises(tf.errors.InvalidArgumentError, match='at step 7'):
    step()


def test_under_xla_the_numbers_are_measured_then_checked_outside():
  # XLA cannot format the message (and drops assertions): the compiled
  # function measures, the check outside gives the same message.
  model = _model()
  variance = model.layers[1].moving_variance
  variance.assign([1., 2.5e8, 3.])
  limits = dict(max_abs_weight=1e4, max_bn_variance=1e7)

  @tf.function(jit_compile=True)
  def measure(step, total):
    return divergence.measure(step, {'total_loss': total, 'box_loss': total},
                              model.variables, learning_rate=50., **limits)

  measured = measure(tf.constant(7, tf.int64), tf.constant(2.))
  assert measured['variable_maxima'].shape == (
      len([v for v in model.variables if v.dtype.is_floating]),)
  with pytest.raises(tf.errors.InvalidArgumentError) as e:
    divergence.check_measured(measured, model.variables, max_loss=1e4,
                              **limits)
  with pytest.raises(tf.errors.InvalidArgumentError) as direct:
    _check(model, losses={'total_loss': 2., 'box_loss': 2.})
  assert e.value.message == direct.value.message
  assert f'{variance.name} has |value| 2.5e+08 (limit 1e+07)' in (
      e.value.message)
  # A sane step passes; a NaN loss is named.
  variance.assign([1., 2., 3.])
  divergence.check_measured(measure(tf.constant(7, tf.int64),
                                    tf.constant(2.)),
                            model.variables, max_loss=1e4, **limits)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='the loss box_loss is nan'):
    divergence.check_measured(measure(tf.constant(7, tf.int64),
                                      tf.constant(np.nan)),
                              model.variables, max_loss=1e4, **limits)
