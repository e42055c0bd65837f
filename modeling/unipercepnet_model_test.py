"""Tests for the UniPercepNet model: both call modes, shapes, dtypes."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from configs import losses as losses_cfg
from configs import unipercepnet as cfg
from modeling import factory
from official_ext.vision.configs import backbones
from official_ext.vision.configs import decoders


def tiny_config(num_classes=3, include_mask=True) -> cfg.UniPercepNet:
  return cfg.UniPercepNet(
      num_classes=num_classes,
      input_size=[128, 160, 3],
      include_mask=include_mask,
      backbone=backbones.Backbone(
          type='regnet', regnet=backbones.RegNet(
              model_id='regnetx_200mf', channel_attention=True)),
      decoder=decoders.Decoder(
          type='dilated_encoder', dilated_encoder=decoders.DilatedEncoder(
              num_filters=32, bottleneck_filters=8, dilation_rates=[2, 4])),
      head=cfg.TOODHead(num_stacked_convs=2, num_filters=16,
                        attention_channels=4, branch_channels=8),
      mask_head=cfg.MaskHead(num_convs=2, num_filters=16),
      # The options a serving user may want: a score threshold, boxes
      # clipped to the image (the reference has neither).
      detection_generator=cfg.DetectionGenerator(
          max_num_detections=10, pre_nms_score_threshold=0.05,
          clip_boxes=True))


def _build(model_config, mask_targets_config=None):
  specs = tf_keras.layers.InputSpec(shape=[None] + model_config.input_size)
  return factory.build_unipercepnet(specs, model_config,
                                    mask_targets_config=mask_targets_config)


@pytest.fixture(scope='module')
def model():
  # Two mask RoIs per image in training.
  return _build(tiny_config(), losses_cfg.MaskTargets(num_mask_rois=2))


def _ground_truth():
  """Two images' gt boxes, classes and box-cropped masks (one padded)."""
  return {
      'gt_boxes': tf.constant([[[0., 0., 64., 64.], [10., 20., 90., 150.]],
                               [[32., 32., 96., 96.], [-1., -1., -1., -1.]]]),
      'gt_classes': tf.constant([[1, 3], [2, -1]]),
      'gt_masks': tf.concat([tf.ones([2, 1, 28, 28]),
                             tf.zeros([2, 1, 28, 28])], axis=1),
  }


def test_inference_outputs_shapes_dtypes_and_ranges(model):
  images = tf.random.normal([2, 128, 160, 3], seed=1)
  image_shape = tf.constant([[128., 160.], [96., 100.]])
  out = tf.function(lambda x, s: model(x, image_shape=s, training=False))(
      images, image_shape)
  expected = {
      'detection_boxes': ((2, 10, 4), tf.float32),
      'detection_scores': ((2, 10), tf.float32),
      'detection_classes': ((2, 10), tf.int32),
      'num_detections': ((2,), tf.int32),
      'detection_masks': ((2, 10, 28, 28), tf.float32),
  }
  for key, (shape, dtype) in expected.items():
    assert tuple(out[key].shape) == shape, key
    assert out[key].dtype == dtype, key
  num = out['num_detections'].numpy()
  classes = out['detection_classes'].numpy()
  scores = out['detection_scores'].numpy()
  boxes = out['detection_boxes'].numpy()
  masks = out['detection_masks'].numpy()
  assert ((masks >= 0) & (masks <= 1)).all()
  for b, (h, w) in enumerate([(128, 160), (96, 100)]):
    n = num[b]
    assert 0 <= n <= 10
    assert ((classes[b, :n] >= 1) & (classes[b, :n] <= 3)).all()
    assert (classes[b, n:] == 0).all() and (scores[b, n:] == 0).all()
    assert (scores[b, :n] > 0.05).all()
    assert (np.diff(scores[b, :n]) <= 1e-7).all()
    # Boxes are clipped to each image's own valid size.
    assert (boxes[b, :n, 0::2] >= 0).all() and (boxes[b, :n, 0::2] <= h).all()
    assert (boxes[b, :n, 1::2] >= 0).all() and (boxes[b, :n, 1::2] <= w).all()
  # 4x5 cells x 5 anchors of dense outputs.
  assert out['cls_scores'].shape == (2, 4 * 5 * 5, 3)


