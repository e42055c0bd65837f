"""Tests for official_ext.vision.modeling.backbones.base, and the behaviour
every backbone built on it shares (frozen BN, config round trip, builder)."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tf_keras

from official.vision.configs import common
from official_ext.vision.configs import backbones as bcfg
from official_ext.vision.modeling.backbones import base
from official_ext.vision.modeling.backbones import ca_resnet
from official_ext.vision.modeling.backbones import regnet
from official_ext.vision.modeling.backbones import vovnet

_SPEC_64 = tf_keras.layers.InputSpec(shape=[None, 64, 64, 3])

# A small model of each family, with its builder and its OneOf type.
_BACKBONES = {
    'regnet': (lambda **kw: regnet.RegNet(
        model_id='regnetx_200mf', input_specs=_SPEC_64,
        channel_attention=True, attention_reduction=8, **kw),
               regnet.build_regnet),
    'ca_resnet': (lambda **kw: ca_resnet.CAResNet(
        model_id=50, input_specs=_SPEC_64, channel_attention=True, **kw),
                  ca_resnet.build_ca_resnet),
    'vovnet': (lambda **kw: vovnet.VoVNet(
        model_id='V-19-slim-dw-eSE', input_specs=_SPEC_64, **kw),
               vovnet.build_vovnet),
}


def bn_moving_stats(model):
  return {v.name: v.numpy().copy() for v in model.non_trainable_weights
          if 'moving_' in v.name}


class ConvNormActTest(tf.test.TestCase):

  def test_strided_conv_pads_symmetrically(self):
    # A 3x3 all-ones kernel, stride 2, on a 4x4 all-ones input. PyTorch's
    # padding 1 on every side: the top-left window covers 2x2 ones, the
    # bottom-right 3x3. TF's 'same' would pad only the bottom and right.
    args = base.ConvArgs(kernel_initializer='ones', norm_eval=True,
                         norm_epsilon=0.)
    inputs = tf_keras.Input(shape=[4, 4, 1])
    model = tf_keras.Model(inputs,
                           base.conv_norm_act(inputs, 1, 3, 2, 'unit', args))
    out = model(tf.ones([1, 4, 4, 1]), training=True).numpy()[0, ..., 0]
    self.assertAllEqual(out, [[4., 6.], [6., 9.]])
    self.assertEqual([l.name for l in model.layers[1:]],
                     ['unit_pad', 'unit_conv', 'unit_norm', 'unit_relu'])

  def test_unit_stride_keeps_the_size_without_a_pad_layer(self):
    inputs = tf_keras.Input(shape=[5, 7, 2])
    model = tf_keras.Model(
        inputs, base.conv_norm_act(inputs, 3, 3, 1, 'u', base.ConvArgs()))
    self.assertEqual(model.output_shape, (None, 5, 7, 3))
    self.assertEqual([l.name for l in model.layers[1:]],
                     ['u_conv', 'u_norm', 'u_relu'])

  def test_conv_args_from_a_backbone_config(self):
    config = dict(model_id='x', activation='swish', use_sync_bn=True,
                  norm_momentum=0.97, norm_epsilon=1e-3, norm_eval=True,
                  kernel_initializer='he_normal', kernel_regularizer=None,
                  bias_regularizer=None)
    args = base.ConvArgs.from_config(config)
    self.assertEqual(args.activation, 'swish')
    self.assertEqual(args.norm_momentum, 0.97)
    self.assertTrue(args.norm_eval)
    self.assertEqual(set(args.as_kwargs()), set(config) - {'model_id'})
    del config['norm_eval']
    with self.assertRaisesRegex(KeyError, 'norm_eval'):
      base.ConvArgs.from_config(config)


class SharedBehaviourTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(family=sorted(_BACKBONES), norm_eval=[True, False])
  def test_norm_eval_freezes_every_bn(self, family, norm_eval):
    model = _BACKBONES[family][0](norm_eval=norm_eval)
    before = bn_moving_stats(model)
    self.assertNotEmpty(before)
    x = tf.random.uniform([2, 64, 64, 3], seed=1)
    out_train = model(x, training=True)
    after = bn_moving_stats(model)
    changed = [k for k in before if np.max(np.abs(before[k] - after[k])) > 0]
    if norm_eval:
      self.assertEmpty(changed)
      # BN in inference mode: training=True gives the inference output.
      out_eval = model(x, training=False)
      for k in out_eval:
        self.assertAllClose(out_train[k], out_eval[k], atol=1e-5, rtol=1e-5)
    else:
      # Every BN (the stem's included) updated its statistics.
      self.assertLen(changed, len(before))

  @parameterized.parameters(sorted(_BACKBONES))
  def test_config_round_trip(self, family):
    model = _BACKBONES[family][0](norm_eval=True, norm_momentum=0.97)
    config = model.get_config()
    self.assertTrue(config['norm_eval'])
    self.assertEqual(config['norm_momentum'], 0.97)
    new_model = type(model).from_config(config)
    self.assertAllEqual(new_model.get_config(), config)
    self.assertEqual(new_model.count_params(), model.count_params())
    new_model.set_weights(model.get_weights())
    x = tf.random.uniform([1, 64, 64, 3], seed=2)
    out, new_out = model(x, training=False), new_model(x, training=False)
    self.assertEqual(sorted(out), ['2', '3', '4', '5'])
    for k in out:
      self.assertEqual(out[k].shape.as_list()[1:],
                       model.output_specs[k].as_list()[1:])
      self.assertAllClose(new_out[k], out[k], atol=1e-6, rtol=1e-6)

  @parameterized.parameters(sorted(_BACKBONES))
  def test_builder_rejects_another_type(self, family):
    other = 'vovnet' if family != 'vovnet' else 'regnet'
    cfg = bcfg.Backbone(type=other)
    with self.assertRaisesRegex(
        ValueError, f"type '{other}' for the '{family}' builder"):
      _BACKBONES[family][1](_SPEC_64, cfg, common.NormActivation())


if __name__ == '__main__':
  tf.test.main()
