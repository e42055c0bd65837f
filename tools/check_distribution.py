r"""Checks that a distribution strategy trains the model one device trains.

Runs training steps of an experiment (the Task's own `train_step`,
optimizer and losses, as Model Garden's trainer calls them) on a fixed
global batch under each strategy given, and writes the total loss, the
Task's metrics and every model weight before and after each step to
`<results_dir>/<strategy>.npz`; `--compare` checks such files against the
first. The batch is rendered in memory from the shapes set
(data/shapes_dataset.py) without augmentation and split across the
replicas in order, so every strategy trains on the same images.

  # One device, then two mirrored replicas on two logical CPU devices:
  python -m tools.check_distribution --strategy=one_device,mirrored \
      --results_dir=/tmp/dist
  # Two workers: each with its own TF_CONFIG (task index 0 and 1):
  TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:23456", "127.0.0.1:23457"]},
      "task": {"type": "worker", "index": 0}}' \
  python -m tools.check_distribution --strategy=multi_worker_mirrored \
      --results_dir=/tmp/dist
  python -m tools.check_distribution --compare /tmp/dist/one_device.npz \
      /tmp/dist/mirrored.npz /tmp/dist/multi_worker_mirrored_0.npz

What makes the steps deterministic, and so comparable, is set on top of the
experiment (`DETERMINISTIC`): the anchor sampler weights every anchor
instead of drawing 256 at random, the mask branch's RoI sampler keeps every
proposal (its random draws differ with the split), BatchNorm statistics are
synchronised across replicas (`use_sync_bn`, as the COCO experiments
train), and an epoch is one step, so the first step assigns uniformly and
the later ones task-aligned. SGD replaces the experiment's optimizer unless
--experiment_optimizer (see `SGD`). The initial weights are drawn from the
variables' names, so every process starts from the same model.

Measured (2026-12-01, unipercepnet_shapes with the backbone's BatchNorm
frozen as in the paper's recipe): 1 device, 2 mirrored replicas and 2
workers agree within 1e-5 in losses and weights and 1e-3 in each weight's
update (tools/check_distribution_test.py). With the backbone's BN trained
(the shapes recipe), the losses still agree within 2e-6 but the backbone's
updates differ by about 3e-3 of their size, which no change of kernels on
one device produces (2e-5): not explained yet.
"""

import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence
import zlib

import numpy as np

# What makes the steps deterministic (see the module docstring). The mask
# branch keeps every proposal: 128 after NMS plus 16 gt boxes fit in 256.
DETERMINISTIC = {
    'task': {
        'model': {'norm_activation': {'use_sync_bn': True}},
        'steps_per_epoch': 1,
        'losses': {
            'assigner_schedule': [{'assigner': 'uniform', 'until_epoch': 1},
                                  {'assigner': 'task_aligned'}],
            'anchor_sampler': {'num_samples': 0},
            'mask_targets': {'num_sampled_rois': 256,
                             'foreground_fraction': 1.0,
                             'num_mask_rois': 256},
        },
    },
}
# SGD at a constant rate: its update is linear in the gradient, so equal
# updates mean equal gradients; at rate 1 the update's norm is the clipping
# norm, 1. (Adam's first update is lr * sign(g): a
# gradient that is zero up to rounding gets either sign.) The clipping is
# the recipe's, on the gradient summed over replicas.
SGD = {
    'trainer': {
        'optimizer_config': {
            'optimizer': {'type': 'sgd',
                          'sgd': {'momentum': 0.9, 'global_clipnorm': 1.0}},
            'learning_rate': {'type': 'constant',
                              'constant': {'learning_rate': 1.0}},
            'warmup': {'type': None},
        },
    },
}
MAX_INSTANCES = 16
MASK_CROP_SIZE = 28


