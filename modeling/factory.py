"""Builds a UniPercepNetModel from its config."""

from typing import Optional, Sequence

import tensorflow as tf
import tf_keras

from official.vision.modeling.backbones import factory as backbone_factory
from official.vision.modeling.decoders import factory as decoder_factory
from official_ext.vision.modeling import backbones  # pylint: disable=unused-import
from official_ext.vision.modeling import decoders  # pylint: disable=unused-import
from official_ext.vision.modeling.layers import detection_generator
from official_ext.vision.modeling.layers import panoptic_fusion
from official_ext.vision.modeling.layers import roi_aligner
from configs import losses as losses_cfg
from configs import unipercepnet as cfg
from modeling import mask_targets
from modeling import unipercepnet_model
from modeling.heads import mask_head as mask_head_lib
from modeling.heads import semantic_head as semantic_head_lib
from modeling.heads import tood_head


def build_unipercepnet(
    input_specs: tf_keras.layers.InputSpec,
    model_config: cfg.UniPercepNet,
    l2_regularizer: Optional[tf_keras.regularizers.Regularizer] = None,
    mask_targets_config: Optional[losses_cfg.MaskTargets] = None,
) -> unipercepnet_model.UniPercepNetModel:
  """Builds the model; its variables exist once it is called or traced.

  Args:
    input_specs: the input's `InputSpec`.
    model_config: `task.model`.
    l2_regularizer: of the convolution kernels.
    mask_targets_config: `task.losses.mask_targets`, the sampler of the mask
      branch's training RoIs; None: its defaults (enough for inference).

  Returns:
    The model.
  """
  norm = model_config.norm_activation
  level = str(model_config.level)
  backbone = backbone_factory.build_backbone(
      input_specs=input_specs,
      backbone_config=model_config.backbone,
      norm_activation_config=norm,
      l2_regularizer=l2_regularizer)
  if level not in backbone.output_specs:
    raise ValueError(f'model.level={level} is not a backbone output; it has '
                     f'{sorted(backbone.output_specs)}.')
  decoder = decoder_factory.build_decoder(
      input_specs=backbone.output_specs,
      model_config=model_config,
      l2_regularizer=l2_regularizer)

  head_cfg = model_config.head
  anchor = model_config.anchor
  head = tood_head.TOODHead(
      num_classes=model_config.num_classes,
      stride=2**model_config.level,
      anchor_size=anchor.anchor_size,
      anchor_center_offset=anchor.center_offset,
      anchor_scales=anchor.scales,
      aspect_ratios=anchor.aspect_ratios,
      num_stacked_convs=head_cfg.num_stacked_convs,
      num_filters=head_cfg.num_filters,
      attention_channels=head_cfg.attention_channels,
      branch_channels=head_cfg.branch_channels,
      ctr_clamp=head_cfg.ctr_clamp,
      deformable_sampling=head_cfg.deformable_sampling,
      prior_prob=head_cfg.prior_prob,
      use_sync_bn=norm.use_sync_bn,
      norm_momentum=norm.norm_momentum,
      norm_epsilon=norm.norm_epsilon,
      kernel_regularizer=l2_regularizer,
      name='tood_head')

  gen = model_config.detection_generator
  generator = detection_generator.DecodedBoxDetectionGenerator(
      pre_nms_top_k=gen.pre_nms_top_k,
      pre_nms_score_threshold=gen.pre_nms_score_threshold,
      nms_iou_threshold=gen.nms_iou_threshold,
      max_num_detections=gen.max_num_detections,
      nms_version=gen.nms_version,
      name='detection_generator')

  mask_head, aligner, sampler, max_mask_rois = None, None, None, None
  if model_config.include_mask:
    mask_cfg = model_config.mask_head
    mask_head = mask_head_lib.AttentionMaskHead(
        num_classes=model_config.num_classes,
        num_convs=mask_cfg.num_convs,
        num_filters=mask_cfg.num_filters,
        upsample_factor=mask_cfg.upsample_factor,
        spatial_attention=mask_cfg.spatial_attention,
        attention_kernel_size=mask_cfg.attention_kernel_size,
        kernel_regularizer=l2_regularizer,
        name='mask_head')
    aligner = roi_aligner.ROIAligner(
        crop_size=model_config.mask_roi_aligner.crop_size,
        sampling_ratio=model_config.mask_roi_aligner.sampling_ratio,
        aligned=model_config.mask_roi_aligner.aligned)
    max_mask_rois = mask_cfg.max_inference_rois
    sampler = mask_targets.MaskTargetSampler(
        mask_size=(model_config.mask_roi_aligner.crop_size *
                   mask_cfg.upsample_factor),
        **(mask_targets_config or losses_cfg.MaskTargets()).as_dict())

  semantic_head, fusion = None, None
  panoptic = model_config.panoptic
  if panoptic.stuff_category_ids:
    if not model_config.include_mask:
      raise ValueError('model.panoptic.stuff_category_ids needs '
                       'model.include_mask: the things are instance masks.')
    num_stuff = len(panoptic.stuff_category_ids)
    head_cfg = panoptic.semantic_head
    semantic_head = semantic_head_lib.SemanticHead(
        num_classes=num_stuff + 1,
        num_filters=head_cfg.num_filters,
        num_groups=head_cfg.num_groups,
        upsample_factor=head_cfg.upsample_factor,
        kernel_regularizer=l2_regularizer,
        name='semantic_head')
    if semantic_head.output_stride_factor != 2**model_config.level:
      raise ValueError(
          'model.panoptic.semantic_head upsamples by '
          f'{semantic_head.output_stride_factor} (2 ** len(num_filters) * '
          'upsample_factor), not the feature stride '
          f'{2**model_config.level}: its logits would not match the input.')
    fusion_cfg = panoptic.fusion
    fusion = panoptic_fusion.PanopticFusion(
        num_thing_classes=model_config.num_classes,
        num_stuff_classes=num_stuff,
        score_threshold=fusion_cfg.score_threshold,
        overlap_threshold=fusion_cfg.overlap_threshold,
        stuff_area_threshold=fusion_cfg.stuff_area_threshold,
        mask_threshold=fusion_cfg.mask_threshold,
        name='panoptic_fusion')

  return unipercepnet_model.UniPercepNetModel(
      backbone=backbone,
      decoder=decoder,
      head=head,
      detection_generator=generator,
      mask_head=mask_head,
      mask_roi_aligner=aligner,
      mask_target_sampler=sampler,
      level=level,
      max_mask_rois=max_mask_rois,
      clip_boxes=gen.clip_boxes,
      semantic_head=semantic_head,
      panoptic_fusion=fusion)


