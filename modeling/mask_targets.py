"""Training RoIs and 28x28 mask targets for the mask branch.

  head boxes + scores -> top-k by best class score -> NMS -> proposals
      (the C++ NMS kernel, or a static-shape one where XLA compiles it)
  proposals (+ gt boxes) -> Model Garden ROISampler (IoU match, fg/bg sample)
  sampled RoIs -> Model Garden MaskSampler -> foreground RoIs, their classes
      and the gt mask cropped to each RoI at `mask_size`

Ground-truth masks come as Model Garden's Mask R-CNN parser makes them: each
instance's mask cropped to its box, `[B, M, S, S]`. The model holds the
sampler (as Model Garden's Mask R-CNN holds its RoI and mask samplers) and
runs it in its training forward.
"""

from typing import Any, Dict, Mapping, Optional

import tensorflow as tf
import tf_keras

from official.vision.modeling.layers import mask_sampler
from official.vision.modeling.layers import roi_sampler
from official_ext.vision.modeling.layers import detection_generator
from official_ext.vision.ops import xla_utils


def select_proposals(boxes: tf.Tensor,
                     scores: tf.Tensor,
                     pre_nms_top_k: int,
                     iou_threshold: float,
                     num_proposals: int,
                     nms_version: Optional[str] = None) -> tf.Tensor:
  """Class-agnostic proposals from dense predictions.

  Args:
    boxes: `[B, N, 4]` decoded boxes (yxyx, pixels).
    scores: `[B, N, K]` class scores.
    pre_nms_top_k: boxes kept by best class score before NMS (capped at N).
    iou_threshold: NMS IoU threshold.
    num_proposals: proposals kept after NMS (capped at the top-k).
    nms_version: 'combined' (`combined_non_max_suppression`, a C++ kernel
      that XLA cannot compile; faster on the CPU) or 'static'
      (`detection_generator.static_nms`, static shapes, which XLA compiles);
      the same proposals. None: 'static' when traced for XLA
      (`jit_compile`, TPU), 'combined' otherwise.

  Returns:
    `[B, P, 4]` proposals, best first; slots NMS leaves empty are -1 (which
    Model Garden's samplers treat as invalid).
  """
  if nms_version is None:
    nms_version = 'static' if xla_utils.in_xla_context() else 'combined'
  if nms_version not in ('combined', 'static'):
    raise ValueError(f"nms_version must be 'combined' or 'static', got "
                     f'{nms_version!r}.')
  boxes = tf.stop_gradient(tf.cast(boxes, tf.float32))
  scores = tf.stop_gradient(tf.reduce_max(tf.cast(scores, tf.float32), -1))
  k = min(pre_nms_top_k, boxes.shape[1])
  top_scores, top_indices = tf.math.top_k(scores, k=k, sorted=True)
  top_boxes = tf.gather(boxes, top_indices, batch_dims=1)
  num_out = min(num_proposals, k)
  if nms_version == 'static':
    selected, num_valid = detection_generator.static_nms(
        top_boxes, top_scores, max_output_size=num_out,
        iou_threshold=iou_threshold)
    proposals = tf.gather(top_boxes, selected, batch_dims=1)
  else:
    proposals, _, _, num_valid = tf.image.combined_non_max_suppression(
        top_boxes[:, :, tf.newaxis], top_scores[..., tf.newaxis],
        max_output_size_per_class=num_out, max_total_size=num_out,
        iou_threshold=iou_threshold, clip_boxes=False)
  valid = tf.range(num_out)[tf.newaxis, :] < num_valid[:, tf.newaxis]
  return tf.where(valid[..., tf.newaxis], proposals, -tf.ones_like(proposals))