def render_batch(batch_size: int, image_size: int,
                 category_ids: Sequence[int]) -> Dict[str, np.ndarray]:
  """Images and the training labels the Task's parser would give them.

  Returns:
    'images' float32 `[B, S, S, 3]` (scaled to about [-2, 2]); 'gt_boxes'
    `[B, M, 4]` yxyx pixels, 'gt_classes' `[B, M]` contiguous 1-based,
    'gt_masks' `[B, M, C, C]` each instance's mask cropped to its box;
    padding rows -1, as the parser pads.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from data import shapes_dataset  # pylint: disable=g-import-not-at-top
  contiguous = {c: i + 1 for i, c in enumerate(category_ids)}
  out = {
      'images': np.zeros([batch_size, image_size, image_size, 3], np.float32),
      'gt_boxes': -np.ones([batch_size, MAX_INSTANCES, 4], np.float32),
      'gt_classes': -np.ones([batch_size, MAX_INSTANCES], np.int32),
      'gt_masks': -np.ones(
          [batch_size, MAX_INSTANCES, MASK_CROP_SIZE, MASK_CROP_SIZE],
          np.float32),
  }
  for b in range(batch_size):
    image, instances, _ = shapes_dataset.render_image(
        seed=0, split='train', index=b, image_size=image_size)
    out['images'][b] = (image.astype(np.float32) - 127.5) / 64.
    for m, instance in enumerate(instances[:MAX_INSTANCES]):
      ys, xs = np.nonzero(instance['mask'])
      box = np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1],
                     np.float32)
      out['gt_boxes'][b, m] = box
      out['gt_classes'][b, m] = contiguous[instance['category_id']]
      crop = tf.image.crop_and_resize(
          instance['mask'][None, :, :, None].astype(np.float32),
          (box / image_size)[None], [0], [MASK_CROP_SIZE, MASK_CROP_SIZE])
      out['gt_masks'][b, m] = crop.numpy()[0, :, :, 0]
  return out


def deterministic_value(name: str, shape: Sequence[int],
                        initial: np.ndarray) -> np.ndarray:
  """A weight drawn from its name: N(0, 1/fan_in) for kernels (rank >= 2).

  Rank-0/1 variables (biases, BatchNorm parameters and statistics) keep
  their initial values, which are constants.
  """
  if len(shape) < 2:
    return initial
  rng = np.random.default_rng(zlib.crc32(name.encode()))
  fan_in = int(np.prod(shape[:-1]))
  return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(
      initial.dtype)


def load_params(experiment: str, params_override: str, image_size: int,
                experiment_optimizer: bool = False):
  """The experiment with DETERMINISTIC, SGD (unless `experiment_optimizer`),
  the batch's sizes and the overrides."""
  from official.core import exp_factory  # pylint: disable=g-import-not-at-top
  from official.modeling import hyperparams  # pylint: disable=g-import-not-at-top
  import registry_imports  # pylint: disable=g-import-not-at-top,unused-import
  params = exp_factory.get_exp_config(experiment)
  params.override(DETERMINISTIC, is_strict=True)
  if not experiment_optimizer:
    params.override(SGD, is_strict=True)
  from data import shapes_dataset  # pylint: disable=g-import-not-at-top
  params.override({'task': {
      'category_ids': sorted(shapes_dataset.CATEGORIES),
      'model': {'input_size': [image_size, image_size, 3],
                'num_classes': len(shapes_dataset.CATEGORIES)},
      'train_data': {'parser': {'mask_crop_size': MASK_CROP_SIZE,
                                'max_num_instances': MAX_INSTANCES}}}},
                  is_strict=True)
  if params_override:
    params = hyperparams.override_params_dict(params, params_override,
                                              is_strict=True)
  params.validate()
  params.lock()
  return params


def _strategy(name: str, num_cpu_devices: int):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if name == 'one_device':
    return tf.distribute.OneDeviceStrategy('/cpu:0')
  if name == 'mirrored':
    return tf.distribute.MirroredStrategy(
        [f'/cpu:{i}' for i in range(num_cpu_devices)])
  return tf.distribute.MultiWorkerMirroredStrategy()


