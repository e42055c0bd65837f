"""Tests for official_ext.vision.modeling.decoders.dilated_encoder."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from configs import unipercepnet
from official.vision.modeling.decoders import factory
from official_ext.vision.modeling.decoders import dilated_encoder


def _count(variables):
  return int(sum(np.prod(v.shape) for v in variables))


def _np_conv_same(x, kernel, dilation=1):
  """Stride-1 'same' zero-padded (dilated) conv, odd kernel, no bias."""
  k = kernel.shape[0]
  pad = dilation * (k - 1) // 2
  _, h, w, _ = x.shape
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  out = 0.
  for i in range(k):
    for j in range(k):
      patch = xp[:, i * dilation:i * dilation + h,
                 j * dilation:j * dilation + w, :]
      out = out + np.einsum('bhwc,co->bhwo', patch, kernel[i, j])
  return out


def _np_bn(x, norm):
  gamma, beta, mean, var = [v.numpy().astype(np.float64)
                            for v in norm.weights]
  return gamma * (x - mean) / np.sqrt(var + norm.epsilon) + beta


def _randomize_bn(norm, rng):
  n = norm.gamma.shape[0]
  norm.gamma.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
  norm.beta.assign(rng.normal(size=n).astype(np.float32) * 0.5)
  norm.moving_mean.assign(rng.normal(size=n).astype(np.float32) * 0.1)
  norm.moving_variance.assign(rng.uniform(0.5, 2., n).astype(np.float32))


class DilatedResidualBlockTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(1, 2, 3)
  def test_matches_numpy(self, dilation):
    rng = np.random.default_rng(dilation)
    block = dilated_encoder.DilatedResidualBlock(
        bottleneck_filters=3, dilation_rate=dilation, norm_epsilon=1e-3)
    x = rng.normal(size=(2, 7, 6, 4)).astype(np.float32)
    block(x)
    self.assertEqual(block._convs[1].dilation_rate, (dilation, dilation))
    self.assertEqual([tuple(c.kernel.shape) for c in block._convs],
                     [(1, 1, 4, 3), (3, 3, 3, 3), (1, 1, 3, 4)])
    for norm in block._norms:
      _randomize_bn(norm, rng)
    # Scale the kernels up so that the residual branch matters.
    for conv in block._convs:
      conv.kernel.assign(conv.kernel * 50.)
    y = x.astype(np.float64)
    for conv, norm in zip(block._convs, block._norms):
      y = np.maximum(_np_bn(_np_conv_same(
          y, conv.kernel.numpy().astype(np.float64), conv.dilation_rate[0]),
                            norm), 0.)
    expected = x + y
    self.assertGreater(np.abs(y).max(), 0.1)
    self.assertAllClose(block(x, training=False), expected, atol=1e-4,
                        rtol=1e-4)

  def test_zero_branch_is_identity(self):
    block = dilated_encoder.DilatedResidualBlock(4, 2)
    x = tf.random.normal([1, 5, 5, 8], seed=0)
    block(x)
    block._norms[2].gamma.assign(tf.zeros([8]))
    self.assertAllClose(block(x, training=False), x, atol=0, rtol=0)

  def test_config_round_trip(self):
    block = dilated_encoder.DilatedResidualBlock(
        bottleneck_filters=4, dilation_rate=6, activation='swish',
        norm_momentum=0.97, norm_epsilon=1e-3, name='drb')
    config = block.get_config()
    for key, value in dict(bottleneck_filters=4, dilation_rate=6,
                           activation='swish', norm_momentum=0.97,
                           norm_epsilon=1e-3, name='drb').items():
      self.assertEqual(config[key], value, key)
    new_block = dilated_encoder.DilatedResidualBlock.from_config(config)
    self.assertAllEqual(new_block.get_config(), config)
    x = tf.random.normal([1, 8, 8, 6], seed=1)
    block(x)
    new_block(x)
    self.assertEqual(new_block._convs[1].dilation_rate, (6, 6))
    new_block.set_weights(block.get_weights())
    self.assertAllClose(new_block(x, training=False),
                        block(x, training=False), atol=0, rtol=0)


class DilatedEncoderTest(tf.test.TestCase, parameterized.TestCase):

  def _small(self, **kwargs):
    return dilated_encoder.DilatedEncoder(
        input_specs={'5': tf.TensorShape([None, 4, 4, 64])}, num_filters=32,
        bottleneck_filters=8, dilation_rates=[2, 4], **kwargs)

  def test_output_shape_and_params(self):
    model = self._small()
    self.assertEqual(model.output_specs['5'].as_list(), [None, 4, 4, 32])
    out = model({'5': tf.random.normal([2, 4, 4, 64], seed=2)},
                training=False)
    self.assertEqual(sorted(out), ['5'])
    self.assertEqual(out['5'].shape.as_list(), [2, 4, 4, 32])
    # lateral 1x1 64->32 + bias:       64*32 + 32       = 2080
    # lateral BN gamma/beta:           2*32             =   64
    # fpn 3x3 32->32 + bias:           9*32*32 + 32     = 9248
    # fpn BN gamma/beta:               2*32             =   64
    # per dilated block: 32*8 + 9*8*8 + 8*32 = 1088 conv (no bias)
    #                    + 2*(8+8+32) = 96 BN gamma/beta -> 1184; 2 blocks.
    # trainable: 2080 + 64 + 9248 + 64 + 2*1184          = 13824
    # BN moving stats: 2*32 + 2*32 + 2*2*(8+8+32)        =   320
    self.assertEqual(_count(model.trainable_weights), 13_824)
    self.assertEqual(_count(model.non_trainable_weights), 320)
    self.assertEqual(model.count_params(), 14_144)
    blocks = [l for l in model.layers
              if isinstance(l, dilated_encoder.DilatedResidualBlock)]
    self.assertEqual([b._config_dict['dilation_rate'] for b in blocks],
                     [2, 4])

  def test_missing_level(self):
    with self.assertRaisesRegex(ValueError, 'level'):
      dilated_encoder.DilatedEncoder(
          input_specs={'4': tf.TensorShape([None, 8, 8, 64])}, level='5')

  def test_integer_level_accepted(self):
    model = dilated_encoder.DilatedEncoder(
        input_specs={'5': tf.TensorShape([None, 4, 4, 16])}, level=5,
        num_filters=8, bottleneck_filters=4, dilation_rates=[2])
    self.assertEqual(model.get_config()['level'], '5')
    self.assertEqual(model.output_specs['5'].as_list(), [None, 4, 4, 8])

  def test_config_round_trip(self):
    model = self._small(norm_momentum=0.97)
    config = model.get_config()
    self.assertEqual(config['dilation_rates'], [2, 4])
    new_model = dilated_encoder.DilatedEncoder.from_config(config)
    new_model.set_weights(model.get_weights())
    x = {'5': tf.random.normal([1, 4, 4, 64], seed=3)}
    self.assertAllClose(new_model(x, training=False)['5'],
                        model(x, training=False)['5'], atol=1e-6)

  def test_factory_default_neck(self):
    model_config = unipercepnet.UniPercepNet()
    self.assertEqual(model_config.decoder.type, 'dilated_encoder')
    # RegNetX-4.0GF C5 has 1360 channels.
    input_specs = {'5': tf.TensorShape([None, 4, 4, 1360])}
    model = factory.build_decoder(input_specs, model_config)
    self.assertIsInstance(model, dilated_encoder.DilatedEncoder)
    config = model.get_config()
    self.assertEqual(config['num_filters'], 512)
    self.assertEqual(config['bottleneck_filters'], 128)
    self.assertEqual(config['dilation_rates'], [2, 4, 6, 8])
    self.assertEqual(config['norm_epsilon'], 1e-5)
    self.assertEqual(model.output_specs['5'].as_list(), [None, 4, 4, 512])
    # lateral 1360*512 + 512 = 696,832; fpn 9*512*512 + 512 = 2,359,808;
    # 2 BNs 2*2*512 = 2,048; 4 blocks of 512*128 + 9*128*128 + 128*512 +
    # 2*(128+128+512) = 280,064 -> 1,120,256. Trainable 4,178,944; plus BN
    # moving statistics 8,192 -> 4,187,136 weights in all.
    self.assertEqual(_count(model.trainable_weights), 4_178_944)
    self.assertEqual(model.count_params(), 4_187_136)

  def test_factory_rejects_other_type(self):
    model_config = unipercepnet.UniPercepNet()
    model_config.decoder.type = 'fpn'
    with self.assertRaises(ValueError):
      dilated_encoder.build_dilated_encoder(
          {'5': tf.TensorShape([None, 4, 4, 64])}, model_config)


if __name__ == '__main__':
  tf.test.main()
