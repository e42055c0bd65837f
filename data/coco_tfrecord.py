r"""Any COCO-format dataset to Model Garden TFRecords, with masks of any kind.

  python -m data.coco_tfrecord --annotation_file=train.json \
      --image_dir=IMAGES --output_prefix=DATA/train --num_shards=N \
      [--num_workers=W]

writes `DATA/train-0000i-of-0000N.tfrecord`, the format of Model Garden's
`create_coco_tf_record.py --include_masks` (read by its `TfExampleDecoder`),
from a COCO JSON whose masks are polygons, compressed RLE (string counts,
as LVIS, BDD100K exports and many labelling tools write) or uncompressed
RLE, on ordinary or crowd annotations; images without annotations become
examples without objects, and category ids stay the dataset's. It prints
progress and a summary.

The JSON is checked first (`coco_checks.validate`): an error names each
offending entry and nothing is written. Each shard is written under a
hidden temporary name and renamed into place once all are complete, so a
failure leaves no shard behind.

Model Garden's `create_coco_tf_record.create_tf_example` encodes masks from
polygons or uncompressed RLE only. `write_tfrecords` hands it every
annotation's mask as uncompressed RLE, which decodes to the same pixels, so
the records read back as the JSON describes them.
"""

import contextlib
import io
import json
import multiprocessing
import os
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from absl import app
from absl import flags
from PIL import Image
import tensorflow as tf

from common import atomic_io
from data import coco_checks
from data import coco_utils
from official.vision.data import create_coco_tf_record

_FORMATS = {'.png': b'png', '.jpg': b'jpeg', '.jpeg': b'jpeg'}


def _serialized_example(image: Mapping[str, Any],
                        annotations: Sequence[Mapping[str, Any]],
                        image_dir: str,
                        id_to_name: Mapping[int, str]) -> bytes:
  """One image and its (validated) annotations as a serialised tf.Example."""
  converted = []
  for ann in annotations:
    rle = coco_utils.uncompressed_rle(coco_utils.annotation_mask(
        ann['segmentation'], image['height'], image['width']))
    crowd = int(bool(ann.get('iscrowd', 0)))
    # Model Garden merges a list of parts for ordinary annotations and
    # decodes a crowd annotation's single RLE as it is.
    converted.append(dict(ann, iscrowd=crowd,
                          segmentation=rle if crowd else [rle]))
  where = f"image {image['id']} '{image['file_name']}'"
  try:
    example, _ = create_coco_tf_record.create_tf_example(
        image, [image_dir], bbox_annotations=converted,
        id_to_name_map=id_to_name, include_masks=True)
    feature = example.features.feature
    with Image.open(io.BytesIO(
        feature['image/encoded'].bytes_list.value[0])) as file:
      size = file.size
  except (tf.errors.OpError, OSError) as e:  # Picklable for the pool.
    raise ValueError(f'{where}: cannot read '
                     f'{os.path.join(image_dir, image["file_name"])}: '
                     f'{getattr(e, "message", e)}') from None
  if size != (image['width'], image['height']):
    raise ValueError(f'{where}: the file is {size[0]}x{size[1]} (width x '
                     f'height), the JSON says {image["width"]}x'
                     f'{image["height"]}')
  extension = os.path.splitext(image['file_name'])[1].lower()
  feature['image/format'].bytes_list.value[:] = [
      _FORMATS.get(extension, b'jpeg')]
  return example.SerializeToString(deterministic=True)


def _serialized_example_star(args) -> bytes:
  return _serialized_example(*args)


def shard_paths(output_prefix: str, num_shards: int) -> List[str]:
  """PREFIX-0000i-of-0000N.tfrecord, as Model Garden names its shards."""
  return [f'{output_prefix}-{i:05d}-of-{num_shards:05d}.tfrecord'
          for i in range(num_shards)]


