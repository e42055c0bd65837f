"""Assigner stages by name, and the one place the stage in force is chosen.

An assigner stage is two functions:

  targets_fn(anchors, pred_boxes, scores, gt_boxes, gt_valid, gt_labels,
             params, sample_fn) -> targets
      assignment and sampling. `anchors` `[N, 4]` or `[B, N, 4]`,
      `pred_boxes` `[B, N, 4]` (the head's decoded pixel boxes), `scores`
      `[B, N, K]` probabilities, `gt_boxes` `[B, M, 4]`, `gt_valid` `[B, M]`
      bool, `gt_labels` `[B, M]` 0-based, `params` the `Losses` config,
      `sample_fn` the anchor sampler (None: the configured one). `targets` is
      a dict with at least the `[B, N]` fields 'labels' (0-based class at
      sampled positives, -1 elsewhere), 'label_weights', 'sampled_positive'
      (bool), 'box_weights' and 'box_targets' `[B, N, 4]`.
  loss_sums_fn(scores, box_preds, targets, params, stride) -> sums
      the unnormalised scalars 'cls_sum', 'box_sum', 'norm' (the normaliser)
      and 'num_positives'.

`losses/unipercepnet_losses.py` registers 'uniform' and 'task_aligned'. A new
assigner is written as those two functions, registered with `register` in a
module `registry_imports.py` imports, and named in
`task.losses.assigner_schedule`.
"""

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, TypeVar

import tensorflow as tf

from configs import losses as losses_cfg

TargetsFn = Callable[..., Dict[str, tf.Tensor]]
LossSumsFn = Callable[..., Dict[str, tf.Tensor]]
_T = TypeVar('_T')


@dataclasses.dataclass(frozen=True)
class Assigner:
  targets_fn: TargetsFn
  loss_sums_fn: LossSumsFn


_REGISTERED: Dict[str, Assigner] = {}


def register(name: str, targets_fn: TargetsFn,
             loss_sums_fn: LossSumsFn) -> None:
  """Makes an assigner stage available to schedules under `name`."""
  if name in _REGISTERED:
    raise ValueError(f'Assigner {name!r} is already registered.')
  _REGISTERED[name] = Assigner(targets_fn, loss_sums_fn)


def get(name: str) -> Assigner:
  if name not in _REGISTERED:
    raise ValueError(f'Unknown assigner {name!r}; registered: '
                     f'{sorted(_REGISTERED)}.')
  return _REGISTERED[name]


def check_schedule(schedule: Sequence[losses_cfg.AssignerStage]) -> List[str]:
  """The schedule's assigner names, after checking its epochs and names."""
  if not schedule:
    raise ValueError('losses.assigner_schedule is empty.')
  bounds = [stage.until_epoch for stage in schedule[:-1]]
  if any(b is None for b in bounds) or schedule[-1].until_epoch is not None:
    raise ValueError('losses.assigner_schedule: every stage but the last '
                     'needs until_epoch, and the last runs to the end (no '
                     f'until_epoch); got {[s.as_dict() for s in schedule]}.')
  if any(b <= a for a, b in zip([0] + bounds, bounds)):
    raise ValueError('losses.assigner_schedule: until_epoch must increase '
                     f'from > 0; got {bounds}.')
  names = [stage.assigner for stage in schedule]
  for name in names:
    get(name)
  return names


def stage_index(schedule: Sequence[losses_cfg.AssignerStage],
                epoch) -> tf.Tensor:
  """int32 index of the schedule's stage at `epoch` (a scalar)."""
  bounds = [stage.until_epoch for stage in schedule[:-1]]
  if not bounds:
    return tf.constant(0, tf.int32)
  epoch = tf.cast(epoch, tf.int64)
  return tf.reduce_sum(tf.cast(epoch >= tf.constant(bounds, tf.int64),
                               tf.int32))


def run_stage(fn: Callable[[Assigner], _T],
              schedule: Sequence[losses_cfg.AssignerStage],
              epoch=None,
              assigner: Optional[str] = None) -> _T:
  """`fn` of the assigner in force.

  Args:
    fn: computes the losses of one assigner stage.
    schedule: `Losses.assigner_schedule`.
    epoch: scalar (tensor or int), the training epoch: the schedule's stage
      at it runs (a tensor in a graph: both stages are in the graph, the
      epoch picks one, as `tf.switch_case` does).
    assigner: a registered name: runs that stage whatever the schedule and
      epoch say.

  Returns:
    `fn`'s output.
  """
  if assigner is not None:
    return fn(get(assigner))
  if epoch is None:
    raise ValueError('run_stage needs the epoch or an assigner name.')
  names = check_schedule(schedule)
  branches = [lambda name=name: fn(get(name)) for name in names]
  if len(branches) == 1:
    return branches[0]()
  return tf.switch_case(stage_index(schedule, epoch), branches)
