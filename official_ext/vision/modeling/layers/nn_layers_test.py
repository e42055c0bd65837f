"""Tests for official_ext.vision.modeling.layers.nn_layers."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tf_keras

from official_ext.vision.modeling.layers import nn_layers


def _sigmoid(v):
  return 1. / (1. + np.exp(-v))


def _np_channel_attention(x, w1, b1, w2, b2):
  """x: [B, H, W, C]; w1: [C, C/r]; w2: [C/r, C]."""
  def mlp(v):  # v: [B, C]
    return np.maximum(v @ w1 + b1, 0.) @ w2 + b2
  avg = x.mean(axis=(1, 2))
  mx = x.max(axis=(1, 2))
  att = _sigmoid(mlp(avg) + mlp(mx))
  return x * att[:, None, None, :]


def _np_conv2d_same(x, kernel, bias):
  """Stride-1 'same' zero-padded conv. x: [B,H,W,Ci]; kernel: [k,k,Ci,Co]."""
  k = kernel.shape[0]
  pad = (k - 1) // 2
  b, h, w, _ = x.shape
  xp = np.pad(x, ((0, 0), (pad, k - 1 - pad), (pad, k - 1 - pad), (0, 0)))
  out = np.zeros((b, h, w, kernel.shape[-1]), dtype=np.float64)
  for i in range(k):
    for j in range(k):
      out += np.einsum('bhwc,co->bhwo', xp[:, i:i + h, j:j + w, :],
                       kernel[i, j])
  return out + bias


def _np_spatial_attention(x, kernel, bias):
  pooled = np.concatenate(
      [x.mean(axis=-1, keepdims=True), x.max(axis=-1, keepdims=True)], axis=-1)
  return x * _sigmoid(_np_conv2d_same(pooled, kernel, bias))


def _num_params(layer):
  return int(sum(np.prod(v.shape) for v in layer.weights))


class ChannelAttentionTest(tf.test.TestCase, parameterized.TestCase):

  def test_param_count_and_weight_shapes(self):
    layer = nn_layers.ChannelAttention(reduction_ratio=16)
    layer.build([None, 8, 8, 64])
    # squeeze: 64*4 + 4 (bias); excite: 4*64 + 64 (bias) -> 580.
    self.assertEqual(_num_params(layer), 2 * 64 * 4 + 4 + 64)
    self.assertEqual(_num_params(layer), 580)
    self.assertEqual(layer._squeeze.kernel.shape, (1, 1, 64, 4))
    self.assertEqual(layer._squeeze.bias.shape, (4,))
    self.assertEqual(layer._excite.kernel.shape, (1, 1, 4, 64))
    self.assertEqual(layer._excite.bias.shape, (64,))

  def test_hidden_width_at_least_one(self):
    layer = nn_layers.ChannelAttention(reduction_ratio=16)
    layer.build([None, 4, 4, 8])  # 8 // 16 == 0 -> 1 hidden unit.
    self.assertEqual(layer._squeeze.kernel.shape, (1, 1, 8, 1))
    # 8*1 + 1 + 1*8 + 8
    self.assertEqual(_num_params(layer), 25)

  def test_invalid_reduction_ratio(self):
    with self.assertRaises(ValueError):
      nn_layers.ChannelAttention(reduction_ratio=0)

  @parameterized.parameters((64, 16), (32, 4))
  def test_matches_numpy(self, channels, ratio):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 5, channels)).astype(np.float32)
    layer = nn_layers.ChannelAttention(reduction_ratio=ratio)
    layer(x)
    hidden = channels // ratio
    # Random non-zero biases so that their use is checked too.
    layer._squeeze.bias.assign(rng.normal(size=hidden).astype(np.float32))
    layer._excite.bias.assign(rng.normal(size=channels).astype(np.float32))
    out = layer(x).numpy()
    w1 = layer._squeeze.kernel.numpy()[0, 0].astype(np.float64)
    b1 = layer._squeeze.bias.numpy().astype(np.float64)
    w2 = layer._excite.kernel.numpy()[0, 0].astype(np.float64)
    b2 = layer._excite.bias.numpy().astype(np.float64)
    self.assertTrue(np.all(b1 != 0) and np.all(b2 != 0))
    expected = _np_channel_attention(x.astype(np.float64), w1, b1, w2, b2)
    self.assertEqual(out.shape, x.shape)
    self.assertAllClose(out, expected, rtol=1e-5, atol=1e-5)
    # The attention really varies per channel (not a constant gate).
    ratio_map = out[0, 0, 0] / x[0, 0, 0]
    self.assertGreater(np.ptp(ratio_map), 1e-3)

  def test_known_gate_value(self):
    # Zero kernels: attention = sigmoid(2 * b2) for every channel.
    layer = nn_layers.ChannelAttention(reduction_ratio=2)
    x = np.ones((1, 2, 2, 4), np.float32)
    layer(x)
    layer._squeeze.kernel.assign(np.zeros((1, 1, 4, 2), np.float32))
    layer._excite.kernel.assign(np.zeros((1, 1, 2, 4), np.float32))
    layer._excite.bias.assign(np.array([0., 1., -1., 0.5], np.float32))
    out = layer(x).numpy()
    expected = _sigmoid(2 * np.array([0., 1., -1., 0.5]))
    self.assertAllClose(out[0, 1, 1], expected, atol=1e-6)
    self.assertAllClose(out[0, 0, 0, 0], 0.5, atol=1e-7)

  def test_config_round_trip(self):
    layer = nn_layers.ChannelAttention(reduction_ratio=8, name='ca')
    x = np.random.default_rng(1).normal(size=(1, 4, 4, 32)).astype(np.float32)
    layer(x)
    layer._excite.bias.assign(np.linspace(-1, 1, 32).astype(np.float32))
    config = layer.get_config()
    self.assertEqual(config['reduction_ratio'], 8)
    self.assertEqual(config['kernel_initializer'], 'VarianceScaling')
    new_layer = nn_layers.ChannelAttention.from_config(config)
    self.assertAllEqual(new_layer.get_config(), config)
    new_layer(x)
    new_layer.set_weights(layer.get_weights())
    self.assertAllClose(new_layer(x), layer(x), atol=0, rtol=0)
    # Also through Keras' registry.
    revived = tf_keras.layers.deserialize(
        tf_keras.layers.serialize(layer))
    self.assertIsInstance(revived, nn_layers.ChannelAttention)
    self.assertEqual(revived.get_config()['reduction_ratio'], 8)


class SpatialAttentionTest(tf.test.TestCase, parameterized.TestCase):

  def test_param_count(self):
    layer = nn_layers.SpatialAttention(kernel_size=7)
    layer.build([None, 16, 16, 8])
    # 7*7*2 kernel + 1 bias.
    self.assertEqual(_num_params(layer), 7 * 7 * 2 + 1)
    self.assertEqual(_num_params(layer), 99)
    self.assertEqual(layer._conv.kernel.shape, (7, 7, 2, 1))

  @parameterized.parameters((7, (2, 9, 11, 5)), (3, (1, 8, 8, 3)))
  def test_matches_numpy(self, kernel_size, shape):
    rng = np.random.default_rng(2)
    x = rng.normal(size=shape).astype(np.float32)
    layer = nn_layers.SpatialAttention(kernel_size=kernel_size)
    layer(x)
    layer._conv.bias.assign(np.array([0.3], np.float32))
    out = layer(x).numpy()
    kernel = layer._conv.kernel.numpy().astype(np.float64)
    expected = _np_spatial_attention(x.astype(np.float64), kernel,
                                     np.array([0.3]))
    self.assertEqual(out.shape, x.shape)
    self.assertAllClose(out, expected, rtol=1e-5, atol=1e-5)

  def test_zero_padding_at_border(self):
    # Kernel weights only on the top-left tap (offset -3,-3) of the mean
    # channel: the gate at pixel (i, j) is sigmoid(mean(x[i-3, j-3])) or
    # sigmoid(0) = 0.5 where that tap falls in the zero padding.
    layer = nn_layers.SpatialAttention(kernel_size=7)
    x = np.full((1, 8, 8, 2), 2., np.float32)
    layer(x)
    kernel = np.zeros((7, 7, 2, 1), np.float32)
    kernel[0, 0, 0, 0] = 1.
    layer._conv.kernel.assign(kernel)
    layer._conv.bias.assign([0.])
    out = layer(x).numpy()[0, :, :, 0]
    self.assertAllClose(out[:3, :], np.full((3, 8), 2. * 0.5))
    self.assertAllClose(out[:, :3], np.full((8, 3), 2. * 0.5))
    self.assertAllClose(out[3:, 3:], np.full((5, 5), 2. * _sigmoid(2.)))

  def test_config_round_trip(self):
    layer = nn_layers.SpatialAttention(kernel_size=5, name='sa')
    x = np.random.default_rng(3).normal(size=(1, 6, 6, 4)).astype(np.float32)
    layer(x)
    layer._conv.bias.assign([-0.7])
    config = layer.get_config()
    self.assertEqual(config['kernel_size'], 5)
    new_layer = nn_layers.SpatialAttention.from_config(config)
    new_layer(x)
    self.assertEqual(new_layer._conv.kernel.shape, (5, 5, 2, 1))
    new_layer.set_weights(layer.get_weights())
    self.assertAllClose(new_layer(x), layer(x), atol=0, rtol=0)


class GroupedConv2DTest(tf.test.TestCase):

  def test_matches_keras_grouped_conv_and_its_gradient(self):
    x = tf.constant(np.random.default_rng(4).normal(size=(2, 9, 9, 12)),
                    tf.float32)
    kwargs = dict(filters=8, kernel_size=3, strides=2, groups=4,
                  padding='same', use_bias=False)
    reference = tf_keras.layers.Conv2D(**kwargs)
    layer = nn_layers.GroupedConv2D(**kwargs)
    reference(x)
    layer(x)
    self.assertEqual(layer.kernel.shape, (3, 3, 3, 8))
    # No GPU here: the grouped op where oneDNN runs it, else per group.
    self.assertEqual(layer.mode, 'native' if
                     nn_layers.native_grouped_conv_supported() else 'split')
    layer.kernel.assign(reference.kernel)
    grads = []
    for conv in (reference, layer):
      with tf.GradientTape() as tape:
        tape.watch(x)
        y = conv(x)
        loss = tf.reduce_sum(y * y)
      grads.append((y,) + tuple(tape.gradient(loss, [x, conv.kernel])))
    for a, b in zip(*grads):
      self.assertAllClose(a, b, atol=1e-4, rtol=1e-4)
    # Channel 0 of the output reads only the first group's 3 input channels.
    y = layer(tf.concat([tf.zeros([2, 9, 9, 3]), x[..., 3:]], -1))
    self.assertAllClose(y[..., :2], tf.zeros([2, 5, 5, 2]))

  def test_split_and_native_modes_agree(self):
    x = tf.constant(np.random.default_rng(5).normal(size=(1, 7, 7, 12)),
                    tf.float32)
    layer = nn_layers.GroupedConv2D(filters=12, kernel_size=3, groups=3,
                                    padding='same', use_bias=False)
    layer(x)
    outputs = []
    for mode in ('split', layer.mode):
      layer._mode = mode
      outputs.append(layer(x))
    self.assertAllClose(outputs[0], outputs[1], atol=1e-5, rtol=1e-5)


# Run in a fresh process: the two logical CPU devices must exist before
# TensorFlow starts. Prints the largest error of each way of normalising a
# batch of 4 (mean 1, std 0.05) against float64, output and input gradient.
_SYNC_BN_SCRIPT = r"""
import numpy as np
import tensorflow as tf
import tf_keras
cpu = tf.config.list_physical_devices('CPU')[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from official_ext.vision.modeling.layers import nn_layers
x = (np.random.default_rng(0).standard_normal([4, 6, 6, 8]) * 0.05 +
     1.).astype(np.float32)
x64 = x.astype(np.float64)
mean, var = x64.mean((0, 1, 2)), x64.var((0, 1, 2))
want = (x64 - mean) / np.sqrt(var + 1e-3)
cot = np.random.default_rng(1).standard_normal(x.shape)  # d loss / d out.
# d/dx of sum(cot * bn(x)) in float64.
n = 4 * 6 * 6
want_grad = ((cot - cot.mean((0, 1, 2)) - want * (cot * want).mean(
    (0, 1, 2))) / np.sqrt(var + 1e-3))
def run(name, strategy, layer_cls, sync):
  with strategy.scope():
    bn = layer_cls(synchronized=sync, epsilon=1e-3)
    bn.build([None, 6, 6, 8])
  per = 4 // strategy.num_replicas_in_sync
  part = lambda a: strategy.experimental_distribute_values_from_function(
      lambda c: tf.constant(a[c.replica_id_in_sync_group * per:][:per]))
  @tf.function
  def step(t, c):
    with tf.GradientTape() as tape:
      tape.watch(t)
      y = bn(t, training=True)
      loss = tf.reduce_sum(y * c)
    return y, tape.gradient(loss, t)
  y, g = strategy.run(step, args=(part(x), part(cot.astype(np.float32))))
  y = np.concatenate(strategy.experimental_local_results(y))
  g = np.concatenate(strategy.experimental_local_results(g))
  print(name, np.abs(y - want).max(), np.abs(g - want_grad).max())
one = tf.distribute.OneDeviceStrategy('/cpu:0')
two = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
run('plain', one, nn_layers.BatchNormalization, False)
run('ours_one', one, nn_layers.BatchNormalization, True)
run('ours_two', two, nn_layers.BatchNormalization, True)
run('keras_two', two, tf_keras.layers.BatchNormalization, True)
"""


def test_sync_batch_norm_over_two_replicas_is_as_exact_as_one_device():
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.abspath(__file__))
  for _ in range(4):
    root = os.path.dirname(root)
  result = subprocess.run(
      [sys.executable, '-c', _SYNC_BN_SCRIPT], cwd=root, capture_output=True,
      text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  assert result.returncode == 0, result.stderr[-3000:]
  errors = {}
  for line in result.stdout.splitlines():
    name, out_err, grad_err = line.split()
    errors[name] = (float(out_err), float(grad_err))
  # Output and input gradient as exact as one device's (plain BN uses the
  # fused kernel, synchronised BN tf.nn.moments: both about 4e-6 here).
  for name in ('plain', 'ours_one', 'ours_two'):
    assert errors[name][0] < 1e-5 and errors[name][1] < 5e-5, errors
  # Keras's E[x^2] - E[x]^2 loses digits at this mean / spread (why
  # nn_layers.BatchNormalization exists): 9e-5 and 2e-3 here.
  assert errors['keras_two'][0] > 10 * errors['ours_two'][0], errors
  assert errors['keras_two'][1] > 10 * errors['ours_two'][1], errors

if __name__ == '__main__':
  tf.test.main()
