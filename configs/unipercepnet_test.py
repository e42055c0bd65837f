"""Tests for the experiment configs and the example YAMLs."""

import os

import numpy as np
import pytest

from official.core import exp_factory
from official.modeling import hyperparams
from official.modeling.optimization import optimizer_factory
from configs import schedule
from configs import unipercepnet as exp_cfg
from data import bdd100k_panoptic
from data import shapes_panoptic
import registry_imports  # pylint: disable=unused-import

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_shapes_experiment_schedule_is_consistent():
  params = exp_factory.get_exp_config('unipercepnet_shapes')
  task = params.task
  steps = task.steps_per_epoch
  assert steps == 1000 // task.train_data.global_batch_size
  epochs = params.trainer.train_steps // steps
  assert 0 < task.losses.assigner_schedule[0].until_epoch < epochs
  assert 0 < task.train_data.parser.stage2_epoch < epochs
  assert task.model.num_classes == 3
  assert task.model.backbone.regnet.channel_attention
  assert task.model.mask_head.spatial_attention
  assert not task.model.backbone.regnet.norm_eval  # Trained from scratch.
  assert task.validation_data.num_examples == 200
  params.validate()


def test_recipe_schedule_warms_up_holds_decays_and_stays_finite_past_the_end():
  params = exp_factory.get_exp_config('unipercepnet_coco')
  params.trainer.optimizer_config = exp_cfg.recipe_optimization(
      base_lr=1e-3, final_lr=1e-5, warmup_steps=5)
  params.override({'task': {
      'steps_per_epoch': 10,
      'schedule': {'epochs': 5, 'cosine_start_epoch': 2},
      'train_data': {'parser': {'stage2_epoch': 4}}}})
  config = schedule.resolve(
      params, base=exp_factory.get_exp_config('unipercepnet_coco')
  ).trainer.optimizer_config
  lr = optimizer_factory.OptimizerFactory(config).build_learning_rate()
  at = lambda step: float(lr(step))
  np.testing.assert_allclose(at(0), 1e-6, rtol=1e-5)        # Warm-up start.
  np.testing.assert_allclose(at(10), 1e-3, rtol=1e-5)       # Held.
  np.testing.assert_allclose(at(20), 1e-3, rtol=1e-5)       # Cosine starts.
  np.testing.assert_allclose(at(35), (1e-3 + 1e-5) / 2, rtol=1e-4)  # Middle.
  # Model Garden's step cosine alone is NaN from its last boundary on.
  for step in (50, 51, 10_000):
    np.testing.assert_allclose(at(step), 1e-5, rtol=1e-4)


def test_custom_dataset_yaml_points_an_experiment_at_new_files():
  params = exp_factory.get_exp_config('unipercepnet_coco')
  path = os.path.join(_ROOT, 'configs', 'experiments', 'custom',
                      'coco_format_dataset.yaml')
  params = hyperparams.override_params_dict(params, path, is_strict=True)
  assert params.task.model.num_classes == 8
  assert params.task.annotation_file == 'DATA/val.json'
  assert params.task.category_ids is None  # Not COCO's 80 ids.
  assert params.task.train_data.input_path == 'DATA/train-*'
  assert params.task.validation_data.input_path == 'DATA/val-*'
  # The schedule is in epochs; the step settings follow from it (see
  # configs/schedule_test.py).
  assert params.task.schedule.epochs == 36
  schedule = params.task.losses.assigner_schedule
  assert [(s.assigner, s.until_epoch) for s in schedule] == [
      ('uniform', 4), ('task_aligned', None)]


def test_bdd100k_experiment_is_the_papers_3x_recipe_at_bdd100k_resolution():
  params = exp_factory.get_exp_config('unipercepnet_bdd100k')
  task = params.task
  assert task.model.num_classes == 8
  assert task.category_ids == [1, 2, 3, 4, 5, 6, 7, 8]
  # 1280x720 images, height padded to a multiple of 32.
  assert task.model.input_size == [736, 1280, 3]
  assert task.model.backbone.regnet.model_id == 'regnetx_4.0gf'
  assert task.model.backbone.regnet.channel_attention
  assert task.model.mask_head.spatial_attention
  assert task.steps_per_epoch == 7000 // 16 == 437
  assert params.trainer.train_steps == 36 * 437
  assert params.trainer.validation_steps == 125  # 1000 val images / 8
  assert task.train_data.parser.stage2_epoch == 12
  assert task.losses.assigner_schedule[0].until_epoch == 4
  boundaries = params.trainer.optimizer_config.learning_rate.get().boundaries
  assert boundaries[1:3] == [20 * 437, 36 * 437]
  assert task.annotation_file == os.path.join('bdd100k_ins_seg', 'val.json')
  assert task.train_data.input_path == os.path.join('bdd100k_ins_seg',
                                                    'train*')
  params.validate()


