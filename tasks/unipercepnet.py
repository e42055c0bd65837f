"""The UniPercepNet-S Model Garden Task."""

import os
from typing import Dict, List, Mapping, Optional

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras

from official.core import base_task
from official.core import config_definitions as cfg
from official.core import task_factory
from official.modeling import optimization
from official.vision.evaluation import coco_evaluator
from official.vision.evaluation import coco_utils
from common import atomic_io
from configs import schedule as schedule_lib
from configs import unipercepnet as exp_cfg
from dataloaders import category_ids as category_ids_lib
from dataloaders import unipercepnet_input
from losses import unipercepnet_losses
from modeling import checkpoints
from modeling import factory
from modeling import unipercepnet_model
from modeling.heads import semantic_head
from official_ext.vision.evaluation import panoptic_quality
from official_ext.vision.ops import xla_utils
from tasks import divergence


def ground_truth(labels: Mapping[str, tf.Tensor],
                 include_mask: bool) -> Dict[str, tf.Tensor]:
  """The labels the model's training forward takes."""
  keys = ['gt_boxes', 'gt_classes'] + (['gt_masks'] if include_mask else [])
  return {k: labels[k] for k in keys}


def clip_after_all_reduce(
    config: optimization.OptimizationConfig
) -> optimization.OptimizationConfig:
  """The config with AdamW's `gradient_clip_norm` as `global_clipnorm`.

  Model Garden's AdamW clips each replica's share of the gradient before
  the replicas' gradients are summed, so a split batch is clipped
  differently from a whole one; Keras's `global_clipnorm` clips the summed
  gradient, as the reference (clip_grad after DDP's all-reduce) does. On one
  device the two are the same.
  """
  if config.optimizer.type != 'adamw':
    return config
  adamw = config.optimizer.adamw
  if not adamw.gradient_clip_norm or adamw.gradient_clip_norm <= 0:
    return config
  if adamw.global_clipnorm is not None:
    raise ValueError(
        'optimizer.adamw sets both gradient_clip_norm '
        f'({adamw.gradient_clip_norm}) and global_clipnorm '
        f'({adamw.global_clipnorm}); set only global_clipnorm.')
  config = optimization.OptimizationConfig(config.as_dict())
  config.optimizer.adamw.global_clipnorm = adamw.gradient_clip_norm
  config.optimizer.adamw.gradient_clip_norm = 0.
  return config


# Written to model_dir after every evaluation.
EVAL_METRICS_FILE = 'eval_metrics.json'


