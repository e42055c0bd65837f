"""The UniPercepNet-S Model Garden Task."""

from typing import Optional

from absl import logging
import tensorflow as tf
import tf_keras

from official.core import base_task
from official.core import task_factory
from configs import unipercepnet as exp_cfg
from modeling import factory
from modeling import unipercepnet_model

_TRAINING_NOT_READY = (
    'UniPercepNet training (inputs, assigners, losses, metrics) is not '
    'implemented yet; this build supports model construction, inference and '
    'tools/model_stats.py.')


def build_and_trace(model: unipercepnet_model.UniPercepNetModel,
                    input_size, batch_size: int = 1) -> None:
  """Creates every variable by tracing (not running) both call modes."""
  images = tf.TensorSpec([batch_size] + list(input_size), tf.float32)
  num_rois = 1
  roi_boxes = tf.TensorSpec([batch_size, num_rois, 4], tf.float32)
  roi_classes = tf.TensorSpec([batch_size, num_rois], tf.int32)

  @tf.function(autograph=False)
  def _trace(images, roi_boxes, roi_classes):
    if not model.include_mask:
      roi_boxes, roi_classes = None, None
    train = model(images, roi_boxes=roi_boxes, roi_classes=roi_classes,
                  training=True)
    infer = model(images, training=False)
    return train, infer

  _trace.get_concrete_function(images, roi_boxes, roi_classes)


@task_factory.register_task_cls(exp_cfg.UniPercepNetTask)
class UniPercepNetTask(base_task.Task):
  """Builds the model, restores init checkpoints; training comes next."""

  def build_model(self) -> unipercepnet_model.UniPercepNetModel:
    model_cfg = self.task_config.model
    input_specs = tf_keras.layers.InputSpec(
        shape=[None] + list(model_cfg.input_size))
    l2 = self.task_config.losses.l2_weight_decay
    l2_regularizer = tf_keras.regularizers.l2(l2 / 2.) if l2 else None
    model = factory.build_unipercepnet(input_specs, model_cfg, l2_regularizer)
    build_and_trace(model, model_cfg.input_size)
    return model

  def initialize(self, model: tf_keras.Model):
    """Restores `init_checkpoint` into the modules it names."""
    path = self.task_config.init_checkpoint
    if not path:
      return
    if tf.io.gfile.isdir(path):
      latest = tf.train.latest_checkpoint(path)
      if latest is None:
        raise ValueError(f'init_checkpoint {path!r} holds no checkpoint.')
      path = latest
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

  def build_inputs(self, params, input_context: Optional[
      tf.distribute.InputContext] = None):
    raise NotImplementedError(_TRAINING_NOT_READY)

  def build_losses(self, labels, model_outputs, aux_losses=None):
    raise NotImplementedError(_TRAINING_NOT_READY)

  def train_step(self, inputs, model, optimizer, metrics=None):
    raise NotImplementedError(_TRAINING_NOT_READY)

  def validation_step(self, inputs, model, metrics=None):
    raise NotImplementedError(_TRAINING_NOT_READY)
