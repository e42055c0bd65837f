"""The input pipeline of UniPercepNet-S: datasets on Model Garden's reader.

`build_dataset` reads TFRecords written by Model Garden's
`official/vision/data/create_coco_tf_record.py --include_masks` with its
`InputReader`: decoded by its `TfExampleDecoder` and prepared by the parser
(`unipercepnet_parser.py`), grouped into mosaics by `ops/mosaic.py` (stage-1
training), then parsed into batched (image, labels).
"""

import functools
from typing import Optional, Sequence, Union

import tensorflow as tf

from configs import unipercepnet as unipercepnet_cfg
from dataloaders import panoptic_decoder
from dataloaders import unipercepnet_parser
from dataloaders.ops import mosaic as mosaic_lib
from official.core import input_reader
from official.vision.dataloaders import tf_example_decoder


def _check_input_path(input_path: Union[str, Sequence[str]]) -> None:
  """Raises ValueError naming the first pattern that matches no file."""
  if not input_path:
    raise ValueError('input_path is empty.')
  paths = [input_path] if isinstance(input_path, str) else list(input_path)
  for path in paths:
    for pattern in str(path).split(','):
      pattern = pattern.strip()
      if pattern and not tf.io.gfile.glob(pattern):
        raise ValueError(f'{pattern} does not match any files.')


def build_parser(data_config: unipercepnet_cfg.DataConfig,
                 output_size: Sequence[int],
                 category_ids: Optional[Sequence[int]] = None,
                 stuff_category_ids: Optional[Sequence[int]] = None
                 ) -> unipercepnet_parser.Parser:
  """Builds a `Parser` from a `DataConfig` (panoptic with stuff ids)."""
  p = data_config.parser
  return unipercepnet_parser.Parser(
      output_size=output_size,
      max_num_instances=p.max_num_instances,
      mask_crop_size=p.mask_crop_size,
      aug_scale_min=p.aug_scale_min,
      aug_scale_max=p.aug_scale_max,
      aug_rand_hflip=p.aug_rand_hflip,
      aug_hsv=p.aug_hsv,
      pad_value=p.pad_value,
      test_scale=p.test_scale,
      skip_crowd_during_training=p.skip_crowd_during_training,
      category_ids=category_ids,
      dtype=data_config.dtype,
      stuff_category_ids=stuff_category_ids)


def _records_up_to_damage(path) -> tf.data.Dataset:
  """A TFRecord file's records up to its first damaged one."""
  return tf.data.TFRecordDataset(path).ignore_errors(log_warning=True)


def build_dataset(data_config: unipercepnet_cfg.DataConfig,
                  output_size: Sequence[int],
                  category_ids: Optional[Sequence[int]] = None,
                  stage: int = 2,
                  input_context: Optional[tf.distribute.InputContext] = None,
                  stuff_category_ids: Optional[Sequence[int]] = None
                  ) -> tf.data.Dataset:
  """Builds the batched (image, labels) dataset with Model Garden's reader.

  Training datasets repeat forever; stage 1 and stage 2 are separate datasets
  that the caller concatenates (e.g. `stage1.take(n).concatenate(stage2)`).
  The stage-1 mosaic (if `parser.mosaic`) is the reader's `sample_fn`
  (`ops/mosaic.py`): prepared examples are grouped by 4 (`padded_batch`),
  so each mosaic consumes 4 shuffled images.

  Args:
    data_config: a `configs.unipercepnet.DataConfig`.
    output_size: [height, width] of the network input.
    category_ids: dataset category ids in contiguous order (see
      `unipercepnet_parser.Parser`).
    stage: 1 or 2; ignored when not training.
    input_context: optional `tf.distribute.InputContext` (sharding and the
      per-replica batch size).
    stuff_category_ids: a panoptic model's stuff ids: the records' panoptic
      masks are read too (`panoptic_decoder.py`).

  Returns:
    A `tf.data.Dataset` of (image [B, H, W, 3], labels) batches.

  Raises:
    ValueError: if a pattern of `input_path` matches no file, or `stage` is
      not 1 or 2.
  """
  if stage not in (1, 2):
    raise ValueError(f'stage must be 1 or 2, got {stage}.')
  _check_input_path(data_config.input_path)
  parser = build_parser(data_config, output_size, category_ids,
                        stuff_category_ids)
  decoder_cls = (panoptic_decoder.PanopticTfExampleDecoder if parser.panoptic
                 else tf_example_decoder.TfExampleDecoder)
  decoder = decoder_cls(
      include_mask=True,
      regenerate_source_id=(
          data_config.decoder.simple_decoder.regenerate_source_id))
  is_training = data_config.is_training

  def decoder_fn(serialized):
    return parser.prepare(decoder.decode(serialized), is_training)

  sample_fn = None
  if not is_training:
    parser_fn = parser.parse_prepared_eval
  else:
    parser_fn = functools.partial(parser.parse_prepared_train, stage=stage)
    p = data_config.parser
    if stage == 1 and p.mosaic:
      sample_fn = mosaic_lib.Mosaic(p.mosaic_tile_size, p.mask_crop_size,
                                    p.pad_value).sample_fn
  reader = input_reader.InputReader(
      params=data_config,
      dataset_fn=(_records_up_to_damage if data_config.skip_corrupt_records
                  else tf.data.TFRecordDataset),
      decoder_fn=decoder_fn,
      sample_fn=sample_fn,
      parser_fn=parser_fn)
  return reader.read(input_context=input_context)