@tf_keras.utils.register_keras_serializable(package='Vision')
class MaskTargetSampler(tf_keras.layers.Layer):
  """Proposals -> sampled foreground RoIs with classes and mask targets.

  It has no variables. It computes in float32 (boxes are not cast to a mixed
  precision policy's dtype).
  """

  def __init__(self,
               mask_size: int,
               pre_nms_top_k: int = 2000,
               nms_iou_threshold: float = 0.7,
               num_proposals: int = 1500,
               foreground_iou_threshold: float = 0.5,
               num_sampled_rois: int = 512,
               foreground_fraction: float = 0.25,
               mix_gt_boxes: bool = True,
               num_mask_rois: int = 128,
               nms_version: Optional[str] = None,
               name: str = 'mask_target_sampler',
               **kwargs):
    """Initialises the sampler.

    Args:
      mask_size: side of the mask targets (the mask head's output side).
      pre_nms_top_k: proposals kept by score before NMS.
      nms_iou_threshold: NMS IoU threshold for proposals.
      num_proposals: proposals kept after NMS.
      foreground_iou_threshold: an RoI matched with IoU >= this is foreground;
        below it, background.
      num_sampled_rois: RoIs sampled per image.
      foreground_fraction: largest share of foreground among the sampled RoIs.
      mix_gt_boxes: add the gt boxes to the proposals.
      num_mask_rois: foreground RoIs (at most) that get a mask target.
      nms_version: the proposals' NMS, see `select_proposals`; None (the
        default): the static one when compiled by XLA, the C++ one
        otherwise (the same proposals, so nothing to configure).
      name: layer name.
      **kwargs: other Keras layer arguments.
    """
    kwargs.setdefault('dtype', 'float32')
    super().__init__(name=name, **kwargs)
    self._config_dict = {
        'pre_nms_top_k': pre_nms_top_k,
        'nms_iou_threshold': nms_iou_threshold,
        'num_proposals': num_proposals,
        'foreground_iou_threshold': foreground_iou_threshold,
        'num_sampled_rois': num_sampled_rois,
        'foreground_fraction': foreground_fraction,
        'mix_gt_boxes': mix_gt_boxes,
        'num_mask_rois': num_mask_rois,
        'mask_size': mask_size,
        'nms_version': nms_version,
    }
    if num_mask_rois > num_sampled_rois:
      raise ValueError(f'num_mask_rois ({num_mask_rois}) cannot exceed '
                       f'num_sampled_rois ({num_sampled_rois}).')
    self._roi_sampler = roi_sampler.ROISampler(
        mix_gt_boxes=mix_gt_boxes,
        num_sampled_rois=num_sampled_rois,
        foreground_fraction=foreground_fraction,
        foreground_iou_threshold=foreground_iou_threshold,
        background_iou_high_threshold=foreground_iou_threshold,
        background_iou_low_threshold=0.)
    self._mask_sampler = mask_sampler.MaskSampler(
        mask_target_size=mask_size, num_sampled_masks=num_mask_rois)

  def call(self, boxes: tf.Tensor, scores: tf.Tensor,
           gt_boxes: tf.Tensor, gt_classes: tf.Tensor,
           gt_masks: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Samples RoIs and builds their mask targets.

    Args:
      boxes: `[B, N, 4]` predicted boxes.
      scores: `[B, N, K]` predicted class scores.
      gt_boxes: `[B, M, 4]`, padded with -1.
      gt_classes: `[B, M]` 1-based, padded with -1 (or 0).
      gt_masks: `[B, M, S, S]` gt masks cropped to their boxes.

    Returns:
      'roi_boxes' `[B, R, 4]`, 'roi_classes' `[B, R]` int32 (1-based, 0 for
      slots without a foreground RoI), 'mask_targets' `[B, R, m, m]` in
      [0, 1] and 'mask_weights' `[B, R]` (1 for foreground RoIs), where
      `R = num_mask_rois`.
    """
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    valid = gt_classes > 0
    # Padding rows must look invalid (all coordinates < 0) to the sampler.
    gt_boxes = tf.where(valid[..., tf.newaxis], gt_boxes,
                        -tf.ones_like(gt_boxes))
    gt_classes = tf.where(valid, gt_classes, -tf.ones_like(gt_classes))
    c = self._config_dict
    proposals = select_proposals(boxes, scores, c['pre_nms_top_k'],
                                 c['nms_iou_threshold'], c['num_proposals'],
                                 nms_version=c['nms_version'])
    # The sampler draws `num_sampled_rois` from proposals + gts: pad small
    # maps' proposals with invalid (-1) boxes up to that.
    shortfall = c['num_sampled_rois'] - proposals.shape[1]
    if c['mix_gt_boxes']:
      shortfall -= gt_boxes.shape[1]
    if shortfall > 0:
      proposals = tf.pad(proposals, [[0, 0], [0, shortfall], [0, 0]],
                         constant_values=-1.)
    rois, roi_gt_boxes, roi_gt_classes, roi_gt_indices = self._roi_sampler(
        proposals, gt_boxes, gt_classes)
    fg_rois, fg_classes, targets = self._mask_sampler(
        rois, roi_gt_boxes, roi_gt_classes, roi_gt_indices,
        tf.cast(gt_masks, tf.float32))
    fg_classes = tf.cast(fg_classes, tf.int32)
    fg = fg_classes > 0
    return {
        'roi_boxes': tf.stop_gradient(fg_rois),
        'roi_classes': tf.where(fg, fg_classes, tf.zeros_like(fg_classes)),
        'mask_targets': tf.stop_gradient(
            tf.clip_by_value(targets, 0., 1.)),
        'mask_weights': tf.cast(fg, tf.float32),
    }

  def get_config(self) -> Mapping[str, Any]:
    return dict(super().get_config(), **self._config_dict)
