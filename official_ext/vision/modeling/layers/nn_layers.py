"""Attention layers missing from `official.vision.modeling.layers.nn_layers`.

Both follow CBAM (Woo et al., 2018):

* `ChannelAttention`: `x * sigmoid(mlp(avgpool(x)) + mlp(maxpool(x)))`, one
  MLP (1x1 conv C -> C/r with bias, ReLU, 1x1 conv C/r -> C with bias) shared
  by the two pooled vectors.
* `SpatialAttention`: `x * sigmoid(conv_kxk([mean_c(x), max_c(x)]))`, one conv
  2 -> 1 with bias.

And `GroupedConv2D`, a drop-in `Conv2D(groups=G)` that stays fast on CPU,
and `BatchNormalization`, Keras's with numerically stable synchronised
statistics.
"""

from typing import Any, Mapping, Optional

import tensorflow as tf
import tf_keras


@tf_keras.utils.register_keras_serializable(package='Vision')
class ChannelAttention(tf_keras.layers.Layer):
  """CBAM channel attention with a shared two-layer MLP."""

  def __init__(self,
               reduction_ratio: int = 16,
               kernel_initializer: str = 'VarianceScaling',
               kernel_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               bias_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               **kwargs):
    super().__init__(**kwargs)
    if reduction_ratio < 1:
      raise ValueError(f'reduction_ratio must be >= 1, got {reduction_ratio}.')
    self._reduction_ratio = reduction_ratio
    self._kernel_initializer = kernel_initializer
    self._kernel_regularizer = kernel_regularizer
    self._bias_regularizer = bias_regularizer

  def build(self, input_shape):
    channels = int(input_shape[-1])
    hidden = max(1, channels // self._reduction_ratio)
    common = dict(
        kernel_size=1,
        use_bias=True,
        kernel_initializer=self._kernel_initializer,
        kernel_regularizer=self._kernel_regularizer,
        bias_regularizer=self._bias_regularizer)
    self._squeeze = tf_keras.layers.Conv2D(
        hidden, activation='relu', name='squeeze', **common)
    self._excite = tf_keras.layers.Conv2D(channels, name='excite', **common)
    pooled_shape = tf.TensorShape([input_shape[0], 1, 1, channels])
    self._squeeze.build(pooled_shape)
    self._excite.build(pooled_shape[:-1].concatenate([hidden]))
    super().build(input_shape)

  def call(self, inputs):
    avg = tf.reduce_mean(inputs, axis=[1, 2], keepdims=True)
    mx = tf.reduce_max(inputs, axis=[1, 2], keepdims=True)
    attention = tf.sigmoid(
        self._excite(self._squeeze(avg)) + self._excite(self._squeeze(mx)))
    return inputs * tf.cast(attention, inputs.dtype)

  def get_config(self) -> Mapping[str, Any]:
    config = {
        'reduction_ratio': self._reduction_ratio,
        'kernel_initializer': self._kernel_initializer,
        'kernel_regularizer': self._kernel_regularizer,
        'bias_regularizer': self._bias_regularizer,
    }
    return dict(list(super().get_config().items()) + list(config.items()))


@tf_keras.utils.register_keras_serializable(package='Vision')
class SpatialAttention(tf_keras.layers.Layer):
  """CBAM spatial attention: a kxk conv over channel-wise mean and max."""

  def __init__(self,
               kernel_size: int = 7,
               kernel_initializer: str = 'VarianceScaling',
               kernel_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               bias_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               **kwargs):
    super().__init__(**kwargs)
    self._kernel_size = kernel_size
    self._kernel_initializer = kernel_initializer
    self._kernel_regularizer = kernel_regularizer
    self._bias_regularizer = bias_regularizer

  def build(self, input_shape):
    self._conv = tf_keras.layers.Conv2D(
        1,
        self._kernel_size,
        padding='same',
        use_bias=True,
        kernel_initializer=self._kernel_initializer,
        kernel_regularizer=self._kernel_regularizer,
        bias_regularizer=self._bias_regularizer,
        name='conv')
    self._conv.build(tf.TensorShape(input_shape)[:-1].concatenate([2]))
    super().build(input_shape)

  def call(self, inputs):
    pooled = tf.concat([
        tf.reduce_mean(inputs, axis=-1, keepdims=True),
        tf.reduce_max(inputs, axis=-1, keepdims=True)
    ], axis=-1)
    attention = tf.sigmoid(self._conv(pooled))
    return inputs * tf.cast(attention, inputs.dtype)

  def get_config(self) -> Mapping[str, Any]:
    config = {
        'kernel_size': self._kernel_size,
        'kernel_initializer': self._kernel_initializer,
        'kernel_regularizer': self._kernel_regularizer,
        'bias_regularizer': self._bias_regularizer,
    }
    return dict(list(super().get_config().items()) + list(config.items()))


_NATIVE_GROUPED_CONV = None


def native_grouped_conv_supported() -> bool:
  """Whether this CPU build runs a grouped `Conv2D` op and its gradients.

  TensorFlow's oneDNN kernels (on by default on x86 Linux) do; the plain
  Eigen kernels do not. Probed once, eagerly, on a tiny input.
  """
  global _NATIVE_GROUPED_CONV
  if _NATIVE_GROUPED_CONV is None:
    # Eagerly (init_scope also stops gradient tapes: the backprop ops are
    # called directly). Ones in, 2 groups of 2 channels, a 3x3 map: every
    # sum is 2 channels x 49 (valid 3x3 neighbourhoods) x 4 channels.
    with tf.init_scope(), tf.device('cpu:0'):
      try:
        x = tf.ones([1, 3, 3, 4])
        kernel = tf.ones([3, 3, 2, 4])
        y = tf.nn.conv2d(x, kernel, 1, 'SAME')
        strides = [1, 1, 1, 1]
        dx = tf.raw_ops.Conv2DBackpropInput(
            input_sizes=[1, 3, 3, 4], filter=kernel, out_backprop=y * 0 + 1,
            strides=strides, padding='SAME')
        dk = tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=[3, 3, 2, 4], out_backprop=y * 0 + 1,
            strides=strides, padding='SAME')
        _NATIVE_GROUPED_CONV = all(
            float(tf.reduce_sum(t)) == 392. for t in (y, dx, dk))
      except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError,
              tf.errors.NotFoundError):
        _NATIVE_GROUPED_CONV = False
  return _NATIVE_GROUPED_CONV


