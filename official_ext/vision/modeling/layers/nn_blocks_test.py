"""Tests for official_ext.vision.modeling.layers.nn_blocks."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tf_keras

from official_ext.vision.modeling.layers import nn_blocks
from official_ext.vision.modeling.layers import nn_layers


def _count(variables):
  return int(sum(np.prod(v.shape) for v in variables))


def _bn_layers(block):
  norms = [block._norm1, block._norm2, block._norm3]
  if block._config_dict['use_projection']:
    norms.append(block._shortcut_norm)
  return norms


def _moving_stats(block):
  return [v.numpy().copy() for n in _bn_layers(block)
          for v in (n.moving_mean, n.moving_variance)]


class GroupedBottleneckBlockTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      # in, out, bottleneck, strides, groups, projection, attention, expected
      (16, 32, 16, 2, 2, True, False, (2, 8, 8, 32)),
      (16, 32, 16, 1, 2, True, True, (2, 16, 16, 32)),
      (32, 32, 16, 1, 1, False, False, (2, 16, 16, 32)),
      (32, 32, 16, 1, 4, False, True, (2, 16, 16, 32)),
      (16, 64, 16, 2, 1, True, True, (2, 8, 8, 64)),
  )
  def test_output_shape(self, in_filters, out_filters, bottleneck, strides,
                        groups, use_projection, attention, expected):
    block = nn_blocks.GroupedBottleneckBlock(
        out_filters=out_filters, bottleneck_filters=bottleneck,
        strides=strides, groups=groups, use_projection=use_projection,
        channel_attention=attention)
    x = tf.random.normal([2, 16, 16, in_filters], seed=1)
    y = block(x, training=False)
    self.assertEqual(tuple(y.shape), expected)
    # Output of a final ReLU.
    self.assertGreaterEqual(float(tf.reduce_min(y)), 0.)
    self.assertEqual(tuple(block._conv2.kernel.shape),
                     (3, 3, bottleneck // groups, bottleneck))
    self.assertEqual(block._conv2.strides, (strides, strides))
    self.assertEqual(block._attention is not None, attention)
    self.assertEqual(hasattr(block, '_shortcut'), use_projection)

  def test_bottleneck_not_multiple_of_groups(self):
    with self.assertRaisesRegex(ValueError, 'multiple of groups'):
      nn_blocks.GroupedBottleneckBlock(32, 18, groups=4)

  def test_param_count_by_hand(self):
    block = nn_blocks.GroupedBottleneckBlock(
        out_filters=32, bottleneck_filters=16, strides=2, groups=2,
        use_projection=True, channel_attention=True, attention_reduction=16)
    block(tf.zeros([1, 8, 8, 16]))
    # shortcut 1x1 16->32 (no bias):            16*32       =  512
    # shortcut BN gamma+beta (32 ch):           2*32        =   64
    # conv1 1x1 16->16:                         16*16       =  256
    # norm1 gamma+beta:                         2*16        =   32
    # conv2 3x3 grouped, 2 groups of 8->8:      3*3*8*16    = 1152
    # norm2 gamma+beta:                         2*16        =   32
    # conv3 1x1 16->32:                         16*32       =  512
    # norm3 gamma+beta:                         2*32        =   64
    # channel attention 32 ch, r=16 (hidden 2): 32*2+2+2*32+32 = 162
    # trainable total                                         = 2786
    # BN moving mean+var: 2*(32+16+16+32)                     =  192
    self.assertEqual(_count(block.trainable_weights), 2786)
    self.assertEqual(_count(block.non_trainable_weights), 192)
    self.assertEqual(block.count_params(), 2978)
    self.assertIsInstance(block._attention, nn_layers.ChannelAttention)
    self.assertEqual(_count(block._attention.weights), 162)

  def test_zero_residual_branch_gives_relu_of_shortcut(self):
    # Identity shortcut: with norm3's gamma = beta = 0 the residual branch is
    # zero, so the block computes relu(x) exactly.
    block = nn_blocks.GroupedBottleneckBlock(
        out_filters=8, bottleneck_filters=4, groups=2, channel_attention=True,
        attention_reduction=2)
    x = tf.random.normal([1, 6, 6, 8], seed=3)
    block(x)
    block._norm3.gamma.assign(tf.zeros([8]))
    block._norm3.beta.assign(tf.zeros([8]))
    self.assertAllClose(block(x, training=False), tf.nn.relu(x), atol=1e-6)

  def test_projection_shortcut_numpy(self):
    # Projected shortcut, zero residual branch and fresh BN statistics (mean
    # 0, var 1): out = relu(conv1x1_stride2(x) / sqrt(1 + eps)).
    eps = 1e-3
    block = nn_blocks.GroupedBottleneckBlock(
        out_filters=6, bottleneck_filters=4, strides=2, groups=2,
        use_projection=True, norm_epsilon=eps)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    block(x)
    block._norm3.gamma.assign(tf.zeros([6]))
    w = block._shortcut.kernel.numpy()[0, 0]  # [3, 6]
    expected = np.maximum(x[:, ::2, ::2, :] @ w / np.sqrt(1. + eps), 0.)
    self.assertAllClose(block(x, training=False), expected, atol=1e-5)

  @parameterized.parameters(True, False)
  def test_norm_eval(self, norm_eval):
    block = nn_blocks.GroupedBottleneckBlock(
        out_filters=16, bottleneck_filters=8, strides=2, groups=2,
        use_projection=True, norm_eval=norm_eval, norm_momentum=0.5)
    x = tf.random.normal([2, 8, 8, 8], mean=1.5, stddev=2., seed=4)
    y_inference = block(x, training=False)
    before = _moving_stats(block)
    # Fresh statistics: means 0, variances 1.
    for i in range(0, len(before), 2):
      self.assertAllEqual(before[i], np.zeros_like(before[i]))
      self.assertAllEqual(before[i + 1], np.ones_like(before[i + 1]))
    y_train = block(x, training=True)
    after = _moving_stats(block)
    if norm_eval:
      for b, a in zip(before, after):
        self.assertAllEqual(a, b)
      # BN stays in inference mode, so training=True changes nothing.
      self.assertAllClose(y_train, y_inference, atol=0, rtol=0)
      # gamma and beta remain trainable.
      # 4 conv kernels + gamma and beta of 4 BNs.
      self.assertLen(block.trainable_weights, 4 + 2 * 4)
    else:
      for b, a in zip(before, after):
        self.assertGreater(np.max(np.abs(a - b)), 1e-3)
      # E.g. the shortcut norm's moving mean moved halfway (momentum 0.5) to
      # the batch mean of the shortcut conv output.
      sc = block._shortcut(x).numpy()
      self.assertAllClose(block._shortcut_norm.moving_mean.numpy(),
                          0.5 * sc.mean(axis=(0, 1, 2)), atol=1e-5)
      self.assertGreater(float(tf.reduce_max(tf.abs(y_train - y_inference))),
                         1e-3)

  def test_config_round_trip(self):
    block = nn_blocks.GroupedBottleneckBlock(
        out_filters=32, bottleneck_filters=16, strides=2, groups=2,
        use_projection=True, channel_attention=True, attention_reduction=8,
        activation='swish', norm_momentum=0.97, norm_epsilon=1e-3,
        norm_eval=True, name='blk')
    config = block.get_config()
    for key, value in dict(out_filters=32, bottleneck_filters=16, strides=2,
                           groups=2, use_projection=True,
                           channel_attention=True, attention_reduction=8,
                           activation='swish', norm_momentum=0.97,
                           norm_epsilon=1e-3, norm_eval=True,
                           name='blk').items():
      self.assertEqual(config[key], value, key)
    new_block = nn_blocks.GroupedBottleneckBlock.from_config(config)
    self.assertAllEqual(new_block.get_config(), config)
    x = tf.random.normal([1, 8, 8, 16], seed=5)
    block(x)
    new_block(x)
    new_block.set_weights(block.get_weights())
    self.assertAllClose(new_block(x, training=False),
                        block(x, training=False), atol=0, rtol=0)


class BottleneckStageTest(tf.test.TestCase, parameterized.TestCase):

  def _blocks(self, model):
    return [l for l in model.layers
            if isinstance(l, nn_blocks.GroupedBottleneckBlock)]

  def test_strided_stage(self):
    inputs = tf_keras.Input([16, 16, 16])
    outputs = nn_blocks.bottleneck_stage(
        inputs, num_blocks=3, out_filters=32, bottleneck_filters=16,
        strides=2, groups=2, name='s1')
    self.assertEqual(outputs.shape.as_list(), [None, 8, 8, 32])
    model = tf_keras.Model(inputs, outputs)
    blocks = self._blocks(model)
    self.assertEqual([b.name for b in blocks],
                     ['s1_block0', 's1_block1', 's1_block2'])
    self.assertEqual([b._config_dict['strides'] for b in blocks], [2, 1, 1])
    self.assertEqual([b._config_dict['use_projection'] for b in blocks],
                     [True, False, False])
    self.assertEqual([b._config_dict['groups'] for b in blocks], [2, 2, 2])
    # block0 trainable: 512+64+256+32+1152+32+512+64 = 2624 (see above, no
    # attention); block1/2 (in 32): 32*16+32+1152+32+16*32+64 = 2304 each.
    self.assertEqual(_count(model.trainable_weights), 2624 + 2 * 2304)
    y = model(tf.random.normal([2, 16, 16, 16], seed=6), training=False)
    self.assertEqual(tuple(y.shape), (2, 8, 8, 32))

  @parameterized.parameters((16, 16, False), (8, 16, True), (16, 32, True))
  def test_projection_rule_stride1(self, in_filters, out, expect_projection):
    # Stride 1: project only when the width changes.
    inputs = tf_keras.Input([8, 8, in_filters])
    outputs = nn_blocks.bottleneck_stage(
        inputs, 2, out, 8, strides=1, groups=1, name='s',
        channel_attention=True, norm_eval=True)
    model = tf_keras.Model(inputs, outputs)
    blocks = self._blocks(model)
    self.assertEqual(outputs.shape.as_list(), [None, 8, 8, out])
    self.assertEqual(blocks[0]._config_dict['use_projection'],
                     expect_projection)
    self.assertFalse(blocks[1]._config_dict['use_projection'])
    # block_kwargs are forwarded to every block.
    for b in blocks:
      self.assertTrue(b._config_dict['channel_attention'])
      self.assertTrue(b._config_dict['norm_eval'])


if __name__ == '__main__':
  tf.test.main()