def write_tfrecords(coco: Mapping[str, Any], image_dir: str,
                    output_prefix: str, num_shards: int = 1,
                    progress: Optional[Callable[[int, int], None]] = None,
                    num_processes: int = 0,
                    source: Optional[str] = None) -> List[str]:
  """Writes a COCO dict's images and annotations as TFRecord shards.

  The dict is validated first (`coco_checks.validate`). Examples are
  serialised deterministically, round-robin over the shards, as
  `tfrecord_lib.write_tf_record_dataset` does; `image/format` follows each
  file's extension (the converter writes 'jpg' for all). Crowd annotations
  keep `is_crowd` and their masks; a missing `iscrowd` is 0. The shards are
  renamed into place only when all are written; on an error none is left.

  Args:
    coco: a COCO dict ('images', 'annotations', 'categories').
    image_dir: directory holding the images' `file_name`s.
    output_prefix: path prefix of the shards.
    num_shards: number of shards.
    progress: called after each image with (images written, total).
    num_processes: worker processes encoding the examples (the masks' PNG
      encoding dominates); 0 encodes in this process. The output does not
      depend on it.
    source: the JSON's path, for error messages.

  Returns:
    The shard paths.

  Raises:
    ValueError: the dict does not validate (nothing is written), or an image
      file cannot be read or is not of the JSON's size.
  """
  if num_shards < 1:
    raise ValueError(f'num_shards must be >= 1, got {num_shards}.')
  coco_checks.validate(coco, image_dir, source)
  id_to_name = {c['id']: c['name'] for c in coco['categories']}
  by_image = {image['id']: [] for image in coco['images']}
  for ann in coco['annotations']:
    by_image[ann['image_id']].append(ann)
  jobs = ((image, by_image[image['id']], image_dir, id_to_name)
          for image in coco['images'])

  paths = shard_paths(output_prefix, num_shards)
  # Each shard under a hidden temporary name (which no `prefix-*` glob
  # matches), all renamed into place when the block ends, all removed if
  # it raises.
  with contextlib.ExitStack() as shards:
    temporary = [shards.enter_context(atomic_io.atomic_path(p))
                 for p in paths]
    writers, pool = [], None
    try:
      writers.extend(tf.io.TFRecordWriter(p) for p in temporary)
      if num_processes > 0:
        pool = multiprocessing.Pool(num_processes)
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


def _duration(seconds: float) -> str:
  if seconds < 100:
    return f'{seconds:.0f} s'
  if seconds < 6000:
    return f'{seconds / 60:.1f} min'
  return f'{seconds / 3600:.1f} h'


class Progress:
  """Prints `[done/total images] pct%, rate img/s, ETA t` now and then.

  Every `every_fraction` of the images or `every_seconds`, whichever comes
  first, and at the end.
  """

  def __init__(self, out=None, every_fraction: float = 0.05,
               every_seconds: float = 10.0):
    self._out = out or sys.stdout
    self._fraction = every_fraction
    self._seconds = every_seconds
    self._start = time.monotonic()
    self._next_count = 0
    self._next_time = self._start + every_seconds

  def __call__(self, done: int, total: int) -> None:
    now = time.monotonic()
    if done < total and done < self._next_count and now < self._next_time:
      return
    self._next_count = done + max(1, int(total * self._fraction))
    self._next_time = now + self._seconds
    rate = done / max(now - self._start, 1e-6)
    print(f'[{done}/{total} images] {100 * done // max(total, 1)}%, '
          f'{rate:.{0 if rate >= 10 else 1}f} img/s, '
          f'ETA {_duration((total - done) / rate)}', file=self._out,
          flush=True)


