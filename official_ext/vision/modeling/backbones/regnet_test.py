"""Tests for official_ext.vision.modeling.backbones.regnet."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tf_keras

from official.vision.configs import common
from official.vision.modeling.backbones import factory
from official_ext.vision.configs import backbones as bcfg
from official_ext.vision.modeling.backbones import regnet
from official_ext.vision.modeling.layers import nn_blocks

_SPEC_64 = tf_keras.layers.InputSpec(shape=[None, 64, 64, 3])


def _trainable(model):
  return int(sum(np.prod(v.shape) for v in model.trainable_weights))


class GenerateRegNetStagesTest(parameterized.TestCase):

  @parameterized.named_parameters(
      # Published RegNetX stage widths / depths / group widths (pycls).
      ('200mf', 'regnetx_200mf', [24, 56, 152, 368], [1, 1, 4, 7], 8),
      ('400mf', 'regnetx_400mf', [32, 64, 160, 384], [1, 2, 7, 12], 16),
      ('800mf', 'regnetx_800mf', [64, 128, 288, 672], [1, 3, 7, 5], 16),
      ('1.6gf', 'regnetx_1.6gf', [72, 168, 408, 912], [2, 4, 10, 2], 24),
      ('3.2gf', 'regnetx_3.2gf', [96, 192, 432, 1008], [2, 6, 15, 2], 48),
      ('4.0gf', 'regnetx_4.0gf', [80, 240, 560, 1360], [2, 5, 14, 2], 40),
  )
  def test_published_stages(self, model_id, widths, depths, group_width):
    params = regnet.REGNET_PARAMS[model_id]
    stages = regnet.generate_regnet_stages(params)
    self.assertEqual(stages.widths, widths)
    self.assertEqual(stages.depths, depths)
    self.assertEqual(sum(stages.depths), params.depth)
    self.assertEqual(stages.group_widths,
                     [min(group_width, w) for w in widths])
    # Bottleneck ratio 1 (X blocks): bottleneck width == stage width.
    self.assertEqual(stages.bottleneck_widths, widths)
    for w, g in zip(stages.widths, stages.group_widths):
      self.assertEqual(w % g, 0)

  def test_small_hand_computed(self):
    # u = [8, 16, 24]; exponents round(log2(u / 8)) = [0, 1, 2];
    # widths 8 * 2**k = [8, 16, 32]; group width min(16, w) = [8, 16, 16].
    stages = regnet.generate_regnet_stages(
        regnet.RegNetParams(w0=8, wa=8., wm=2., depth=3, group_width=16))
    self.assertEqual(stages.widths, [8, 16, 32])
    self.assertEqual(stages.depths, [1, 1, 1])
    self.assertEqual(stages.group_widths, [8, 16, 16])

  def test_width_made_compatible_with_group_width(self):
    # One stage of width 24 with group width 16: 24 / 16 = 1.5 rounds to 2
    # groups of 16, so the width becomes 32.
    stages = regnet.generate_regnet_stages(
        regnet.RegNetParams(w0=24, wa=0., wm=2., depth=2, group_width=16))
    self.assertEqual(stages.widths, [32])
    self.assertEqual(stages.depths, [2])
    self.assertEqual(stages.group_widths, [16])

  @parameterized.parameters(
      regnet.RegNetParams(w0=24, wa=-1., wm=2., depth=3, group_width=8),
      regnet.RegNetParams(w0=0, wa=1., wm=2., depth=3, group_width=8),
      regnet.RegNetParams(w0=24, wa=1., wm=1., depth=3, group_width=8),
      regnet.RegNetParams(w0=24, wa=1., wm=2., depth=0, group_width=8),
  )
  def test_invalid_params(self, params):
    with self.assertRaises(ValueError):
      regnet.generate_regnet_stages(params)


class RegNetTest(tf.test.TestCase, parameterized.TestCase):

  def test_endpoints_400mf(self):
    model = regnet.RegNet(model_id='regnetx_400mf', input_specs=_SPEC_64)
    expected = {'2': [None, 16, 16, 32], '3': [None, 8, 8, 64],
                '4': [None, 4, 4, 160], '5': [None, 2, 2, 384]}
    self.assertEqual({k: v.as_list() for k, v in model.output_specs.items()},
                     expected)
    out = model(tf.random.uniform([2, 64, 64, 3], seed=0), training=False)
    self.assertEqual(sorted(out), ['2', '3', '4', '5'])
    for k, shape in expected.items():
      self.assertEqual(out[k].shape.as_list(), [2] + shape[1:])
    # Block structure: 1 + 2 + 7 + 12 grouped blocks, 16-channel groups.
    blocks = [l for l in model.layers
              if isinstance(l, nn_blocks.GroupedBottleneckBlock)]
    self.assertLen(blocks, 22)
    self.assertEqual(
        {b.name.split('_')[0]: b._config_dict['groups'] for b in blocks},
        {'stage1': 2, 'stage2': 4, 'stage3': 10, 'stage4': 24})
    self.assertEqual(model.stages.widths, [32, 64, 160, 384])

  def test_param_count_4gf(self):
    # pycls RegNetX-4.0GF has 22,118,248 params with its 1360 -> 1000 FC
    # head (1,361,000 params); the backbone is the rest.
    model = regnet.RegNet(model_id='regnetx_4.0gf', input_specs=_SPEC_64)
    self.assertEqual(_trainable(model), 20_757_248)
    self.assertEqual(_trainable(model), 22_118_248 - 1360 * 1000 - 1000)

  def test_param_count_4gf_channel_attention(self):
    # Channel attention per block of width C (r = 16, h = C / 16):
    # 2*C*h + h + C. Stages (C, blocks): (80, 2), (240, 5), (560, 14),
    # (1360, 2): 2*885 + 5*7455 + 14*39795 + 2*232645 = 1,061,465.
    model = regnet.RegNet(model_id='regnetx_4.0gf', input_specs=_SPEC_64,
                          channel_attention=True)
    self.assertEqual(2 * 885 + 5 * 7455 + 14 * 39795 + 2 * 232645, 1_061_465)
    self.assertEqual(_trainable(model), 20_757_248 + 1_061_465)
    self.assertEqual(_trainable(model), 21_818_713)

  def test_unknown_model_id(self):
    with self.assertRaisesRegex(ValueError, 'Unknown RegNet model_id'):
      regnet.RegNet(model_id='regnetx_5gf', input_specs=_SPEC_64)

  def test_channel_attention_params_200mf(self):
    model = regnet.RegNet(model_id='regnetx_200mf', input_specs=_SPEC_64,
                          channel_attention=True, attention_reduction=8)
    self.assertTrue(model.get_config()['channel_attention'])
    self.assertEqual(model.get_config()['attention_reduction'], 8)
    # pycls RegNetX-200MF: 2,684,792 params including the 368 -> 1000 FC;
    # channel attention (r=8) adds per block 2*C*(C/8) + C/8 + C:
    # C=24: 171, C=56: 847, 4 x C=152: 5,947, 7 x C=368: 34,270.
    self.assertEqual(_trainable(model),
                     2_684_792 - 369_000 + 171 + 847 + 4 * 5947 + 7 * 34270)

  def test_factory(self):
    cfg = bcfg.Backbone(type='regnet',
                        regnet=bcfg.RegNet(model_id='regnetx_400mf'))
    norm = common.NormActivation(activation='swish', norm_momentum=0.97,
                                 norm_epsilon=1e-3)
    model = factory.build_backbone(_SPEC_64, cfg, norm)
    self.assertIsInstance(model, regnet.RegNet)
    config = model.get_config()
    self.assertEqual(config['model_id'], 'regnetx_400mf')
    self.assertTrue(config['norm_eval'])  # The config's default.
    self.assertFalse(config['channel_attention'])
    self.assertEqual(config['activation'], 'swish')
    self.assertEqual(config['norm_momentum'], 0.97)
    self.assertEqual(config['norm_epsilon'], 1e-3)
    self.assertEqual(model.output_specs['5'].as_list(), [None, 2, 2, 384])
    # pycls RegNetX-400MF: 5,157,512 params including the 384 -> 1000 FC.
    self.assertEqual(_trainable(model), 5_157_512 - 384 * 1000 - 1000)

  def test_builder_rejects_other_type(self):
    cfg = bcfg.Backbone(type='ca_resnet')
    with self.assertRaises(ValueError):
      regnet.build_regnet(_SPEC_64, cfg, common.NormActivation())


if __name__ == '__main__':
  tf.test.main()