def build_and_trace(model: unipercepnet_model.UniPercepNetModel,
                    input_size: Sequence[int], gt_mask_size: int,
                    batch_size: int = 1) -> None:
  """Creates every variable by tracing (not running) both call modes.

  Args:
    model: the model.
    input_size: [height, width, 3] of its input.
    gt_mask_size: side of the gt mask crops the data gives training
      (`parser.mask_crop_size`).
    batch_size: the batch size traced.
  """
  images = tf.TensorSpec([batch_size] + list(input_size), tf.float32)
  labels = {
      'gt_boxes': tf.TensorSpec([batch_size, 1, 4], tf.float32),
      'gt_classes': tf.TensorSpec([batch_size, 1], tf.int32),
  }
  if model.include_mask:
    labels['gt_masks'] = tf.TensorSpec(
        [batch_size, 1, gt_mask_size, gt_mask_size], tf.float32)

  @tf.function(autograph=False)
  def _trace(images, labels):
    # Inference first: Keras keeps the first call's arguments as the ones a
    # SavedModel export retraces the model with, batch size relaxed, and the
    # mask target sampler (Model Garden's samplers) needs a static one.
    infer = model(images, training=False)
    train = model(images, **labels, training=True)
    return train, infer

  _trace.get_concrete_function(images, labels)
