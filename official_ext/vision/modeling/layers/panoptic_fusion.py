"""Panoptic FPN's inference fusion of instance and semantic outputs.

The heuristic of Kirillov et al., "Panoptic Feature Pyramid Networks" (2019),
as detectron2's `combine_semantic_and_instance_outputs` runs it, in-graph,
batched and with static shapes:

1. Instances in descending score order (stable for ties), only those with
   score >= `score_threshold`, claim the pixels of their pasted mask
   (`mask >= mask_threshold`, inside the valid image) that no earlier
   instance claimed; an instance whose mask is empty, or lies on claimed
   pixels for more than `overlap_threshold` of its area, claims nothing.
2. Each stuff class c of the semantic argmax claims its unclaimed valid
   pixels when there are at least `stuff_area_threshold` of them.
3. Everything else is void.

Class ids follow the panoptic conventions: category 0 = void, 1..K = thing
classes (the detection classes), K + c = stuff class c (semantic class c,
1 <= c <= S; semantic class 0 is "things" and never becomes stuff). The
instance mask holds d + 1 where detection slot d owns the pixel, else 0.
"""

from typing import Any, Dict, Mapping, Optional

import tensorflow as tf
import tf_keras

from official_ext.vision.ops import mask_ops


def _static_or_dynamic(tensor: tf.Tensor, axis: int):
  """The static size of `axis` when known, else its dynamic size."""
  size = tensor.shape[axis]
  return size if size is not None else tf.shape(tensor)[axis]