def convert(annotation_file: str, image_dir: str, output_prefix: str,
            num_shards: int = 1, num_workers: Optional[int] = None,
            out=None) -> Dict[str, Any]:
  """The command: converts a COCO JSON, printing progress and a summary.

  Args:
    annotation_file: the COCO JSON.
    image_dir: directory holding its images.
    output_prefix: path prefix of the shards (its directory is created).
    num_shards: number of shards.
    num_workers: worker processes; None: min(CPU count, num_shards); 0 or
      1: this process.
    out: where to print (stdout).

  Returns:
    The summary's counts: 'images', 'empty_images', 'annotations', 'crowd',
    'skipped', 'shards' (paths), 'pattern', 'seconds'.

  Raises:
    ValueError: the file is not JSON or does not validate, an image cannot
      be read; nothing is written then.
  """
  out = out or sys.stdout
  start = time.monotonic()
  try:
    with tf.io.gfile.GFile(annotation_file, 'rb') as f:
      coco = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{annotation_file}: not valid JSON: {e}') from None
  if num_workers is None:
    num_workers = min(os.cpu_count() or 1, num_shards)
  num_workers = num_workers if num_workers > 1 else 0
  print(f'{annotation_file}: checking it, then writing {num_shards} '
        f'shard(s) with {max(num_workers, 1)} worker(s)', file=out,
        flush=True)
  directory = os.path.dirname(output_prefix)
  if directory:
    tf.io.gfile.makedirs(directory)
  paths = write_tfrecords(coco, image_dir, output_prefix, num_shards,
                          progress=Progress(out), num_processes=num_workers,
                          source=annotation_file)
  annotated = {ann['image_id'] for ann in coco['annotations']}
  summary = {
      'images': len(coco['images']),
      'empty_images': len(coco['images']) - len(annotated),
      'annotations': len(coco['annotations']),
      'crowd': sum(bool(a.get('iscrowd')) for a in coco['annotations']),
      'skipped': 0,  # Invalid annotations stop the conversion instead.
      'shards': paths,
      'pattern': f'{output_prefix}-*-of-{num_shards:05d}.tfrecord',
      'seconds': time.monotonic() - start,
  }
  print(f'Wrote {summary["pattern"]}: {summary["images"]} images '
        f'({summary["empty_images"]} without annotations), '
        f'{summary["annotations"]} annotations ({summary["crowd"]} crowd), '
        f'{summary["skipped"]} skipped, {num_shards} shard(s), '
        f'{_duration(summary["seconds"])}.', file=out, flush=True)
  others = sorted(set(tf.io.gfile.glob(f'{output_prefix}-*')) - set(paths))
  if others:
    print(f'Note: {len(others)} other file(s) match {output_prefix}-* (e.g. '
          f'{others[0]}); remove them before training on that glob.',
          file=out)
  return summary


def define_flags() -> None:
  """Defines the command's flags (only when it runs as a script).

  Model Garden's create_coco_tf_record, imported above, defines its own
  flags at import; they are removed first, so that its --image_dir and
  --num_shards do not clash and its other flags are refused, not ignored.
  """
  for flag in flags.FLAGS.get_flags_for_module(create_coco_tf_record):
    delattr(flags.FLAGS, flag.name)
  flags.DEFINE_string('annotation_file', None, 'COCO-format JSON.')
  flags.DEFINE_string('image_dir', None, 'Directory of its images.')
  flags.DEFINE_string('output_prefix', None, 'Shards are written as '
                      'PREFIX-0000i-of-0000N.tfrecord.')
  flags.DEFINE_integer('num_shards', 1, 'Number of shards.', lower_bound=1)
  flags.DEFINE_integer('num_workers', None, 'Worker processes (default: '
                       'min(CPU count, num_shards)); 0 or 1: none.',
                       lower_bound=0)
  flags.mark_flags_as_required(['annotation_file', 'image_dir',
                                'output_prefix'])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  args = flags.FLAGS
  try:
    convert(args.annotation_file, args.image_dir, args.output_prefix,
            args.num_shards, args.num_workers)
  except (ValueError, OSError, tf.errors.OpError) as e:
    sys.exit(f'error: {getattr(e, "message", None) or e}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
