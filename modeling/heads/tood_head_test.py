"""Tests for the TOOD head."""

import numpy as np
import tensorflow as tf

from modeling.heads import tood_head


def _sigmoid(x):
  return 1. / (1. + np.exp(-x))


def _small_head(**kwargs):
  args = dict(num_classes=3, stride=32, anchor_size=32.,
              anchor_scales=(1., 2.), aspect_ratios=(1.,),
              num_stacked_convs=2, num_filters=8, attention_channels=4,
              branch_channels=4)
  args.update(kwargs)
  return tood_head.TOODHead(**args)


def test_single_level_anchors_values():
  anchors = tood_head.single_level_anchors(2, 3, 32, 32., [1., 2.], [1.])
  anchors = anchors.numpy()
  assert anchors.shape == (2 * 3 * 2, 4)
  # Cell (0, 0): centre (0, 0) (mmdet's center_offset 0); sizes 32, 64.
  np.testing.assert_allclose(anchors[0], [-16., -16., 16., 16.])
  np.testing.assert_allclose(anchors[1], [-32., -32., 32., 32.])
  # Cell (row 1, column 2): centre (32, 64); (row, column, anchor) order.
  np.testing.assert_allclose(anchors[(1 * 3 + 2) * 2], [16., 48., 48., 80.])
  # Model Garden's cell centres: (16, 16) for cell (0, 0).
  centred = tood_head.single_level_anchors(2, 3, 32, 32., [1., 2.], [1.],
                                           center_offset=0.5).numpy()
  np.testing.assert_allclose(centred[0], [0., 0., 32., 32.])
  np.testing.assert_allclose(centred - anchors, 16.)


def test_head_output_shapes_and_score_formula():
  head = _small_head()
  feat = tf.random.normal([2, 3, 4, 16], seed=1)
  out = head(feat, training=False)
  n = 3 * 4 * 2
  assert out['cls_logits'].shape == (2, n, 3)
  assert out['prob_logits'].shape == (2, n, 1)
  assert out['cls_scores'].shape == (2, n, 3)
  assert out['box_preds'].shape == (2, n, 4)
  assert out['box_deltas'].shape == (2, n, 4)
  assert out['anchor_boxes'].shape == (n, 4)
  expected = np.sqrt(_sigmoid(out['cls_logits'].numpy()) *
                     _sigmoid(out['prob_logits'].numpy()))
  np.testing.assert_allclose(out['cls_scores'].numpy(), expected, rtol=1e-5)
  # The prior-probability bias makes every initial score about 0.01.
  np.testing.assert_allclose(out['cls_scores'].numpy(), 0.01, atol=0.003)


def test_head_param_count_at_paper_size():
  head = tood_head.TOODHead(num_classes=80)
  head(tf.zeros([1, 2, 2, 512]))
  count = sum(v.shape.num_elements() for v in head.trainable_variables)
  # 6 stacked 3x3 convs (no bias) + BN: 1,180,160 + 5 * 590,336
  # 2 task decompositions: 1536*32+32 + 32*6+6 + 1536*256 + 2*256 each
  # (the reference's hidden width 1536 // 48 = 32)
  # cls 3x3 256->400, reg 3x3 256->20, prob 1536->64->1, offsets 1536->64->40
  # and the scale.
  expected = (1180160 + 5 * 590336 + 2 * (49184 + 198 + 393216 + 512) +
              (921600 + 400) + (46080 + 20) + (98304 + 64 + 576 + 1) +
              (98304 + 64 + 23040 + 40) + 1)
  assert count == expected == 6206554


def test_boxes_without_offsets_are_decoded_anchors():
  head = _small_head(deformable_sampling=False, ctr_clamp=None)
  out = head(tf.random.normal([1, 2, 2, 16], seed=2), training=False)
  deltas = out['box_deltas'].numpy()[0]
  anchors = out['anchor_boxes'].numpy()
  ah = anchors[:, 2] - anchors[:, 0]
  aw = anchors[:, 3] - anchors[:, 1]
  cy = anchors[:, 0] + ah / 2 + deltas[:, 0] * ah
  cx = anchors[:, 1] + aw / 2 + deltas[:, 1] * aw
  h = ah * np.exp(deltas[:, 2])
  w = aw * np.exp(deltas[:, 3])
  expected = np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], -1)
  np.testing.assert_allclose(out['box_preds'].numpy()[0], expected,
                             rtol=1e-5, atol=1e-4)


