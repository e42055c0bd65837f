"""Tests for the Task: registration, model, checkpoints, COCO metrics."""

import json

import numpy as np
from pycocotools import mask as mask_api
import pytest
import tensorflow as tf
import tf_keras

from official.core import exp_factory
from official.core import task_factory
from official.vision.modeling.backbones import factory as backbone_factory
from official.vision.modeling.decoders import factory as decoder_factory
from official_ext.vision.modeling.backbones import ca_resnet
from official_ext.vision.modeling.backbones import regnet
from official_ext.vision.modeling.decoders import dilated_encoder
import registry_imports  # pylint: disable=unused-import
from configs import losses as losses_cfg
from losses import unipercepnet_losses
from losses import unipercepnet_losses_test
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
        },
        'category_ids': None,
    }
}


def _tiny_params():
  params = exp_factory.get_exp_config('unipercepnet_coco')
  params.override(_TINY, is_strict=True)
  return params


def test_registry_imports_registers_everything():
  for name in ['unipercepnet_coco', 'unipercepnet_r50_coco']:
    assert exp_factory.get_exp_config(name).task.model.num_classes == 80
  # Each experiment's backbone and decoder build through Model Garden's
  # factories, which look their type names up in its registries (an
  # unregistered name raises). At 64 x 64 the level-5 outputs are 2 x 2.
  input_specs = tf_keras.layers.InputSpec(shape=[None, 64, 64, 3])
  for name, backbone_cls, channels in [
      ('unipercepnet_coco', regnet.RegNet, 1360),  # RegNetX-4.0GF.
      ('unipercepnet_r50_coco', ca_resnet.CAResNet, 2048)]:
    model_config = exp_factory.get_exp_config(name).task.model
    backbone = backbone_factory.build_backbone(
        input_specs=input_specs,
        backbone_config=model_config.backbone,
        norm_activation_config=model_config.norm_activation)
    assert isinstance(backbone, backbone_cls)
    level = str(model_config.level)
    assert backbone.output_specs[level].as_list() == [None, 2, 2, channels]
    decoder = decoder_factory.build_decoder(
        input_specs=backbone.output_specs, model_config=model_config)
    assert isinstance(decoder, dilated_encoder.DilatedEncoder)
    num_filters = model_config.decoder.dilated_encoder.num_filters
    assert {k: v.as_list() for k, v in decoder.output_specs.items()} == {
        level: [None, 2, 2, num_filters]}
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
  # Clipped after the replicas' gradients are summed (see
  # task_lib.clip_after_all_reduce).
  assert opt.optimizer.adamw.gradient_clip_norm == 0.
  assert opt.optimizer.adamw.global_clipnorm == 1.0
  assert params.task.model.norm_activation.use_sync_bn
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


def test_adamw_clips_the_gradient_summed_over_replicas():
  """Model Garden's gradient_clip_norm becomes Keras's global_clipnorm."""
  config = exp_factory.get_exp_config(
      'unipercepnet_coco').trainer.optimizer_config
  config.optimizer.adamw.global_clipnorm = None
  config.optimizer.adamw.gradient_clip_norm = 2.5
  optimizer = task_lib.UniPercepNetTask.create_optimizer(config)
  inner = optimizer._optimizer  # pylint: disable=protected-access  # EMA's.
  assert (inner.gradient_clip_norm, inner.global_clipnorm) == (0., 2.5)
  assert config.optimizer.adamw.gradient_clip_norm == 2.5  # Not changed.
  # On one device both clip alike: global norm 50 -> 2.5.
  grads = [tf.constant([30., 0.]), tf.constant([[40.]])]
  clipped = inner._transform_gradients(  # pylint: disable=protected-access
      [(g, None) for g in grads])
  np.testing.assert_allclose([g.numpy().ravel() for g, _ in clipped][0],
                             [1.5, 0.], rtol=1e-6)
  config.optimizer.adamw.global_clipnorm = 1.
  with pytest.raises(ValueError, match='both gradient_clip_norm'):
    task_lib.clip_after_all_reduce(config)