@tf_keras.utils.register_keras_serializable(package='Vision')
class GroupedConv2D(tf_keras.layers.Conv2D):
  """`Conv2D` with `groups > 1` that stays fast without a GPU.

  On CPU, tf_keras runs a grouped conv through an XLA-compiled function
  whose gradient is very slow (about 50x a dense conv of the same size).
  Without a GPU this layer instead runs the plain grouped `Conv2D` op when
  the CPU kernels support it (oneDNN, TensorFlow's default on x86), and
  otherwise one convolution per group on split inputs and kernels. Either
  way it is the same math with the same (single) kernel variable and
  checkpoint layout as `Conv2D(groups=G)`. With a GPU it is `Conv2D`.

  Measured on a 2-core Xeon (AVX-512), RegNetX-4.0GF's grouped 3x3 convs
  at a 640x640 input: the grouped op is 10-25% faster than per-group convs
  forward and 2-20% forward + backward, and 20-190x faster than XLA's
  (`benchmarks/grouped_conv.py`).
  """

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._mode = 'keras'
    if self.groups > 1 and not tf.config.list_physical_devices('GPU'):
      self._mode = 'native' if native_grouped_conv_supported() else 'split'

  @property
  def mode(self) -> str:
    """'native' (one grouped op), 'split' (per group) or 'keras'."""
    return self._mode

  def _jit_compiled_convolution_op(self, inputs, kernel):
    if self._mode == 'native':
      return self.convolution_op(inputs, kernel)
    if self._mode == 'split':
      inputs = tf.split(inputs, self.groups, axis=-1)
      kernels = tf.split(kernel, self.groups, axis=-1)
      return tf.concat([self.convolution_op(x, k)
                        for x, k in zip(inputs, kernels)], axis=-1)
    return super()._jit_compiled_convolution_op(inputs, kernel)


@tf_keras.utils.register_keras_serializable(package='Vision')
class BatchNormalization(tf_keras.layers.BatchNormalization):
  """Keras's BatchNormalization with stable synchronised statistics.

  With `synchronized=True` and several replicas, Keras computes the batch
  variance as E[x^2] - E[x]^2 from all-reduced sums, which loses digits
  when the mean is large against the spread (35 times the error of
  `tf.nn.moments` on activations of mean 1 and std 0.05), so split and
  whole batches normalise differently. This one all-reduces the sum, then
  the sum of squared deviations from the global mean (two all-reduces
  instead of one); with one replica (or none), `tf.nn.moments`. Masks and
  everything else are Keras's.
  """

  def _sync_calculate_mean_and_var(self, x, reduction_axes, keep_dims,
                                   mask=None):
    context = tf.distribute.get_replica_context()
    if mask is not None or context is None:
      return super()._sync_calculate_mean_and_var(
          x, reduction_axes, keep_dims, mask=mask)
    if context.num_replicas_in_sync == 1:
      return self._no_sync_calculate_mean_and_var(x, reduction_axes,
                                                  keep_dims)
    with tf.name_scope('moments'):
      y = tf.cast(x, tf.float32) if x.dtype == tf.float16 else x
      total = lambda v: context.all_reduce(  # pylint: disable=g-long-lambda
          tf.distribute.ReduceOp.SUM,
          tf.reduce_sum(v, axis=reduction_axes, keepdims=True))
      shape = tf.shape(y)
      count = context.all_reduce(
          tf.distribute.ReduceOp.SUM,
          tf.cast(tf.reduce_prod([shape[a] for a in reduction_axes]),
                  y.dtype))
      mean = total(y) / count
      variance = total(
          tf.math.squared_difference(y, tf.stop_gradient(mean))) / count
      if not keep_dims:
        mean = tf.squeeze(mean, reduction_axes)
        variance = tf.squeeze(variance, reduction_axes)
      return tf.cast(mean, x.dtype), tf.cast(variance, x.dtype)
