"""Tests for the box-aligned mask ops."""

import numpy as np
import tensorflow as tf

from official_ext.vision.ops import mask_ops


def test_recrop_masks_on_clipped_box():
  # Box 10x20 px whose crop is 1 on its left half, 0 on its right half.
  crop = np.zeros([1, 8, 8], np.float32)
  crop[:, :, :4] = 1.
  box = tf.constant([[0., 0., 10., 20.]])
  left = mask_ops.recrop_masks(crop, box,
                               tf.constant([[0., 0., 10., 10.]]), 8)
  right = mask_ops.recrop_masks(crop, box,
                                tf.constant([[0., 10., 10., 20.]]),
                                8)
  same = mask_ops.recrop_masks(crop, box, box, 8)
  # Samples at cell centres, bilinear: only the sample next to the 1/0 edge
  # of the original crop mixes (crop column 3.25 -> 0.75, 3.75 -> 0.25).
  np.testing.assert_allclose(left.numpy()[0, :, :7], 1., atol=1e-6)
  np.testing.assert_allclose(left.numpy()[0, :, 7], 0.75, atol=1e-6)
  np.testing.assert_allclose(right.numpy()[0, :, 0], 0.25, atol=1e-6)
  np.testing.assert_allclose(right.numpy()[0, :, 1:], 0., atol=1e-6)
  np.testing.assert_array_equal(same.numpy(), crop)
  # Middle window x in [5, 15] = crop columns [2, 6].
  mid = mask_ops.recrop_masks(crop, box,
                              tf.constant([[0., 5., 10., 15.]]), 8)
  np.testing.assert_allclose(mid.numpy()[0, 4],
                             [1, 1, 1, .75, .25, 0, 0, 0], atol=1e-6)


def test_paste_masks_is_the_same_in_onnx():
  """tf2onnx's conversion of the paste, run by ONNX Runtime.

  Pixels above and left of a box (inside its one-pixel margin) map to
  negative crop indices; ONNX's OneHot counts those from the end, so an
  unguarded `tf.one_hot` pastes the crop's far edge there (up to 0.9 off).
  """
  import onnxruntime  # pylint: disable=g-import-not-at-top
  import tf2onnx  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  masks = rng.uniform(0., 1., [6, 28, 28]).astype(np.float32)
  # Inside, across the top-left corner, across the bottom-right one, tiny.
  boxes = np.array([[10.3, 12.7, 40.2, 35.9], [-5., -8., 20., 17.],
                    [30.5, 41.2, 80., 90.], [20., 20., 21.5, 20.6],
                    [0.4, 0.6, 63.6, 63.4], [33.3, 5.5, 47.7, 60.1]],
                   np.float32)
  specs = [tf.TensorSpec([None, 28, 28], tf.float32),
           tf.TensorSpec([None, 4], tf.float32)]
  paste = tf.function(lambda m, b: mask_ops.paste_masks(m, b, (64, 64)),
                      input_signature=specs)
  expected = paste(masks, boxes).numpy()
  model, _ = tf2onnx.convert.from_function(paste, input_signature=specs,
                                           opset=17)
  session = onnxruntime.InferenceSession(
      model.SerializeToString(), providers=['CPUExecutionProvider'])
  names = [i.name for i in session.get_inputs()]
  actual, = session.run(None, dict(zip(names, [masks, boxes])))
  assert actual.shape == expected.shape == (6, 64, 64)
  assert (expected > 0).sum() > 5000  # The boxes' pixels, mostly nonzero.
  np.testing.assert_allclose(actual, expected, atol=1e-5)
