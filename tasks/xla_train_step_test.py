"""The Task's training step compiled with XLA against the plain one.

`unipercepnet_shapes` at 64 x 64, batch 2, mask branch on, one step of the
experiment's optimizer (AdamW, clipping, EMA) on a fixed batch, compiled
with `jit_compile=True` and as a plain `tf.function`, from the same
weights. Nothing random differs between the two: no anchor sampling
(`anchor_sampler.num_samples: 0`), and Model Garden's RoI sampler gets
every candidate (16 proposals + 16 gt slots fit its 64 samples, and
foreground may fill them), so its random shuffle changes no choice.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from official.core import exp_factory
from official.core import task_factory
import registry_imports  # pylint: disable=unused-import
from tasks import divergence

_SIZE = 64
_MAX_INSTANCES = 16


def _params():
  params = exp_factory.get_exp_config('unipercepnet_shapes')
  params.override({'task': {
      'model': {'input_size': [_SIZE, _SIZE, 3]},
      'losses': {
          'anchor_sampler': {'num_samples': 0},
          'mask_targets': {'foreground_fraction': 1.0, 'num_mask_rois': 64},
      }}}, is_strict=True)
  params.validate()
  return params


def _batch(seed=0):
  """Normalised-looking images; 4 boxes per image with elliptic masks."""
  rng = np.random.default_rng(seed)
  images = rng.standard_normal([2, _SIZE, _SIZE, 3]).astype(np.float32)
  boxes = -np.ones([2, _MAX_INSTANCES, 4], np.float32)
  classes = -np.ones([2, _MAX_INSTANCES], np.int32)
  crop = 112
  yy, xx = np.mgrid[:crop, :crop] + 0.5
  ellipse = ((yy / crop - 0.5)**2 + (xx / crop - 0.5)**2 <= 0.25)
  masks = np.zeros([2, _MAX_INSTANCES, crop, crop], np.float32)
  for b in range(2):
    for i in range(4):
      size = rng.uniform(12, 40, 2)
      start = rng.uniform(0, _SIZE - size)
      boxes[b, i] = np.concatenate([start, start + size])
      classes[b, i] = rng.integers(1, 4)
      masks[b, i] = ellipse
  labels = {'gt_boxes': tf.constant(boxes), 'gt_classes': tf.constant(classes),
            'gt_masks': tf.constant(masks)}
  return tf.constant(images), labels


@pytest.mark.slow
def test_xla_step_gives_the_plain_steps_loss_and_weights():
  params = _params()
  # Every RoI candidate fits the RoI sampler's sample (see the docstring).
  mask_targets = params.task.losses.mask_targets
  num_anchors = (_SIZE // 32)**2 * len(params.task.model.anchor.scales)
  assert (min(num_anchors, mask_targets.num_proposals) + _MAX_INSTANCES <=
          mask_targets.num_sampled_rois)
  tf_keras.utils.set_random_seed(0)  # The same initial weights each run.
  task = task_factory.get_task(params.task)
  model = task.build_model()
  optimizer = task.create_optimizer(params.trainer.optimizer_config,
                                    params.runtime)
  optimizer.shadow_copy(model)  # The EMA's copy, as the trainer makes it.
  metrics = task.build_metrics(training=True)
  images, labels = _batch()
  start = [v.numpy() for v in model.variables]
  optimizer_start = [v.numpy() for v in optimizer.variables()]

  def one_step(jit_compile):
    for v, value in zip(model.variables, start):
      v.assign(value)
    for v, value in zip(optimizer.variables(), optimizer_start):
      v.assign(value)

    @tf.function(jit_compile=jit_compile)
    def step(images, labels):
      return task.train_step((images, labels), model, optimizer, metrics)

    logs = step(images, labels)
    return logs, [v.numpy() for v in model.variables]

  plain_logs, plain = one_step(None)
  xla_logs, xla = one_step(True)

  # The compiled step returns the divergence guard's numbers, checked here.
  assert divergence.MEASURED_KEY not in plain_logs
  measured = xla_logs[divergence.MEASURED_KEY]
  divergence.check_measured_step(measured, model,
                                 params.task.divergence_guard)
  assert sorted(measured['losses']) == ['box_loss', 'cls_loss', 'mask_loss',
                                        'total_loss']
  np.testing.assert_allclose(float(xla_logs['loss']),
                             float(plain_logs['loss']), rtol=1e-4)
  np.testing.assert_allclose(float(measured['losses']['total_loss']),
                             float(plain_logs['loss']), rtol=1e-4)
  # Weights and BatchNorm statistics. The atol is for the weights: in this
  # first (warm-up) step AdamW moves each by about the learning rate
  # (3e-6) times the sign of its gradient, and signs of gradients that are
  # rounding noise (0 but for rounding, as those of biases before a
  # BatchNorm) differ between any two computations.
  trainable = {v.name for v in model.trainable_variables}
  for v, a, b in zip(model.variables, plain, xla):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=v.name)
  # So the updates themselves must agree too: in direction (cosine) and
  # element by element in sign.
  updates = [np.concatenate([(w[i] - start[i]).ravel()
                             for i, v in enumerate(model.variables)
                             if v.name in trainable]).astype(np.float64)
             for w in (plain, xla)]
  assert np.abs(updates[0]).max() > 1e-6
  cosine = updates[0] @ updates[1] / (np.linalg.norm(updates[0]) *
                                      np.linalg.norm(updates[1]))
  assert cosine > 0.98
  assert np.mean(np.sign(updates[0]) == np.sign(updates[1])) > 0.98
