"""Tests for the RoI mask head."""

import numpy as np
import tensorflow as tf

from modeling.heads import mask_head


def test_param_count_at_paper_size():
  head = mask_head.AttentionMaskHead(num_classes=80)
  head.build([None, None, 14, 14, 512])
  count = sum(v.shape.num_elements() for v in head.trainable_variables)
  # 3x3 512->256 + 3 x 3x3 256->256 (with bias), SAM (7*7*2 + 1),
  # 2x2 deconv 256->256, 1x1 256->80.
  assert count == (1179904 + 3 * 590080 + 99 + 262400 + 20560) == 3233203
  no_sam = mask_head.AttentionMaskHead(num_classes=80, spatial_attention=False)
  no_sam.build([None, None, 14, 14, 512])
  assert count - sum(v.shape.num_elements()
                     for v in no_sam.trainable_variables) == 99


def test_output_shape_and_class_channel():
  head = mask_head.AttentionMaskHead(num_classes=4, num_convs=2,
                                     num_filters=8)
  features = tf.random.normal([2, 3, 7, 7, 6], seed=1)
  classes = tf.constant([[1, 2, 4], [3, 3, 0]])
  logits = head(features, classes)
  assert logits.shape == (2, 3, 14, 14)
  # All K channels, computed through the sublayers, then picked by hand.
  x = tf.reshape(features, [-1, 7, 7, 6])
  for conv in head._convs:  # pylint: disable=protected-access
    x = conv(x)
  x = head._attention(x)  # pylint: disable=protected-access
  full = head._logits(head._upsample(x)).numpy().reshape(2, 3, 14, 14, 4)  # pylint: disable=protected-access
  for b in range(2):
    for r in range(3):
      channel = max(int(classes[b, r]) - 1, 0)
      np.testing.assert_allclose(logits[b, r].numpy(),
                                 full[b, r, :, :, channel], rtol=1e-5,
                                 atol=1e-5)


def test_get_config_round_trip():
  head = mask_head.AttentionMaskHead(num_classes=5, spatial_attention=False)
  config = head.get_config()
  assert mask_head.AttentionMaskHead.from_config(config).get_config() == config
