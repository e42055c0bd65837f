"""The benchmark sections: latency, training throughput, SavedModel.

Each section builds its models, times them interleaved (see
`bench_lib.interleaved_times`), returns a JSON-able dict and prints nothing;
`run_all.py` prints the tables.
"""

import gc
from typing import Any, Collection, Dict, Mapping, Optional, Sequence, Union

import tensorflow as tf
import tf_keras

from benchmarks import bench_lib

DEFAULT_LATENCY_MODELS = (bench_lib.OURS_REGNET, bench_lib.OURS_R50,
                          bench_lib.MASKRCNN)
DEFAULT_TRAIN_MODELS = (bench_lib.OURS_REGNET, bench_lib.MASKRCNN)


def _ratios_to_maskrcnn(results, key: str):
  """{name: results[name][key] / Mask R-CNN's} ({} without Mask R-CNN)."""
  if bench_lib.MASKRCNN not in results:
    return {}
  base = results[bench_lib.MASKRCNN][key]
  return {name: r[key] / base for name, r in results.items()
          if name != bench_lib.MASKRCNN}


def _free():
  tf_keras.backend.clear_session()
  gc.collect()


def latency(size: Sequence[int],
            runs: int = 10,
            models: Sequence[str] = DEFAULT_LATENCY_MODELS,
            overrides: Optional[Mapping[str, Mapping[str, Any]]] = None,
            conv_peaks: Optional[Sequence[bench_lib.ConvPeak]] = None,
            count_macs: Union[bool, Collection[str]] = True,
            expected_detections: int = 100,
            warmup: int = 2) -> Dict[str, Any]:
  """Batch-1 inference latency of `models` at `size`, and the conv peak.

  Args:
    size: [height, width].
    runs: timed calls of each model (interleaved).
    models: experiment names (see `bench_lib.MODEL_NAMES`).
    overrides: experiment -> config override dict.
    conv_peaks: the convs timed alongside (None: `DEFAULT_CONV_PEAKS`);
      efficiency is against the first, `efficiency_best_conv` against the
      fastest.
    count_macs: count the models' GMACs (ours: tools/model_stats.py; Mask
      R-CNN: the profiler on its inference graph), for achieved GFLOP/s;
      True: all, else the names of the models to count.
    expected_detections: detections (with masks) each model must produce.
    warmup: untimed calls first.

  Returns:
    {'size', 'models': {name: {timing summary, detections, gmacs,
    gflops, efficiency, efficiency_best_conv}}, 'conv_peaks': [{name,
    timing summary, gflops}], 'ratios': {name: median / Mask R-CNN's}}.
  """
  overrides = overrides or {}
  conv_peaks = list(conv_peaks or bench_lib.DEFAULT_CONV_PEAKS)
  images = bench_lib.random_images(1, size[0], size[1])
  fns, results = {}, {}
  for name in models:
    params = bench_lib.params_for(name, size, overrides=overrides.get(name))
    _, model = bench_lib.build(params)
    run = bench_lib.inference_fn(model, params)
    results[name] = bench_lib.check_detections(run(images),
                                                expected_detections)
    if count_macs is True or (count_macs and name in count_macs):
      if bench_lib.is_maskrcnn(params):
        results[name]['gmacs'] = round(bench_lib.maskrcnn_gmacs(model,
                                                                params), 3)
      else:
        stats = bench_lib.unipercepnet_gmacs(
            model, params, num_rois=expected_detections)
        results[name]['gmacs'] = stats['total_gmacs']
        results[name]['gmacs_detail'] = stats
    fns[name] = (lambda run=run: run(images))
  for i, conv in enumerate(conv_peaks):
    fns[f'conv_peak{i}'] = conv.fn()
  times = bench_lib.interleaved_times(fns, runs, warmup=warmup)
  peaks = []
  for i, conv in enumerate(conv_peaks):
    peak = bench_lib.summary(times.pop(f'conv_peak{i}'))
    peak['gflops'] = conv.gflops(peak['median_ms'] / 1e3)
    peak['name'] = conv.name
    peaks.append(peak)
  best = max(p['gflops'] for p in peaks)
  for name, t in times.items():
    results[name].update(bench_lib.summary(t))
    if 'gmacs' in results[name]:
      gflops = 2 * results[name]['gmacs'] / (results[name]['median_ms'] / 1e3)
      results[name]['gflops'] = gflops
      results[name]['efficiency'] = gflops / peaks[0]['gflops']
      results[name]['efficiency_best_conv'] = gflops / best
  ratios = _ratios_to_maskrcnn(results, 'median_ms')
  _free()
  return {'size': list(size), 'models': results, 'conv_peaks': peaks,
          'ratios': ratios}


