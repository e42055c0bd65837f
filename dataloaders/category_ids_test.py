"""Tests for dataloaders/category_ids.py."""

import json

import pytest

from configs import unipercepnet as exp_cfg
from dataloaders import category_ids


def test_category_ids_from_config_annotation_file_or_identity(tmp_path):
  config = exp_cfg.UniPercepNetTask()
  config.model.num_classes = 4
  path = str(tmp_path / 'val.json')
  with open(path, 'w') as f:
    json.dump({'images': [], 'annotations': [],
               'categories': [{'id': i, 'name': f'c{i}'}
                              for i in [7, 2, 40, 3]]}, f)
  config.annotation_file = path
  assert category_ids.resolve_category_ids(config) == [2, 3, 7, 40]
  config.category_ids = [5, 6, 7, 9]
  assert category_ids.resolve_category_ids(config) == [5, 6, 7, 9]
  config.category_ids = [5, 6, 7]
  with pytest.raises(ValueError, match='num_classes is 4'):
    category_ids.resolve_category_ids(config)
  config.category_ids = [5, 6, 7, 7]
  with pytest.raises(ValueError, match='4 category ids \\(3 distinct\\)'):
    category_ids.resolve_category_ids(config)
  config.category_ids = None
  config.annotation_file = None
  assert category_ids.resolve_category_ids(config) == [1, 2, 3, 4]
  config.annotation_file = str(tmp_path / 'missing.json')
  with pytest.raises(ValueError, match='missing.json'):
    category_ids.resolve_category_ids(config)