def test_low_threshold_fills_every_detection_slot(model):
  model_config = tiny_config()
  model_config.detection_generator.pre_nms_score_threshold = 0.
  model_config.detection_generator.nms_iou_threshold = 1.
  other = _build(model_config)
  images = tf.random.normal([1, 128, 160, 3], seed=2)
  other(images, training=False)
  other.set_weights(model.get_weights())
  out = other(images, training=False)
  assert int(out['num_detections'][0]) == 10
  assert (out['detection_classes'].numpy() >= 1).all()
  # The top detection is the best dense (anchor, class) score.
  np.testing.assert_allclose(float(out['detection_scores'][0, 0]),
                             float(tf.reduce_max(out['cls_scores'][0])),
                             rtol=1e-6)


def test_training_outputs_and_mask_logits(model):
  images = tf.random.normal([2, 128, 160, 3], seed=3)
  gt = _ground_truth()
  out = model(images, **gt, training=True)
  n = 4 * 5 * 5
  assert out['cls_scores'].shape == (2, n, 3)
  assert out['box_preds'].shape == (2, n, 4)
  assert out['anchor_boxes'].shape == (n, 4)
  assert out['mask_logits'].shape == (2, 2, 28, 28)
  assert out['mask_targets'].shape == (2, 2, 28, 28)
  assert out['mask_weights'].shape == (2, 2)
  # The gt boxes are among the sampled RoIs: each image has a foreground one.
  assert (out['mask_weights'].numpy().sum(axis=1) >= 1).all()
  assert 'detection_boxes' not in out
  # Gradients reach the backbone, head and mask head.
  with tf.GradientTape() as tape:
    out = model(images, **gt, training=True)
    loss = (tf.reduce_sum(out['cls_scores']) + tf.reduce_sum(out['box_preds'])
            + tf.reduce_sum(out['mask_logits']))
  grads = tape.gradient(loss, model.trainable_variables)
  missing = [v.name for v, g in zip(model.trainable_variables, grads)
             if g is None]
  assert not missing, missing


def test_mask_targets_take_the_mask_heads_output_size():
  # 7 x 4 = 28 is not the default 14 x 2: one setting cannot drift from the
  # other, as the target size follows the head.
  config = tiny_config()
  config.mask_roi_aligner.crop_size = 7
  config.mask_head.upsample_factor = 4
  model = _build(config, losses_cfg.MaskTargets(num_mask_rois=2))
  out = model(tf.zeros([2, 128, 160, 3]), **_ground_truth(), training=True)
  assert out['mask_logits'].shape == (2, 2, 28, 28)
  assert out['mask_targets'].shape == (2, 2, 28, 28)
  config.mask_head.upsample_factor = 1
  model = _build(config, losses_cfg.MaskTargets(num_mask_rois=2))
  out = model(tf.zeros([2, 128, 160, 3]), **_ground_truth(), training=True)
  assert out['mask_logits'].shape == out['mask_targets'].shape == (2, 2, 7, 7)


def test_mask_target_sampler_stays_out_of_checkpoints(model):
  # Checkpoints written before the model held the sampler keep loading.
  children = tf.train.TrackableView(model).children(model)
  assert model.mask_target_sampler is not None
  assert set(children) == {'_config_dict', 'backbone', 'decoder', 'head',
                           'detection_generator', 'mask_head',
                           'mask_roi_aligner'}


def test_model_without_mask_head():
  model = _build(tiny_config(include_mask=False))
  out = model(tf.zeros([1, 128, 160, 3]), training=False)
  assert 'detection_masks' not in out
  with pytest.raises(ValueError, match='without a mask head'):
    model(tf.zeros([1, 128, 160, 3]), gt_boxes=tf.zeros([1, 1, 4]),
          gt_classes=tf.ones([1, 1], tf.int32),
          gt_masks=tf.ones([1, 1, 28, 28]), training=True)


def test_frozen_backbone_statistics_move_only_in_the_neck(model):
  images = tf.random.normal([1, 128, 160, 3], seed=4)
  backbone_stats = [v.numpy() for v in model.backbone.non_trainable_variables]
  decoder_stats = [v.numpy() for v in model.decoder.non_trainable_variables]
  model(images, training=True)
  for before, v in zip(backbone_stats, model.backbone.non_trainable_variables):
    np.testing.assert_array_equal(before, v.numpy())
  moved = [not np.array_equal(before, v.numpy()) for before, v in
           zip(decoder_stats, model.decoder.non_trainable_variables)]
  assert any(moved)