def training(size: Sequence[int] = (640, 640),
             batch_size: int = 2,
             runs: int = 10,
             models: Sequence[str] = DEFAULT_TRAIN_MODELS,
             overrides: Optional[Mapping[str, Mapping[str, Any]]] = None,
             assigner: str = 'task_aligned',
             warmup: int = 2) -> Dict[str, Any]:
  """Training throughput of each model's real train step on synthetic data.

  Both get the same synthetic examples (random pixels, 8 instances with
  masks each) through their own training parsers, batched `batch_size`;
  ours trains with the assigner stage named `assigner`.

  Returns:
    {'size', 'batch_size', 'models': {name: {timing summary per step,
    'images_per_s'}}, 'ratios': {name: throughput / Mask R-CNN's}}.
  """
  overrides = overrides or {}
  all_params = {}
  for name in models:
    params = bench_lib.params_for(name, size, overrides=overrides.get(name))
    params.override({'task': {'train_data': {
        'global_batch_size': batch_size}}}, is_strict=True)
    all_params[name] = params
  # Classes every model knows (Mask R-CNN's count includes the background).
  num_classes = min(p.task.model.num_classes - bench_lib.is_maskrcnn(p)
                    for p in all_params.values())
  decoded = [bench_lib.synthetic_decoded_example(
      size[0], size[1], num_classes=num_classes, seed=i)
             for i in range(batch_size)]
  fns, results = {}, {}
  for name, params in all_params.items():
    task, model = bench_lib.build(params)
    if bench_lib.is_maskrcnn(params):
      batch = bench_lib.maskrcnn_train_batch(params, decoded)
    else:
      batch = bench_lib.unipercepnet_train_batch(params, decoded)
    fns[name] = bench_lib.train_step_fn(task, model, params, batch,
                                        assigner=assigner)
    results[name] = {}
  times = bench_lib.interleaved_times(fns, runs, warmup=warmup)
  for name, t in times.items():
    results[name].update(bench_lib.summary(t))
    results[name]['images_per_s'] = batch_size / (
        results[name]['median_ms'] / 1e3)
  ratios = _ratios_to_maskrcnn(results, 'images_per_s')
  _free()
  return {'size': list(size), 'batch_size': batch_size, 'models': results,
          'ratios': ratios,
          'stage': assigner.replace('_', '-')}


def saved_model(size: Sequence[int] = (640, 640),
                runs: int = 10,
                experiment: str = bench_lib.OURS_REGNET,
                overrides: Optional[Mapping[str, Any]] = None,
                expected_detections: int = 100,
                warmup: int = 2) -> Dict[str, Any]:
  """SavedModel signature vs in-process inference, batch 1.

  Three callables, interleaved: the loaded SavedModel's `serving_default`
  on a uint8 image of the input size; the in-process export module on the
  same image (the same graph: preprocessing, model, output mapping); the
  in-process model alone on the preprocessed image.

  Returns:
    {'size', 'models': {'saved_model', 'in_process_module',
    'in_process_model'}: timing summaries}, 'ratio_saved_to_module',
    'ratio_saved_to_model'}.
  """
  params = bench_lib.params_for(experiment, size, overrides=overrides)
  _, model = bench_lib.build(params)
  rng = tf.random.Generator.from_seed(0)
  image = tf.cast(rng.uniform([1, size[0], size[1], 3], 0, 256,
                              dtype=tf.int32), tf.uint8)
  with bench_lib.exported_saved_model(params, model) as (loaded, module):
    signature = loaded.signatures['serving_default']
    images, _ = module.preprocess(image)
    run_model = bench_lib.inference_fn(module.model, params)
    saved = signature(inputs=image)
    in_process = module.inference_from_image_tensors(image)
    bench_lib.check_detections(saved, expected_detections)
    max_diff = float(tf.reduce_max(tf.abs(
        saved['detection_scores'] - in_process['detection_scores'])))
    fns = {
        'saved_model': lambda: signature(inputs=image),
        'in_process_module': (
            lambda: module.inference_from_image_tensors(image)),
        'in_process_model': lambda: run_model(images),
    }
    times = bench_lib.interleaved_times(fns, runs, warmup=warmup)
  results = {name: bench_lib.summary(t) for name, t in times.items()}
  _free()
  saved_ms = results['saved_model']['median_ms']
  return {
      'size': list(size),
      'experiment': experiment,
      'models': results,
      'max_score_difference': max_diff,
      'ratio_saved_to_module': (
          saved_ms / results['in_process_module']['median_ms']),
      'ratio_saved_to_model': (
          saved_ms / results['in_process_model']['median_ms']),
  }
