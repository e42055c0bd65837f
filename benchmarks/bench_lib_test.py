"""The benchmark helpers run end to end on tiny models (no speed checked)."""

import pytest
import tensorflow as tf

from benchmarks import bench_lib
from benchmarks import sections

_SIZE = [64, 64]
_DETECTIONS = 10

_TINY_OURS = {'task': {'model': {
    'num_classes': 4,
    'backbone': {'type': 'regnet', 'regnet': {'model_id': 'regnetx_200mf'}},
    'decoder': {'dilated_encoder': {'num_filters': 32,
                                    'bottleneck_filters': 8}},
    'head': {'num_stacked_convs': 2, 'num_filters': 16,
             'attention_channels': 4, 'branch_channels': 8},
    'mask_head': {'num_convs': 1, 'num_filters': 8},
    'detection_generator': {'max_num_detections': _DETECTIONS},
}}}

_TINY_MASKRCNN = {'task': {'model': {
    'num_classes': 5,
    'backbone': {'type': 'resnet', 'resnet': {'model_id': 10}},
    'decoder': {'fpn': {'num_filters': 16}},
    'rpn_head': {'num_filters': 16},
    'detection_head': {'num_filters': 16, 'fc_dims': 32},
    'mask_head': {'num_convs': 1, 'num_filters': 8},
    'roi_generator': {'test_num_proposals': 50},
    'detection_generator': {'max_num_detections': _DETECTIONS},
}}}

_OVERRIDES = {bench_lib.OURS_REGNET: _TINY_OURS,
              bench_lib.MASKRCNN: _TINY_MASKRCNN}


def test_parse_sizes():
  assert bench_lib.parse_sizes('640x640, 800x1344') == [[640, 640],
                                                        [800, 1344]]
  with pytest.raises(ValueError, match='HEIGHTxWIDTH'):
    bench_lib.parse_sizes('640')


def test_interleaved_times_alternate_and_exclude_warmup():
  calls = []
  fns = {'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')}
  times = bench_lib.interleaved_times(fns, runs=3, warmup=1)
  assert calls == ['a', 'b'] + ['a', 'b'] * 3
  assert {k: len(v) for k, v in times.items()} == {'a': 3, 'b': 3}
  stats = bench_lib.summary([0.003, 0.001, 0.002])
  assert stats['median_ms'] == pytest.approx(2.)
  assert stats['min_ms'] == pytest.approx(1.) and stats['runs'] == 3


def test_latency_section_on_tiny_models():
  result = sections.latency(
      _SIZE, runs=2, warmup=1,
      models=[bench_lib.OURS_REGNET, bench_lib.MASKRCNN],
      overrides=_OVERRIDES,
      conv_peaks=[bench_lib.ConvPeak(1, 8, 8, 2), bench_lib.ConvPeak(2, 4, 8)],
      expected_detections=_DETECTIONS,
      count_macs=[bench_lib.OURS_REGNET])  # Mask R-CNN's takes a while.
  assert result['size'] == _SIZE
  assert [p['name'] for p in result['conv_peaks']] == ['1x8x8x8->8',
                                                       '2x4x4x8->8']
  assert all(p['gflops'] > 0 for p in result['conv_peaks'])
  for name in (bench_lib.OURS_REGNET, bench_lib.MASKRCNN):
    r = result['models'][name]
    assert r['median_ms'] > 0 and r['runs'] == 2
    assert r['num_detections'] == [_DETECTIONS]
    assert r['mask_shape'][:2] == [1, _DETECTIONS]
  ours = result['models'][bench_lib.OURS_REGNET]
  assert ours['gmacs'] > 0 and ours['gflops'] > 0 and ours['efficiency'] > 0
  assert ours['efficiency_best_conv'] <= ours['efficiency']
  assert 'gmacs' not in result['models'][bench_lib.MASKRCNN]
  assert result['ratios'][bench_lib.OURS_REGNET] > 0


def test_training_batches_of_both_parsers():
  decoded = [bench_lib.synthetic_decoded_example(48, 80, num_instances=3,
                                                 num_classes=4, seed=i)
             for i in range(2)]
  params = bench_lib.maskrcnn_params(_SIZE, overrides=_TINY_MASKRCNN)
  images, labels = bench_lib.maskrcnn_train_batch(params, decoded)
  assert images.shape == [2] + _SIZE + [3]
  assert set(labels) >= {'anchor_boxes', 'image_info', 'rpn_score_targets',
                         'rpn_box_targets', 'gt_boxes', 'gt_classes',
                         'gt_masks'}
  assert sorted(labels['anchor_boxes']) == ['2', '3', '4', '5', '6']
  params = bench_lib.unipercepnet_params(bench_lib.OURS_REGNET, _SIZE,
                                         overrides=_TINY_OURS)
  images, labels = bench_lib.unipercepnet_train_batch(params, decoded)
  assert images.shape == [2] + _SIZE + [3]
  assert labels['gt_masks'].shape[:2] == [2, 100]
  assert (labels['gt_classes'].numpy() > 0).sum(axis=1).tolist() == [3, 3]


def test_synthetic_example_masks_lie_in_their_boxes():
  example = bench_lib.synthetic_decoded_example(40, 60, num_instances=4)
  masks = example['groundtruth_instance_masks'].numpy()
  boxes = example['groundtruth_boxes'].numpy()
  assert masks.shape == (4, 40, 60) and (masks.sum(axis=(1, 2)) > 0).all()
  for mask, (y0, x0, y1, x1) in zip(masks, boxes):
    ys, xs = mask.nonzero()
    assert ys.min() >= int(y0 * 40) - 1 and ys.max() <= int(y1 * 40) + 1
    assert xs.min() >= int(x0 * 60) - 1 and xs.max() <= int(x1 * 60) + 1
  assert example['image'].dtype == tf.uint8