def test_build_model_creates_every_variable():
  task = task_factory.get_task(_tiny_params().task)
  model = task.build_model()
  before = len(model.variables)
  assert before > 0
  model(tf.zeros([1, 96, 128, 3]), training=False)
  model(tf.zeros([1, 96, 128, 3]), gt_boxes=tf.zeros([1, 2, 4]),
        gt_classes=tf.ones([1, 2], tf.int32),
        gt_masks=tf.ones([1, 2, 112, 112]), training=True)
  assert len(model.variables) == before


def test_build_losses_weights_the_parts_and_follows_the_schedule():
  params = _tiny_params()
  p = params.task.losses
  p.cls_weight, p.giou_weight, p.mask_weight = 2., 3., 5.
  p.anchor_sampler.num_samples = 0  # Every anchor: no random draw.
  p.assigner_schedule = [
      losses_cfg.AssignerStage(assigner='uniform', until_epoch=2),
      losses_cfg.AssignerStage(assigner='task_aligned', until_epoch=5),
      losses_cfg.AssignerStage(assigner='uniform')]
  task = task_factory.get_task(params.task)
  # Hand-built model outputs: the dense predictions and the mask branch's.
  dense, gt_boxes, gt_classes = unipercepnet_losses_test._batch()  # pylint: disable=protected-access
  rng = np.random.default_rng(0)
  outputs = dict(
      dense,
      mask_logits=rng.normal(size=(2, 3, 4, 4)).astype(np.float32),
      mask_targets=rng.uniform(size=(2, 3, 4, 4)).astype(np.float32),
      mask_weights=np.array([[1., 1., 0.], [1., 0., 0.]], np.float32))
  labels = {'gt_boxes': gt_boxes, 'gt_classes': gt_classes}
  aux_losses = [tf.constant(0.25), tf.constant(0.5)]
  stage_losses = {
      name: unipercepnet_losses.detection_losses_fn(
          outputs, gt_boxes, gt_classes, p, assigner=name, stride=32)
      for name in ('uniform', 'task_aligned')}
  assert not np.isclose(stage_losses['uniform']['cls_loss'],
                        stage_losses['task_aligned']['cls_loss'])
  mask_loss = unipercepnet_losses.mask_loss_fn(
      outputs['mask_logits'], outputs['mask_targets'],
      outputs['mask_weights'])
  in_graph = tf.function(lambda epoch: task.build_losses(
      labels, outputs, aux_losses=aux_losses, epoch=epoch))
  for epoch, stage in [(0, 'uniform'), (1, 'uniform'), (2, 'task_aligned'),
                       (4, 'task_aligned'), (5, 'uniform'), (9, 'uniform')]:
    for losses in (task.build_losses(labels, outputs, aux_losses=aux_losses,
                                     epoch=tf.constant(epoch, tf.int64)),
                   in_graph(tf.constant(epoch, tf.int64))):
      expected = stage_losses[stage]
      for key in ('cls_loss', 'box_loss', 'num_positives'):
        np.testing.assert_allclose(losses[key], expected[key], rtol=1e-6)
      np.testing.assert_allclose(losses['mask_loss'], mask_loss, rtol=1e-6)
      np.testing.assert_allclose(losses['l2_loss'], 0.75, rtol=1e-6)
      np.testing.assert_allclose(
          losses['total_loss'],
          2. * expected['cls_loss'] + 3. * expected['box_loss'] +
          5. * mask_loss + 0.75, rtol=1e-6)
  # A named assigner overrides the schedule; without an epoch: epoch 0.
  forced = task.build_losses(labels, outputs, epoch=tf.constant(0, tf.int64),
                             assigner='task_aligned')
  np.testing.assert_allclose(forced['cls_loss'],
                             stage_losses['task_aligned']['cls_loss'],
                             rtol=1e-6)
  np.testing.assert_allclose(task.build_losses(labels, outputs)['cls_loss'],
                             stage_losses['uniform']['cls_loss'], rtol=1e-6)
  # Training steps count in epochs of task.steps_per_epoch.
  steps = params.task.steps_per_epoch
  assert [int(task.epoch(tf.constant(s, tf.int64)))
          for s in (0, steps - 1, steps, 5 * steps + 3)] == [0, 0, 1, 5]


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


def _write_coco(path, categories, annotations, images):
  with open(path, 'w') as f:
    json.dump({'images': images, 'annotations': annotations,
               'categories': [{'id': i, 'name': f'c{i}'}
                              for i in categories]}, f)