def test_zero_offsets_give_the_unsampled_boxes():
  head = _small_head()
  feat = tf.random.normal([1, 3, 3, 16], seed=3)
  head(feat)
  for v in head._offset_conv2.weights:  # pylint: disable=protected-access
    v.assign(tf.zeros_like(v))
  with_zero = head(feat, training=False)
  head_plain = _small_head(deformable_sampling=False)
  head_plain(feat)
  # Copy every shared weight; the plain head has no offset branch.
  offset_ids = {id(v) for conv in (head._offset_conv1, head._offset_conv2)  # pylint: disable=protected-access
                for v in conv.weights}
  shared = [v for v in head.weights if id(v) not in offset_ids]
  assert len(shared) == len(head_plain.weights)
  for target, source in zip(head_plain.weights, shared):
    target.assign(source)
  plain = head_plain(feat, training=False)
  np.testing.assert_allclose(with_zero['box_preds'].numpy(),
                             plain['box_preds'].numpy(), atol=1e-4)


def test_resample_boxes_integer_offset_and_inverted_fallback():
  # 1 x 1 x 3 map, one anchor: boxes at columns 0, 1, 2.
  boxes = tf.constant([[[[[0., 0., 10., 10.]],
                         [[0., 20., 10., 30.]],
                         [[50., 40., 60., 50.]]]]])
  offsets = np.zeros([1, 1, 3, 1, 4, 2], np.float32)
  # Column 0 reads every coordinate from column 1 (dx = +1): a valid box.
  offsets[0, 0, 0, 0, :, 1] = 1.
  # Column 1 reads only ymin from column 2 (ymin 50 > ymax 10): inverted.
  offsets[0, 0, 1, 0, 0, 1] = 1.
  out = tood_head.resample_boxes(boxes, tf.constant(offsets)).numpy()
  np.testing.assert_allclose(out[0, 0, 0, 0], [0., 20., 10., 30.])
  np.testing.assert_allclose(out[0, 0, 1, 0], [0., 20., 10., 30.])
  np.testing.assert_allclose(out[0, 0, 2, 0], [50., 40., 60., 50.])


def test_only_the_first_anchor_decides_the_fallback():
  # The reference tests anchor 0's box: where it inverts, every anchor of
  # the cell keeps its unsampled box; another anchor's inverted box stays.
  boxes = tf.constant([[[[[0., 0., 10., 10.], [0., 0., 20., 20.]],
                         [[30., 30., 40., 40.], [60., 60., 90., 90.]]]]])
  offsets = np.zeros([1, 1, 2, 2, 4, 2], np.float32)
  # Cell 0: anchor 1's ymin read from cell 1 (60 > ymax 20): inverted, kept.
  offsets[0, 0, 0, 1, 0, 1] = 1.
  # Cell 1: anchor 0's ymax read from cell 0 (10 < ymin 30): all revert.
  offsets[0, 0, 1, 0, 2, 1] = -1.
  offsets[0, 0, 1, 1, :, 1] = -1.
  out = tood_head.resample_boxes(boxes, tf.constant(offsets)).numpy()
  np.testing.assert_allclose(out[0, 0, 0, 0], [0., 0., 10., 10.])
  np.testing.assert_allclose(out[0, 0, 0, 1], [60., 0., 20., 20.])
  np.testing.assert_allclose(out[0, 0, 1], boxes.numpy()[0, 0, 1])


def test_task_decomposition_matches_numpy():
  layer = tood_head.TaskDecomposition(num_layers=3, feat_channels=4,
                                      attention_channels=2)
  feat = tf.random.normal([2, 3, 3, 12], seed=4)
  out = layer(feat, training=False).numpy()
  f = feat.numpy()
  w1, b1 = [v.numpy() for v in layer._attention1.weights]  # pylint: disable=protected-access
  w2, b2 = [v.numpy() for v in layer._attention2.weights]  # pylint: disable=protected-access
  kernel = layer._reduction.kernel.numpy()[0, 0]  # pylint: disable=protected-access
  pooled = f.mean(axis=(1, 2))
  attention = _sigmoid(np.maximum(pooled @ w1 + b1, 0) @ w2 + b2)  # [2, 3]
  # TOOD: per-sample kernel, each layer's input rows scaled by its weight.
  scaled_kernel = kernel[None] * np.repeat(attention, 4, axis=1)[:, :, None]
  reduced = np.einsum('bhwc,bco->bhwo', f, scaled_kernel)
  norm = layer._norm  # pylint: disable=protected-access
  gamma, beta, mean, var = [v.numpy() for v in norm.weights]
  expected = np.maximum(
      (reduced - mean) / np.sqrt(var + norm.epsilon) * gamma + beta, 0)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_get_config_round_trips():
  for layer in [_small_head(),
                tood_head.TaskDecomposition(num_layers=2, feat_channels=8,
                                            attention_channels=4)]:
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