def run_steps(strategy, params, global_batch_size: int,
              image_size: int) -> Dict[str, np.ndarray]:
  """One training step with each assigner stage, from the same model.

  Each step runs as Model Garden's trainer runs it (the Task's train_step
  in `strategy.run` in a tf.function) from the initial weights and fresh
  optimizer slots: step 0 at epoch 0 (uniform assignment), step 1 at epoch
  1 (task-aligned).

  Returns:
    'before/<weight>'; per step i: 'step<i>/total_loss' (the mean of the
    replicas' total losses), 'step<i>/<metric>' (the Task's metrics, which
    average the replicas' values) and 'step<i>/<weight>' after the step.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top
  from official.core import task_factory  # pylint: disable=g-import-not-at-top
  tf_keras.backend.clear_session()  # The same layer names in every run.
  num_replicas = strategy.num_replicas_in_sync
  if global_batch_size % num_replicas:
    raise ValueError(f'--global_batch_size {global_batch_size} does not '
                     f'split into {num_replicas} replicas.')
  per_replica = global_batch_size // num_replicas
  with strategy.scope():
    task = task_factory.get_task(params.task)
    model = task.build_model()
    for v in model.weights:
      v.assign(deterministic_value(v.name, v.shape.as_list(), v.numpy()))
    optimizer = task.create_optimizer(params.trainer.optimizer_config,
                                      params.runtime)
    if hasattr(optimizer, 'shadow_copy'):  # EMA, as Model Garden's trainer.
      optimizer.shadow_copy(model)
    # The slots now, not in the first step's trace: variables created in a
    # mirrored step's first call break its initialisation ("must feed a
    # value for placeholder").
    optimizer._create_all_weights(model.trainable_variables)  # pylint: disable=protected-access
    metrics = task.build_metrics(training=True)
  batch = render_batch(global_batch_size, image_size, task.category_ids)
  initial = [v.numpy() for v in model.weights]
  # The (inner, for EMA) optimizer's slots: zeroed before each step.
  slots = [v for v in getattr(optimizer, '_optimizer', optimizer).weights
           if v.dtype.is_floating]

  def replica_slice(context):
    start = context.replica_id_in_sync_group * per_replica
    part = {k: tf.constant(v[start:start + per_replica])
            for k, v in batch.items()}
    images = part.pop('images')
    return images, part

  inputs = strategy.experimental_distribute_values_from_function(
      replica_slice)

  @tf.function
  def step(inputs):
    logs = strategy.run(task.train_step, args=(inputs, model, optimizer),
                        kwargs={'metrics': metrics})
    return strategy.reduce(tf.distribute.ReduceOp.MEAN, logs[task.loss],
                           axis=None)

  result = {'before/' + v.name: value
            for v, value in zip(model.weights, initial)}
  for i in range(len(DETERMINISTIC['task']['losses']['assigner_schedule'])):
    for v, value in zip(model.weights, initial):
      v.assign(value)
    for v in slots:
      v.assign(tf.zeros_like(v))
    optimizer.iterations.assign(i)  # Epoch i: stage i.
    for m in metrics:
      m.reset_states()
    prefix = f'step{i}/'
    result[prefix + 'total_loss'] = np.array(step(inputs).numpy())
    for m in metrics:
      result[prefix + m.name] = np.array(m.result().numpy())
    for v in model.weights:
      result[prefix + v.name] = v.numpy()
  return result


def _updates(arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """'update<i>/<weight>': the weight's change in step i."""
  out = {}
  for key, value in arrays.items():
    head, _, name = key.partition('/')
    if head.startswith('step') and ('before/' + name) in arrays:
      out[f'update{head[4:]}/{name}'] = value - arrays['before/' + name]
  return out


def _differences(path: str, reference: Dict[str, np.ndarray],
                 other: Dict[str, np.ndarray], rtol: float) -> List[str]:
  """Arrays of `other` further than `rtol` from `reference`'s.

  The scale of an array is its largest magnitude, but at least 1e-3 of the
  largest magnitude in its group (weights, or one step's updates): a bias
  just before a BatchNorm has a gradient that is zero but for rounding, and
  stays within rounding of zero.
  """
  scales = {k: float(np.max(np.abs(v))) if v.size else 0.
            for k, v in reference.items()}
  group_max = {}
  for key, scale in scales.items():
    group = key.partition('/')[0] if '/' in key else key
    group_max[group] = max(group_max.get(group, 0.), scale)
  lines = []
  for key, want in sorted(reference.items()):
    if not want.size:
      continue
    group = key.partition('/')[0] if '/' in key else key
    scale = max(scales[key], 1e-3 * group_max[group], 1e-30)
    diff = float(np.max(np.abs(other[key].astype(np.float64) - want)))
    if diff > rtol * scale:
      lines.append(f'{path}: {key} differs by {diff:.3g} ({diff / scale:.3g} '
                   f'of its scale {scale:.3g}; limit {rtol:g}).')
  return lines


def compare(paths: Sequence[str], rtol: float, update_rtol: float,
            steps: Optional[Sequence[int]] = None) -> List[str]:
  """Differences of each file from the first, as lines; empty if none.

  Losses, metrics and weights must agree within `rtol` of their scale, each
  step's weight updates within `update_rtol` of theirs (see
  `_differences`). `steps`: compare only these steps (default: all).
  """
  def load(path):
    if not os.path.exists(path):
      raise FileNotFoundError(f'{path} does not exist.')
    arrays = dict(np.load(path))
    arrays.update(_updates(arrays))
    if steps is not None:
      keep = tuple(f'{kind}{i}/' for i in steps for kind in ('step', 'update'))
      arrays = {k: v for k, v in arrays.items() if k.startswith(keep)}
    return arrays

  reference = load(paths[0])
  problems = []
  for path in paths[1:]:
    other = load(path)
    if set(other) != set(reference):
      problems.append(f'{path}: other arrays than {paths[0]}: '
                      f'{sorted(set(other) ^ set(reference))[:5]}')
      continue
    updates = lambda a: {k: v for k, v in a.items() if k.startswith('update')}
    rest = lambda a: {k: v for k, v in a.items()
                      if not k.startswith('update')}
    problems += _differences(path, rest(reference), rest(other), rtol)
    problems += _differences(path, updates(reference), updates(other),
                             update_rtol)
  return problems


