"""Tests for tools/model_stats.py: the paper's parameters and GMACs."""

import glob
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from modeling.heads import semantic_head
from tools import model_stats

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_YAML_DIR = os.path.join(_ROOT, 'configs', 'experiments', 'coco')

# Trainable parameters (M) of the paper's ablation table.
_PAPER_PARAMS = {
    'r50_base': 37.5, 'r50_ca': 40.0, 'r50_sam': 37.5, 'r50_ca_sam': 40.0,
    'regnetx4gf_base': 34.4, 'regnetx4gf_ca': 35.4, 'regnetx4gf_sam': 34.4,
    'regnetx4gf_ca_sam': 35.4,
}


def _yaml(name):
  return os.path.join(_YAML_DIR, f'ablation_{name}_1x.yaml')


def test_every_ablation_row_has_a_yaml():
  found = sorted(os.path.basename(p) for p in glob.glob(
      os.path.join(_YAML_DIR, 'ablation_*_1x.yaml')))
  assert found == sorted(f'ablation_{n}_1x.yaml' for n in _PAPER_PARAMS)


@pytest.mark.parametrize('name', sorted(_PAPER_PARAMS))
def test_ablation_params_within_one_percent(name):
  params = model_stats.load_experiment('unipercepnet_coco', [_yaml(name)])
  backbone = params.task.model.backbone
  assert backbone.type == ('ca_resnet' if name.startswith('r50') else 'regnet')
  assert backbone.get().channel_attention == ('_ca' in name)
  assert params.task.model.mask_head.spatial_attention == name.endswith('sam')
  # Parameters do not depend on the input size: measure at a small one.
  stats = model_stats.param_counts(
      model_stats.build_model(params, input_size=[64, 64]))
  paper = _PAPER_PARAMS[name] * 1e6
  assert abs(stats['trainable_params'] - paper) <= 0.01 * paper, stats


# The reference's trainable parameters (its state dict for these configs).
_REFERENCE_PARAMS = {'unipercepnet_coco': 35_437_414,
                     'unipercepnet_r50_coco': 40_009_981}


@pytest.mark.parametrize('experiment,params_m,gmacs', [
    ('unipercepnet_coco', 35.4, 161.),
    ('unipercepnet_r50_coco', 40.0, 164.),
])
def test_named_experiments_match_paper(experiment, params_m, gmacs):
  params = model_stats.load_experiment(experiment)
  stats = model_stats.model_stats(params, input_size=[800, 1344],
                                  num_rois=100)
  assert abs(stats['trainable_params'] - params_m * 1e6) <= 0.01 * params_m * 1e6
  assert stats['trainable_params'] == _REFERENCE_PARAMS[experiment]
  assert abs(stats['total_gmacs'] - gmacs) <= 0.1 * gmacs, stats
  # The paper's split: about 0.645 GMACs per mask RoI.
  assert abs(stats['mask_gmacs_per_roi'] - 0.645) < 0.01, stats
  assert stats['total_params'] > stats['trainable_params']


def test_cli_prints_one_json_line():
  result = subprocess.run(
      [sys.executable, os.path.join(_ROOT, 'tools', 'model_stats.py'),
       '--experiment=unipercepnet_coco',
       f'--config_file={_yaml("regnetx4gf_base")}',
       '--params_override=task.model.num_classes=8',
       '--input_size=64,96', '--num_rois=3'],
      capture_output=True, text=True, check=True, cwd='/',
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  lines = [l for l in result.stdout.splitlines() if l.strip()]
  assert len(lines) == 1, result.stdout
  stats = json.loads(lines[0])
  assert stats['input_size'] == [64, 96]
  assert stats['num_rois'] == 3
  assert abs(stats['total_gmacs'] - (stats['dense_gmacs'] +
                                     3 * stats['mask_gmacs_per_roi'])) < 2e-3
  # 8 classes instead of 80: 72 fewer class outputs in the head (5 anchors,
  # 3x3x256 kernel + bias) and in the mask logits (256 + 1).
  assert stats['trainable_params'] == 34375850 - 72 * (5 * (2304 + 1) + 257)


def test_cli_names_a_missing_config_file():
  result = subprocess.run(
      [sys.executable, os.path.join(_ROOT, 'tools', 'model_stats.py'),
       '--experiment=unipercepnet_coco', '--config_file=/nonexistent.yaml'],
      capture_output=True, text=True, cwd='/',
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert result.returncode != 0
  assert '/nonexistent.yaml' in result.stderr


def test_panoptic_coco_semantic_head_parameters():
  """The semantic head on the 512-channel neck: three 3x3 convs without
  bias (512->256->128->128), their GroupNorm scales and offsets, and a 1x1
  classifier over 53 stuff classes + 1 things class."""
  params = model_stats.load_experiment('unipercepnet_panoptic_coco')
  panoptic = params.task.model.panoptic
  head = semantic_head.SemanticHead(
      num_classes=len(panoptic.stuff_category_ids) + 1,
      num_filters=panoptic.semantic_head.num_filters,
      num_groups=panoptic.semantic_head.num_groups)
  head(tf.zeros([1, 2, 2, 512]))
  convs = 9 * (512 * 256 + 256 * 128 + 128 * 128)
  norms = 2 * (256 + 128 + 128)
  classifier = 128 * 54 + 54
  assert model_stats.param_counts(head)['trainable_params'] == (
      convs + norms + classifier) == 1_630_006