def test_mask_cap_keeps_the_best_detections_masks(model):
  model_config = tiny_config()
  model_config.detection_generator.pre_nms_score_threshold = 0.
  model_config.detection_generator.nms_iou_threshold = 1.
  model_config.mask_head.max_inference_rois = 4
  capped = _build(model_config)
  model_config.mask_head.max_inference_rois = 100
  full = _build(model_config)
  images = tf.random.normal([2, 128, 160, 3], seed=5)
  for other in (capped, full):
    other(images, training=False)
    other.set_weights(model.get_weights())
  out_capped = capped(images, training=False)
  out_full = full(images, training=False)
  assert out_capped['detection_masks'].shape == (2, 10, 28, 28)
  np.testing.assert_allclose(out_capped['detection_masks'][:, :4].numpy(),
                             out_full['detection_masks'][:, :4].numpy(),
                             rtol=1e-5, atol=1e-6)
  assert not out_capped['detection_masks'][:, 4:].numpy().any()
  np.testing.assert_array_equal(out_capped['detection_boxes'].numpy(),
                                out_full['detection_boxes'].numpy())
  with pytest.raises(ValueError, match='max_mask_rois'):
    model_config.mask_head.max_inference_rois = 0
    _build(model_config)


def _by_score_class_box(out):
  """Per image, the valid detections' fields sorted by (-score, class,
  box): NMS versions may order exactly equal scores differently."""
  fields = ('detection_scores', 'detection_classes', 'detection_boxes',
            'detection_masks')
  images = []
  for b, n in enumerate(out['num_detections'].numpy()):
    values = {k: out[k][b, :n].numpy() for k in fields}
    order = np.lexsort(tuple(values['detection_boxes'].T[::-1]) +
                       (values['detection_classes'],
                        -values['detection_scores']))
    images.append({k: v[order] for k, v in values.items()})
  return images


def test_static_nms_model_gives_the_same_detections_and_compiles(model):
  model_config = tiny_config()
  model_config.detection_generator.pre_nms_score_threshold = 0.
  combined = _build(model_config)
  model_config.detection_generator.nms_version = 'static'
  static = _build(model_config)
  assert static.detection_generator.get_config()['nms_version'] == 'static'
  images = tf.random.normal([2, 128, 160, 3], seed=6)
  image_shape = tf.constant([[128., 160.], [96., 100.]])
  for other in (model, combined, static):
    other(images, training=False)
  for other in (combined, static):
    other.set_weights(model.get_weights())
    # Spread the initial scores (all within 1e-6 of the 0.01 prior), as
    # training does, so that what follows is not about near-ties.
    for v in other.head.trainable_variables:
      if 'cls_conv/kernel' in v.name or 'prob_conv2/kernel' in v.name:
        v.assign(v * 1e4)

  def infer(m, jit_compile=None):
    return tf.function(lambda x, s: m(x, image_shape=s, training=False),
                       jit_compile=jit_compile)(images, image_shape)

  expected = infer(combined)
  assert (expected['num_detections'].numpy() == 10).all()
  got = infer(static)
  for key in ('num_detections', 'cls_scores', 'box_preds'):
    np.testing.assert_array_equal(got[key].numpy(), expected[key].numpy(),
                                  err_msg=key)
  for got_image, expected_image in zip(_by_score_class_box(got),
                                       _by_score_class_box(expected)):
    for key, value in expected_image.items():
      np.testing.assert_array_equal(got_image[key], value, err_msg=key)
  # The whole inference forward (NMS, RoIAlign of the detections, mask
  # head) compiles with XLA and gives the same detections to float
  # rounding; detections whose scores are within 1e-5 of a neighbour's
  # may swap places, the others are compared slot by slot.
  compiled = infer(static, jit_compile=True)
  np.testing.assert_array_equal(compiled['num_detections'].numpy(),
                                expected['num_detections'].numpy())
  # Boxes are in pixels (up to 160): a coordinate near 0 that was computed
  # from values near 128 keeps their float32 rounding (one CI run: 1.5e-5
  # at 0.004), so boxes get the absolute 1e-4 of the detections below.
  for key, atol in (('cls_scores', 1e-5), ('box_preds', 1e-4),
                    ('detection_scores', 1e-5)):
    np.testing.assert_allclose(compiled[key].numpy(), expected[key].numpy(),
                               rtol=1e-4, atol=atol, err_msg=key)
  gaps = np.abs(np.diff(expected['detection_scores'].numpy(), axis=1))
  clear = np.ones(gaps.shape + np.array([0, 1]), bool)
  clear[:, 1:] &= gaps > 1e-5
  clear[:, :-1] &= gaps > 1e-5
  assert clear.mean() >= 0.5
  for key in ('detection_classes', 'detection_boxes', 'detection_masks'):
    np.testing.assert_allclose(compiled[key].numpy()[clear],
                               expected[key].numpy()[clear],
                               rtol=1e-4, atol=1e-4, err_msg=key)
  with pytest.raises(ValueError, match='nms_version: static'):
    infer(combined, jit_compile=True)
