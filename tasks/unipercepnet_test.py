"""Tests for the Task: registration, build_model, init checkpoints."""

import numpy as np
import pytest
import tensorflow as tf

from official.core import exp_factory
from official.core import task_factory
from official.vision.modeling.backbones import factory as backbone_factory
from official.vision.modeling.decoders import factory as decoder_factory
import registry_imports  # pylint: disable=unused-import
from tasks import unipercepnet as task_lib

_TINY = {
    'task': {
        'model': {
            'num_classes': 4,
            'input_size': [96, 128, 3],
            'backbone': {'type': 'regnet',
                         'regnet': {'model_id': 'regnetx_200mf'}},
            'decoder': {'dilated_encoder': {'num_filters': 32,
                                            'bottleneck_filters': 8}},
            'head': {'num_stacked_convs': 2, 'num_filters': 16,
                     'attention_channels': 4, 'branch_channels': 8},
            'mask_head': {'num_convs': 1, 'num_filters': 8},
        }
    }
}


def _tiny_params():
  params = exp_factory.get_exp_config('unipercepnet_coco')
  params.override(_TINY, is_strict=True)
  return params


def test_registry_imports_registers_everything():
  for name in ['unipercepnet_coco', 'unipercepnet_r50_coco']:
    assert exp_factory.get_exp_config(name).task.model.num_classes == 80
  # pylint: disable=protected-access
  assert 'regnet' in backbone_factory._REGISTERED_BACKBONE_CLS
  assert 'ca_resnet' in backbone_factory._REGISTERED_BACKBONE_CLS
  assert 'dilated_encoder' in decoder_factory._REGISTERED_DECODER_CLS
  # pylint: enable=protected-access
  task = task_factory.get_task(_tiny_params().task)
  assert isinstance(task, task_lib.UniPercepNetTask)


def test_experiment_recipe():
  params = exp_factory.get_exp_config('unipercepnet_coco')
  model = params.task.model
  assert model.backbone.type == 'regnet'
  assert model.backbone.regnet.model_id == 'regnetx_4.0gf'
  assert model.backbone.regnet.channel_attention
  assert model.backbone.regnet.norm_eval
  assert model.mask_head.spatial_attention
  assert exp_factory.get_exp_config(
      'unipercepnet_r50_coco').task.model.backbone.type == 'ca_resnet'
  opt = params.trainer.optimizer_config
  assert opt.optimizer.type == 'adamw'
  assert opt.optimizer.adamw.weight_decay_rate == 0.05
  assert opt.optimizer.adamw.gradient_clip_norm == 1.0
  steps_per_epoch = 118287 // params.task.train_data.global_batch_size
  assert params.trainer.train_steps == 36 * steps_per_epoch
  # The schedule: warm-up from 1e-7, 1e-4 until epoch 20, cosine to 1e-6.
  from official.modeling.optimization import optimizer_factory  # pylint: disable=g-import-not-at-top
  lr = optimizer_factory.OptimizerFactory(opt).build_learning_rate()
  total = params.trainer.train_steps
  cosine_start = 20 * steps_per_epoch
  np.testing.assert_allclose(float(lr(0)), 1e-7, rtol=1e-3)
  np.testing.assert_allclose(float(lr(250)), (1e-7 + 1e-4) / 2, rtol=1e-3)
  np.testing.assert_allclose(float(lr(500)), 1e-4, rtol=1e-5)
  np.testing.assert_allclose(float(lr(cosine_start)), 1e-4, rtol=1e-5)
  np.testing.assert_allclose(float(lr((cosine_start + total) // 2)),
                             (1e-4 + 1e-6) / 2, rtol=1e-3)
  np.testing.assert_allclose(float(lr(total - 1)), 1e-6, rtol=1e-2)


def test_build_model_creates_every_variable():
  task = task_factory.get_task(_tiny_params().task)
  model = task.build_model()
  before = len(model.variables)
  assert before > 0
  model(tf.zeros([1, 96, 128, 3]), training=False)
  model(tf.zeros([1, 96, 128, 3]), roi_boxes=tf.zeros([1, 2, 4]),
        roi_classes=tf.ones([1, 2], tf.int32), training=True)
  assert len(model.variables) == before


def test_initialize_restores_the_backbone_only(tmp_path):
  params = _tiny_params()
  source = task_factory.get_task(params.task).build_model()
  path = tf.train.Checkpoint(**source.checkpoint_items).save(
      str(tmp_path / 'ckpt'))
  params.task.init_checkpoint = str(tmp_path)
  params.task.init_checkpoint_modules = 'backbone'
  task = task_factory.get_task(params.task)
  target = task.build_model()
  task.initialize(target)
  for a, b in zip(source.backbone.variables, target.backbone.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  differs = [not np.array_equal(a.numpy(), b.numpy()) for a, b in
             zip(source.head.trainable_variables,
                 target.head.trainable_variables)]
  assert any(differs)
  assert path.startswith(str(tmp_path))


def test_initialize_rejects_unknown_modules(tmp_path):
  params = _tiny_params()
  model = task_factory.get_task(params.task).build_model()
  tf.train.Checkpoint(**model.checkpoint_items).save(str(tmp_path / 'ckpt'))
  params.task.init_checkpoint = str(tmp_path)
  params.task.init_checkpoint_modules = ['backbone', 'neck']
  with pytest.raises(ValueError, match='neck'):
    task_factory.get_task(params.task).initialize(model)
  params.task.init_checkpoint = str(tmp_path / 'empty')
  tf.io.gfile.makedirs(params.task.init_checkpoint)
  with pytest.raises(ValueError, match='holds no checkpoint'):
    task_factory.get_task(params.task).initialize(model)


def test_training_entry_points_say_they_are_not_ready():
  task = task_factory.get_task(_tiny_params().task)
  with pytest.raises(NotImplementedError, match='not implemented yet'):
    task.build_inputs(task.task_config.train_data)