def _output_name(strategy: str) -> str:
  if strategy != 'multi_worker_mirrored':
    return strategy + '.npz'
  task = json.loads(os.environ.get('TF_CONFIG', '{}')).get('task', {})
  return f'{strategy}_{task.get("index", 0)}.npz'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  """The command line (argparse: absl flags would clash with the modules'
  own when tests import this one beside them)."""
  p = argparse.ArgumentParser(
      description=__doc__.split('\n\n', 1)[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--experiment', default='unipercepnet_shapes',
                 help='Registered experiment.')
  p.add_argument('--params_override', default='',
                 help='YAML/JSON overrides applied after DETERMINISTIC.')
  p.add_argument('--strategy', default=['one_device'],
                 type=lambda s: [x for x in s.split(',') if x],
                 help='Comma-separated strategies to run, in order: '
                 'one_device (/cpu:0), mirrored (--num_cpu_devices logical '
                 'CPU devices), multi_worker_mirrored (the cluster of '
                 'TF_CONFIG; alone).')
  p.add_argument('--num_cpu_devices', type=int, default=2,
                 help='Logical CPU devices for --strategy=mirrored.')
  p.add_argument('--global_batch_size', type=int, default=4,
                 help='Images in the step, over all replicas.')
  p.add_argument('--input_side', type=int, default=128,
                 help='Side of the rendered images and of the model input.')
  p.add_argument('--results_dir',
                 help='Writes <strategy>.npz (multi_worker_mirrored: '
                 'multi_worker_mirrored_<task index>.npz) here.')
  p.add_argument('--compare', nargs='+', metavar='NPZ',
                 help='Compare these files with the first; exit 1 when one '
                 'differs.')
  p.add_argument('--rtol', type=float, default=1e-5,
                 help='Largest difference of a loss, metric or weight, '
                 'relative to its largest magnitude.')
  p.add_argument('--update_rtol', type=float, default=1e-3,
                 help="Largest difference of a weight's update in a step, "
                 "relative to the update's largest magnitude.")
  p.add_argument('--experiment_optimizer', action='store_true',
                 help="Train with the experiment's optimizer instead of SGD.")
  args = p.parse_args(argv)
  unknown = set(args.strategy) - {'one_device', 'mirrored',
                                  'multi_worker_mirrored'}
  if unknown:
    p.error(f'unknown --strategy {sorted(unknown)}.')
  return args


def main(argv: Optional[Sequence[str]] = None) -> None:
  args = parse_args(argv)
  if args.compare:
    problems = compare(args.compare, args.rtol, args.update_rtol)
    for line in problems:
      print(line)
    if not problems:
      print(f'{len(args.compare)} files agree (losses and weights within '
            f'{args.rtol:g}, updates within {args.update_rtol:g}).')
    sys.exit(1 if problems else 0)
  if not args.results_dir:
    sys.exit('ERROR: give --results_dir (or files to --compare).')
  names = args.strategy
  if 'multi_worker_mirrored' in names and len(names) > 1:
    sys.exit('ERROR: --strategy=multi_worker_mirrored runs alone.')
  if 'mirrored' in names:  # Before TensorFlow starts.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * args.num_cpu_devices)
  params = load_params(args.experiment, args.params_override,
                       args.input_side, args.experiment_optimizer)
  os.makedirs(args.results_dir, exist_ok=True)
  for name in names:
    strategy = _strategy(name, args.num_cpu_devices)
    result = run_steps(strategy, params, args.global_batch_size,
                       args.input_side)
    path = os.path.join(args.results_dir, _output_name(name))
    np.savez(path, **result)
    print(f'{name} ({strategy.num_replicas_in_sync} replicas): total loss '
          f'{float(result["step0/total_loss"]):.6f} (uniform), '
          f'{float(result["step1/total_loss"]):.6f} (task-aligned); wrote '
          f'{path}.', flush=True)


if __name__ == '__main__':
  main()
