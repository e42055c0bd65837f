"""Training and SavedModel sections end to end on a tiny model (slow)."""

import pytest

from benchmarks import bench_lib
from benchmarks import bench_lib_test
from benchmarks import sections


@pytest.mark.slow
def test_training_and_saved_model_sections_on_a_tiny_model():
  overrides = bench_lib_test._TINY_OURS  # pylint: disable=protected-access
  size = bench_lib_test._SIZE  # pylint: disable=protected-access
  result = sections.training(size, batch_size=2, runs=1, warmup=1,
                             models=[bench_lib.OURS_REGNET],
                             overrides={bench_lib.OURS_REGNET: overrides})
  ours = result['models'][bench_lib.OURS_REGNET]
  assert ours['images_per_s'] > 0 and result['batch_size'] == 2
  assert result['stage'] == 'task-aligned' and result['ratios'] == {}

  result = sections.saved_model(
      size, runs=1, warmup=1, overrides=overrides,
      expected_detections=bench_lib_test._DETECTIONS)  # pylint: disable=protected-access
  assert set(result['models']) == {'saved_model', 'in_process_module',
                                   'in_process_model'}
  assert result['ratio_saved_to_module'] > 0
  assert result['max_score_difference'] < 1e-4
