"""Tests for the assigner registry and the schedule's choice of stage."""

import numpy as np
import pytest
import tensorflow as tf

from official.modeling import hyperparams
from configs import losses as losses_cfg
from losses import assigner_stages
from losses import unipercepnet_losses
from losses import unipercepnet_losses_test

_CALLS = []


def _recording_targets(*args, **kwargs):
  """A third assigner: task-aligned targets, recording that it ran."""
  _CALLS.append('recording')
  return unipercepnet_losses.aligned_targets(*args, **kwargs)


assigner_stages.register('recording', _recording_targets,
                         unipercepnet_losses.aligned_loss_sums)


def _schedule(*stages):
  return [losses_cfg.AssignerStage(assigner=name, until_epoch=until)
          for name, until in stages]


_THREE = _schedule(('uniform', 2), ('task_aligned', 5), ('uniform', None))


def test_registry_knows_the_recipes_stages_and_rejects_others():
  assert assigner_stages.get('uniform').loss_sums_fn is (
      unipercepnet_losses.uniform_loss_sums)
  assert assigner_stages.get('task_aligned').targets_fn is (
      unipercepnet_losses.aligned_targets)
  with pytest.raises(ValueError, match="'task_aligned'"):
    assigner_stages.get('tood')
  with pytest.raises(ValueError, match='already registered'):
    assigner_stages.register('uniform', _recording_targets,
                             unipercepnet_losses.aligned_loss_sums)


@pytest.mark.parametrize('schedule,message', [
    ([], 'empty'),
    (_schedule(('uniform', 4), ('task_aligned', 8)), 'last runs to the end'),
    (_schedule(('uniform', None), ('task_aligned', None)), 'needs until_epoch'),
    (_schedule(('uniform', 4), ('uniform', 4), ('task_aligned', None)),
     'must increase'),
    (_schedule(('uniform', 0), ('task_aligned', None)), 'must increase'),
    (_schedule(('uniform', 4), ('tood', None)), 'Unknown assigner'),
])
def test_check_schedule_rejects_malformed_schedules(schedule, message):
  with pytest.raises(ValueError, match=message):
    assigner_stages.check_schedule(schedule)


def test_stage_index_follows_the_epochs():
  expected = [0, 0, 1, 1, 1, 2, 2]
  for epoch, index in enumerate(expected):
    assert int(assigner_stages.stage_index(_THREE, epoch)) == index
  assert int(assigner_stages.stage_index(_schedule(('uniform', None)),
                                         7)) == 0


def test_run_stage_eager_in_a_graph_and_forced():
  codes = {'recording': 0, 'uniform': 1, 'task_aligned': 2}
  fn = lambda stage: tf.constant(  # The code of the stage's name.
      [c for n, c in codes.items() if assigner_stages.get(n) is stage][0])
  graph = tf.function(
      lambda epoch: assigner_stages.run_stage(fn, _THREE, epoch=epoch))
  for epoch, expected in [(0, 1), (1, 1), (2, 2), (4, 2), (5, 1), (40, 1)]:
    assert int(assigner_stages.run_stage(fn, _THREE, epoch=epoch)) == expected
    assert int(graph(tf.constant(epoch, tf.int64))) == expected
  assert int(assigner_stages.run_stage(fn, _THREE, epoch=0,
                                       assigner='task_aligned')) == 2
  assert int(assigner_stages.run_stage(fn, _THREE,
                                       assigner='recording')) == 0
  with pytest.raises(ValueError, match='epoch or an assigner'):
    assigner_stages.run_stage(fn, _THREE)


def test_a_registered_assigner_named_in_yaml_trains():
  params = losses_cfg.Losses()
  params.anchor_sampler.num_samples = 0
  params = hyperparams.override_params_dict(params, """
assigner_schedule:
- {assigner: uniform, until_epoch: 1}
- {assigner: recording}
""", is_strict=True)
  assert [s.assigner for s in params.assigner_schedule] == ['uniform',
                                                             'recording']
  outputs, gt_boxes, gt_classes = unipercepnet_losses_test._batch()  # pylint: disable=protected-access
  del _CALLS[:]
  ours = unipercepnet_losses.detection_losses_fn(
      outputs, gt_boxes, gt_classes, params, epoch=3)
  assert _CALLS == ['recording']
  aligned = unipercepnet_losses.detection_losses_fn(
      outputs, gt_boxes, gt_classes, params, assigner='task_aligned')
  for key in aligned:
    np.testing.assert_allclose(ours[key], aligned[key], rtol=1e-6)
