"""Tests for official_ext.vision.modeling.backbones.ca_resnet."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tf_keras

from official.vision.configs import common
from official.vision.modeling.backbones import factory
from official_ext.vision.configs import backbones as bcfg
from official_ext.vision.modeling.backbones import ca_resnet
from official_ext.vision.modeling.layers import nn_blocks

_SPEC_64 = tf_keras.layers.InputSpec(shape=[None, 64, 64, 3])
_ENDPOINTS_64 = {'2': [16, 16, 256], '3': [8, 8, 512], '4': [4, 4, 1024],
                 '5': [2, 2, 2048]}


def _trainable(model):
  return int(sum(np.prod(v.shape) for v in model.trainable_weights))


def _expected_resnet_params(blocks, channel_attention, reduction=16):
  """Trainable params of a bottleneck ResNet v1.5 without bias / FC."""
  total = 7 * 7 * 3 * 64 + 2 * 64  # Stem conv + BN gamma/beta.
  cin = 64
  for n, f in zip(blocks, (64, 128, 256, 512)):
    for i in range(n):
      total += cin * f + 9 * f * f + f * 4 * f + 2 * (f + f + 4 * f)
      if i == 0:  # Projection shortcut: 1x1 conv + BN.
        total += cin * 4 * f + 2 * 4 * f
      if channel_attention:
        c, h = 4 * f, 4 * f // reduction
        total += 2 * c * h + h + c
      cin = 4 * f
  return total


class CAResNetTest(tf.test.TestCase, parameterized.TestCase):

  def test_resnet50_no_attention(self):
    model = ca_resnet.CAResNet(model_id=50, input_specs=_SPEC_64,
                               norm_eval=False)
    # Keras' ResNet50 (include_top=False) has 23,534,592 trainable params,
    # 26,560 of them conv biases this ResNet does not have.
    self.assertEqual(_expected_resnet_params((3, 4, 6, 3), False), 23_508_032)
    self.assertEqual(_trainable(model), 23_508_032)
    self.assertEqual(_trainable(model), 23_534_592 - 26_560)
    blocks = [l for l in model.layers
              if isinstance(l, nn_blocks.GroupedBottleneckBlock)]
    self.assertLen(blocks, 16)
    self.assertTrue(all(b._attention is None for b in blocks))
    # v1.5: the stride is on the 3x3 conv of each stage's first block.
    self.assertEqual([b._conv2.strides[0] for b in blocks if
                      b.name.endswith('block0')], [1, 2, 2, 2])

    self.assertEqual({k: v.as_list() for k, v in model.output_specs.items()},
                     {k: [None] + v for k, v in _ENDPOINTS_64.items()})
    out = model(tf.random.uniform([2, 64, 64, 3], seed=0), training=True)
    for k, shape in _ENDPOINTS_64.items():
      self.assertEqual(out[k].shape.as_list(), [2] + shape)
    # 53 BN layers: the stem's, 3 per block and 4 projections.
    self.assertLen([l for l in model.submodules
                    if isinstance(l, tf_keras.layers.BatchNormalization)],
                   1 + 3 * 16 + 4)

  def test_resnet50_channel_attention(self):
    model = ca_resnet.CAResNet(model_id=50, input_specs=_SPEC_64,
                               channel_attention=True)
    # Per block of width C: 2*C*(C/16) + C/16 + C; blocks (C, n):
    # (256, 3), (512, 4), (1024, 6), (2048, 3) -> 2,530,992.
    self.assertEqual(3 * 8464 + 4 * 33312 + 6 * 132160 + 3 * 526464,
                     2_530_992)
    self.assertEqual(_expected_resnet_params((3, 4, 6, 3), True), 26_039_024)
    self.assertEqual(_trainable(model), 23_508_032 + 2_530_992)

  def test_unknown_model_id(self):
    with self.assertRaisesRegex(ValueError, 'Unknown ResNet model_id'):
      ca_resnet.CAResNet(model_id=34, input_specs=_SPEC_64)

  def test_factory(self):
    cfg = bcfg.Backbone(type='ca_resnet',
                        ca_resnet=bcfg.CAResNet(model_id=50,
                                                channel_attention=True))
    model = factory.build_backbone(_SPEC_64, cfg, common.NormActivation())
    self.assertIsInstance(model, ca_resnet.CAResNet)
    config = model.get_config()
    self.assertEqual(config['model_id'], 50)
    self.assertTrue(config['channel_attention'])
    self.assertTrue(config['norm_eval'])  # The config default.
    self.assertEqual(_trainable(model), 26_039_024)


if __name__ == '__main__':
  tf.test.main()
