"""UniPercepNet-S configs and experiments.

Numbers follow the reference implementation (UniPercepNet-S on MMDetection
3.3), config `unipercepnet_s_regnetx_4gf_se_sam_3x_coco.py`.
"""

import dataclasses
import os
from typing import List, Optional, Sequence, Union

from official.core import config_definitions as cfg
from official.core import exp_factory
from official.modeling import hyperparams
from official.modeling import optimization
from official.vision.configs import common
from official.vision.ops import preprocess_ops
from official_ext.vision.configs import backbones
from official_ext.vision.configs import decoders
from configs import losses as losses_cfg
from configs import schedule as schedule_lib

COCO_INPUT_PATH_BASE = 'coco'
COCO_TRAIN_EXAMPLES = 118287
COCO_VAL_EXAMPLES = 5000
# COCO's 80 category ids (1..90 with gaps), in the order of the classes.
COCO_CATEGORY_IDS = tuple(i for i in range(1, 91) if i not in (
    12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
# The reference's COCO test resize: short side 800, long side 1333.
COCO_TEST_SCALE = (800, 1333)

# Model input normalisation (RGB, 0..255 scale).
MEAN_RGB = preprocess_ops.MEAN_RGB
STDDEV_RGB = preprocess_ops.STDDEV_RGB


@dataclasses.dataclass
class Anchor(hyperparams.Config):
  """Anchors of the single level: sizes `anchor_size * scales`."""
  anchor_size: float = 32.
  # Cell centres at (i + center_offset) * stride; the reference (mmdet's
  # AnchorGenerator with center_offset=0) puts them on the cell corners.
  center_offset: float = 0.
  scales: List[float] = dataclasses.field(
      default_factory=lambda: [1., 2., 4., 8., 16.])
  aspect_ratios: List[float] = dataclasses.field(default_factory=lambda: [1.])


@dataclasses.dataclass
class TOODHead(hyperparams.Config):
  num_stacked_convs: int = 6
  num_filters: int = 256
  # Hidden width of the task decomposition's layer attention: the
  # reference's num_stacked_convs * num_filters // 48 (1536 // 48 = 32).
  attention_channels: int = 32
  # Width of the probability-map and offset branches.
  branch_channels: int = 64
  # Largest centre shift (pixels) a decoded box may make; None: unclamped.
  ctr_clamp: Optional[float] = 32.
  deformable_sampling: bool = True
  prior_prob: float = 0.01


@dataclasses.dataclass
class MaskHead(hyperparams.Config):
  num_convs: int = 4
  num_filters: int = 256
  upsample_factor: int = 2
  spatial_attention: bool = True
  attention_kernel_size: int = 7
  # Inference computes masks for at most this many detections (the best by
  # score); later detection slots get all-zero masks.
  max_inference_rois: int = 100


@dataclasses.dataclass
class MaskROIAligner(hyperparams.Config):
  """RoIAlign of the mask branch (mmcv's: `aligned`, adaptive sampling)."""
  crop_size: int = 14
  # Samples per bin and axis; 0: ceil(RoI side / crop_size) (the reference).
  sampling_ratio: int = 0
  aligned: bool = True


@dataclasses.dataclass
class DetectionGenerator(hyperparams.Config):
  """Top-k (anchor, class) pairs, class-wise NMS, the best detections.

  The reference keeps every candidate scoring above 0 (its roi_head's
  score_thr is never applied) and does not clip boxes to the image;
  `clip_boxes` clips them to the valid (unpadded) image before NMS.
  """
  pre_nms_top_k: int = 1000
  pre_nms_score_threshold: float = 0.
  nms_iou_threshold: float = 0.6
  max_num_detections: int = 100
  clip_boxes: bool = False
  # The class-wise NMS: 'combined' (tf.image.combined_non_max_suppression,
  # a C++ kernel; Model Garden's nms_version 'batched') or 'static' (static
  # shapes, for XLA: TPUs and jit_compile, where 'combined' does not
  # compile), or 'offset' (one NMS over boxes shifted apart by class, as
  # the reference's batched_nms; TFLite's builtin NMS, which TFLite exports
  # use). The same detections (see official_ext's detection_generator).
  nms_version: str = 'combined'


@dataclasses.dataclass
class SemanticHead(hyperparams.Config):
  """The panoptic model's semantic head on the stride-32 map (3x3 conv + GN
  + ReLU + bilinear x2 per block, a 1x1 classifier, bilinear x
  upsample_factor to the input size)."""
  num_filters: List[int] = dataclasses.field(
      default_factory=lambda: [256, 128, 128])
  num_groups: int = 32
  upsample_factor: int = 4


@dataclasses.dataclass
class PanopticFusion(hyperparams.Config):
  """Panoptic-FPN's fusion of detections and the semantic map (inference).

  Instances in score order with score >= score_threshold, pasted and
  thresholded at mask_threshold; one more than overlap_threshold covered by
  earlier ones is dropped; a stuff region under stuff_area_threshold pixels
  (at the network input's resolution) is dropped.
  """
  score_threshold: float = 0.5
  overlap_threshold: float = 0.5
  stuff_area_threshold: int = 4096
  mask_threshold: float = 0.5


@dataclasses.dataclass
class Panoptic(hyperparams.Config):
  """The panoptic model: the instance model plus a semantic head.

  Enabled by `stuff_category_ids`: the dataset ids of the stuff categories
  (the things are `task.category_ids`); empty: the instance model.
  """
  stuff_category_ids: List[int] = dataclasses.field(default_factory=list)
  semantic_head: SemanticHead = dataclasses.field(default_factory=SemanticHead)
  fusion: PanopticFusion = dataclasses.field(default_factory=PanopticFusion)

  @property
  def enabled(self) -> bool:
    return bool(self.stuff_category_ids)


@dataclasses.dataclass
class UniPercepNet(hyperparams.Config):
  """The model."""
  num_classes: int = 80
  # [height, width, channels]; height and width multiples of 32.
  input_size: List[int] = dataclasses.field(
      default_factory=lambda: [800, 1344, 3])
  # The one level the head reads (5: stride 32).
  level: int = 5
  include_mask: bool = True
  anchor: Anchor = dataclasses.field(default_factory=Anchor)
  backbone: backbones.Backbone = dataclasses.field(
      default_factory=lambda: backbones.Backbone(  # pylint: disable=g-long-lambda
          type='regnet', regnet=backbones.RegNet(
              model_id='regnetx_4.0gf', channel_attention=True)))
  decoder: decoders.Decoder = dataclasses.field(
      default_factory=lambda: decoders.Decoder(  # pylint: disable=g-long-lambda
          type='dilated_encoder', dilated_encoder=decoders.DilatedEncoder()))
  head: TOODHead = dataclasses.field(default_factory=TOODHead)
  mask_head: MaskHead = dataclasses.field(default_factory=MaskHead)
  mask_roi_aligner: MaskROIAligner = dataclasses.field(
      default_factory=MaskROIAligner)
  detection_generator: DetectionGenerator = dataclasses.field(
      default_factory=DetectionGenerator)
  panoptic: Panoptic = dataclasses.field(default_factory=Panoptic)
  norm_activation: common.NormActivation = dataclasses.field(
      default_factory=lambda: common.NormActivation(  # pylint: disable=g-long-lambda
          activation='relu', norm_momentum=0.9, norm_epsilon=1e-5,
          use_sync_bn=False))

  def __post_init__(self, *args, **kwargs):
    super().__post_init__(*args, **kwargs)
    if self.input_size and (self.input_size[0] % 32 or
                            self.input_size[1] % 32):
      raise ValueError('model.input_size height and width must be multiples '
                       f'of 32, got {self.input_size}.')


@dataclasses.dataclass
class Parser(hyperparams.Config):
  """Input parsing and the two-stage augmentation recipe."""
  max_num_instances: int = 100
  # Side of the box-aligned crops each gt mask is stored as (the mask
  # targets are resampled from them at the mask head's output size).
  mask_crop_size: int = 112
  # Stage 1 (until `stage2_epoch`): mosaic, random resize, crop.
  mosaic: bool = True
  mosaic_tile_size: int = 640
  aug_scale_min: float = 0.5
  aug_scale_max: float = 2.
  aug_rand_hflip: bool = True
  aug_hsv: bool = True
  pad_value: float = 114.
  # Evaluation and serving: [short, long] bounds of the reference's
  # keep-ratio resize (mmdet's Resize(scale=(long, short), keep_ratio=True)),
  # within the network input; the image is padded with pad_value to that box
  # and with the mean colour beyond it (the reference's Pad, then its
  # zero padding after normalisation). Empty: fit the network input.
  test_scale: List[int] = dataclasses.field(default_factory=list)
  # Epoch from which the stage-2 pipeline (resize to fit, jitter, flip) runs.
  stage2_epoch: int = 12
  skip_crowd_during_training: bool = True


@dataclasses.dataclass
class DataConfig(cfg.DataConfig):
  """Input config (Model Garden TFRecords from create_coco_tf_record.py)."""
  input_path: Union[Sequence[str], str, hyperparams.Config] = ''
  global_batch_size: int = 0
  is_training: bool = False
  dtype: str = 'float32'
  decoder: common.DataDecoder = dataclasses.field(
      default_factory=common.DataDecoder)
  parser: Parser = dataclasses.field(default_factory=Parser)
  shuffle_buffer_size: int = 1000
  file_type: str = 'tfrecord'
  drop_remainder: bool = True
  # Number of examples (-1: unknown). Training data: with the batch size,
  # gives task.steps_per_epoch (counted from the records when -1);
  # validation data: needed to build a COCO annotation file from the
  # TFRecords when `task.annotation_file` is not given.
  num_examples: int = -1
  # Train on without the damaged records of a damaged TFRecord file (each
  # is read up to its first damaged record; the start-up names them), rather
  # than stop naming them.
  skip_corrupt_records: bool = False


# Relations between settings that no single setting can check, validated
# (as Model Garden's experiments do) whenever the experiment is loaded.
# Settings that follow from others are not settings at all: the mask targets'
# side is mask_roi_aligner.crop_size * mask_head.upsample_factor, and the
# decoder reads the backbone output `model.level`.
RESTRICTIONS = (
    'task.train_data.is_training != None',
    'task.validation_data.is_training != None',
    # Proposals are kept after NMS from the pre-NMS top k.
    'task.losses.mask_targets.num_proposals <= '
    'task.losses.mask_targets.pre_nms_top_k',
    # Mask targets go to (some of) the sampled foreground RoIs.
    'task.losses.mask_targets.num_mask_rois <= '
    'task.losses.mask_targets.num_sampled_rois',
    # Detections are the best of the pre-NMS candidates.
    'task.model.detection_generator.max_num_detections <= '
    'task.model.detection_generator.pre_nms_top_k',
)


@dataclasses.dataclass
class Export(hyperparams.Config):
  """How a SavedModel was exported; `serving/export_saved_model.py` fills it
  in the export's params.yaml, and `serving/predict.py` reads it."""
  # Input type of each signature, as 'INPUT_TYPE:SIGNATURE_NAME' pairs joined
  # by commas (INPUT_TYPE: image_tensor, image_bytes or tf_example).
  function_keys: str = ''
  # detection_masks are uint8 0/1 masks of the original image (otherwise
  # float probabilities inside each box).
  full_size_masks: bool = False


@dataclasses.dataclass
class DivergenceGuard(hyperparams.Config):
  """Stops training at the first step whose losses or weights are absurd.

  Checked after every step, before any checkpoint of it is written; 0
  disables a check. A trained shapes model's BN variances stay under 100
  and the reference COCO weights' |values| under 5.
  """
  # The total loss (losses of a sane run start under ~10).
  max_loss: float = 1e4
  # |value| of any weight or BN mean (NaN and inf always stop).
  max_abs_weight: float = 1e4
  # Any BatchNorm moving variance.
  max_bn_variance: float = 1e7


@dataclasses.dataclass
class UniPercepNetTask(cfg.TaskConfig):
  model: UniPercepNet = dataclasses.field(default_factory=UniPercepNet)
  train_data: DataConfig = dataclasses.field(
      default_factory=lambda: DataConfig(is_training=True))
  validation_data: DataConfig = dataclasses.field(
      default_factory=lambda: DataConfig(is_training=False,
                                         drop_remainder=False))
  losses: losses_cfg.Losses = dataclasses.field(
      default_factory=losses_cfg.Losses)
  init_checkpoint: Optional[str] = None
  init_checkpoint_modules: Union[str, List[str]] = 'backbone'
  # COCO annotation file of the validation set; when None, one is written to
  # model_dir from the validation TFRecords (needs validation_data.
  # num_examples).
  annotation_file: Optional[str] = None
  # The dataset's category id of each contiguous class 1..K, in order. None:
  # the ids of `annotation_file`'s categories, sorted; without an annotation
  # file, the identity 1..K.
  category_ids: Optional[List[int]] = None
  # Training steps per epoch: the schedule and the epoch-based switches
  # (assigner and data pipeline stage) count epochs of this many steps.
  # 0: train_data.num_examples // train_data.global_batch_size (see
  # configs/schedule.py).
  steps_per_epoch: int = 0
  # The schedule in epochs; configs.schedule.resolve derives the trainer's
  # and the learning rate's step settings from it.
  schedule: schedule_lib.Schedule = dataclasses.field(
      default_factory=schedule_lib.Schedule)
  per_category_metrics: bool = False
  export: Export = dataclasses.field(default_factory=Export)
  divergence_guard: DivergenceGuard = dataclasses.field(
      default_factory=DivergenceGuard)


def recipe_optimization(base_lr: float = 1e-4,
                        final_lr: float = 1e-6,
                        warmup_steps: int = 500
                        ) -> optimization.OptimizationConfig:
  """AdamW + clipping + EMA, warm-up, then constant, then cosine decay.

  The learning-rate boundaries are left to `configs.schedule.resolve`, which
  derives them from `task.schedule`.
  """
  return optimization.OptimizationConfig({
      'optimizer': {
          'type': 'adamw',
          'adamw': {
              'weight_decay_rate': 0.05,
              # Clips the gradient summed over replicas (Keras's
              # global_clipnorm); Model Garden's own gradient_clip_norm
              # clips each replica's share before the sum.
              'gradient_clip_norm': 0.0,
              'global_clipnorm': 1.0,
              'beta_1': 0.9,
              'beta_2': 0.999,
              'epsilon': 1e-8,
          }
      },
      'ema': {
          'average_decay': 0.9998,
          'dynamic_decay': True,
      },
      'learning_rate': {
          'type': 'step_cosine_with_offset',
          'step_cosine_with_offset': {
              # Constant base_lr until the cosine start, a cosine to
              # final_lr at the last step, then final_lr: Model Garden's
              # schedule gives NaN from its last boundary on (that level
              # lasts 0 steps), so the last derived boundary is out of reach
              # (schedule.NEVER_STEP: a run trained past its end keeps
              # final_lr instead of turning its weights to NaN).
              'boundaries': None,
              'values': [base_lr, base_lr, final_lr, final_lr],
          }
      },
      'warmup': {
          'type': 'linear',
          'linear': {
              'warmup_steps': warmup_steps,
              'warmup_learning_rate': base_lr * 1e-3,
          }
      }
  })


def _dataset_experiment(model: UniPercepNet,
                        data_dir: str,
                        annotation_file: str,
                        train_examples: int,
                        val_examples: int,
                        stage2_epoch: int = 12,
                        train_batch_size: int = 16,
                        eval_batch_size: int = 8,
                        test_scale: Optional[Sequence[int]] = None
                        ) -> cfg.ExperimentConfig:
  """The paper's recipe on TFRecords `data_dir/train*` and `data_dir/val*`.

  36 epochs, the cosine decay from epoch 20 (task.schedule's defaults); the
  step settings follow from the schedule (configs.schedule.resolve).
  BatchNorm statistics are synchronised across replicas, so that the
  layers whose BN trains (neck and head; the backbone's BN is frozen) see
  the global batch on any number of devices (the reference's plain BN
  normalises over each GPU's own images; on one device both are the same).
  """
  model.norm_activation.use_sync_bn = True
  config = cfg.ExperimentConfig(
      runtime=cfg.RuntimeConfig(mixed_precision_dtype='float32'),
      task=UniPercepNetTask(
          annotation_file=annotation_file,
          model=model,
          train_data=DataConfig(
              input_path=os.path.join(data_dir, 'train*'),
              is_training=True,
              global_batch_size=train_batch_size,
              num_examples=train_examples,
              parser=Parser(stage2_epoch=stage2_epoch)),
          validation_data=DataConfig(
              input_path=os.path.join(data_dir, 'val*'),
              is_training=False,
              global_batch_size=eval_batch_size,
              drop_remainder=False,
              parser=Parser(test_scale=list(test_scale or [])))),
      trainer=cfg.TrainerConfig(
          validation_steps=-(-val_examples // eval_batch_size),
          validation_interval=0,
          steps_per_loop=500,
          summary_interval=500,
          checkpoint_interval=0,
          optimizer_config=recipe_optimization()),
      restrictions=list(RESTRICTIONS))
  return schedule_lib.resolve(config)


def _coco_experiment(model: UniPercepNet) -> cfg.ExperimentConfig:
  """COCO 2017 as `scripts/prepare_coco.sh` writes it to `coco/`.

  The category ids are COCO's, so a model reports them without reading the
  annotation file (a converted or exported model needs none).
  """
  config = _dataset_experiment(
      model, COCO_INPUT_PATH_BASE,
      os.path.join(COCO_INPUT_PATH_BASE, 'instances_val2017.json'),
      COCO_TRAIN_EXAMPLES, COCO_VAL_EXAMPLES,
      test_scale=COCO_TEST_SCALE)
  config.task.category_ids = list(COCO_CATEGORY_IDS)
  return config


@exp_factory.register_config_factory('unipercepnet_coco')
def unipercepnet_coco() -> cfg.ExperimentConfig:
  """RegNetX-4.0GF + channel attention + SAM, COCO, 3x (36 epochs)."""
  return _coco_experiment(UniPercepNet())


@exp_factory.register_config_factory('unipercepnet_r50_coco')
def unipercepnet_r50_coco() -> cfg.ExperimentConfig:
  """ResNet-50 + channel attention + SAM, COCO, 3x (36 epochs)."""
  model = UniPercepNet(
      backbone=backbones.Backbone(
          type='ca_resnet',
          ca_resnet=backbones.CAResNet(model_id=50, channel_attention=True)))
  return _coco_experiment(model)


# BDD100K instance segmentation as `data/bdd100k.py` writes it: 7k
# train / 1k val images of 1280x720, 8 classes with BDD100K's ids 1..8.
BDD100K_INPUT_PATH_BASE = 'bdd100k_ins_seg'
BDD100K_TRAIN_EXAMPLES = 7000
BDD100K_VAL_EXAMPLES = 1000
BDD100K_CATEGORIES = ('pedestrian', 'rider', 'car', 'truck', 'bus', 'train',
                      'motorcycle', 'bicycle')


@exp_factory.register_config_factory('unipercepnet_bdd100k')
def unipercepnet_bdd100k() -> cfg.ExperimentConfig:
  """RegNetX-4.0GF + channel attention + SAM, BDD100K, 3x (36 epochs).

  BDD100K's resolution: 1280x720 images read at 1280x736 (the height padded
  to a multiple of 32), so the recipe's resize-to-fit keeps scale 1.
  """
  model = UniPercepNet(num_classes=len(BDD100K_CATEGORIES),
                       input_size=[736, 1280, 3])
  config = _dataset_experiment(
      model, BDD100K_INPUT_PATH_BASE,
      os.path.join(BDD100K_INPUT_PATH_BASE, 'val.json'),
      BDD100K_TRAIN_EXAMPLES, BDD100K_VAL_EXAMPLES)
  config.task.category_ids = list(range(1, len(BDD100K_CATEGORIES) + 1))
  return config


# The built-in synthetic dataset (data/shapes_dataset.py), written by
# the demo to data/shapes: 128x128 images, categories 1, 2, 4.
SHAPES_DATA_DIR = os.path.join('data', 'shapes')
SHAPES_TRAIN_EXAMPLES = 1000
SHAPES_VAL_EXAMPLES = 200


@exp_factory.register_config_factory('unipercepnet_shapes')
def unipercepnet_shapes() -> cfg.ExperimentConfig:
  """A small UniPercepNet-S for the shapes set, trained from scratch on CPU.

  RegNetX-200MF with channel attention (BN statistics trained, as there is
  no pre-training), a narrow DilatedEncoder and head, SAM in a narrow mask
  head; 256x256 input (the 128x128 images at scale 2, so the stride-32 map
  is 8x8); anchors 32..256. AdamW at a from-scratch learning rate: a 100-step
  warm-up, then a cosine decay over the 12 epochs; evaluation at the end,
  checkpoints every 2 epochs. No scale jitter: the images are seen at the
  scale the val split is (HSV jitter and flips stay). In runs of 10 epochs
  the jitter (0.75-1.25) cost more than a third of the AP (box / mask AP
  0.425 / 0.419 and 0.429 / 0.426 with it, 0.577 / 0.570 without); 12
  epochs without it gave 0.605 / 0.586, as 16 with it did (0.61-0.68).
  """
  return _shapes_experiment(SHAPES_DATA_DIR)


def _shapes_experiment(data_dir: str,
                       panoptic: Optional[Panoptic] = None
                       ) -> cfg.ExperimentConfig:
  """The shapes recipe (see `unipercepnet_shapes`) on `data_dir`."""
  batch_size = 8
  epochs = 12
  model = UniPercepNet(
      num_classes=3,
      input_size=[256, 256, 3],
      anchor=Anchor(anchor_size=32., scales=[1., 2., 4., 8.]),
      backbone=backbones.Backbone(
          type='regnet',
          regnet=backbones.RegNet(model_id='regnetx_200mf',
                                  channel_attention=True, norm_eval=False)),
      decoder=decoders.Decoder(
          type='dilated_encoder',
          dilated_encoder=decoders.DilatedEncoder(
              num_filters=128, bottleneck_filters=32,
              dilation_rates=[1, 2, 3, 4])),
      head=TOODHead(num_stacked_convs=4, num_filters=128,
                    attention_channels=16, branch_channels=32),
      mask_head=MaskHead(num_convs=2, num_filters=64),
      panoptic=panoptic or Panoptic())
  optimization_config = recipe_optimization(
      base_lr=3e-3, final_lr=3e-5, warmup_steps=100)
  optimization_config.ema.average_decay = 0.995
  train_parser = Parser(mosaic=False, aug_scale_min=1.0, aug_scale_max=1.0,
                        stage2_epoch=epochs - 2, max_num_instances=16)
  config = cfg.ExperimentConfig(
      runtime=cfg.RuntimeConfig(mixed_precision_dtype='float32'),
      task=UniPercepNetTask(
          model=model,
          annotation_file=os.path.join(data_dir, 'val.json'),
          schedule=schedule_lib.Schedule(
              epochs=epochs, cosine_start_epoch=0, validation_every_epochs=0,
              checkpoint_every_epochs=2),
          losses=losses_cfg.Losses(
              assigner_schedule=losses_cfg.recipe_assigner_schedule(3),
              mask_targets=losses_cfg.MaskTargets(
                  pre_nms_top_k=256, num_proposals=128, num_sampled_rois=64,
                  num_mask_rois=8)),
          train_data=DataConfig(
              input_path=os.path.join(data_dir, 'train-*'),
              is_training=True,
              global_batch_size=batch_size,
              num_examples=SHAPES_TRAIN_EXAMPLES,
              shuffle_buffer_size=SHAPES_TRAIN_EXAMPLES,
              parser=train_parser),
          validation_data=DataConfig(
              input_path=os.path.join(data_dir, 'val-*'),
              is_training=False,
              global_batch_size=10,
              num_examples=SHAPES_VAL_EXAMPLES,
              drop_remainder=False,
              parser=Parser(max_num_instances=16))),
      trainer=cfg.TrainerConfig(
          validation_steps=SHAPES_VAL_EXAMPLES // 10,
          validation_interval=0,
          steps_per_loop=25,
          summary_interval=25,
          checkpoint_interval=0,
          max_to_keep=3,
          optimizer_config=optimization_config),
      restrictions=list(RESTRICTIONS))
  return schedule_lib.resolve(config)


# ------------------------------------------------------------------ panoptic

# COCO panoptic's 53 stuff categories (panopticapi's
# panoptic_coco_categories.json, isthing 0); its things are the 80 of
# COCO_CATEGORY_IDS.
COCO_STUFF_CATEGORY_IDS = (
    92, 93, 95, 100, 107, 109, 112, 118, 119, 122, 125, 128, 130, 133, 138,
    141, 144, 145, 147, 148, 149, 151, 154, 155, 156, 159, 161, 166, 168, 171,
    175, 176, 177, 178, 180, 181, 184, 185, 186, 187, 188, 189, 190, 191, 192,
    193, 194, 195, 196, 197, 198, 199, 200)
# COCO 2017 with panoptic masks, as README's "Panoptic datasets" writes it.
COCO_PANOPTIC_INPUT_PATH_BASE = 'coco_panoptic'


@exp_factory.register_config_factory('unipercepnet_panoptic_coco')
def unipercepnet_panoptic_coco() -> cfg.ExperimentConfig:
  """UniPercepNet-S Panoptic: the COCO recipe plus the semantic head.

  RegNetX-4.0GF + channel attention + SAM, 3x; the 80 thing and 53 stuff
  categories of COCO panoptic; PQ alongside box and mask AP.
  """
  model = UniPercepNet(panoptic=Panoptic(
      stuff_category_ids=list(COCO_STUFF_CATEGORY_IDS)))
  config = _dataset_experiment(
      model, COCO_PANOPTIC_INPUT_PATH_BASE,
      os.path.join(COCO_PANOPTIC_INPUT_PATH_BASE, 'instances_val2017.json'),
      COCO_TRAIN_EXAMPLES, COCO_VAL_EXAMPLES, test_scale=COCO_TEST_SCALE)
  config.task.category_ids = list(COCO_CATEGORY_IDS)
  return config


# The built-in synthetic panoptic set (data/shapes_panoptic.py): the shapes
# (things 1, 2, 4) over sky, road and grass (stuff 92, 93, 94), 128x128.
SHAPES_PANOPTIC_DATA_DIR = os.path.join('data', 'shapes_panoptic')
SHAPES_STUFF_CATEGORY_IDS = (92, 93, 94)


@exp_factory.register_config_factory('unipercepnet_panoptic_shapes')
def unipercepnet_panoptic_shapes() -> cfg.ExperimentConfig:
  """The shapes recipe with a narrow semantic head, on the panoptic shapes.

  The fusion's stuff area threshold is the recipe's 4096 pixels of an
  800x1344 input scaled to the 256x256 one (the same fraction of the
  image): 256 pixels.
  """
  panoptic = Panoptic(
      stuff_category_ids=list(SHAPES_STUFF_CATEGORY_IDS),
      semantic_head=SemanticHead(num_filters=[64, 32, 32], num_groups=8),
      fusion=PanopticFusion(stuff_area_threshold=256))
  return _shapes_experiment(SHAPES_PANOPTIC_DATA_DIR, panoptic)


# BDD100K panoptic segmentation as `data/bdd100k_panoptic.py` writes it:
# the 7k train / 1k val images of 1280x720, BDD100K's 40 pan_seg categories:
# things 31..40 (person, rider, bicycle, bus, car, caravan, motorcycle,
# trailer, train, truck), stuff 1..30.
BDD100K_PANOPTIC_INPUT_PATH_BASE = 'bdd100k_pan_seg'
BDD100K_THING_CATEGORY_IDS = tuple(range(31, 41))
BDD100K_STUFF_CATEGORY_IDS = tuple(range(1, 31))


@exp_factory.register_config_factory('unipercepnet_panoptic_bdd100k')
def unipercepnet_panoptic_bdd100k() -> cfg.ExperimentConfig:
  """UniPercepNet-S Panoptic on BDD100K: the BDD100K recipe (1280x736, 3x)
  plus the semantic head."""
  model = UniPercepNet(
      num_classes=len(BDD100K_THING_CATEGORY_IDS), input_size=[736, 1280, 3],
      panoptic=Panoptic(stuff_category_ids=list(BDD100K_STUFF_CATEGORY_IDS)))
  config = _dataset_experiment(
      model, BDD100K_PANOPTIC_INPUT_PATH_BASE,
      os.path.join(BDD100K_PANOPTIC_INPUT_PATH_BASE, 'val.json'),
      BDD100K_TRAIN_EXAMPLES, BDD100K_VAL_EXAMPLES)
  config.task.category_ids = list(BDD100K_THING_CATEGORY_IDS)
  return config


# ------------------------------------------------------------------ VoVNet


def _vovnet_model(model_id: str) -> UniPercepNet:
  """The paper's neck, head and mask head on a VoVNet-v2 (eSE) backbone."""
  return UniPercepNet(
      backbone=backbones.Backbone(
          type='vovnet', vovnet=backbones.VoVNet(model_id=model_id)))


@exp_factory.register_config_factory('unipercepnet_vovnet39_coco')
def unipercepnet_vovnet39_coco() -> cfg.ExperimentConfig:
  """VoVNet-V2-39 (eSE) + SAM, COCO, 3x (36 epochs)."""
  return _coco_experiment(_vovnet_model('V-39-eSE'))


@exp_factory.register_config_factory('unipercepnet_vovnet57_coco')
def unipercepnet_vovnet57_coco() -> cfg.ExperimentConfig:
  """VoVNet-V2-57 (eSE) + SAM, COCO, 3x (36 epochs)."""
  return _coco_experiment(_vovnet_model('V-57-eSE'))
