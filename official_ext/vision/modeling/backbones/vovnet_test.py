"""Tests for official_ext.vision.modeling.backbones.vovnet."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tf_keras

from official.vision.configs import common
from official.vision.modeling.backbones import factory
from official_ext.vision.configs import backbones as bcfg
from official_ext.vision.modeling.backbones import base
from official_ext.vision.modeling.backbones import vovnet

_SPEC_64 = tf_keras.layers.InputSpec(shape=[None, 64, 64, 3])
_WIDE = {'2': 256, '3': 512, '4': 768, '5': 1024}
_SLIM = {'2': 112, '3': 256, '4': 384, '5': 512}


def _trainable(model):
  return int(sum(np.prod(v.shape) for v in model.trainable_weights))


def _spec_params(spec: vovnet.VoVNetSpec) -> int:
  """Conv kernels, BN gamma and beta, eSE kernels and biases of a spec."""

  def conv(cin, cout, k):  # A conv without bias and its BN.
    return k * k * cin * cout + 2 * cout

  def conv3x3(cin, cout):  # Plain, or depthwise + pointwise, + BN.
    if spec.depthwise:
      return 9 * cin + cin * cout + 2 * cout
    return conv(cin, cout, 3)

  stem = spec.stem_filters
  total = conv(3, stem[0], 3) + conv3x3(stem[0], stem[1]) + conv3x3(
      stem[1], stem[2])
  cin = stem[2]
  num_layers = spec.layers_per_module
  for mid, out, modules in zip(spec.stage_conv_filters,
                               spec.stage_out_filters,
                               spec.modules_per_stage):
    for _ in range(modules):
      x = cin
      if spec.depthwise and cin != mid:  # The 1x1 reduction.
        total += conv(cin, mid, 1)
        x = mid
      for _ in range(num_layers):
        total += conv3x3(x, mid)
        x = mid
      total += conv(cin + num_layers * mid, out, 1)  # Aggregation.
      total += out * out + out  # eSE.
      cin = out
  return total


def _numpy_max_pool_ceil(x):
  """PyTorch's MaxPool2d(3, 2, ceil_mode=True) on NHWC, by its definition.

  Output size floor((size - 3 + (2 - 1)) / 2) + 1 (PyTorch's formula with
  ceil_mode and no padding); every window pools the pixels it covers.
  """
  out_h = (x.shape[1] - 3 + 1) // 2 + 1
  out_w = (x.shape[2] - 3 + 1) // 2 + 1
  y = np.empty([x.shape[0], out_h, out_w, x.shape[3]], x.dtype)
  for i in range(out_h):
    for j in range(out_w):
      y[:, i, j] = x[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(1, 2))
  return y


class EffectiveSETest(tf.test.TestCase):

  def test_matches_numpy_formula(self):
    rng = np.random.default_rng(0)
    x = rng.normal(size=[2, 5, 7, 6]).astype(np.float32)
    kernel = 0.3 * rng.normal(size=[6, 6]).astype(np.float32)
    # Gates saturated at 0 (channel 0) and 1 (channel 1) and in between.
    bias = np.array([-10., 10., 0., 0.5, -1., 2.], np.float32)
    layer = vovnet.EffectiveSE()
    layer.build(x.shape)
    self.assertEqual(_trainable(layer), 6 * 6 + 6)
    layer._fc.set_weights([kernel.reshape([1, 1, 6, 6]), bias])

    z = x.mean(axis=(1, 2)) @ kernel + bias  # [2, 6]
    gate = np.clip(z + 3., 0., 6.) / 6.
    expected = x * gate[:, None, None, :]
    self.assertAllClose(layer(x), expected, atol=1e-6, rtol=1e-6)
    self.assertAllEqual(gate[:, 0], [0., 0.])
    self.assertAllEqual(gate[:, 1], [1., 1.])
    self.assertTrue(np.all((gate[:, 2:] > 0) & (gate[:, 2:] < 1)))

  def test_gate_is_one_for_zero_kernel_and_bias_three(self):
    # How a converter turns an eSE off (timm's blocks without one).
    x = np.random.default_rng(1).normal(size=[1, 3, 3, 4]).astype(np.float32)
    layer = vovnet.EffectiveSE()
    layer.build(x.shape)
    layer._fc.set_weights([np.zeros([1, 1, 4, 4], np.float32),
                           np.full([4], 3., np.float32)])
    self.assertAllEqual(layer(x), x)


class CeilModeMaxPoolTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(2, 3, 4, 5, 6, 7, 8, 13, 16, 25, 32, 200)
  def test_output_size_is_pytorch_ceil_mode(self, size):
    # PyTorch: floor((size + 2 * 0 - 3 + (stride - 1)) / stride) + 1.
    torch_size = lambda n: (n - 3 + 1) // 2 + 1
    self.assertEqual(vovnet.ceil_mode_pool_size(size), torch_size(size))
    x = tf.zeros([1, size, size + 1, 1])
    expected = [1, torch_size(size), torch_size(size + 1), 1]
    layer = vovnet.CeilModeMaxPool2D()
    self.assertEqual(layer(x).shape.as_list(), expected)
    self.assertEqual(layer.compute_output_shape(x.shape).as_list(), expected)

  @parameterized.parameters((6, 8), (7, 9), (8, 5), (13, 16))
  def test_values_static_and_dynamic(self, height, width):
    # All negative: a zero-padded pool would differ at the far edges.
    x = (np.random.default_rng(height).normal(size=[2, height, width, 3])
         - 10.).astype(np.float32)
    expected = _numpy_max_pool_ceil(x)
    layer = vovnet.CeilModeMaxPool2D()
    self.assertAllEqual(layer(x), expected)
    dynamic = tf.function(
        lambda t: layer(t),  # pylint: disable=unnecessary-lambda
        input_signature=[tf.TensorSpec([None, None, None, 3])])
    self.assertAllEqual(dynamic(x), expected)

  def test_too_small(self):
    with self.assertRaisesRegex(ValueError, 'size >= 2'):
      vovnet.ceil_mode_pool_size(1)


def _osa_model(in_channels, conv_filters, out_filters, num_layers, identity,
               depthwise=False):
  inputs = tf_keras.Input([8, 8, in_channels])
  outputs = vovnet.osa_module(
      inputs, conv_filters, out_filters, num_layers, identity=identity,
      depthwise=depthwise, prefix='stage4_OSA4_2', args=base.ConvArgs())
  return tf_keras.Model(inputs, outputs)


class OSAModuleTest(tf.test.TestCase, parameterized.TestCase):

  def test_shapes(self):
    model = _osa_model(16, 8, 32, 3, identity=False)
    self.assertEqual(model.output_shape, (None, 8, 8, 32))
    # The input and the three 8-channel layer outputs.
    self.assertEqual(
        model.get_layer('stage4_OSA4_2_concat').output.shape[-1], 16 + 24)
    for i in range(3):
      self.assertEqual(
          model.get_layer(f'stage4_OSA4_2_layer{i}_conv').kernel.shape,
          (3, 3, 16 if i == 0 else 8, 8))
    self.assertEqual(model.get_layer('stage4_OSA4_2_concat_conv').kernel.shape,
                     (1, 1, 40, 32))

  def test_depthwise_reduces_first_but_concatenates_the_input(self):
    model = _osa_model(16, 8, 32, 2, identity=False, depthwise=True)
    self.assertEqual(
        model.get_layer('stage4_OSA4_2_reduction_conv').kernel.shape,
        (1, 1, 16, 8))
    self.assertEqual(
        model.get_layer('stage4_OSA4_2_layer0_dw_conv3x3')
        .depthwise_kernel.shape, (3, 3, 8, 1))
    self.assertEqual(
        model.get_layer('stage4_OSA4_2_layer1_pw_conv1x1').kernel.shape,
        (1, 1, 8, 8))
    self.assertEqual(
        model.get_layer('stage4_OSA4_2_concat').output.shape[-1], 16 + 16)
    # No reduction where the input already has the conv width.
    names = [l.name for l in _osa_model(8, 8, 32, 2, False, True).layers]
    self.assertNotIn('stage4_OSA4_2_reduction_conv', names)

  @parameterized.parameters(True, False)
  def test_identity_is_added_after_ese(self, identity):
    model = _osa_model(4, 3, 4, 2, identity=identity)
    # The aggregation conv outputs 0, its BN the constant beta (> 0, so the
    # ReLU keeps it); eSE with zero kernel and bias has gate 1/2.
    beta = np.array([0.5, 1., 2., 4.], np.float32)
    model.get_layer('stage4_OSA4_2_concat_conv').set_weights(
        [np.zeros([1, 1, 4 + 2 * 3, 4], np.float32)])
    model.get_layer('stage4_OSA4_2_concat_norm').set_weights(
        [np.ones(4), beta, np.zeros(4), np.ones(4)])
    model.get_layer('stage4_OSA4_2_ese').set_weights(
        [np.zeros([1, 1, 4, 4]), np.zeros(4)])
    x = np.random.default_rng(2).uniform(size=[2, 8, 8, 4]).astype(np.float32)
    y = model(x, training=False).numpy()
    # 0.5 * beta + x (after eSE); 0.5 * (beta + x) were it added before.
    expected = 0.5 * beta + (x if identity else np.zeros_like(x))
    self.assertAllClose(y, expected, atol=1e-4)
    self.assertEqual(
        'stage4_OSA4_2_identity' in [l.name for l in model.layers], identity)

  def test_identity_needs_output_width(self):
    with self.assertRaisesRegex(ValueError, 'identity needs 32 input'):
      _osa_model(16, 8, 32, 2, identity=True)


class VoVNetTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      ('V-19-eSE', _WIDE), ('V-39-eSE', _WIDE), ('V-57-eSE', _WIDE),
      ('V-19-slim-eSE', _SLIM), ('V-19-dw-eSE', _WIDE),
      ('V-19-slim-dw-eSE', _SLIM))
  def test_endpoints(self, model_id, channels):
    model = vovnet.VoVNet(model_id=model_id, input_specs=_SPEC_64)
    sizes = {'2': 16, '3': 8, '4': 4, '5': 2}  # Strides 4, 8, 16, 32.
    expected = {k: [None, sizes[k], sizes[k], c] for k, c in channels.items()}
    self.assertEqual({k: v.as_list() for k, v in model.output_specs.items()},
                     expected)
    out = model(tf.random.uniform([2, 64, 64, 3], seed=0), training=False)
    self.assertEqual({k: v.shape.as_list() for k, v in out.items()},
                     {k: [2] + v[1:] for k, v in expected.items()})
    modules = model.architecture.modules_per_stage
    ese = [l for l in model.layers if isinstance(l, vovnet.EffectiveSE)]
    adds = [l for l in model.layers if l.name.endswith('_identity')]
    self.assertLen(ese, sum(modules))  # One per OSA module.
    self.assertLen(adds, sum(modules) - 4)  # All but each stage's first.

  def test_layer_names_follow_vovnet_detectron2(self):
    model = vovnet.VoVNet(model_id='V-39-eSE', input_specs=_SPEC_64)
    expected = {f'stem_{n}_{t}' for n in (1, 2, 3) for t in ('conv', 'norm')}
    for s, modules in zip((2, 3, 4, 5), (1, 1, 2, 2)):
      for m in range(1, modules + 1):
        prefix = f'stage{s}_OSA{s}_{m}'
        expected |= {f'{prefix}_layer{i}_{t}' for i in range(5)
                     for t in ('conv', 'norm')}
        expected |= {f'{prefix}_concat_conv', f'{prefix}_concat_norm',
                     f'{prefix}_ese'}
    self.assertEqual({l.name for l in model.layers if l.weights}, expected)
    self.assertEqual(
        [l.name for l in model.layers
         if isinstance(l, vovnet.CeilModeMaxPool2D)],
        ['stage3_pool', 'stage4_pool', 'stage5_pool'])

  def test_depthwise_layer_names(self):
    model = vovnet.VoVNet(model_id='V-19-slim-dw-eSE', input_specs=_SPEC_64)
    names = {l.name for l in model.layers if l.weights}
    self.assertIn('stem_1_conv', names)  # The first stem conv is plain.
    for n in (2, 3):
      self.assertContainsSubset(
          {f'stem_{n}_dw_conv3x3', f'stem_{n}_pw_conv1x1', f'stem_{n}_pw_norm'},
          names)
    self.assertEqual(model.get_layer('stem_3_dw_conv3x3').strides, (2, 2))
    # Stage 2's input has its conv width (64): no reduction; the others do.
    self.assertEqual(sorted(n for n in names if 'reduction' in n),
                     [f'stage{s}_OSA{s}_1_reduction_{t}'
                      for s in (3, 4, 5) for t in ('conv', 'norm')])

  @parameterized.parameters(*sorted(vovnet.VOVNET_SPECS))
  def test_param_count_matches_spec(self, model_id):
    model = vovnet.VoVNet(model_id=model_id, input_specs=_SPEC_64)
    self.assertEqual(_trainable(model), _spec_params(model.architecture))
    # BN moving mean and variance are the only other variables.
    num_bn = sum(int(np.prod(v.shape)) for v in model.trainable_weights
                 if 'gamma' in v.name)
    self.assertEqual(model.count_params() - _trainable(model), 2 * num_bn)

  def test_param_counts_by_hand(self):
    # V-19-eSE, conv kernels + BN gamma/beta (+ eSE C*C + C):
    # stem 1,728 + 36,864 + 73,728 + 2 * 256 = 112,832;
    # stage 2 (in 128): 3 * 147,456 + 512 * 256 + 2 * 640 + 65,792
    #   = 640,512;
    # stage 3 (in 256): 368,640 + 2 * 230,400 + 736 * 512 + 2 * 992
    #   + 262,656 = 1,470,912;
    # stage 4 (in 512): 884,736 + 2 * 331,776 + 1,088 * 768 + 2 * 1,344
    #   + 590,592 = 2,977,152;
    # stage 5 (in 768): 1,548,288 + 2 * 451,584 + 1,440 * 1,024
    #   + 2 * 1,696 + 1,049,600 = 4,979,008.
    self.assertEqual(112_832 + 640_512 + 1_470_912 + 2_977_152 + 4_979_008,
                     10_180_416)
    self.assertEqual(_spec_params(vovnet.VOVNET_SPECS['V-19-eSE']),
                     10_180_416)
    model = vovnet.VoVNet(model_id='V-19-eSE', input_specs=_SPEC_64)
    self.assertEqual(_trainable(model), 10_180_416)

  @parameterized.parameters(
      # The published sizes, 10.18M, 25.18M and 41.45M: trainable
      # parameters without a classifier and without the BN statistics, eSE
      # in every OSA module (as vovnet-detectron2). timm's ese_vovnet39b has
      # eSE in each stage's last module only: 25,184,128 less the first
      # modules' of stages 4 and 5 (768 * 769 + 1024 * 1025), plus its
      # 1024 -> 1000 classifier, is 24,568,936 (its model card: 24.6M).
      ('V-19-eSE', 10_180_416), ('V-39-eSE', 25_184_128),
      ('V-57-eSE', 41_454_912))
  def test_param_counts_match_published_sizes(self, model_id, count):
    # The model has the spec's count (test_param_count_matches_spec).
    self.assertEqual(_spec_params(vovnet.VOVNET_SPECS[model_id]), count)

  def test_non_multiple_of_32_is_rejected(self):
    with self.assertRaisesRegex(ValueError, 'multiple of 32.*100x64'):
      vovnet.VoVNet(
          model_id='V-19-slim-eSE',
          input_specs=tf_keras.layers.InputSpec(shape=[None, 100, 64, 3]))

  def test_unknown_model_id(self):
    with self.assertRaisesRegex(ValueError, 'Unknown VoVNet model_id'):
      vovnet.VoVNet(model_id='V-27-eSE', input_specs=_SPEC_64)

  def test_factory(self):
    cfg = bcfg.Backbone(type='vovnet',
                        vovnet=bcfg.VoVNet(model_id='V-19-slim-eSE'))
    norm = common.NormActivation(activation='relu', norm_momentum=0.97,
                                 norm_epsilon=1e-3)
    model = factory.build_backbone(_SPEC_64, cfg, norm)
    self.assertIsInstance(model, vovnet.VoVNet)
    config = model.get_config()
    self.assertEqual(config['model_id'], 'V-19-slim-eSE')
    self.assertTrue(config['norm_eval'])  # The config's default.
    self.assertEqual(config['norm_momentum'], 0.97)
    self.assertEqual(config['norm_epsilon'], 1e-3)
    self.assertEqual(model.output_specs['5'].as_list(), [None, 2, 2, 512])
    self.assertEqual(_trainable(model),
                     _spec_params(vovnet.VOVNET_SPECS['V-19-slim-eSE']))


if __name__ == '__main__':
  tf.test.main()
