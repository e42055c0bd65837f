"""COCO-format annotations to Model Garden TFRecords, with masks of any kind.

Model Garden's `create_coco_tf_record.create_tf_example` encodes masks from
polygons or uncompressed RLE only. `write_tfrecords` hands it every
annotation's mask (polygons, compressed or uncompressed RLE) as a
one-element list of uncompressed RLE, which decodes to the same pixels, so
the records read back with Model Garden's `TfExampleDecoder` as the JSON
describes them.
"""

import multiprocessing
import os
from typing import Any, Callable, List, Mapping, Optional, Sequence

import tensorflow as tf

from data import coco_utils
from official.vision.data import create_coco_tf_record

_FORMATS = {'.png': b'png', '.jpg': b'jpeg', '.jpeg': b'jpeg'}


def _serialized_example(image: Mapping[str, Any],
                        annotations: Sequence[Mapping[str, Any]],
                        image_dir: str,
                        id_to_name: Mapping[int, str]) -> bytes:
  """One image and its annotations as a serialised tf.Example."""
  converted = []
  for ann in annotations:
    rle = coco_utils.uncompressed_rle(coco_utils.annotation_mask(
        ann['segmentation'], image['height'], image['width']))
    # Model Garden merges a list of parts for ordinary annotations and
    # decodes a crowd annotation's single RLE as it is.
    converted.append(dict(ann, segmentation=rle if ann.get('iscrowd')
                          else [rle]))
  example, num_skipped = create_coco_tf_record.create_tf_example(
      image, [image_dir], bbox_annotations=converted,
      id_to_name_map=id_to_name, include_masks=True)
  if num_skipped:
    raise ValueError(f'Converter skipped {num_skipped} annotations of '
                     f'image {image["id"]} ({image["file_name"]}): boxes '
                     'must have a positive size and lie inside the image.')
  extension = os.path.splitext(image['file_name'])[1].lower()
  fmt = example.features.feature['image/format'].bytes_list.value
  fmt[:] = [_FORMATS.get(extension, b'jpeg')]
  return example.SerializeToString(deterministic=True)


def _serialized_example_star(args) -> bytes:
  return _serialized_example(*args)


def write_tfrecords(coco: Mapping[str, Any], image_dir: str,
                    output_prefix: str, num_shards: int = 1,
                    progress: Optional[Callable[[int, int], None]] = None,
                    num_processes: int = 0) -> List[str]:
  """Writes a COCO dict's images and annotations as TFRecord shards.

  Examples are serialised deterministically, round-robin over the shards,
  as `tfrecord_lib.write_tf_record_dataset` does; `image/format` follows
  each file's extension (the converter writes 'jpg' for all). Crowd
  annotations keep `is_crowd` and their masks.

  Args:
    coco: a COCO dict ('images', 'annotations', 'categories').
    image_dir: directory holding the images' `file_name`s.
    output_prefix: path prefix of the shards.
    num_shards: number of shards.
    progress: called after each image with (images written, total).
    num_processes: worker processes encoding the examples (the masks' PNG
      encoding dominates); 0 encodes in this process. The output does not
      depend on it.

  Returns:
    The shard paths.
  """
  if num_shards < 1:
    raise ValueError(f'num_shards must be >= 1, got {num_shards}.')
  id_to_name = {c['id']: c['name'] for c in coco['categories']}
  by_image = {image['id']: [] for image in coco['images']}
  for ann in coco['annotations']:
    by_image[ann['image_id']].append(ann)
  jobs = ((image, by_image[image['id']], image_dir, id_to_name)
          for image in coco['images'])

  paths = [f'{output_prefix}-{i:05d}-of-{num_shards:05d}.tfrecord'
           for i in range(num_shards)]
  writers = [tf.io.TFRecordWriter(p) for p in paths]
  pool = multiprocessing.Pool(num_processes) if num_processes > 0 else None
  try:
    examples = (pool.imap(_serialized_example_star, jobs, chunksize=8)
                if pool else map(_serialized_example_star, jobs))
    for idx, example in enumerate(examples):
      writers[idx % num_shards].write(example)
      if progress:
        progress(idx + 1, len(coco['images']))
  finally:
    if pool:
      pool.terminate()
    for writer in writers:
      writer.close()
  return paths