class _PerfectModel:
  """Stands in for the model: returns given detections (scaled-image frame)."""
  include_mask = True

  def __init__(self, outputs):
    self._outputs = outputs

  def __call__(self, images, image_shape=None, training=None):
    del images, image_shape, training
    return self._outputs


def test_coco_evaluation_of_perfect_predictions_gives_ap_1(tmp_path):
  # Two 40x60 images with rectangles; the dataset's category ids are 3 and 9
  # (classes 1 and 2 of the model).
  rects = {1: [(3, [4, 6, 20, 30]), (9, [22, 30, 38, 58])],
           2: [(9, [0, 0, 40, 60])]}
  images, annotations = [], []
  for image_id, objects in rects.items():
    images.append({'id': image_id, 'height': 40, 'width': 60,
                   'file_name': f'{image_id}.png'})
    for cat, (y0, x0, y1, x1) in objects:
      mask = np.zeros((40, 60), np.uint8)
      mask[y0:y1, x0:x1] = 1
      rle = mask_api.encode(np.asfortranarray(mask))
      rle['counts'] = rle['counts'].decode('ascii')
      annotations.append({
          'id': len(annotations) + 1, 'image_id': image_id,
          'category_id': cat, 'iscrowd': 0, 'area': float(mask.sum()),
          'bbox': [x0, y0, x1 - x0, y1 - y0], 'segmentation': rle})
  path = str(tmp_path / 'val.json')
  _write_coco(path, [9, 3], annotations, images)
  params = _tiny_params()
  params.task.model.num_classes = 2
  params.task.annotation_file = path
  task = task_factory.get_task(params.task, logging_dir=str(tmp_path))
  task.build_metrics(training=False)

  # The model sees the images at scale 2 (image_info row 2).
  boxes = np.zeros((2, 3, 4), np.float32)
  classes = np.zeros((2, 3), np.int32)
  scores = np.zeros((2, 3), np.float32)
  for i, objects in enumerate(rects.values()):
    for j, (cat, box) in enumerate(objects):
      boxes[i, j] = np.array(box) * 2.
      classes[i, j] = {3: 1, 9: 2}[cat]
      scores[i, j] = 0.9
  outputs = {
      'detection_boxes': tf.constant(boxes),
      'detection_classes': tf.constant(classes),
      'detection_scores': tf.constant(scores),
      'num_detections': tf.constant([2, 1]),
      'detection_masks': tf.ones([2, 3, 28, 28]),
  }
  info = np.array([[40., 60.], [80., 120.], [2., 2.], [0., 0.]], np.float32)
  labels = {'source_id': tf.constant([1, 2], tf.int64),
            'image_info': tf.constant(np.stack([info, info]))}
  logs = task.validation_step((tf.zeros([2, 96, 128, 3]), labels),
                              _PerfectModel(outputs))
  state = task.aggregate_logs(None, logs)
  metrics = task.reduce_aggregated_logs(state)
  assert len([k for k in metrics if not k.startswith('mask_')]) == 12
  assert len([k for k in metrics if k.startswith('mask_')]) == 12
  np.testing.assert_allclose(metrics['AP'], 1.0, atol=1e-6)
  np.testing.assert_allclose(metrics['mask_AP'], 1.0, atol=1e-6)

  # Classes left contiguous (not mapped back to 3 and 9) would score 0.
  task.category_ids  # pylint: disable=pointless-statement
  task._category_ids = [1, 2]  # pylint: disable=protected-access
  logs = task.validation_step((tf.zeros([2, 96, 128, 3]), labels),
                              _PerfectModel(outputs))
  metrics = task.reduce_aggregated_logs(task.aggregate_logs(None, logs))
  assert metrics['AP'] < 0.5


def test_evaluation_without_ground_truth_says_why(tmp_path, capsys):
  path = str(tmp_path / 'val.json')
  _write_coco(path, [3, 9], [], [{'id': 1, 'height': 40, 'width': 60,
                                   'file_name': '1.png'}])
  params = _tiny_params()
  params.task.model.num_classes = 2
  params.task.annotation_file = path
  task = task_factory.get_task(params.task, logging_dir=str(tmp_path))
  task.build_metrics(training=False)
  out = capsys.readouterr().out
  assert (f'WARNING: {path} has no annotations: the validation split has no '
          'ground truth, so COCO reports every AP and AR as -1.') in out
