"""Given the reference's weights, the model computes what the reference does.

Reads the fixture made by running the reference implementation
(UniPercepNet-S on MMDetection 3.3; `../shared/refparity/...`, see its
README): its state dict converted by `tools/convert_checkpoint.py`, the
intermediates of one 640x640 forward pass (`stages.npz`) and the test path
on an image (`image.npz`). The reference is NCHW, BGR, boxes x-first; the
helpers below bring its arrays into this project's layout.

Tolerances follow the fixture's section 9: dense maps within 1e-3 of the
array's largest magnitude (the reference differs from itself by up to
2.4e-4 between float32 and float64 runs), scores within 1e-5, detections
matched by label and box IoU.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import registry_imports  # pylint: disable=unused-import
from official.core import exp_factory
from modeling.heads import tood_head
from official_ext.vision.ops import box_ops
from tools import convert_checkpoint
from tools import weights_io

NUM_ANCHORS = 5
STRIDE = 32.


def _nhwc(x):
  return np.transpose(x, (0, 2, 3, 1))


def _rel(ours, ref):
  """max |ours - ref| / max |ref|."""
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  assert ours.shape == ref.shape, (ours.shape, ref.shape)
  return np.abs(ours - ref).max() / np.abs(ref).max()


def _swap_xy(boxes):
  """yxyx <-> xyxy on the last axis (of size 4)."""
  return np.asarray(boxes)[..., [1, 0, 3, 2]]


def _box_map(ref):
  """Reference `[1, A*4, H, W]` (x-first) box channels -> `[1, H, W, A, 4]`
  in this project's order (y-first)."""
  x = _nhwc(ref)
  return _swap_xy(x.reshape(x.shape[:3] + (NUM_ANCHORS, 4)))


def _load(refparity_dir, name):
  return np.load(os.path.join(refparity_dir, name))


def _converted_model(refparity_dir, height, width):
  params = exp_factory.get_exp_config('unipercepnet_coco')
  params.task.model.input_size = [height, width, 3]
  source = weights_io.load_state_dict(
      os.path.join(refparity_dir, 'weights.safetensors'))
  _, model = convert_checkpoint.convert_model(params, source, 'fixture')
  return model


@pytest.fixture(scope='module')
def stages(refparity_dir):
  return _load(refparity_dir, 'stages.npz')


@pytest.fixture(scope='module')
def model(refparity_dir):
  return _converted_model(refparity_dir, 640, 640)


@pytest.fixture(scope='module')
def image_input(stages):
  """The stored normalised BGR input as this project's RGB NHWC input."""
  return tf.constant(_nhwc(stages['input'])[..., ::-1].copy())


def _box_iou(a, b):
  """Pairwise IoU of [N, 4] and [M, 4] boxes (same coordinate order)."""
  lo = np.maximum(a[:, None, :2], b[None, :, :2])
  hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = np.prod(np.clip(hi - lo, 0., None), axis=-1)
  area_a = np.prod(a[:, 2:] - a[:, :2], axis=-1)
  area_b = np.prod(b[:, 2:] - b[:, :2], axis=-1)
  return inter / (area_a[:, None] + area_b[None, :] - inter)


def match_detections(ref_boxes, ref_labels, boxes, labels):
  """For each reference detection, the same-label detection of best IoU.

  Returns:
    (index into ours, IoU) per reference detection (IoU 0: none).
  """
  iou = _box_iou(np.asarray(ref_boxes, np.float64),
                 np.asarray(boxes, np.float64))
  iou[np.asarray(ref_labels)[:, None] != np.asarray(labels)[None, :]] = 0.
  return iou.argmax(axis=1), iou.max(axis=1)


def test_dense_stages(model, stages, image_input):
  backbone = model.backbone(image_input, training=False)['5']
  assert _rel(backbone, _nhwc(stages['backbone.out0'])) < 1e-3

  decoder = model.decoder
  names = ['lateral_norm', 'fpn_norm'] + [f'dilated_block{i}'
                                          for i in range(4)]
  probe = tf_keras.Model(decoder.inputs,
                         [decoder.get_layer(n).output for n in names])
  keys = ['neck.lateral', 'neck.fpn', 'neck.block0', 'neck.block1',
          'neck.block2', 'neck.out0']
  for key, ours in zip(keys, probe([backbone], training=False)):
    assert _rel(ours, _nhwc(stages[key])) < 1e-3, key
  neck = model.decoder({'5': backbone}, training=False)['5']

  # The head's parts, in the order its call runs them.
  # pylint: disable=protected-access
  head = model.head
  x, stacked = neck, []
  for i, (conv, norm) in enumerate(zip(head._stacked_convs,
                                       head._stacked_norms)):
    x = tf.nn.relu(norm(conv(x), training=False))
    stacked.append(x)
    assert _rel(x, _nhwc(stages[f'head.inter{i}'])) < 1e-3, i
  feat = tf.concat(stacked, axis=-1)
  pooled = tf.reduce_mean(feat, axis=[1, 2])
  for task in ('cls', 'reg'):
    decomposition = getattr(head, f'_{task}_decomposition')
    attention = decomposition._attention2(decomposition._attention1(pooled))
    assert _rel(attention, stages[f'head.{task}_la'][:, :, 0, 0]) < 1e-3
    assert _rel(decomposition(feat, training=False),
                _nhwc(stages[f'head.{task}_feat'])) < 1e-3, task
  offsets = head._offset_conv2(head._offset_conv1(feat)).numpy()
  # Ours: (anchor, y-first coordinate, (dy, dx)); the reference's channel
  # 2g + (dy, dx) of its x-first box channel g.
  ref_offsets = _nhwc(stages['head.reg_offset']).reshape(
      1, 20, 20, NUM_ANCHORS, 4, 2)[:, :, :, :, [1, 0, 3, 2], :]
  assert _rel(offsets.reshape(ref_offsets.shape), ref_offsets) < 1e-3
  # pylint: enable=protected-access

  outputs = head(neck, training=False)
  grid = (1, 20, 20)
  assert _rel(outputs['cls_logits'].numpy().reshape(grid + (400,)),
              _nhwc(stages['head.cls_logits'])) < 1e-3
  prob = outputs['prob_logits'].numpy().reshape(grid + (NUM_ANCHORS,))
  assert _rel(prob[..., :1], _nhwc(stages['head.cls_prob'])) < 1e-3
  scores = outputs['cls_scores'].numpy().reshape(grid + (400,))
  np.testing.assert_allclose(scores, _nhwc(stages['head.cls_score']),
                             atol=1e-5)
  deltas = outputs['box_deltas'].numpy().reshape(grid + (NUM_ANCHORS, 4))
  assert _rel(deltas, _box_map(stages['head.reg_dist_scaled'])) < 1e-3
  boxes = outputs['box_preds'].numpy().reshape(grid + (NUM_ANCHORS, 4))
  ref_boxes = _box_map(stages['head.bbox_pred']) * STRIDE
  assert _rel(boxes, ref_boxes) < 1e-3
  # Within 0.3 px (0.01 stride units) everywhere, boxes up to ~1000 px.
  assert np.abs(boxes - ref_boxes).max() < 0.3
  np.testing.assert_array_equal(_swap_xy(outputs['anchor_boxes'].numpy()),
                                stages['anchors'])


