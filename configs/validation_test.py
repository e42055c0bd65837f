"""Tests of the experiment checks: every bad key is named."""

from official.core import exp_factory
from official.modeling import hyperparams
import pytest

import registry_imports  # pylint: disable=unused-import
from configs import validation

EXPERIMENTS = ('unipercepnet_coco', 'unipercepnet_r50_coco',
               'unipercepnet_bdd100k', 'unipercepnet_shapes',
               'unipercepnet_panoptic_coco', 'unipercepnet_panoptic_bdd100k',
               'unipercepnet_panoptic_shapes', 'unipercepnet_vovnet39_coco',
               'unipercepnet_vovnet57_coco')


def _override(override: str):
  params = exp_factory.get_exp_config('unipercepnet_shapes')
  return hyperparams.override_params_dict(params, override, is_strict=True)


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_registered_experiments_pass(name):
  validation.check(exp_factory.get_exp_config(name))


def test_a_string_for_an_int_names_the_key():
  # Model Garden's override stores the string as it is.
  params = _override('task.model.num_classes=abc')
  assert params.task.model.num_classes == 'abc'
  with pytest.raises(ValueError) as e:
    validation.check(params)
  assert ("task.model.num_classes is 'abc' (str); it must be int"
          in str(e.value))


def test_every_bad_key_is_listed():
  params = _override('task.train_data.global_batch_size=2.5,'
                     'task.model.include_mask=maybe,'
                     "task.model.anchor.scales=[1.0, 'x']")
  with pytest.raises(ValueError) as e:
    validation.check(params)
  message = str(e.value)
  assert 'task.train_data.global_batch_size is 2.5 (float)' in message
  assert "task.model.include_mask is 'maybe' (str); it must be bool" in message
  assert 'task.model.anchor.scales' in message


def test_ints_are_floats_and_none_is_optional():
  params = _override('task.model.anchor.anchor_size=32,'
                     'task.init_checkpoint=null')
  validation.check(params)


@pytest.mark.parametrize('override, key', [
    ('task.model.num_classes=0', 'task.model.num_classes is 0'),
    ('task.train_data.global_batch_size=0',
     'task.train_data.global_batch_size is 0'),
    ('task.model.input_size=[256, 256, 1]', 'task.model.input_size'),
    ('task.model.anchor.scales=[1.0, -2.0]', 'task.model.anchor.scales'),
    ('task.train_data.parser.aug_scale_max=0.5',
     'task.train_data.parser.aug_scale_max is 0.5'),
    ('trainer.optimizer_config.learning_rate.step_cosine_with_offset.values='
     '[0.003, 0.003, -1.0, 0.0]',
     'trainer.optimizer_config.learning_rate.step_cosine_with_offset.values'),
    ('task.model.panoptic.stuff_category_ids=[5, 300]',
     'task.model.panoptic.stuff_category_ids is [5, 300]'),
    ('task.model.panoptic.fusion.score_threshold=1.5',
     'task.model.panoptic.fusion.score_threshold is 1.5'),
    ('task.losses.semantic_weight=-1', 'task.losses.semantic_weight is -1'),
])
def test_out_of_range_values_name_the_key(override, key):
  with pytest.raises(ValueError) as e:
    validation.check(_override(override))
  assert key in str(e.value)
