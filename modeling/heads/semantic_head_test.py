"""Tests for the panoptic model's semantic head and its loss."""

import numpy as np
import pytest
import tensorflow as tf

from modeling.heads import semantic_head


def test_logits_reach_the_input_size_through_the_blocks():
  head = semantic_head.SemanticHead(num_classes=4, num_filters=[16, 8, 8],
                                    num_groups=4)
  logits = head(tf.random.normal([2, 3, 5, 12]))
  assert logits.shape == (2, 96, 160, 4)
  assert head.output_stride_factor == 32
  names = sorted(v.name.split('/', 1)[1] for v in head.trainable_variables)
  # Convolutions without bias (GroupNorm follows), GN scale and offset, and
  # the classifier's kernel and bias.
  assert names == sorted(
      [f'conv{i}/kernel:0' for i in range(3)] +
      [f'gn{i}/{w}:0' for i in range(3) for w in ('gamma', 'beta')] +
      ['classifier/kernel:0', 'classifier/bias:0'])


def test_one_block_is_conv_groupnorm_relu_bilinear_x2():
  """One block and a 1x1 classifier, against NumPy."""
  head = semantic_head.SemanticHead(num_classes=2, num_filters=[4],
                                    num_groups=2, upsample_factor=1)
  x = tf.random.stateless_normal([1, 2, 2, 3], seed=[1, 2])
  logits = head(x).numpy()
  kernel = head._blocks[0][0].kernel.numpy()   # [3, 3, 3, 4]
  padded = np.pad(x.numpy()[0], [[1, 1], [1, 1], [0, 0]])
  conv = np.zeros([2, 2, 4])
  for i in range(2):
    for j in range(2):
      conv[i, j] = np.einsum('abc,abcd->d', padded[i:i + 3, j:j + 3], kernel)
  # GroupNorm, 2 groups of 2 channels, gamma 1 and beta 0.
  normed = np.zeros_like(conv)
  for g in range(2):
    part = conv[..., 2 * g:2 * g + 2]
    normed[..., 2 * g:2 * g + 2] = (part - part.mean()) / np.sqrt(
        part.var() + 1e-5)
  relu = np.maximum(normed, 0)
  # Bilinear x2 with half-pixel centres (PyTorch align_corners=False):
  # output i samples input (i + 0.5) / 2 - 0.5, clamped at the border.
  def interp_axis(a, axis):
    n = a.shape[axis]
    out = []
    for i in range(2 * n):
      c = min(max((i + 0.5) / 2 - 0.5, 0), n - 1)
      lo = int(np.floor(c))
      hi = min(lo + 1, n - 1)
      f = c - lo
      out.append(np.take(a, lo, axis) * (1 - f) + np.take(a, hi, axis) * f)
    return np.stack(out, axis)
  up = interp_axis(interp_axis(relu, 0), 1)
  cls = head._classifier
  expected = up @ cls.kernel.numpy()[0, 0] + cls.bias.numpy()
  np.testing.assert_allclose(logits[0], expected, rtol=1e-4, atol=1e-5)


def test_filters_must_divide_into_groups():
  with pytest.raises(ValueError, match='multiples of num_groups'):
    semantic_head.SemanticHead(num_classes=3, num_filters=[30], num_groups=8)


def test_loss_is_the_mean_cross_entropy_of_the_labelled_pixels():
  logits = np.array([[[[2., 0., -1.], [0., 1., 0.]],
                      [[0., 0., 3.], [1., 1., 1.]]]], np.float32)
  labels = np.array([[[0, 1], [255, 2]]])
  def ce(z, k):
    return np.log(np.exp(z).sum()) - z[k]
  expected = (ce(logits[0, 0, 0], 0) + ce(logits[0, 0, 1], 1) +
              ce(logits[0, 1, 1], 2)) / 3
  loss = semantic_head.semantic_loss(tf.constant(logits), tf.constant(labels))
  np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6)
  all_void = semantic_head.semantic_loss(tf.constant(logits),
                                         tf.fill([1, 2, 2], 255))
  assert all_void.numpy() == 0.