def test_coco_experiments_report_cocos_ids_and_test_resize():
  for name in ('unipercepnet_coco', 'unipercepnet_r50_coco'):
    task = exp_factory.get_exp_config(name).task
    ids = task.category_ids
    assert len(ids) == 80 and ids[:12] == list(range(1, 12)) + [13]
    assert ids[-1] == 90 and 83 not in ids and 84 in ids
    assert task.validation_data.parser.test_scale == [800, 1333]
    assert task.model.input_size[:2] == [800, 1344]


def test_restrictions_name_both_settings_of_a_contradiction():
  names = ('unipercepnet_coco', 'unipercepnet_r50_coco',
           'unipercepnet_bdd100k', 'unipercepnet_shapes')
  cases = {
      'task.losses.mask_targets.num_mask_rois': 'num_sampled_rois',
      'task.losses.mask_targets.num_proposals': 'pre_nms_top_k',
      'task.model.detection_generator.max_num_detections': 'pre_nms_top_k',
  }
  for name in names:
    exp_factory.get_exp_config(name).validate()
    for key, other in cases.items():
      params = exp_factory.get_exp_config(name)
      params = hyperparams.override_params_dict(params, f'{key}=100000',
                                                is_strict=True)
      with pytest.raises(KeyError, match=f'{key.split(".")[-1]}.*{other}'):
        params.validate()


def test_panoptic_experiments_name_their_datasets_categories():
  expected = {
      'unipercepnet_panoptic_coco': (
          list(exp_cfg.COCO_CATEGORY_IDS), 53, 'coco_panoptic'),
      'unipercepnet_panoptic_bdd100k': (
          bdd100k_panoptic.THING_CATEGORY_IDS,
          len(bdd100k_panoptic.STUFF_CATEGORY_IDS), 'bdd100k_pan_seg'),
      'unipercepnet_panoptic_shapes': (
          sorted(shapes_panoptic.THING_CATEGORIES),
          len(shapes_panoptic.STUFF_CATEGORIES), 'shapes_panoptic'),
  }
  for name, (things, num_stuff, data_dir) in expected.items():
    params = exp_factory.get_exp_config(name)
    params.validate()
    task = params.task
    stuff = task.model.panoptic.stuff_category_ids
    assert len(stuff) == num_stuff and not set(stuff) & set(things), name
    if task.category_ids is not None:
      assert task.category_ids == list(things), name
    assert task.model.num_classes == len(things), name
    assert task.model.include_mask, name
    assert data_dir in task.train_data.input_path, name
    assert task.losses.semantic_weight == 0.5
  assert (exp_factory.get_exp_config('unipercepnet_panoptic_bdd100k').task
          .model.panoptic.stuff_category_ids ==
          bdd100k_panoptic.STUFF_CATEGORY_IDS)
  assert sorted(shapes_panoptic.STUFF_CATEGORIES) == list(
      exp_cfg.SHAPES_STUFF_CATEGORY_IDS)


def test_vovnet_experiments_are_the_coco_recipe_on_a_vovnet_and_build():
  # Imported here: the other tests need no model code.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top
  from modeling import factory  # pylint: disable=g-import-not-at-top

  reference = exp_factory.get_exp_config('unipercepnet_coco')
  for name, model_id in (('unipercepnet_vovnet39_coco', 'V-39-eSE'),
                         ('unipercepnet_vovnet57_coco', 'V-57-eSE')):
    params = exp_factory.get_exp_config(name)
    params.validate()
    model_cfg = params.task.model
    assert model_cfg.backbone.type == 'vovnet', name
    assert model_cfg.backbone.vovnet.model_id == model_id, name
    assert model_cfg.backbone.vovnet.norm_eval, name  # Pre-trained, frozen.
    # Everything but the backbone is the paper's COCO experiment.
    for key in ('decoder', 'head', 'mask_head', 'anchor', 'input_size',
                'level', 'norm_activation'):
      assert (params.as_dict()['task']['model'][key] ==
              reference.as_dict()['task']['model'][key]), (name, key)
    assert params.task.category_ids == list(exp_cfg.COCO_CATEGORY_IDS)
    assert params.trainer.as_dict() == reference.trainer.as_dict(), name
    # It builds; at 128x128 the neck reads the 4x4, 1024-channel stride-32
    # map and keeps its size.
    model_cfg.override({'input_size': [128, 128, 3]})
    model = factory.build_unipercepnet(
        tf_keras.layers.InputSpec(shape=[None, 128, 128, 3]), model_cfg)
    assert model.backbone.output_specs['5'].as_list() == [None, 4, 4, 1024]
    features = model.features(tf.zeros([1, 128, 128, 3]), training=False)
    assert features.shape.as_list() == [1, 4, 4, 512], name
