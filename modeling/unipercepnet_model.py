"""UniPercepNet-S: one-level detector and instance segmenter.

  images -> backbone -> {level: C} -> decoder (DilatedEncoder) -> P (512 ch)
  P -> TOOD head -> per-anchor class scores and boxes
  training:  the raw head outputs; with ground truth, the mask target
             sampler's RoIs -> RoIAlign on P -> mask head, and their targets
  inference: top-k + class-wise NMS -> boxes -> RoIAlign on P -> mask head
  panoptic (with a semantic head): P -> semantic head -> per-pixel logits of
             the stuff classes and one "things" class at the input size;
             inference fuses them with the detections (Panoptic-FPN) into
             `category_mask` and `instance_mask`
"""

from typing import Any, Dict, Mapping, Optional

import tensorflow as tf
import tf_keras

from official.vision.ops import box_ops


@tf_keras.utils.register_keras_serializable(package='Vision')
class UniPercepNetModel(tf_keras.Model):
  """Backbone, decoder, TOOD head, detection generator and mask branch."""

  def __init__(self,
               backbone: tf_keras.Model,
               decoder: Optional[tf_keras.Model],
               head: tf_keras.layers.Layer,
               detection_generator: tf_keras.layers.Layer,
               mask_head: Optional[tf_keras.layers.Layer] = None,
               mask_roi_aligner: Optional[tf_keras.layers.Layer] = None,
               mask_target_sampler: Optional[tf_keras.layers.Layer] = None,
               level: str = '5',
               max_mask_rois: Optional[int] = None,
               clip_boxes: bool = False,
               semantic_head: Optional[tf_keras.layers.Layer] = None,
               panoptic_fusion: Optional[tf_keras.layers.Layer] = None,
               **kwargs):
    super().__init__(**kwargs)
    if (semantic_head is None) != (panoptic_fusion is None):
      raise ValueError('semantic_head and panoptic_fusion go together.')
    if semantic_head is not None and mask_head is None:
      raise ValueError('A panoptic model (semantic_head) needs the mask '
                       'head: its things are the instance masks.')
    if not ((mask_head is None) == (mask_roi_aligner is None) ==
            (mask_target_sampler is None)):
      raise ValueError('mask_head, mask_roi_aligner and mask_target_sampler '
                       'go together.')
    if max_mask_rois is not None and max_mask_rois < 1:
      raise ValueError(f'max_mask_rois must be >= 1, got {max_mask_rois}.')
    self._config_dict = {
        'backbone': backbone,
        'decoder': decoder,
        'head': head,
        'detection_generator': detection_generator,
        'mask_head': mask_head,
        'mask_roi_aligner': mask_roi_aligner,
        'level': str(level),
        'max_mask_rois': max_mask_rois,
        'clip_boxes': clip_boxes,
        'semantic_head': semantic_head,
        'panoptic_fusion': panoptic_fusion,
    }
    self.backbone = backbone
    self.decoder = decoder
    self.head = head
    self.detection_generator = detection_generator
    self.mask_head = mask_head
    self.mask_roi_aligner = mask_roi_aligner
    if semantic_head is not None:
      # Only a panoptic model tracks it: an instance model's checkpoints keep
      # their layout.
      self.semantic_head = semantic_head
    else:
      self._hold_untracked('semantic_head', None)
    self._hold_untracked('panoptic_fusion', panoptic_fusion)
    self._hold_untracked('mask_target_sampler', mask_target_sampler)

  @tf.__internal__.tracking.no_automatic_dependency_tracking
  def _hold_untracked(self, name: str, layer: tf_keras.layers.Layer) -> None:
    """Sets an attribute outside the checkpoint's object graph.

    For layers without variables (the mask target sampler), so that
    checkpoints keep the layout they had before the model held them.
    """
    setattr(self, name, layer)

  @property
  def include_mask(self) -> bool:
    return self.mask_head is not None

  @property
  def include_panoptic(self) -> bool:
    return self.semantic_head is not None

  @property
  def feature_shape(self) -> tf.TensorShape:
    """Shape of the map `features` returns (batch dimension first)."""
    source = self.decoder if self.decoder is not None else self.backbone
    return source.output_specs[self._config_dict['level']]

  def features(self, images: tf.Tensor, training=None) -> tf.Tensor:
    """The single feature map the head and mask branch read."""
    level = self._config_dict['level']
    features = self.backbone(images, training=training)
    if self.decoder is not None:
      features = self.decoder({level: features[level]}, training=training)
    return features[level]

  def mask_logits(self, features: tf.Tensor, roi_boxes: tf.Tensor,
                  roi_classes: tf.Tensor, training=None) -> tf.Tensor:
    """`[B, R, M, M]` logits of each RoI's (1-based) class."""
    level = self._config_dict['level']
    roi_features = self.mask_roi_aligner({level: features},
                                         tf.cast(roi_boxes, tf.float32),
                                         training=training)
    return self.mask_head(tf.cast(roi_features, features.dtype), roi_classes)

  def call(self,
           images: tf.Tensor,
           image_shape: Optional[tf.Tensor] = None,
           gt_boxes: Optional[tf.Tensor] = None,
           gt_classes: Optional[tf.Tensor] = None,
           gt_masks: Optional[tf.Tensor] = None,
           training: Optional[bool] = None) -> Dict[str, tf.Tensor]:
    """Runs the model.

    Args:
      images: `[B, H, W, 3]` normalised images, H and W multiples of 32.
      image_shape: `[B, 2]` height and width of the valid (unpadded) image in
        each padded input; with `clip_boxes`, boxes are clipped to it before
        NMS (defaults to `[H, W]`). Without, boxes are left as predicted, as
        in the reference.
      gt_boxes: training only, `[B, G, 4]` gt boxes (yxyx, pixels), padded
        with -1.
      gt_classes: training only, `[B, G]` 1-based gt classes, padded with
        -1 (or 0).
      gt_masks: training only, `[B, G, S, S]` gt masks cropped to their boxes
        (Model Garden's Mask R-CNN parser's); a mask model needs them with
        the boxes and classes to train its mask branch.
      training: Keras training flag.

    Returns:
      training: the head's outputs (see `TOODHead.call`); with a mask head
        and ground truth, also (see `MaskTargetSampler`) `mask_logits`
        `[B, R, M, M]` of the sampled foreground RoIs, `mask_targets`
        `[B, R, M, M]` and `mask_weights` `[B, R]` (1 for foreground RoIs);
        with a semantic head `semantic_logits` `[B, H, W, S + 1]`.
      inference: `detection_boxes` `[B, D, 4]` (yxyx, pixels),
        `detection_scores` `[B, D]`, `detection_classes` `[B, D]` int32
        (1-based, 0 for padding), `num_detections` `[B]`, and with masks
        `detection_masks` `[B, D, M, M]` probabilities (computed for the
        best `max_mask_rois` detections, zeros in later slots); plus the dense
        `cls_scores` and `box_preds`; with a semantic head `category_mask`
        and `instance_mask` `[B, H, W]` int32 (see `PanopticFusion`: 0
        void, 1..K thing classes, K + c stuff class c; d + 1 for detection
        slot d, 0 for stuff and void).
    """
    features = self.features(images, training=training)
    outputs = self.head(features, training=training)
    if self.include_panoptic and training:
      outputs['semantic_logits'] = self.semantic_head(features)
    if training:
      if not self.include_mask:
        if gt_masks is not None:
          raise ValueError('gt_masks given to a model without a mask head.')
      elif gt_boxes is not None:
        outputs.update(self._mask_training_outputs(
            features, outputs, gt_boxes, gt_classes, gt_masks))
      return outputs

    valid_shape = image_shape
    boxes = outputs['box_preds']
    if self._config_dict['clip_boxes']:
      if image_shape is None:
        image_shape = tf.shape(images)[1:3]
      image_shape = tf.cast(image_shape, tf.float32)
      if image_shape.shape.rank == 2:
        image_shape = image_shape[:, None, :]
      boxes = box_ops.clip_boxes(boxes, image_shape)
    detections = self.detection_generator(boxes, outputs['cls_scores'])
    num_slots = tf.shape(detections['detection_classes'])[1]
    valid = (tf.range(num_slots)[None, :] <
             detections['num_detections'][:, None])
    detections['detection_classes'] = tf.where(
        valid, detections['detection_classes'] + 1, 0)
    if self.include_mask:
      detections['detection_masks'] = self._detection_masks(
          features, detections['detection_boxes'],
          detections['detection_classes'])
    if self.include_panoptic:
      batch_shape = tf.shape(images)[0:3]
      if valid_shape is None:
        valid_size = tf.tile(batch_shape[None, 1:3], [batch_shape[0], 1])
      else:
        valid_size = tf.cast(tf.math.ceil(
            tf.cast(valid_shape, tf.float32) - 1e-3), tf.int32)
        if valid_size.shape.rank == 1:
          valid_size = tf.tile(valid_size[None], [batch_shape[0], 1])
      detections.update(self.panoptic_fusion(
          detection_boxes=detections['detection_boxes'],
          detection_scores=detections['detection_scores'],
          detection_classes=detections['detection_classes'],
          detection_masks=detections['detection_masks'],
          num_detections=detections['num_detections'],
          semantic_logits=self.semantic_head(features),
          valid_size=valid_size))
    detections['cls_scores'] = outputs['cls_scores']
    detections['box_preds'] = boxes
    return detections

  def _mask_training_outputs(self, features: tf.Tensor,
                             outputs: Mapping[str, tf.Tensor],
                             gt_boxes: tf.Tensor, gt_classes: tf.Tensor,
                             gt_masks: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Mask logits of the sampled RoIs, with their targets and weights."""
    if gt_classes is None or gt_masks is None:
      raise ValueError('Training the mask branch needs gt_boxes, gt_classes '
                       'and gt_masks.')
    targets = self.mask_target_sampler(
        outputs['box_preds'], outputs['cls_scores'], gt_boxes, gt_classes,
        gt_masks)
    return {
        'mask_logits': self.mask_logits(features, targets['roi_boxes'],
                                        targets['roi_classes'],
                                        training=True),
        'mask_targets': targets['mask_targets'],
        'mask_weights': targets['mask_weights'],
    }

  def _detection_masks(self, features: tf.Tensor, boxes: tf.Tensor,
                       classes: tf.Tensor) -> tf.Tensor:
    """Mask probabilities of the best `max_mask_rois` detections.

    Detections come sorted by score; slots past the cap get all-zero masks.
    """
    num_slots = boxes.shape[1]
    cap = self._config_dict['max_mask_rois']
    if cap is None or num_slots is None or cap >= num_slots:
      return tf.sigmoid(self.mask_logits(features, boxes, classes,
                                         training=False))
    masks = tf.sigmoid(self.mask_logits(features, boxes[:, :cap],
                                        classes[:, :cap], training=False))
    return tf.pad(masks, [[0, 0], [0, num_slots - cap], [0, 0], [0, 0]])

  @property
  def checkpoint_items(self) -> Mapping[str, tf.Module]:
    items = dict(backbone=self.backbone, head=self.head)
    if self.decoder is not None:
      items['decoder'] = self.decoder
    if self.mask_head is not None:
      items['mask_head'] = self.mask_head
    if self.semantic_head is not None:
      items['semantic_head'] = self.semantic_head
    return items

  def get_config(self) -> Mapping[str, Any]:
    return dict(self._config_dict,
                mask_target_sampler=self.mask_target_sampler)

  @classmethod
  def from_config(cls, config, custom_objects=None):
    return cls(**config)
