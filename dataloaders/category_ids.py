"""The dataset category id of each of the model's contiguous classes 1..K.

The model predicts classes 1..K; datasets number theirs as they like (COCO:
80 ids in 1..90). Training maps dataset ids to 1..K, evaluation and serving
map back; all of them take the mapping from here.
"""

import json
from typing import List

import tensorflow as tf


def resolve_category_ids(config) -> List[int]:
  """Dataset category id of each class 1..K.

  Args:
    config: a task config with `model.num_classes`, `category_ids` and
      `annotation_file` (`configs.unipercepnet.UniPercepNetTask`).

  Returns:
    `category_ids` when given; else the sorted category ids of
    `annotation_file` when given; else 1..K.

  Raises:
    ValueError: the annotation file is missing, or the ids are not K
      distinct ones.
  """
  num_classes = config.model.num_classes
  ids = config.category_ids
  source = 'task.category_ids'
  if ids is None and config.annotation_file:
    if not tf.io.gfile.exists(config.annotation_file):
      raise ValueError(f'task.annotation_file {config.annotation_file!r} '
                       'does not exist.')
    with tf.io.gfile.GFile(config.annotation_file) as f:
      categories = json.load(f).get('categories', [])
    ids = sorted(int(c['id']) for c in categories)
    source = f'the categories of {config.annotation_file}'
  if ids is None:
    return list(range(1, num_classes + 1))
  ids = [int(i) for i in ids]
  if len(ids) != num_classes or len(set(ids)) != len(ids):
    raise ValueError(
        f'{source} gives {len(ids)} category ids ({len(set(ids))} distinct) '
        f'but task.model.num_classes is {num_classes}. List the dataset\'s '
        'ids in task.category_ids, or set it to null to read them from '
        'task.annotation_file.')
  return ids
