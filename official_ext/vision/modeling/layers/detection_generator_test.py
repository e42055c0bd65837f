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


def _generator(nms_version='combined', **kwargs):
  params = dict(pre_nms_top_k=100, pre_nms_score_threshold=0.05,
                nms_iou_threshold=0.6, max_num_detections=5,
                nms_version=nms_version)
  params.update(kwargs)
  return detection_generator.DecodedBoxDetectionGenerator(**params)


class DecodedBoxDetectionGeneratorTest(tf.test.TestCase,
                                       parameterized.TestCase):

  @parameterized.parameters(*detection_generator.NMS_VERSIONS)
  def test_hand_built_case(self, nms_version):
    boxes, scores = _inputs()
    out = _generator(nms_version)(boxes, scores)
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

  @parameterized.parameters(*detection_generator.NMS_VERSIONS)
  def test_same_class_overlap_suppressed_iou_threshold(self, nms_version):
    boxes, scores = _inputs()
    # IoU(A, B) = 0.818: with an IoU threshold above it, B survives.
    out = _generator(nms_version, nms_iou_threshold=0.85)(boxes, scores)
    self.assertAllEqual(out['num_detections'], [4, 3])
    self.assertAllClose(out['detection_scores'][0], [0.9, 0.8, 0.7, 0.3, 0.])
    self.assertAllEqual(out['detection_classes'][0], [0, 0, 1, 0, 0])
    self.assertAllClose(out['detection_boxes'][0], [_A, _B, _C, _C, _ZERO])

  @parameterized.parameters(*detection_generator.NMS_VERSIONS)
  def test_sorted_and_max_num_detections(self, nms_version):
    # 8 disjoint boxes, one class, shuffled scores; keep the top 3.
    boxes = np.array([[[20. * i, 0., 20. * i + 10., 10.] for i in range(8)]],
                     np.float32)
    score_values = np.array([0.2, 0.9, 0.1, 0.6, 0.75, 0.3, 0.05, 0.4],
                            np.float32)
    out = _generator(nms_version, max_num_detections=3)(
        boxes, score_values[None, :, None])
    self.assertAllEqual(out['num_detections'], [3])
    self.assertAllClose(out['detection_scores'], [[0.9, 0.75, 0.6]])
    self.assertAllClose(out['detection_boxes'][0], boxes[0, [1, 4, 3]])
    self.assertAllEqual(out['detection_classes'], [[0, 0, 0]])

  @parameterized.parameters(*detection_generator.NMS_VERSIONS)
  def test_pre_nms_top_k(self, nms_version):
    boxes, scores = _inputs()
    out = _generator(nms_version, pre_nms_top_k=2)(boxes, scores)
    # Image 0: top-2 pairs are (A, 0) 0.9 and (B, 0) 0.8; NMS removes B.
    # Image 1: top-2 pairs are (A, 0) 0.9 and (B, 1) 0.8; (C, 0) is cut.
    self.assertAllEqual(out['num_detections'], [1, 2])
    self.assertAllClose(out['detection_scores'],
                        [[0.9, 0., 0., 0., 0.], [0.9, 0.8, 0., 0., 0.]])
    self.assertAllEqual(out['detection_classes'],
                        [[0, 0, 0, 0, 0], [0, 1, 0, 0, 0]])
    self.assertAllClose(out['detection_boxes'][1, :2], [_A, _B])

  @parameterized.parameters(*detection_generator.NMS_VERSIONS)
  def test_score_threshold(self, nms_version):
    boxes, scores = _inputs()
    out = _generator(nms_version, pre_nms_score_threshold=0.5)(boxes, scores)
    # 0.3 (C, class 0) of image 0 no longer passes.
    self.assertAllEqual(out['num_detections'], [2, 3])
    self.assertAllClose(out['detection_scores'],
                        [[0.9, 0.7, 0., 0., 0.], [0.9, 0.8, 0.6, 0., 0.]])
    # Above every score: nothing passes, all rows are padding.
    out = _generator(nms_version, pre_nms_score_threshold=0.95)(boxes, scores)
    self.assertAllEqual(out['num_detections'], [0, 0])
    self.assertAllEqual(out['detection_scores'], np.zeros((2, 5)))
    self.assertAllEqual(out['detection_classes'], np.zeros((2, 5)))

  @parameterized.parameters(*detection_generator.NMS_VERSIONS)
  def test_reference_defaults_keep_every_positive_score_drop_empty_boxes(
      self, nms_version):
    # The reference: no score threshold (scores must exceed 0), boxes of
    # zero or negative width or height dropped before NMS.
    boxes = np.array([[_A, _ZERO, [5., 5., 5., 9.], [9., 9., 8., 12.], _D]],
                     np.float32)
    scores = np.array([[[0.01], [0.9], [0.8], [0.7], [0.]]], np.float32)
    layer = detection_generator.DecodedBoxDetectionGenerator(
        pre_nms_top_k=5, max_num_detections=5, nms_version=nms_version)
    self.assertEqual(layer.get_config()['pre_nms_score_threshold'], 0.)
    out = layer(boxes, scores)
    self.assertAllEqual(out['num_detections'], [1])
    self.assertAllClose(out['detection_boxes'][0, 0], _A)
    self.assertAllClose(out['detection_scores'][0, 0], 0.01)

  @parameterized.parameters(*detection_generator.NMS_VERSIONS)
  def test_tf_function_dynamic_batch(self, nms_version):
    boxes, scores = _inputs()
    layer = _generator(nms_version)
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
    self.assertEqual(config['nms_version'], 'combined')
    new_layer = detection_generator.DecodedBoxDetectionGenerator.from_config(
        config)
    boxes, scores = _inputs()
    for k, v in new_layer(boxes, scores).items():
      self.assertAllClose(v, layer(boxes, scores)[k])
    config['nms_version'] = 'static'
    static = detection_generator.DecodedBoxDetectionGenerator.from_config(
        config)
    self.assertEqual(static.get_config()['nms_version'], 'static')
    with self.assertRaisesRegex(ValueError, 'nms_version'):
      _generator('batched')


