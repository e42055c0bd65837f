"""Whether the code being traced will be compiled by XLA.

A few ops have no XLA kernel or need shapes that depend on values
(`combined_non_max_suppression`, string formatting, a `tf.range` whose
length is computed). Where a static-shape equivalent computes the same
thing but is slower without XLA, the code asks `in_xla_context()` at trace
time and takes the static one only when it is compiled: inside
`tf.function(jit_compile=True)` and inside a TPU computation, both of which
trace in an XLA control-flow context (as Keras asks for its own choices).
"""

import tensorflow as tf
from tensorflow.python.ops import control_flow_util  # pylint: disable=g-direct-tensorflow-import


def in_xla_context() -> bool:
  """True while tracing a function (or a function inside one) XLA compiles."""
  if tf.executing_eagerly():
    return False
  return control_flow_util.GraphOrParentsInXlaContext(
      tf.compat.v1.get_default_graph())
