"""Tests for the experiment configs and the example YAMLs."""

import os

from official.core import exp_factory
from official.modeling import hyperparams
import registry_imports  # pylint: disable=unused-import

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_shapes_experiment_schedule_is_consistent():
  params = exp_factory.get_exp_config('unipercepnet_shapes')
  task = params.task
  steps = task.steps_per_epoch
  assert steps == 1000 // task.train_data.global_batch_size
  epochs = params.trainer.train_steps // steps
  assert 0 < task.losses.initial_epochs < epochs
  assert 0 < task.train_data.parser.stage2_epoch < epochs
  assert task.model.num_classes == 3
  assert task.model.backbone.regnet.channel_attention
  assert task.model.mask_head.spatial_attention
  assert not task.model.backbone.regnet.norm_eval  # Trained from scratch.
  assert task.validation_data.num_examples == 200
  params.validate()


def test_custom_dataset_yaml_points_an_experiment_at_new_files():
  params = exp_factory.get_exp_config('unipercepnet_coco')
  path = os.path.join(_ROOT, 'configs', 'experiments', 'custom',
                      'coco_format_dataset.yaml')
  params = hyperparams.override_params_dict(params, path, is_strict=True)
  assert params.task.model.num_classes == 8
  assert params.task.annotation_file == 'DATA/val.json'
  assert params.task.train_data.input_path == 'DATA/train-*'
  assert params.task.validation_data.input_path == 'DATA/val-*'
  assert params.trainer.train_steps == 36 * params.task.steps_per_epoch
