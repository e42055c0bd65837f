"""Training loss configs: the assigner schedule, assigners, samplers, weights.

The assigner in force is chosen by `Losses.assigner_schedule`, a list of
stages in epoch order, e.g. (YAML):

  task:
    losses:
      assigner_schedule:
      - {assigner: uniform, until_epoch: 4}
      - {assigner: task_aligned}

Each stage names an assigner in the registry of `losses/assigner_stages.py`
('uniform', 'task_aligned') and runs until epoch `until_epoch` (exclusive;
epoch = training step // `task.steps_per_epoch`); the last stage has no
`until_epoch` and runs to the end.
"""

import dataclasses
from typing import List, Optional

from official.modeling import hyperparams


@dataclasses.dataclass
class AssignerStage(hyperparams.Config):
  """One stage of `Losses.assigner_schedule`."""
  # A name in the registry of losses/assigner_stages.py.
  assigner: str = 'task_aligned'
  # The first epoch of the next stage; None for the last stage.
  until_epoch: Optional[int] = None


def recipe_assigner_schedule(uniform_epochs: int) -> List[AssignerStage]:
  """The paper's schedule: uniform assignment, then task-aligned."""
  return [AssignerStage(assigner='uniform', until_epoch=uniform_epochs),
          AssignerStage(assigner='task_aligned')]


@dataclasses.dataclass
class UniformAssigner(hyperparams.Config):
  """YOLOF's assigner (mmdet's UniformAssigner), the 'uniform' stage.

  Matches the head's decoded boxes (the reference decodes them a second time
  as if they were deltas, a defect not reproduced here).
  """
  # Nearest predictions and nearest anchors per gt (mmdet's match_times).
  num_nearest: int = 4
  # A candidate whose anchor has a lower IoU with its gt is ignored.
  pos_ignore_iou: float = 0.15
  # An anchor whose predicted box has a higher IoU with a gt starts ignored.
  neg_ignore_iou: float = 0.7


@dataclasses.dataclass
class TaskAlignedAssigner(hyperparams.Config):
  """TOOD's assigner (mmdet's TaskAlignedAssigner), the 'task_aligned' stage."""
  topk: int = 13
  # Alignment metric score**alpha * IoU**beta.
  alpha: float = 1.
  beta: float = 6.


@dataclasses.dataclass
class MaskTargets(hyperparams.Config):
  """Proposals, RoI sampling and mask targets for the mask branch."""
  pre_nms_top_k: int = 2000
  nms_iou_threshold: float = 0.7
  num_proposals: int = 1500
  foreground_iou_threshold: float = 0.5
  num_sampled_rois: int = 512
  foreground_fraction: float = 0.25
  mix_gt_boxes: bool = True
  # Foreground RoIs per image that get a mask target (at most
  # num_sampled_rois * foreground_fraction are foreground).
  num_mask_rois: int = 128
  # The targets' side is the mask head's output side, derived from the
  # model: mask_roi_aligner.crop_size * mask_head.upsample_factor.


@dataclasses.dataclass
class AnchorSampler(hyperparams.Config):
  """Anchors with a classification weight (mmdet's RandomSampler), per image.

  Both stages: at most `num_samples * positive_fraction` positives (a random
  subset when more), then random negatives up to `num_samples` anchors;
  `num_samples: 0` weights every non-ignored anchor (mmdet's PseudoSampler).
  """
  num_samples: int = 256
  positive_fraction: float = 0.5
  # Op seed of the random draw; None: unseeded.
  seed: Optional[int] = None


@dataclasses.dataclass
class Losses(hyperparams.Config):
  """The task's losses: assignment, sampling, weights, mask targets."""
  # Which assigner trains when (see the module docstring).
  assigner_schedule: List[AssignerStage] = dataclasses.field(
      default_factory=lambda: recipe_assigner_schedule(4))
  uniform_assigner: UniformAssigner = dataclasses.field(
      default_factory=UniformAssigner)
  task_aligned_assigner: TaskAlignedAssigner = dataclasses.field(
      default_factory=TaskAlignedAssigner)
  anchor_sampler: AnchorSampler = dataclasses.field(
      default_factory=AnchorSampler)
  focal_alpha: float = 0.25
  focal_gamma: float = 2.
  qfl_beta: float = 2.
  cls_weight: float = 1.
  giou_weight: float = 1.5
  mask_weight: float = 1.5
  # The panoptic model's semantic head: cross-entropy over the non-void
  # pixels (the reference's former panoptic variant: 0.5).
  semantic_weight: float = 0.5
  mask_targets: MaskTargets = dataclasses.field(default_factory=MaskTargets)
  l2_weight_decay: float = 0.