@tf_keras.utils.register_keras_serializable(package='Vision')
class PanopticFusion(tf_keras.layers.Layer):
  """Fuses detections and semantic logits into category and instance masks."""

  def __init__(self,
               num_thing_classes: int,
               num_stuff_classes: int,
               score_threshold: float = 0.5,
               overlap_threshold: float = 0.5,
               stuff_area_threshold: int = 4096,
               mask_threshold: float = 0.5,
               **kwargs):
    """Initializes the layer.

    Args:
      num_thing_classes: K, the number of thing classes (detection classes
        1..K).
      num_stuff_classes: S, the number of stuff classes (semantic classes
        1..S).
      score_threshold: instances scoring below it are dropped.
      overlap_threshold: an instance is dropped when more than this fraction
        of its mask is already claimed.
      stuff_area_threshold: the minimum number of unclaimed valid pixels of a
        stuff class for it to be kept.
      mask_threshold: pasted mask probabilities at or above it are
        foreground.
      **kwargs: other keyword arguments of `tf_keras.layers.Layer`.
    """
    super().__init__(**kwargs)
    self._config_dict = {
        'num_thing_classes': num_thing_classes,
        'num_stuff_classes': num_stuff_classes,
        'score_threshold': score_threshold,
        'overlap_threshold': overlap_threshold,
        'stuff_area_threshold': stuff_area_threshold,
        'mask_threshold': mask_threshold,
    }

  def _valid_region(self, valid_size: Optional[tf.Tensor], batch_size,
                    height, width) -> tf.Tensor:
    """bool [B, H, W]: pixels inside the valid image."""
    if valid_size is None:
      return tf.ones([batch_size, height, width], tf.bool)
    valid_size = tf.cast(valid_size, tf.int32)
    rows = tf.range(height)[tf.newaxis, :, tf.newaxis]
    cols = tf.range(width)[tf.newaxis, tf.newaxis, :]
    return tf.logical_and(rows < valid_size[:, 0, tf.newaxis, tf.newaxis],
                          cols < valid_size[:, 1, tf.newaxis, tf.newaxis])

  def _fuse_instances(self, boxes, scores, classes, masks, num_detections,
                      valid, height, width):
    """Step 1: instances claim pixels in score order.

    Args:
      boxes: float [B, D, 4].
      scores: float [B, D].
      classes: int32 [B, D].
      masks: float [B, D, M, M].
      num_detections: int32 [B].
      valid: bool [B, H, W].
      height: H.
      width: W.

    Returns:
      int32 [B, H, W] category and instance masks, bool [B, H, W] claimed.
    """
    cfg = self._config_dict
    num_slots = _static_or_dynamic(scores, 1)
    slots = tf.range(num_slots)[tf.newaxis]
    kept = ((slots < num_detections[:, tf.newaxis]) & (classes > 0) &
            (scores >= cfg['score_threshold']))
    # Kept instances first, in descending score order; top_k (behind
    # DESCENDING argsort) keeps the lower slot first on ties.
    keys = tf.where(kept, scores, tf.fill(tf.shape(scores), -float('inf')))
    order = tf.argsort(keys, axis=1, direction='DESCENDING', stable=True)
    boxes = tf.gather(boxes, order, batch_dims=1)
    classes = tf.gather(classes, order, batch_dims=1)
    masks = tf.gather(masks, order, batch_dims=1)
    kept = tf.gather(kept, order, batch_dims=1)
    num_steps = tf.reduce_max(
        tf.concat([tf.reduce_sum(tf.cast(kept, tf.int32), axis=1), [0]], 0))

    batch_size = tf.shape(scores)[0]
    zeros = tf.zeros([batch_size, height, width], tf.int32)

    def body(k, category, instance, claimed):
      pasted = mask_ops.paste_masks(masks[:, k], boxes[:, k], (height, width))
      mask = ((pasted >= cfg['mask_threshold']) & valid &
              kept[:, k, tf.newaxis, tf.newaxis])
      area = tf.reduce_sum(tf.cast(mask, tf.float32), axis=[1, 2])
      intersect = tf.reduce_sum(
          tf.cast(mask & claimed, tf.float32), axis=[1, 2])
      accept = (area > 0.) & (
          tf.math.divide_no_nan(intersect, area) <= cfg['overlap_threshold'])
      new = mask & tf.logical_not(claimed) & accept[:, tf.newaxis, tf.newaxis]
      category = tf.where(new, classes[:, k, tf.newaxis, tf.newaxis], category)
      instance = tf.where(new, order[:, k, tf.newaxis, tf.newaxis] + 1,
                          instance)
      return k + 1, category, instance, claimed | new

    _, category, instance, claimed = tf.while_loop(
        lambda k, *_: k < num_steps, body,
        (tf.constant(0), zeros, zeros, tf.zeros_like(valid)))
    return category, instance, claimed

  def _fuse_stuff(self, semantic_logits, free, category):
    """Step 2: stuff classes claim large enough unclaimed regions.

    Args:
      semantic_logits: float [B, H, W, S + 1].
      free: bool [B, H, W], unclaimed valid pixels.
      category: int32 [B, H, W] category mask after the instances.

    Returns:
      int32 [B, H, W] category mask.
    """
    num_semantic = self._config_dict['num_stuff_classes'] + 1
    semantic = tf.argmax(semantic_logits, axis=-1, output_type=tf.int32)
    # Per-image areas of each semantic class on the free pixels, a class
    # at a time: no [B, H, W, S + 1] one-hot (232 MB an image at COCO's
    # size), and no UnsortedSegmentSum, which tf2onnx cannot convert.
    free_semantic = tf.where(free, semantic, -1)
    areas = tf.stack([
        tf.reduce_sum(tf.cast(free_semantic == c, tf.int32), axis=[1, 2])
        for c in range(num_semantic)], axis=1)
    is_stuff = tf.range(num_semantic) > 0
    kept = (areas >= self._config_dict['stuff_area_threshold']) & is_stuff
    claim = free & tf.gather(kept, semantic, batch_dims=1)
    return tf.where(
        claim, semantic + self._config_dict['num_thing_classes'], category)

  def call(self,
           detection_boxes: tf.Tensor,
           detection_scores: tf.Tensor,
           detection_classes: tf.Tensor,
           detection_masks: tf.Tensor,
           num_detections: tf.Tensor,
           semantic_logits: tf.Tensor,
           valid_size: Optional[tf.Tensor] = None) -> Dict[str, tf.Tensor]:
    """Fuses one batch.

    Args:
      detection_boxes: float [B, D, 4] yxyx boxes in pixels of the output
        canvas.
      detection_scores: float [B, D].
      detection_classes: int [B, D], 1..K; 0 marks a padding slot.
      detection_masks: float [B, D, M, M] mask probabilities of the
        box-aligned crops.
      num_detections: int [B]; slots d >= num_detections are padding.
      semantic_logits: float [B, H, W, S + 1]; class 0 is "things". H, W is
        the output canvas.
      valid_size: optional int [B, 2] (height, width) of the valid image;
        pixels at or beyond it are void. None: the whole canvas is valid.

    Returns:
      A dict with
        'category_mask': int32 [B, H, W], 0 void, 1..K things, K + c stuff.
        'instance_mask': int32 [B, H, W], d + 1 where detection slot d owns
          the pixel, 0 elsewhere.
    """
    height = _static_or_dynamic(semantic_logits, 1)
    width = _static_or_dynamic(semantic_logits, 2)
    batch_size = tf.shape(semantic_logits)[0]
    valid = self._valid_region(valid_size, batch_size, height, width)
    category, instance, claimed = self._fuse_instances(
        tf.cast(detection_boxes, tf.float32),
        tf.cast(detection_scores, tf.float32),
        tf.cast(detection_classes, tf.int32),
        tf.cast(detection_masks, tf.float32),
        tf.cast(num_detections, tf.int32), valid, height, width)
    category = self._fuse_stuff(semantic_logits,
                                valid & tf.logical_not(claimed), category)
    return {'category_mask': category, 'instance_mask': instance}

  def get_config(self) -> Mapping[str, Any]:
    config = super().get_config()
    config.update(self._config_dict)
    return config

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> 'PanopticFusion':
    return cls(**config)
