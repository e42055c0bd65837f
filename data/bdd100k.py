r"""BDD100K instance segmentation -> COCO JSON and Model Garden TFRecords.

  python -m data.bdd100k --image_dir=bdd100k/images/10k/train \
      (--labels=ins_seg_train_rle.json |
       --bitmask_dir=bdd100k/labels/ins_seg/bitmasks/train) \
      --output_dir=DATA --split=train [--num_shards=N]

writes `DATA/train.json` (COCO instances, compressed RLE segmentations) and
`DATA/train-0000i-of-0000N.tfrecord` (Model Garden `create_coco_tf_record.py
--include_masks` format), then prints the labels it skipped and a summary.

The labels are read by `bdd100k_labels.py` (both official formats); this
module writes them (`write_split`) and is the command.
"""

import collections
import json
import os
import sys
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from absl import app
from absl import flags

from common import atomic_io
from data import bdd100k_labels
from data import coco_tfrecord


def write_split(coco: Mapping[str, Any], image_dir: str, output_dir: str,
                split: str, num_shards: int = 1,
                progress: bdd100k_labels.ProgressFn = None,
                num_processes: int = 0) -> Dict[str, Any]:
  """Writes `output_dir/{split}.json` and its TFRecord shards.

  Nothing is written unless every image exists with the JSON's size. Each
  file appears only complete (`common.atomic_io`), the JSON after the
  shards: a conversion that fails leaves neither.

  Args:
    coco: a COCO dict from `bdd100k_labels.scalabel_to_coco` or
      `bitmasks_to_coco`.
    image_dir: directory holding the images.
    output_dir: destination directory (created if missing).
    split: split name, e.g. 'train'.
    num_shards: number of TFRecord shards.
    progress: called after each TFRecord example with (images done, total).
    num_processes: worker processes encoding the examples; 0: none.

  Returns:
    {'json': path, 'tfrecords': [paths]}.

  Raises:
    FileNotFoundError: naming the missing images.
    ValueError: on images of the wrong size or num_shards < 1.
  """
  if num_shards < 1:
    raise ValueError(f'num_shards must be >= 1, got {num_shards}.')
  bdd100k_labels.check_images(coco, image_dir)
  os.makedirs(output_dir, exist_ok=True)
  json_path = os.path.join(output_dir, f'{split}.json')
  # The JSON is written first, so that it cannot fail once the shards are
  # in place, and renamed into place after them.
  with atomic_io.atomic_path(json_path) as temporary:
    with open(temporary, 'w') as f:
      json.dump(coco, f)
    tfrecords = coco_tfrecord.write_tfrecords(
        coco, image_dir, os.path.join(output_dir, split), num_shards,
        progress=progress, num_processes=num_processes)
  return {'json': json_path, 'tfrecords': tfrecords}


def summarize(coco: Mapping[str, Any],
              problems: Sequence[bdd100k_labels.Problem]) -> Dict[str, Any]:
  """Counts of a converted split.

  Returns:
    {'images', 'empty_images', 'annotations', 'per_category' (name -> count,
    every category), 'crowd' (iscrowd 1 and ignore 0), 'ignored' (ignore 1),
    'skipped' (len(problems)), 'skipped_by_reason' (reason -> count)}.
  """
  per_category = {name: 0 for _, name, _ in bdd100k_labels.CATEGORIES}
  annotated = set()
  crowd = ignored = 0
  for ann in coco['annotations']:
    per_category[bdd100k_labels.ID_TO_NAME[ann['category_id']]] += 1
    annotated.add(ann['image_id'])
    ignored += int(bool(ann['ignore']))
    crowd += int(bool(ann['iscrowd']) and not ann['ignore'])
  reasons = collections.Counter(p.reason.split(':')[0] for p in problems)
  return {
      'images': len(coco['images']),
      'empty_images': len(coco['images']) - len(annotated),
      'annotations': len(coco['annotations']),
      'per_category': per_category,
      'crowd': crowd,
      'ignored': ignored,
      'skipped': len(problems),
      'skipped_by_reason': dict(reasons),
  }


