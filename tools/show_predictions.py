"""Draws a trained model's detections on images into one PNG grid.

  python tools/show_predictions.py --model_dir=runs/shapes \
      --images='data/shapes/val/images/*.png' --output=runs/shapes/val.png

Reads the experiment from `model_dir/params.yaml` and the latest checkpoint
(with its EMA weights, as evaluation uses them); class names come from the
annotation file's categories when there is one.
"""

import glob
import json
import os
import sys

from absl import app
from absl import flags
import numpy as np
from PIL import Image
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from official.core import config_definitions as cfg
from official.core import exp_factory
from official.core import task_factory
from official.modeling import hyperparams
import registry_imports  # pylint: disable=unused-import
from configs import unipercepnet as exp_cfg
from tasks import unipercepnet as task_lib
from tools import visualize
# pylint: enable=g-import-not-at-top,wrong-import-position

_MODEL_DIR = flags.DEFINE_string('model_dir', None, 'Training run directory.')
_IMAGES = flags.DEFINE_string('images', None, 'Glob of input images.')
_OUTPUT = flags.DEFINE_string('output', None, 'Output PNG path.')
_NUM_IMAGES = flags.DEFINE_integer('num_images', 12, 'Images to draw.')
_COLUMNS = flags.DEFINE_integer('columns', 4, 'Grid columns.')
_SCALE = flags.DEFINE_integer('scale', 3, 'Drawing scale.')
_SCORE = flags.DEFINE_float('score_threshold', 0.3, 'Smallest score drawn.')


def load_params(model_dir: str) -> cfg.ExperimentConfig:
  path = os.path.join(model_dir, 'params.yaml')
  if not os.path.exists(path):
    raise ValueError(f'{path} not found: is {model_dir!r} a training run?')
  params = exp_factory.get_exp_config('unipercepnet_coco')
  return hyperparams.override_params_dict(params, path, is_strict=False)


def class_names(params: cfg.ExperimentConfig):
  path = params.task.annotation_file
  if path and os.path.exists(path):
    with open(path) as f:
      return {c['id']: c['name'] for c in json.load(f)['categories']}
  return None


def predict(model, params, image: np.ndarray, category_ids):
  """Detections of one uint8 image, in its own pixel frame."""
  height, width = params.task.model.input_size[:2]
  scale = min(height / image.shape[0], width / image.shape[1])
  new_h = int(round(image.shape[0] * scale))
  new_w = int(round(image.shape[1] * scale))
  x = tf.image.resize(tf.cast(image, tf.float32), [new_h, new_w])
  x = tf.image.pad_to_bounding_box(
      x - exp_cfg.MEAN_RGB, 0, 0, height, width) / exp_cfg.STDDEV_RGB
  pad = (tf.image.pad_to_bounding_box(tf.ones([new_h, new_w, 1]), 0, 0,
                                      height, width))
  x = x + (1. - pad) * ((exp_cfg.Parser().pad_value - np.array(
      exp_cfg.MEAN_RGB)) / np.array(exp_cfg.STDDEV_RGB))
  out = model(x[tf.newaxis], image_shape=tf.constant([[new_h, new_w]]),
              training=False)
  n = int(out['num_detections'][0])
  table = np.array([0] + list(category_ids))
  return (out['detection_boxes'][0, :n].numpy() / scale,
          table[out['detection_classes'][0, :n].numpy()],
          out['detection_scores'][0, :n].numpy(),
          out['detection_masks'][0, :n].numpy()
          if 'detection_masks' in out else None)


def main(_):
  params = load_params(_MODEL_DIR.value)
  task = task_factory.get_task(params.task)
  model = task.build_model()
  ckpt = task_lib.restore_inference_weights(
      task, model, _MODEL_DIR.value, params.trainer.optimizer_config)
  paths = sorted(glob.glob(_IMAGES.value))[:_NUM_IMAGES.value]
  if not paths:
    raise ValueError(f'--images={_IMAGES.value!r} matches no file.')
  names = class_names(params)
  canvases = []
  for path in paths:
    image = np.asarray(Image.open(path).convert('RGB'))
    boxes, classes, scores, masks = predict(model, params, image,
                                            task.category_ids)
    canvases.append(visualize.draw_detections(
        image, boxes, classes, scores, masks=masks, class_names=names,
        score_threshold=_SCORE.value, scale=_SCALE.value))
  visualize.save_png(_OUTPUT.value,
                     visualize.make_grid(canvases, _COLUMNS.value))
  print(f'Predictions of {ckpt} on {len(paths)} images: {_OUTPUT.value}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['model_dir', 'images', 'output'])
  app.run(main)
