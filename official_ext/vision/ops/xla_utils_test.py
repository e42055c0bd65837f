"""Tests for official_ext.vision.ops.xla_utils."""

import tensorflow as tf

from official_ext.vision.ops import xla_utils


def test_in_xla_context_only_when_compiled():
  seen = {}

  def probe(x, key):
    seen[key] = xla_utils.in_xla_context()

    def branch():
      seen[key + ' in a cond'] = xla_utils.in_xla_context()
      return x

    return tf.cond(x > 0., branch, lambda: -x)

  x = tf.constant(1.)
  probe(x, 'eager')
  tf.function(probe)(x, 'tf.function')
  tf.function(probe, jit_compile=True)(x, 'jit_compile')
  inner = tf.function(probe)
  tf.function(lambda x: inner(x, 'nested in jit_compile'),
              jit_compile=True)(x)
  assert seen == {
      'eager': False, 'eager in a cond': False,
      'tf.function': False, 'tf.function in a cond': False,
      'jit_compile': True, 'jit_compile in a cond': True,
      'nested in jit_compile': True, 'nested in jit_compile in a cond': True}