def _define_flags() -> None:
  """The command's flags, defined only when it runs as a script (other
  modules of the project define flags of the same names)."""
  # Model Garden's create_coco_tf_record (imported by coco_tfrecord) defines
  # --image_dir, --num_shards and --num_processes too; these replace its.
  flags.DEFINE_string('image_dir', None, 'Folder of the split\'s JPEG images.',
                      allow_override=True)
  flags.DEFINE_string(
      'labels', None,
      'Scalabel JSON with RLE masks, e.g. ins_seg_train_rle.json.')
  flags.DEFINE_string(
      'bitmask_dir', None, 'Folder of bitmask PNGs, e.g. '
      'bdd100k/labels/ins_seg/bitmasks/train.')
  flags.DEFINE_string('output_dir', None, 'Output directory.')
  flags.DEFINE_string('split', None,
                      'Split name: writes {split}.json and shards.')
  flags.DEFINE_integer('num_shards', 1, 'TFRecord shards.',
                       allow_override=True)
  flags.DEFINE_integer(
      'num_processes', os.cpu_count() or 1,
      'Processes encoding the TFRecord examples (0: this one only).',
      allow_override=True)
  flags.DEFINE_bool(
      'strict', False, 'Stop, writing nothing, if any label would be '
      'skipped (they are listed); by default they are skipped and counted.')


_LOG_EVERY = 500
_MAX_PROBLEMS_PRINTED = 100


def _printer(what: str) -> Callable[[int, int], None]:
  def progress(done: int, total: int) -> None:
    if done % _LOG_EVERY == 0 and done < total:
      print(f'{what} {done}/{total} images', flush=True)
  return progress


def check_flag_values(labels: Optional[str], bitmask_dir: Optional[str],
                      num_shards: int) -> None:
  """Raises app.UsageError unless exactly one label source is given."""
  if (labels is None) == (bitmask_dir is None):
    raise app.UsageError('Pass exactly one of --labels and --bitmask_dir.')
  if num_shards < 1:
    raise app.UsageError('--num_shards must be >= 1.')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  args = flags.FLAGS
  check_flag_values(args.labels, args.bitmask_dir, args.num_shards)
  start = time.time()
  split, image_dir = args.split, args.image_dir
  try:
    if args.labels is not None:
      coco, problems = bdd100k_labels.scalabel_file_to_coco(
          args.labels, image_dir, progress=_printer(f'{split}: converted'))
    else:
      coco, problems = bdd100k_labels.bitmasks_to_coco(
          args.bitmask_dir, progress=_printer(f'{split}: converted'))
    for problem in problems[:_MAX_PROBLEMS_PRINTED]:
      print(f'skipped: {problem}')
    if len(problems) > _MAX_PROBLEMS_PRINTED:
      print(f'skipped: ... and {len(problems) - _MAX_PROBLEMS_PRINTED} more')
    if problems and args.strict:
      sys.exit(f'error: --strict: {len(problems)} label(s) would be skipped '
               '(listed above); nothing was written.')
    result = write_split(coco, image_dir, args.output_dir, split,
                         args.num_shards,
                         progress=_printer(f'{split}: wrote'),
                         num_processes=args.num_processes)
  except FileNotFoundError as e:
    sys.exit(f'error: {e}')
  s = summarize(coco, problems)
  per_category = ', '.join(f'{k} {v}' for k, v in s['per_category'].items())
  reasons = ', '.join(f'{k} {v}' for k, v in
                      sorted(s['skipped_by_reason'].items()))
  print(f'bdd100k {split} -> {args.output_dir}: {s["images"]} images '
        f'({s["empty_images"]} without annotations), {s["annotations"]} '
        f'annotations ({per_category}), {s["crowd"]} crowd, {s["ignored"]} '
        f'ignored, {s["skipped"]} skipped labels'
        + (f' ({reasons})' if reasons else '') +
        f', {len(result["tfrecords"])} shard(s) ({time.time() - start:.1f}s)')


if __name__ == '__main__':
  _define_flags()
  flags.mark_flags_as_required(['image_dir', 'output_dir', 'split'])
  app.run(main)
