"""Reading checkpoints into a built model: training runs and conversions.

Shared by the task (`init_checkpoint`), export and prediction, so that a
checkpoint directory means its latest checkpoint everywhere and inference
everywhere uses the weights evaluation uses (the EMA averages).
"""

from official.core import base_task
from official.modeling.optimization.configs import optimization_config
import tensorflow as tf
import tf_keras


def checkpoint_prefix(path: str, what: str = 'checkpoint') -> str:
  """A checkpoint prefix as given, or a directory's latest checkpoint.

  Raises:
    ValueError: naming `what` and the directory, when it holds none.
  """
  if not tf.io.gfile.isdir(path):
    return path
  latest = tf.train.latest_checkpoint(path)
  if latest is None:
    raise ValueError(f'{what} {path!r} holds no checkpoint.')
  return latest


def restore_inference_weights(
    model: tf_keras.Model, checkpoint_path: str,
    optimizer_config: optimization_config.OptimizationConfig = None) -> str:
  """Loads a training checkpoint into `model` with the weights eval uses.

  With an EMA optimizer (the recipe's), Model Garden's checkpoints hold the
  raw weights in the model and their averages in the optimizer; evaluation
  swaps the averages in, and so does this function.

  Args:
    model: the built model.
    checkpoint_path: a checkpoint file prefix or a directory (latest).
    optimizer_config: the trainer's optimizer config (the optimizer the
      checkpoint was saved with); None: the raw weights.

  Returns:
    The checkpoint file prefix read.
  """
  checkpoint_path = checkpoint_prefix(checkpoint_path)
  items = {'model': model}
  optimizer = None
  if optimizer_config is not None and optimizer_config.ema is not None:
    optimizer = base_task.Task.create_optimizer(optimizer_config)
    optimizer.shadow_copy(model)
    items['optimizer'] = optimizer
  status = tf.train.Checkpoint(**items).read(checkpoint_path)
  status.expect_partial().assert_existing_objects_matched()
  if optimizer is not None:
    # `swap_weights` needs a non-default strategy; for inference the averages
    # can simply be copied in.
    # pylint: disable=protected-access
    for average, weight in zip(optimizer._average_weights,
                               optimizer._model_weights):
      weight.assign(average)
    # pylint: enable=protected-access
  return checkpoint_path