def _random_case(seed, batch=3, num_anchors=300, num_classes=4):
  """Clustered boxes (many overlaps), some inverted, empty or off the image
  (all coordinates negative), and distinct random scores."""
  rng = np.random.default_rng(seed)
  centres = rng.uniform(-40, 300, (batch, 12, 2))
  centres = centres[:, rng.integers(0, 12, num_anchors)]
  centres += rng.normal(0, 6, centres.shape)
  sides = rng.uniform(4, 60, (batch, num_anchors, 2))
  boxes = np.concatenate([centres - sides / 2, centres + sides / 2], -1)
  boxes[:, :10] = boxes[:, :10, [2, 3, 0, 1]]  # Inverted.
  boxes[:, 10:15, 2] = boxes[:, 10:15, 0]  # Empty.
  boxes[:, 15:20] -= 400.  # Every coordinate negative.
  scores = rng.uniform(0, 1, (batch, num_anchors, num_classes)) ** 4
  return boxes.astype(np.float32), scores.astype(np.float32)


def _canonical(out):
  """Each image's valid detections sorted by (-score, class, box), as
  numpy: the two versions may order exactly equal scores differently."""
  images = []
  for b in range(out['num_detections'].shape[0]):
    n = int(out['num_detections'][b])
    scores = out['detection_scores'][b, :n].numpy()
    classes = out['detection_classes'][b, :n].numpy()
    boxes = out['detection_boxes'][b, :n].numpy()
    order = np.lexsort(tuple(boxes.T[::-1]) + (classes, -scores))
    images.append((scores[order], classes[order], boxes[order]))
  return images


class StaticNmsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      (0, 0., 0.6, 1000, 100, 4),
      (1, 0.05, 0.5, 1000, 100, 4),
      (2, 0., 0.7, 200, 30, 1),
      (3, 0.01, 0.6, 1000, 100, 80),
      (4, 0., 0.3, 50, 50, 3),
  )
  def test_static_gives_the_combined_detections(self, seed, threshold, iou,
                                                top_k, max_detections,
                                                num_classes):
    boxes, scores = _random_case(seed, num_classes=num_classes)
    params = dict(pre_nms_top_k=top_k, pre_nms_score_threshold=threshold,
                  nms_iou_threshold=iou, max_num_detections=max_detections)
    combined = detection_generator.DecodedBoxDetectionGenerator(
        nms_version='combined', **params)(boxes, scores)
    # NMS removed some of the best candidates: the case tests something.
    best = -np.sort(-scores.reshape(scores.shape[0], -1), axis=1)
    self.assertTrue((combined['num_detections'].numpy() > 0).all())
    self.assertNotAllClose(combined['detection_scores'],
                           best[:, :max_detections])
    for version in ('static', 'offset'):
      other = detection_generator.DecodedBoxDetectionGenerator(
          nms_version=version, **params)(boxes, scores)
      for key in combined:
        self.assertAllEqual(other[key], combined[key], msg=(version, key))

  def test_ties_overlaps_and_classes(self):
    a, b, c, far = _A, _B, [0., 2., 10., 12.], [100., 100., 110., 110.]
    # IoU(a, b) 0.82 and IoU(b, c) 0.82 suppress; IoU(a, c) 0.67 does not
    # at 0.7.
    boxes = np.array([[a, b, c, far, a, far]], np.float32)
    scores = np.zeros([1, 6, 3], np.float32)
    scores[0, 0, 0] = 0.9   # a, class 0: kept.
    scores[0, 1, 0] = 0.8   # b, class 0: suppressed by a.
    scores[0, 2, 0] = 0.7   # c, class 0: kept (b, which overlaps it, is
                            # not kept; a overlaps it too little).
    scores[0, 1, 1] = 0.8   # b, class 1: kept (another class).
    scores[0, 3, 2] = 0.5   # far and its twin, class 2, equal scores:
    scores[0, 5, 2] = 0.5   # the twin is suppressed, one copy stays.
    scores[0, 4, 2] = 0.5   # a, class 2, the same score: kept.
    scores[0, 3, 1] = 0.7   # far, class 1: ties with c of class 0.
    outputs = [
        detection_generator.DecodedBoxDetectionGenerator(
            pre_nms_top_k=18, nms_iou_threshold=0.7, max_num_detections=8,
            nms_version=version)(boxes, scores)
        for version in detection_generator.NMS_VERSIONS]
    for out in outputs:
      self.assertAllEqual(out['num_detections'], [6])
    expected_scores = np.array([0.9, 0.8, 0.7, 0.7, 0.5, 0.5], np.float32)
    expected = [(0.9, 0, a), (0.8, 1, b), (0.7, 0, c), (0.7, 1, far),
                (0.5, 2, a), (0.5, 2, far)]
    for out in outputs:
      got_scores, got_classes, got_boxes = _canonical(out)[0]
      self.assertAllClose(got_scores, expected_scores)
      self.assertAllEqual(got_classes, [e[1] for e in expected])
      self.assertAllClose(got_boxes, [e[2] for e in expected])
      # Sorted by score, ties in any order.
      self.assertAllClose(out['detection_scores'][0, :6], expected_scores)

  def test_static_compiles_with_xla_and_combined_says_what_to_set(self):
    boxes, scores = _random_case(5)
    static = detection_generator.DecodedBoxDetectionGenerator(
        nms_version='static')
    compiled = tf.function(static, jit_compile=True)(boxes, scores)
    expected = static(boxes, scores)
    for key in expected:
      self.assertAllEqual(compiled[key], expected[key], msg=key)
    combined = detection_generator.DecodedBoxDetectionGenerator()
    with self.assertRaisesRegex(ValueError, 'nms_version: static'):
      tf.function(combined, jit_compile=True)(boxes, scores)

  def test_static_nms_is_greedy(self):
    # A chain: 0 suppresses 1, 1 would suppress 2, 2 does not touch 0.
    boxes = tf.constant([[_A, _B, [0., 2., 10., 12.], _D]])
    scores = tf.constant([[0.9, 0.8, 0.7, 0.6]])
    selected, num = detection_generator.static_nms(
        boxes, scores, max_output_size=6, iou_threshold=0.7)
    self.assertAllEqual(num, [3])
    self.assertAllEqual(selected, [[0, 2, 3, 0, 0, 0]])
    # The same boxes in two classes suppress only within a class.
    selected, num = detection_generator.static_nms(
        boxes, scores, max_output_size=2, iou_threshold=0.7,
        classes=tf.constant([[0, 1, 0, 0]]))
    self.assertAllEqual(num, [2])
    self.assertAllEqual(selected, [[0, 1]])
    # A score threshold, and the first kept only.
    selected, num = detection_generator.static_nms(
        boxes, scores, max_output_size=4, iou_threshold=0.7,
        score_threshold=0.65)
    self.assertAllEqual(num, [2])
    self.assertAllEqual(selected, [[0, 2, 0, 0]])

  def test_pairwise_iou_as_the_kernel(self):
    boxes = tf.constant([[_A, _B, [10., 11., 0., 1.], _ZERO, _D]])
    iou = detection_generator.pairwise_iou(boxes)[0].numpy()
    self.assertAllClose(iou[0, 1], 90. / 110.)
    self.assertAllClose(iou[0, 2], 90. / 110.)  # Inverted: put in order.
    self.assertAllClose(iou[1, 2], 1.)
    self.assertAllEqual(iou[3], np.zeros(5))  # No area: 0.
    self.assertAllEqual(iou[:, 3], np.zeros(5))
    self.assertAllEqual(iou[0, 4], 0.)
    self.assertAllClose(iou, iou.T)


if __name__ == '__main__':
  tf.test.main()
