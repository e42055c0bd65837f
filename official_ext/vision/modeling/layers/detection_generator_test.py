"""Tests for official_ext.vision.modeling.layers.detection_generator."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from official_ext.vision.modeling.layers import detection_generator

# A and B overlap heavily: intersection 10 x 9 = 90, union 110, IoU 0.818.
_A = [0., 0., 10., 10.]
_B = [0., 1., 10., 11.]
_C = [20., 20., 30., 30.]
_D = [50., 50., 60., 60.]
_ZERO = [0., 0., 0., 0.]


def _inputs():
  boxes = np.array([[_A, _B, _C, _D], [_A, _B, _C, _D]], np.float32)
  scores = np.array([
      # Image 0: A and B both class 0 -> B (lower) suppressed. C scores in
      # both classes -> two detections of the same box. D below threshold.
      [[0.9, 0.0], [0.8, 0.01], [0.3, 0.7], [0.04, 0.03]],
      # Image 1: A class 0, B class 1 -> class-wise NMS keeps both.
      [[0.9, 0.02], [0.0, 0.8], [0.6, 0.0], [0.0, 0.045]],
  ], np.float32)
  return boxes, scores


def _generator(**kwargs):
  params = dict(pre_nms_top_k=100, pre_nms_score_threshold=0.05,
                nms_iou_threshold=0.6, max_num_detections=5)
  params.update(kwargs)
  return detection_generator.DecodedBoxDetectionGenerator(**params)


class DecodedBoxDetectionGeneratorTest(tf.test.TestCase,
                                       parameterized.TestCase):

  def test_hand_built_case(self):
    boxes, scores = _inputs()
    out = _generator()(boxes, scores)
    self.assertEqual(sorted(out), ['detection_boxes', 'detection_classes',
                                   'detection_scores', 'num_detections'])
    self.assertEqual(out['detection_boxes'].shape.as_list(), [2, 5, 4])
    self.assertEqual(out['detection_scores'].shape.as_list(), [2, 5])
    self.assertEqual(out['detection_classes'].shape.as_list(), [2, 5])
    self.assertEqual(out['num_detections'].shape.as_list(), [2])
    self.assertEqual(out['detection_classes'].dtype, tf.int32)
    self.assertEqual(out['num_detections'].dtype, tf.int32)

    self.assertAllEqual(out['num_detections'], [3, 3])
    self.assertAllClose(out['detection_scores'],
                        [[0.9, 0.7, 0.3, 0., 0.], [0.9, 0.8, 0.6, 0., 0.]])
    self.assertAllEqual(out['detection_classes'],
                        [[0, 1, 0, 0, 0], [0, 1, 0, 0, 0]])
    self.assertAllClose(out['detection_boxes'],
                        [[_A, _C, _C, _ZERO, _ZERO],
                         [_A, _B, _C, _ZERO, _ZERO]])

  def test_same_class_overlap_suppressed_iou_threshold(self):
    boxes, scores = _inputs()
    # IoU(A, B) = 0.818: with an IoU threshold above it, B survives.
    out = _generator(nms_iou_threshold=0.85)(boxes, scores)
    self.assertAllEqual(out['num_detections'], [4, 3])
    self.assertAllClose(out['detection_scores'][0], [0.9, 0.8, 0.7, 0.3, 0.])
    self.assertAllEqual(out['detection_classes'][0], [0, 0, 1, 0, 0])
    self.assertAllClose(out['detection_boxes'][0], [_A, _B, _C, _C, _ZERO])

  def test_sorted_and_max_num_detections(self):
    # 8 disjoint boxes, one class, shuffled scores; keep the top 3.
    boxes = np.array([[[20. * i, 0., 20. * i + 10., 10.] for i in range(8)]],
                     np.float32)
    score_values = np.array([0.2, 0.9, 0.1, 0.6, 0.75, 0.3, 0.05, 0.4],
                            np.float32)
    out = _generator(max_num_detections=3)(boxes, score_values[None, :, None])
    self.assertAllEqual(out['num_detections'], [3])
    self.assertAllClose(out['detection_scores'], [[0.9, 0.75, 0.6]])
    self.assertAllClose(out['detection_boxes'][0], boxes[0, [1, 4, 3]])
    self.assertAllEqual(out['detection_classes'], [[0, 0, 0]])

  def test_pre_nms_top_k(self):
    boxes, scores = _inputs()
    out = _generator(pre_nms_top_k=2)(boxes, scores)
    # Image 0: top-2 pairs are (A, 0) 0.9 and (B, 0) 0.8; NMS removes B.
    # Image 1: top-2 pairs are (A, 0) 0.9 and (B, 1) 0.8; (C, 0) is cut.
    self.assertAllEqual(out['num_detections'], [1, 2])
    self.assertAllClose(out['detection_scores'],
                        [[0.9, 0., 0., 0., 0.], [0.9, 0.8, 0., 0., 0.]])
    self.assertAllEqual(out['detection_classes'],
                        [[0, 0, 0, 0, 0], [0, 1, 0, 0, 0]])
    self.assertAllClose(out['detection_boxes'][1, :2], [_A, _B])

  def test_score_threshold(self):
    boxes, scores = _inputs()
    out = _generator(pre_nms_score_threshold=0.5)(boxes, scores)
    # 0.3 (C, class 0) of image 0 no longer passes.
    self.assertAllEqual(out['num_detections'], [2, 3])
    self.assertAllClose(out['detection_scores'],
                        [[0.9, 0.7, 0., 0., 0.], [0.9, 0.8, 0.6, 0., 0.]])
    # Above every score: nothing passes, all rows are padding.
    out = _generator(pre_nms_score_threshold=0.95)(boxes, scores)
    self.assertAllEqual(out['num_detections'], [0, 0])
    self.assertAllEqual(out['detection_scores'], np.zeros((2, 5)))
    self.assertAllEqual(out['detection_classes'], np.zeros((2, 5)))

  def test_reference_defaults_keep_every_positive_score_drop_empty_boxes(self):
    # The reference: no score threshold (scores must exceed 0), boxes of
    # zero or negative width or height dropped before NMS.
    boxes = np.array([[_A, _ZERO, [5., 5., 5., 9.], [9., 9., 8., 12.], _D]],
                     np.float32)
    scores = np.array([[[0.01], [0.9], [0.8], [0.7], [0.]]], np.float32)
    layer = detection_generator.DecodedBoxDetectionGenerator(
        pre_nms_top_k=5, max_num_detections=5)
    self.assertEqual(layer.get_config()['pre_nms_score_threshold'], 0.)
    out = layer(boxes, scores)
    self.assertAllEqual(out['num_detections'], [1])
    self.assertAllClose(out['detection_boxes'][0, 0], _A)
    self.assertAllClose(out['detection_scores'][0, 0], 0.01)

  def test_tf_function_dynamic_batch(self):
    boxes, scores = _inputs()
    layer = _generator()
    fn = tf.function(layer, input_signature=[
        tf.TensorSpec([None, 4, 4]), tf.TensorSpec([None, 4, 2])])
    out = fn(boxes, scores)
    self.assertEqual(out['detection_scores'].shape.as_list(), [2, 5])
    self.assertAllEqual(out['num_detections'], [3, 3])
    self.assertAllClose(out['detection_scores'],
                        [[0.9, 0.7, 0.3, 0., 0.], [0.9, 0.8, 0.6, 0., 0.]])

  def test_dynamic_num_anchors_rejected(self):
    layer = _generator()
    fn = tf.function(layer, input_signature=[
        tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None, 2])])
    with self.assertRaisesRegex(ValueError, 'static N and K'):
      fn.get_concrete_function()

  def test_get_config(self):
    layer = _generator(pre_nms_top_k=7, nms_iou_threshold=0.5)
    config = layer.get_config()
    self.assertEqual(config['pre_nms_top_k'], 7)
    self.assertEqual(config['pre_nms_score_threshold'], 0.05)
    self.assertEqual(config['nms_iou_threshold'], 0.5)
    self.assertEqual(config['max_num_detections'], 5)
    new_layer = detection_generator.DecodedBoxDetectionGenerator.from_config(
        config)
    boxes, scores = _inputs()
    for k, v in new_layer(boxes, scores).items():
      self.assertAllClose(v, layer(boxes, scores)[k])


if __name__ == '__main__':
  tf.test.main()