def test_decoding_and_deformable_sampling(model, stages):
  # Decoding of the reference's own deltas on the anchors.
  anchors = tood_head.single_level_anchors(20, 20, 32, 32.,
                                           [1., 2., 4., 8., 16.], [1.])
  decoded = box_ops.decode_boxes_xywh(
      _box_map(stages['head.reg_dist_scaled']),
      tf.reshape(anchors, [20, 20, NUM_ANCHORS, 4]), ctr_clamp=32.)
  reg_bbox = _box_map(stages['head.reg_bbox']) * STRIDE
  np.testing.assert_allclose(decoded.numpy(), reg_bbox, rtol=1e-5,
                             atol=1e-3)
  # Sampling at the stored large offsets, where 121 inverted boxes of
  # anchors 1-4 stay (only anchor 0's box decides the fallback).
  offsets = _nhwc(stages['unit.deform.offset']).reshape(
      1, 20, 20, NUM_ANCHORS, 4, 2)[:, :, :, :, [1, 0, 3, 2], :]
  sampled = tood_head.resample_boxes(tf.constant(reg_bbox), offsets).numpy()
  expected = _box_map(stages['unit.deform.bbox_pred']) * STRIDE
  np.testing.assert_allclose(sampled, expected, atol=2e-3)
  inverted = ((sampled[..., 0] > sampled[..., 2]) |
              (sampled[..., 1] > sampled[..., 3]))
  assert inverted.sum() == 121


def _our_detections(outputs):
  boxes = _swap_xy(outputs['detection_boxes'].numpy()[0])
  scores = outputs['detection_scores'].numpy()[0]
  labels = outputs['detection_classes'].numpy()[0] - 1
  return boxes, scores, labels


def test_candidates_detections_and_masks(model, stages, image_input):
  outputs = model(image_input, training=False)
  # The 1000 (anchor, class) candidates: scores are packed within 1.4e-6 at
  # the 1000th, so compare as sets.
  scores = outputs['cls_scores'].numpy()[0].reshape(-1)
  ours = set(np.argsort(-scores, kind='stable')[:1000].tolist())
  ref = set((stages['topk.anchor_idx'] * 80 + stages['topk.labels']).tolist())
  assert len(ours & ref) >= 995

  assert int(outputs['num_detections'][0]) == 100
  boxes, scores, labels = _our_detections(outputs)
  index, iou = match_detections(stages['pred.bboxes'], stages['pred.labels'],
                                boxes, labels)
  assert iou.min() >= 0.998
  assert (iou >= 0.999).sum() >= 97
  np.testing.assert_allclose(scores[index], stages['pred.scores'],
                             atol=1e-5)
  # Boxes up to 740 px; the reference's own runs differ by up to 0.05 px.
  assert np.abs(boxes[index] - stages['pred.bboxes']).max() < 0.2

  masks = outputs['detection_masks'].numpy()[0]
  assert np.abs(masks[index] - stages['mask.prob_label']).max() < 5e-3


def test_mask_head_on_reference_rois(model, stages, image_input):
  neck = model.features(image_input, training=False)
  rois = tf.constant(_swap_xy(stages['det.bboxes'])[None])
  classes = tf.constant(stages['det.labels'][None] + 1, tf.int32)
  # pylint: disable=protected-access
  mask_head = model.mask_head
  x = model.mask_roi_aligner({'5': neck}, rois)[0]
  for conv in mask_head._convs:
    x = conv(x)
  pooled = tf.concat([tf.reduce_mean(x, -1, keepdims=True),
                      tf.reduce_max(x, -1, keepdims=True)], axis=-1)
  attention = tf.sigmoid(mask_head._attention._conv(pooled))
  # pylint: enable=protected-access
  np.testing.assert_allclose(attention.numpy()[..., 0],
                             stages['mask.sam_att'][:, 0], atol=1e-3)
  logits = model.mask_logits(neck, rois, classes, training=False)
  assert _rel(logits[0], stages['mask.logits_label']) < 1e-3
  np.testing.assert_allclose(tf.sigmoid(logits[0]).numpy(),
                             stages['mask.prob_label'], atol=1e-3)