@task_factory.register_task_cls(exp_cfg.UniPercepNetTask)
class UniPercepNetTask(base_task.Task):
  """Model, inputs, losses, train/eval steps and COCO metrics."""

  def build_model(self) -> unipercepnet_model.UniPercepNetModel:
    model_cfg = self.task_config.model
    input_specs = tf_keras.layers.InputSpec(
        shape=[None] + list(model_cfg.input_size))
    l2 = self.task_config.losses.l2_weight_decay
    l2_regularizer = tf_keras.regularizers.l2(l2 / 2.) if l2 else None
    model = factory.build_unipercepnet(
        input_specs, model_cfg, l2_regularizer,
        mask_targets_config=self.task_config.losses.mask_targets)
    factory.build_and_trace(
        model, model_cfg.input_size,
        self.task_config.train_data.parser.mask_crop_size)
    return model

  def initialize(self, model: tf_keras.Model):
    """Restores `init_checkpoint` into the modules it names."""
    path = self.task_config.init_checkpoint
    if not path:
      return
    path = checkpoints.checkpoint_prefix(path, 'init_checkpoint')
    modules = self.task_config.init_checkpoint_modules
    if modules == 'all':
      items = dict(model.checkpoint_items)
    else:
      names = [modules] if isinstance(modules, str) else list(modules)
      unknown = set(names) - set(model.checkpoint_items)
      if unknown:
        raise ValueError(f'init_checkpoint_modules {sorted(unknown)} are not '
                         f'among {sorted(model.checkpoint_items)}.')
      items = {n: model.checkpoint_items[n] for n in names}
    status = tf.train.Checkpoint(**items).read(path)
    status.expect_partial().assert_existing_objects_matched()
    logging.info('Restored %s from %s.', sorted(items), path)

  @classmethod
  def create_optimizer(cls, optimizer_config: optimization.OptimizationConfig,
                       runtime_config: Optional[cfg.RuntimeConfig] = None,
                       dp_config=None):
    """Model Garden's optimizer, clipping after the all-reduce."""
    return super().create_optimizer(clip_after_all_reduce(optimizer_config),
                                    runtime_config, dp_config)

  # ---------------------------------------------------------------- inputs

  def _latest_step_in_model_dir(self) -> int:
    """Step of the latest checkpoint in model_dir (0 without one)."""
    if not self.logging_dir:
      return 0
    latest = tf.train.latest_checkpoint(self.logging_dir)
    if not latest:
      return 0
    try:
      return int(latest.rsplit('-', 1)[-1])
    except ValueError:
      return 0

  def build_inputs(self, params: exp_cfg.DataConfig,
                   input_context: Optional[
                       tf.distribute.InputContext] = None) -> tf.data.Dataset:
    """Batched (images, labels); training switches to stage 2 on schedule.

    The stage-1 pipeline (mosaic, random resize and crop) runs until epoch
    `parser.stage2_epoch`, the stage-2 pipeline (resize to fit) afterwards.
    A run resumed from a checkpoint in model_dir picks up at that step.
    """
    kwargs = dict(data_config=params,
                  output_size=self.task_config.model.input_size[:2],
                  category_ids=self.category_ids,
                  input_context=input_context,
                  stuff_category_ids=(
                      self.task_config.model.panoptic.stuff_category_ids))
    if not params.is_training:
      return unipercepnet_input.build_dataset(stage=2, **kwargs)
    stage2_step = params.parser.stage2_epoch * self._steps_per_epoch()
    remaining = stage2_step - self._latest_step_in_model_dir()
    stage2 = unipercepnet_input.build_dataset(stage=2, **kwargs)
    if remaining <= 0:
      return stage2
    stage1 = unipercepnet_input.build_dataset(stage=1, **kwargs)
    logging.info('Input: stage-1 pipeline for %d steps, then stage 2.',
                 remaining)
    return stage1.take(remaining).concatenate(stage2)

  def _steps_per_epoch(self) -> int:
    """task.steps_per_epoch; when 0, derived once as configs.schedule does."""
    steps = self.task_config.steps_per_epoch
    if steps > 0:
      return steps
    if getattr(self, '_derived_steps_per_epoch', None) is None:
      self._derived_steps_per_epoch = schedule_lib.steps_per_epoch(
          self.task_config, cache_dir=self.logging_dir)
    return self._derived_steps_per_epoch

  @property
  def panoptic_category_ids(self) -> List[int]:
    """Dataset category id of each panoptic class id (0: void, then the
    things 1..K, then the stuff K+1..K+S)."""
    return ([0] + list(self.category_ids) +
            list(self.task_config.model.panoptic.stuff_category_ids))

  @property
  def category_ids(self) -> List[int]:
    """Dataset category id of each contiguous class 1..K."""
    if getattr(self, '_category_ids', None) is None:
      self._category_ids = category_ids_lib.resolve_category_ids(
          self.task_config)
    return self._category_ids

  # ---------------------------------------------------------------- losses

  def epoch(self, step: tf.Tensor) -> tf.Tensor:
    """The epoch (int64) of a training step."""
    return tf.cast(step, tf.int64) // self._steps_per_epoch()

  def build_losses(self, labels: Mapping[str, tf.Tensor],
                   model_outputs: Mapping[str, tf.Tensor],
                   aux_losses=None,
                   epoch: Optional[tf.Tensor] = None,
                   assigner: Optional[str] = None) -> Dict[str, tf.Tensor]:
    """Weighted losses.

    Args:
      labels: 'gt_boxes' and 'gt_classes'.
      model_outputs: the model's training outputs.
      aux_losses: the regularisation losses.
      epoch: the training epoch, which picks the assigner from
        `losses.assigner_schedule`; None: epoch 0.
      assigner: a registered assigner name: that one, whatever the epoch.

    Returns:
      'cls_loss', 'box_loss', 'num_positives', with a mask head 'mask_loss',
      with a semantic head 'semantic_loss' (labels 'gt_semantic'), with aux
      losses 'l2_loss', and their weighted sum 'total_loss'.
    """
    params = self.task_config.losses
    if epoch is None:
      epoch = tf.constant(0, tf.int64)
    losses = unipercepnet_losses.detection_losses_fn(
        model_outputs, labels['gt_boxes'], labels['gt_classes'], params,
        epoch=epoch, assigner=assigner,
        stride=2 ** self.task_config.model.level)
    total = (params.cls_weight * losses['cls_loss'] +
             params.giou_weight * losses['box_loss'])
    if 'mask_logits' in model_outputs:
      losses['mask_loss'] = unipercepnet_losses.mask_loss_fn(
          model_outputs['mask_logits'], model_outputs['mask_targets'],
          model_outputs['mask_weights'])
      total += params.mask_weight * losses['mask_loss']
    if 'semantic_logits' in model_outputs:
      losses['semantic_loss'] = semantic_head.semantic_loss(
          model_outputs['semantic_logits'], labels['gt_semantic'])
      total += params.semantic_weight * losses['semantic_loss']
    if aux_losses:
      losses['l2_loss'] = tf.add_n(aux_losses)
      total += losses['l2_loss']
    losses['total_loss'] = total
    return losses

  def build_metrics(self, training: bool = True):
    names = ['total_loss', 'cls_loss', 'box_loss', 'num_positives']
    if self.task_config.model.include_mask:
      names.append('mask_loss')
    if self.task_config.model.panoptic.stuff_category_ids:
      names.append('semantic_loss')
    if training:
      return [tf_keras.metrics.Mean(n, dtype=tf.float32) for n in names]
    self.coco_metric = self._build_coco_evaluator()
    self.panoptic_metric = None
    if self.task_config.model.panoptic.stuff_category_ids:
      ids = self.panoptic_category_ids
      is_thing = np.zeros([max(ids) + 1], bool)
      is_thing[list(self.category_ids)] = True
      self.panoptic_metric = panoptic_quality.PanopticQualityEvaluator(
          num_categories=max(ids) + 1, is_thing=is_thing, ignored_label=0)
    return []

  def _build_coco_evaluator(self) -> coco_evaluator.COCOEvaluator:
    config = self.task_config
    annotation_file = config.annotation_file
    if not annotation_file:
      annotation_file = os.path.join(self.logging_dir or '.',
                                     'annotation.json')
      if not tf.io.gfile.exists(annotation_file):
        if config.validation_data.num_examples <= 0:
          raise ValueError(
              'Evaluation needs task.annotation_file, or '
              'task.validation_data.num_examples > 0 to write one from the '
              'validation TFRecords.')
        logging.info('Writing the COCO annotation file %s.', annotation_file)
        coco_utils.scan_and_generator_annotation_file(
            config.validation_data.input_path,
            config.validation_data.file_type,
            config.validation_data.num_examples,
            config.model.include_mask, annotation_file,
            regenerate_source_id=(
                config.validation_data.decoder.simple_decoder
                .regenerate_source_id))
    elif not tf.io.gfile.exists(annotation_file):
      raise ValueError(f'task.annotation_file {annotation_file!r} does not '
                       'exist.')
    evaluator = coco_evaluator.COCOEvaluator(
        annotation_file=annotation_file,
        include_mask=config.model.include_mask,
        per_category_metrics=config.per_category_metrics)
    if not evaluator._coco_gt.dataset.get('annotations'):  # pylint: disable=protected-access
      message = (f'{annotation_file} has no annotations: the validation '
                 'split has no ground truth, so COCO reports every AP and AR '
                 'as -1. Give task.annotation_file with the ground truth of '
                 'task.validation_data.')
      logging.warning('%s', message)
      print(f'WARNING: {message}', flush=True)
    return evaluator

  # ----------------------------------------------------------------- steps

  def train_step(self, inputs, model, optimizer, metrics=None,
                 assigner: Optional[str] = None):
    """One step; `assigner` (a registered name) overrides the schedule.

    Compiles with `jit_compile=True` (and on TPUs): the ops without XLA
    kernels take static-shape equivalents when traced for XLA. The
    divergence guard then cannot fail the step itself: the logs carry its
    numbers under `divergence.MEASURED_KEY`, to check outside the compiled
    function with `divergence.check_measured_step`.
    """
    images, labels = inputs
    num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
    with tf.GradientTape() as tape:
      outputs = model(images, **ground_truth(labels, model.include_mask),
                      training=True)
      outputs = tf.nest.map_structure(lambda x: tf.cast(x, tf.float32),
                                      outputs)
      losses = self.build_losses(labels, outputs, aux_losses=model.losses,
                                 epoch=self.epoch(optimizer.iterations),
                                 assigner=assigner)
      # Gradients are summed over replicas: scale the per-replica loss.
      scaled_loss = losses['total_loss'] / num_replicas
      if isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer):
        scaled_loss = optimizer.get_scaled_loss(scaled_loss)
    variables = model.trainable_variables
    grads = tape.gradient(scaled_loss, variables)
    if isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer):
      grads = optimizer.get_unscaled_gradients(grads)
    optimizer.apply_gradients(list(zip(grads, variables)))
    logs = {self.loss: losses['total_loss']}
    guarded = {k: v for k, v in losses.items() if k.endswith('loss')}
    guard = self.task_config.divergence_guard
    if xla_utils.in_xla_context():
      # XLA cannot format the guard's message and drops assertions: the
      # compiled step returns the guard's numbers, for whoever compiled it
      # to check outside (divergence.check_measured_step).
      logging.warning(
          'Training step traced for XLA: the divergence guard only measures '
          '(logs[%r]); the caller must check them with '
          'divergence.check_measured_step.', divergence.MEASURED_KEY)
      logs[divergence.MEASURED_KEY] = divergence.measure_step(
          optimizer.iterations, guarded, model, optimizer, guard)
    else:
      divergence.check_step(optimizer.iterations, guarded, model, optimizer,
                            guard)
    for metric in metrics or []:
      metric.update_state(losses[metric.name])
    return logs

  def validation_step(self, inputs, model, metrics=None):
    images, labels = inputs
    # The valid (unpadded) part of the input: original size x scale.
    info = labels['image_info']
    outputs = model(images, image_shape=info[:, 0, :] * info[:, 2, :],
                    training=False)
    table = tf.constant([0] + list(self.category_ids), tf.int32)
    predictions = {
        'source_id': labels['source_id'],
        'image_info': labels['image_info'],
        'num_detections': outputs['num_detections'],
        'detection_boxes': outputs['detection_boxes'],
        'detection_scores': outputs['detection_scores'],
        'detection_classes': tf.gather(table,
                                       outputs['detection_classes']),
    }
    if model.include_mask:
      predictions['detection_masks'] = outputs['detection_masks']
    logs = {self.coco_metric.name: predictions}
    if getattr(self, 'panoptic_metric', None) is not None:
      panoptic_table = tf.constant(self.panoptic_category_ids, tf.int32)
      logs[self.panoptic_metric.name] = {
          'category_mask': tf.gather(panoptic_table,
                                     outputs['category_mask']),
          'instance_mask': outputs['instance_mask'],
          'gt_category_mask': labels['gt_panoptic_category_mask'],
          'gt_instance_mask': labels['gt_panoptic_instance_mask'],
          'valid_size': tf.cast(tf.round(info[:, 0, :] * info[:, 2, :]),
                                tf.int32),
      }
    return logs

  def aggregate_logs(self, state=None, step_outputs=None):
    panoptic_metric = getattr(self, 'panoptic_metric', None)
    if state is None:
      self.coco_metric.reset_states()
      if panoptic_metric is not None:
        panoptic_metric.reset_states()
      state = self.coco_metric
    self.coco_metric.update_state(None, step_outputs[self.coco_metric.name])
    if panoptic_metric is not None:
      # Tensors, or per-replica tuples of them (the metric takes both).
      logs = step_outputs[panoptic_metric.name]
      panoptic_metric.update_state(
          {'category_mask': logs['gt_category_mask'],
           'instance_mask': logs['gt_instance_mask'],
           'valid_size': logs['valid_size']},
          {'category_mask': logs['category_mask'],
           'instance_mask': logs['instance_mask']})
    return state

  def reduce_aggregated_logs(self, aggregated_logs, global_step=None):
    metrics = self.coco_metric.result()
    if getattr(self, 'panoptic_metric', None) is not None:
      metrics.update(self.panoptic_metric.result())
    if self.logging_dir:
      # The latest evaluation, for train.py's report and for scripts.
      record = {k: float(v) for k, v in metrics.items()}
      if global_step is not None:
        record['global_step'] = int(tf.convert_to_tensor(global_step))
      atomic_io.write_json(os.path.join(self.logging_dir, EVAL_METRICS_FILE),
                           record, indent=1, sort_keys=True)
    return metrics
