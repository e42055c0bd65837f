r"""BDD100K panoptic segmentation bitmasks -> COCO panoptic and MG TFRecords.

  python -m data.bdd100k_panoptic \
      --bitmask_dir=bdd100k/labels/pan_seg/bitmasks/val \
      --image_dir=bdd100k/images/10k/val --output_dir=bdd100k_pan_seg \
      --split=val [--num_shards=N] [--num_processes=P] [--ignore_as=crowd]

writes into `--output_dir`:

* `panoptic_val/<stem>.png`: COCO panoptic PNGs, segment id = R + 256 G +
  256^2 B; thing segments have ids 1..254 (renumbered per image), the
  stuff segment of category c has id 256 c; 0 = void.
* `panoptic_val.json`: COCO panoptic JSON (categories with `isthing`).
* `val.json`: COCO instances JSON of the thing segments (compressed RLE),
  categories = the 10 things.
* `val-0000i-of-0000N.tfrecord`: Model Garden records made by its own
  `create_coco_tf_record.create_tf_example(include_masks=True,
  include_panoptic_masks=True)`: the instance keys of the thing segments and
  'image/panoptic/category_mask' (dataset category id, 0 void),
  'image/panoptic/instance_mask' (the thing segment's id 1..254, 0 for stuff
  and void), 'image/segmentation/class/encoded'.

Every file is written under a hidden temporary name and renamed into place
only when the whole split is converted (`common.atomic_io`); the panoptic
JSON appears last. Only the bitmasks are read; the Scalabel polygon JSON
(`labels/pan_seg/polygons/pan_seg_<split>.json`, Bezier `poly2d`) is not:
BDD100K rasterises it into the bitmasks, which its evaluation uses as ground
truth (doc/source/format.rst: "we suggest using bitmasks as input all the
way").

Facts of BDD100K (toolkit github.com/bdd100k/bdd100k; read, not copied):

[L] bdd100k/label/label.py, `labels`: ids, names, supercategory (its
    `category`), isthing (its `hasInstances`), ignoreInEval.
[T] bdd100k/configs/pan_seg.toml: the 40 panoptic categories in id order
    with `isThing`, the same 30 stuff + 10 things as [L]; attribute `crowd`.
[M] bdd100k/label/to_mask.py, `panseg_to_bitmasks`/`set_instance_color`:
    R = category id, G = truncated << 3 | occluded << 2 | crowd << 1 |
    ignore, (B << 8) + A = instance id; background (0, 0, 0, 0); labels of
    category 0 ('unlabeled') are not drawn; a stuff label's instance id is
    its category id (STUFF_NUM = 30), things get 31, 32, ...
[F] doc/source/format.rst "Instance Segmentation Format": the same RGBA
    layout; "boxes with crowd or ignore labels will not be considered
    during testing".
[E] bdd100k/eval/pan_seg.py `pq_per_image` with common/bitmask.py: a
    segment is an instance id >= 1 (instance id 0 = background, no
    segment); a gt segment with G & 3 != 0 (crowd or ignore) is not valid:
    never a FN, never matched; an unmatched prediction is no FP when more
    than half of it lies outside the valid gt segments (void, crowd or
    ignore of ANY category). PQ averages all 40 categories (`labels[1:]`)
    having TP + FP + FN > 0: `ignoreInEval` is not used by panoptic
    evaluation (it marks the semantic-segmentation trainId 255 classes).
[C] bdd100k/label/to_coco_panseg.py: COCO panoptic `iscrowd` = crowd or
    ignore; categories from [L] with `isthing` = hasInstances.

  id name               kind   super [L]     sem_seg ignoreInEval [L]
   0 unlabeled          void   void          yes (never a category here)
   1 dynamic            stuff  void          yes
   2 ego vehicle        stuff  void          yes
   3 ground             stuff  void          yes
   4 static             stuff  void          yes
   5 parking            stuff  flat          yes
   6 rail track         stuff  flat          yes
   7 road               stuff  flat          no
   8 sidewalk           stuff  flat          no
   9 bridge             stuff  construction  yes
  10 building           stuff  construction  no
  11 fence              stuff  construction  no
  12 garage             stuff  construction  yes
  13 guard rail         stuff  construction  yes
  14 tunnel             stuff  construction  yes
  15 wall               stuff  construction  no
  16 banner             stuff  object        yes
  17 billboard          stuff  object        yes
  18 lane divider       stuff  object        yes
  19 parking sign       stuff  object        no
  20 pole               stuff  object        no
  21 polegroup          stuff  object        yes
  22 street light       stuff  object        yes
  23 traffic cone       stuff  object        yes
  24 traffic device     stuff  object        yes
  25 traffic light      stuff  object        no
  26 traffic sign       stuff  object        no
  27 traffic sign frame stuff  object        yes
  28 terrain            stuff  nature        no
  29 vegetation         stuff  nature        no
  30 sky                stuff  sky           no
  31 person             thing  human         no
  32 rider              thing  human         no
  33 bicycle            thing  vehicle       no
  34 bus                thing  vehicle       no
  35 car                thing  vehicle       no
  36 caravan            thing  vehicle       yes
  37 motorcycle         thing  vehicle       no
  38 trailer            thing  vehicle       yes
  39 train              thing  vehicle       no
  40 truck              thing  vehicle       no

All 40 are categories here, as in [E]; the ignoreInEval column is for
information only.

Conversion rules:

* Void (category 0, instance 0 in the records and PNGs): instance id 0 [E],
  category 0 [L, M], and the segments skipped below.
* Stuff: the bitmask segments of one stuff category are one COCO segment
  (COCO panoptic has one segment per stuff category; [M] gives them one
  anyway). A stuff segment with crowd or ignore becomes void: [E] neither
  scores nor penalises it, and a stuff pixel cannot be crowd in the
  records (crowd comes from instance annotations).
* Things: one segment per instance id, renumbered 1..N in increasing BDD100K
  instance id (kept as `bdd100k_id`). crowd -> `iscrowd: 1`. ignore ->
  `iscrowd: 1, ignore: 1` (default `ignore_as='crowd'`, as [C] and the
  instance converter `bdd100k_labels` do) or void (`ignore_as='void'`).
  [E] makes crowd and ignore regions absorb predictions of any category
  (like void); COCO PQ, used here, lets a crowd region absorb only its own
  category: a small, documented difference.
* Problems, reported naming the file and the image is skipped (not written):
  a missing image, an unreadable or non-RGBA PNG, a PNG of another size than
  its image, more than 254 thing segments. Problems on a segment, whose
  pixels become void while the rest of the image is kept: an unknown
  category id (> 40), pixels of one instance id with several categories or
  attributes ([E] asserts they agree), pixels with a category but instance
  id 0.

Model Garden's `generate_coco_panoptics_masks` needs three things set around
each call (`coco_panoptic.model_garden_panoptic`, restored afterwards): it
reads absl `FLAGS.panoptic_skip_crowd` (made readable and False: crowd
segments are written, also when flags were never parsed); it computes R +
256 G + 256^2 B on the uint8 PNG (NumPy 2 raises OverflowError; its PNG
reader is made to return int64); it writes stuff as `category_id - 90` into
its uint8 semantic PNG, COCO's offset (COCO stuff ids are 92..200), negative
for BDD100K's stuff ids 1..30 (NumPy 2 raises): the offset is set to -1, so
that the semantic PNG holds MG's layout: 0 void, 1 things, 2..31 stuff
(category id + 1). """

import argparse
import collections
import contextlib
import json
import multiprocessing
import os
import sys
import time
from typing import (Any, Callable, Dict, List, NamedTuple, Optional,
                    Sequence, Tuple)

import numpy as np
from PIL import Image
from pycocotools import mask as mask_lib
import tensorflow as tf

from common import atomic_io
from common import panoptic_png
from data import bdd100k_labels
from data import coco_panoptic
from data import coco_tfrecord
from data import coco_utils
from official.vision.data import create_coco_tf_record

# (id, name, isthing) of BDD100K pan_seg, from [L] and [T] above.
CATEGORIES = (
    (1, 'dynamic', False),
    (2, 'ego vehicle', False),
    (3, 'ground', False),
    (4, 'static', False),
    (5, 'parking', False),
    (6, 'rail track', False),
    (7, 'road', False),
    (8, 'sidewalk', False),
    (9, 'bridge', False),
    (10, 'building', False),
    (11, 'fence', False),
    (12, 'garage', False),
    (13, 'guard rail', False),
    (14, 'tunnel', False),
    (15, 'wall', False),
    (16, 'banner', False),
    (17, 'billboard', False),
    (18, 'lane divider', False),
    (19, 'parking sign', False),
    (20, 'pole', False),
    (21, 'polegroup', False),
    (22, 'street light', False),
    (23, 'traffic cone', False),
    (24, 'traffic device', False),
    (25, 'traffic light', False),
    (26, 'traffic sign', False),
    (27, 'traffic sign frame', False),
    (28, 'terrain', False),
    (29, 'vegetation', False),
    (30, 'sky', False),
    (31, 'person', True),
    (32, 'rider', True),
    (33, 'bicycle', True),
    (34, 'bus', True),
    (35, 'car', True),
    (36, 'caravan', True),
    (37, 'motorcycle', True),
    (38, 'trailer', True),
    (39, 'train', True),
    (40, 'truck', True),
)
THING_CATEGORY_IDS = [c for c, _, isthing in CATEGORIES if isthing]
STUFF_CATEGORY_IDS = [c for c, _, isthing in CATEGORIES if not isthing]
VOID_ID = 0  # BDD100K 'unlabeled'; category and instance id of void pixels.
ID_TO_NAME = {c: name for c, name, _ in CATEGORIES}
# The supercategory ('category' of [L]) of each id.
SUPERCATEGORIES = {
    **{c: 'void' for c in range(1, 5)}, **{c: 'flat' for c in range(5, 9)},
    **{c: 'construction' for c in range(9, 16)},
    **{c: 'object' for c in range(16, 28)},
    28: 'nature', 29: 'nature', 30: 'sky', 31: 'human', 32: 'human',
    **{c: 'vehicle' for c in range(33, 41)},
}
# The most thing segments of an image (instance ids 1..254; MG's uint8
# instance mask, and 255 is the crowd id at evaluation).
MAX_THINGS = 254
IGNORE_AS = ('crowd', 'void')

_ISTHING = {c: isthing for c, _, isthing in CATEGORIES}
# G-channel bits [M].
_CROWD_OR_IGNORE = bdd100k_labels.CROWD_BIT | bdd100k_labels.IGNORE_BIT
# MG's semantic PNG holds `category_id - offset` for stuff; -1 maps BDD100K
# stuff 1..30 to 2..31 after MG's things class 1 (see the module doc).
_SEMANTIC_STUFF_OFFSET = -1
_FORMATS = {'.png': b'png', '.jpg': b'jpeg', '.jpeg': b'jpeg'}
_MAX_PROBLEMS_PRINTED = 100

Problem = bdd100k_labels.Problem
ProgressFn = Optional[Callable[[int, int], None]]


def panoptic_categories() -> List[Dict[str, Any]]:
  """The COCO panoptic `categories` (all 40, with isthing 0/1)."""
  return [{'id': c, 'name': name, 'supercategory': SUPERCATEGORIES[c],
           'isthing': int(isthing)} for c, name, isthing in CATEGORIES]


def thing_categories() -> List[Dict[str, Any]]:
  """The COCO instances `categories` (the 10 things)."""
  return [{'id': c, 'name': ID_TO_NAME[c], 'supercategory': SUPERCATEGORIES[c]}
          for c in THING_CATEGORY_IDS]


def stuff_segment_id(category_id: int) -> int:
  """Panoptic PNG segment id of a stuff category's segment (256 c)."""
  return category_id << 8


class Segment(NamedTuple):
  """One COCO panoptic segment of an image."""
  segment_id: int  # In the panoptic PNG; a thing's instance id.
  category_id: int
  iscrowd: bool
  ignore: bool  # A thing with BDD100K's ignore attribute.
  bdd100k_ids: Tuple[int, ...]  # Its BDD100K instance ids.


class PanopticImage(NamedTuple):
  """An image's conversion: segment ids per pixel and its segments."""
  segment_ids: np.ndarray  # int32 [h, w], 0 = void.
  segments: List[Segment]  # Things (ids 1..N), then stuff by category.
  void_stuff: int  # Stuff segments made void for crowd or ignore.
  problems: List[Problem]


def parse_bitmask(bitmask: np.ndarray, ignore_as: str = 'crowd',
                  source: str = '', frame: str = '') -> PanopticImage:
  """Converts one BDD100K pan_seg RGBA bitmask (rules in the module doc).

  Args:
    bitmask: uint8 [height, width, 4].
    ignore_as: 'crowd' or 'void', what a thing with ignore becomes.
    source: the bitmask file, for problem reports.
    frame: the image file name, for problem reports.

  Returns:
    The PanopticImage. It has more than MAX_THINGS thing segments when the
    bitmask has; the caller reports it.

  Raises:
    ValueError: on a bad `ignore_as` or a bitmask not [h, w, 4].
  """
  if ignore_as not in IGNORE_AS:
    raise ValueError(f'ignore_as must be one of {IGNORE_AS}, got '
                     f'{ignore_as!r}.')
  if bitmask.ndim != 3 or bitmask.shape[2] != 4:
    raise ValueError(f'{source}: a bitmask is [h, w, 4], got '
                     f'{bitmask.shape}.')
  category = bitmask[:, :, 0].ravel()
  attributes = bitmask[:, :, 1].ravel()
  flat = ((bitmask[:, :, 2].astype(np.int32) << 8) |
          bitmask[:, :, 3]).ravel()
  problems = []
  # Each instance's category and attributes, from any of its pixels, and
  # the instances whose pixels disagree.
  cat_of = np.zeros(1 << 16, dtype=np.uint8)
  attr_of = np.zeros(1 << 16, dtype=np.uint8)
  cat_of[flat] = category
  attr_of[flat] = attributes
  disagree = (cat_of[flat] != category) | (attr_of[flat] != attributes)
  mixed = set(np.unique(flat[disagree]).tolist())
  background = flat == VOID_ID
  labelled_background = int(np.count_nonzero(category[background]))
  if labelled_background:
    problems.append(Problem(
        source, frame, '0', f'{labelled_background} pixel(s) with a '
        'category but instance id 0: void'))
  ids = np.flatnonzero(np.bincount(flat, minlength=1))
  ids = ids[ids != VOID_ID].tolist()

  lut = np.zeros(1 << 16, dtype=np.int32)  # BDD100K id -> segment id.
  things, stuff = [], collections.defaultdict(list)
  void_stuff = 0
  for bdd_id in ids:
    category_id, attr = int(cat_of[bdd_id]), int(attr_of[bdd_id])
    if bdd_id in mixed:
      problems.append(Problem(
          source, frame, str(bdd_id), 'mixed values: pixels of several '
          'categories or attributes: void'))
    elif category_id == VOID_ID:
      pass
    elif category_id not in _ISTHING:
      problems.append(Problem(source, frame, str(bdd_id),
                              f'unknown category: id {category_id}: void'))
    elif not _ISTHING[category_id]:
      if attr & _CROWD_OR_IGNORE:
        void_stuff += 1
      else:
        stuff[category_id].append(bdd_id)
    else:
      ignore = bool(attr & bdd100k_labels.IGNORE_BIT)
      crowd = bool(attr & bdd100k_labels.CROWD_BIT)
      if not (ignore and ignore_as == 'void'):
        things.append(Segment(len(things) + 1, category_id, crowd or ignore,
                              ignore, (bdd_id,)))
        lut[bdd_id] = len(things)
  segments = list(things)
  for category_id in sorted(stuff):
    segment_id = stuff_segment_id(category_id)
    lut[stuff[category_id]] = segment_id
    segments.append(Segment(segment_id, category_id, False, False,
                            tuple(stuff[category_id])))
  segment_ids = lut[flat].reshape(bitmask.shape[:2])
  return PanopticImage(segment_ids, segments, void_stuff, problems)


class _Job(NamedTuple):
  bitmask_path: str
  image_dir: str
  file_names: Tuple[str, ...]  # Candidates; the first existing is used.
  image_id: int
  png_dir: str
  ignore_as: str


class _Result(NamedTuple):
  image: Optional[Dict[str, Any]]  # None: skipped.
  panoptic: Optional[Dict[str, Any]]  # The panoptic JSON annotation.
  instances: List[Dict[str, Any]]  # Instance annotations, no 'id' yet.
  example: Optional[bytes]
  void_stuff: int
  problems: List[Problem]


def _skipped(job: _Job, file_name: str, reason: str,
             problems: Sequence[Problem] = ()) -> _Result:
  return _Result(None, None, [], None, 0, list(problems) + [
      Problem(job.bitmask_path, file_name, '-', f'image skipped: {reason}')])


def _read_rgba(path: str) -> np.ndarray:
  with Image.open(path) as image:
    if image.mode != 'RGBA':
      raise ValueError(f'not RGBA but {image.mode}')
    return np.asarray(image)


def _convert_image(job: _Job) -> _Result:
  """Converts one bitmask: writes its panoptic PNG, returns the rest."""
  file_name = next((name for name in job.file_names if os.path.isfile(
      os.path.join(job.image_dir, name))), None)
  if file_name is None:
    shown = ' or '.join(os.path.join(job.image_dir, name)
                        for name in job.file_names)
    return _skipped(job, job.file_names[0], f'missing image {shown}')
  image_path = os.path.join(job.image_dir, file_name)
  try:
    with Image.open(image_path) as image:
      width, height = image.size
  except OSError as e:
    return _skipped(job, file_name, f'cannot read image {image_path}: {e}')
  try:
    bitmask = _read_rgba(job.bitmask_path)
  except (OSError, ValueError) as e:
    return _skipped(job, file_name, f'bad bitmask PNG: {e}')
  if bitmask.shape[:2] != (height, width):
    return _skipped(job, file_name, f'bitmask is {bitmask.shape[0]}x'
                    f'{bitmask.shape[1]} (h x w), the image {height}x{width}')
  parsed = parse_bitmask(bitmask, job.ignore_as, job.bitmask_path, file_name)
  num_things = sum(_ISTHING[s.category_id] for s in parsed.segments)
  if num_things > MAX_THINGS:
    return _skipped(job, file_name, f'{num_things} thing segments, more than '
                    f'{MAX_THINGS}', parsed.problems)

  image = {'id': job.image_id, 'file_name': file_name, 'height': height,
           'width': width}
  png_name = os.path.splitext(file_name)[0] + '.png'
  Image.fromarray(panoptic_png.encode_segment_ids(parsed.segment_ids)).save(
      os.path.join(job.png_dir, png_name))
  ids = np.asfortranarray(parsed.segment_ids)
  segments_info, instances, mg_instances = [], [], []
  for segment in parsed.segments:
    mask = (ids == segment.segment_id).view(np.uint8)
    fields = coco_utils.rle_fields(mask_lib.encode(mask))
    segments_info.append({
        'id': segment.segment_id, 'category_id': segment.category_id,
        'area': fields['area'], 'bbox': fields['bbox'],
        'iscrowd': int(segment.iscrowd),
        'bdd100k_ids': list(segment.bdd100k_ids)})
    if not _ISTHING[segment.category_id]:
      continue
    instances.append({
        'image_id': job.image_id, 'category_id': segment.category_id,
        **fields, 'iscrowd': int(segment.iscrowd),
        'ignore': int(segment.ignore),
        'bdd100k_id': segment.bdd100k_ids[0],
        'panoptic_id': segment.segment_id})
    # MG encodes masks from uncompressed RLE only, merging a list of parts
    # for ordinary annotations (as coco_tfrecord does).
    rle = coco_utils.uncompressed_rle(mask)
    mg_instances.append(dict(
        instances[-1], segmentation=rle if segment.iscrowd else [rle]))
  panoptic = {'image_id': job.image_id, 'file_name': png_name,
              'segments_info': segments_info}
  with coco_panoptic.model_garden_panoptic(
      stuff_offset=_SEMANTIC_STUFF_OFFSET):
    example, _ = create_coco_tf_record.create_tf_example(
        image, [job.image_dir], panoptic_masks_dir=job.png_dir,
        bbox_annotations=mg_instances, id_to_name_map=ID_TO_NAME,
        panoptic_annotation=panoptic, is_category_thing=_ISTHING,
        include_panoptic_masks=True, include_masks=True)
  extension = os.path.splitext(file_name)[1].lower()
  example.features.feature['image/format'].bytes_list.value[:] = [
      _FORMATS.get(extension, b'jpeg')]
  return _Result(image, panoptic, instances,
                 example.SerializeToString(deterministic=True),
                 parsed.void_stuff, parsed.problems)


class SplitResult(NamedTuple):
  """What `write_split` wrote and skipped."""
  paths: Dict[str, Any]  # 'panoptic_json', 'instances_json', 'png_dir',
  # 'tfrecords'.
  panoptic: Dict[str, Any]  # The panoptic JSON.
  instances: Dict[str, Any]  # The instances JSON.
  problems: List[Problem]
  void_stuff: int


def split_paths(output_dir: str, split: str,
                num_shards: int) -> Dict[str, Any]:
  """The files of a converted split."""
  return {
      'panoptic_json': os.path.join(output_dir, f'panoptic_{split}.json'),
      'instances_json': os.path.join(output_dir, f'{split}.json'),
      'png_dir': os.path.join(output_dir, f'panoptic_{split}'),
      'tfrecords': coco_tfrecord.shard_paths(
          os.path.join(output_dir, split), num_shards),
  }


def write_split(bitmask_dir: str, image_dir: str, output_dir: str,
                split: str, num_shards: int = 1, image_ext: str = '.jpg',
                ignore_as: str = 'crowd', num_processes: int = 0,
                progress: ProgressFn = None,
                strict: bool = False) -> SplitResult:
  """Converts a folder of BDD100K pan_seg bitmasks (see the module doc).

  Each `<stem>.png` of `bitmask_dir` is the image `<stem><ext>` of
  `image_dir`, for the first extension of `image_ext` that exists; image
  ids are 1.. in sorted PNG name order (a skipped image keeps its id
  unused). Nothing appears under `output_dir` until the whole split is
  written.

  Args:
    bitmask_dir: folder of RGBA bitmask PNGs.
    image_dir: folder of the images.
    output_dir: destination (created if missing).
    split: split name, e.g. 'val'.
    num_shards: TFRecord shards.
    image_ext: extension of the images, e.g. '.jpg', or several tried in
      order, e.g. '.jpg,.png'.
    ignore_as: 'crowd' or 'void': what a thing with ignore becomes.
    num_processes: worker processes; 0 converts in this one.
    progress: called after each image with (images done, total).
    strict: raise, writing nothing, if there is any problem.

  Returns:
    The SplitResult.

  Raises:
    ValueError: no PNG in `bitmask_dir`, bad arguments, or `strict` and
      problems (the message lists them).
  """
  if num_shards < 1:
    raise ValueError(f'num_shards must be >= 1, got {num_shards}.')
  if not image_ext.strip(', '):
    raise ValueError('image_ext is empty.')
  if ignore_as not in IGNORE_AS:
    raise ValueError(f'ignore_as must be one of {IGNORE_AS}.')
  names = sorted(n for n in os.listdir(bitmask_dir)
                 if n.lower().endswith('.png'))
  if not names:
    raise ValueError(f'No PNG bitmasks in {bitmask_dir}.')
  paths = split_paths(output_dir, split, num_shards)
  os.makedirs(output_dir, exist_ok=True)
  panoptic = {'info': {'description': 'BDD100K panoptic segmentation'},
              'licenses': [], 'images': [], 'annotations': [],
              'categories': panoptic_categories()}
  instances = {'info': {'description': 'BDD100K panoptic segmentation: '
                                       'thing segments'},
               'licenses': [], 'images': [], 'annotations': [],
               'categories': thing_categories()}
  problems, void_stuff = [], 0
  with contextlib.ExitStack() as stack:
    # Renamed into place in the reverse order: shards, PNGs, instances, and
    # the panoptic JSON last.
    panoptic_tmp = stack.enter_context(
        atomic_io.atomic_path(paths['panoptic_json']))
    instances_tmp = stack.enter_context(
        atomic_io.atomic_path(paths['instances_json']))
    png_tmp = stack.enter_context(
        atomic_io.atomic_directory(paths['png_dir']))
    shard_tmps = [stack.enter_context(atomic_io.atomic_path(p))
                  for p in paths['tfrecords']]
    extensions = [e.strip() for e in image_ext.split(',') if e.strip()]
    jobs = [_Job(os.path.join(bitmask_dir, name), image_dir,
                 tuple(os.path.splitext(name)[0] + e for e in extensions),
                 index + 1, png_tmp, ignore_as)
            for index, name in enumerate(names)]
    writers, pool = [], None
    try:
      writers.extend(tf.io.TFRecordWriter(p) for p in shard_tmps)
      if num_processes > 0:
        pool = multiprocessing.Pool(num_processes)
      results = (pool.imap(_convert_image, jobs, chunksize=4) if pool
                 else map(_convert_image, jobs))
      written = 0
      for done, result in enumerate(results, start=1):
        problems.extend(result.problems)
        void_stuff += result.void_stuff
        if result.image is not None:
          writers[written % num_shards].write(result.example)
          written += 1
          panoptic['images'].append(result.image)
          panoptic['annotations'].append(result.panoptic)
          instances['images'].append(result.image)
          for ann in result.instances:
            instances['annotations'].append(
                {'id': len(instances['annotations']) + 1, **ann})
        if progress:
          progress(done, len(jobs))
    finally:
      if pool:
        pool.terminate()
      for writer in writers:
        writer.close()
    if strict and problems:
      raise ValueError(
          f'strict: {len(problems)} problem(s), nothing written: ' +
          '; '.join(str(p) for p in problems[:_MAX_PROBLEMS_PRINTED]))
    with open(instances_tmp, 'w') as f:
      json.dump(instances, f)
    with open(panoptic_tmp, 'w') as f:
      json.dump(panoptic, f)
  return SplitResult(paths, panoptic, instances, problems, void_stuff)


def summarize(result: SplitResult, num_pngs: Optional[int] = None
             ) -> Dict[str, Any]:
  """Counts of a converted split.

  Returns:
    {'images', 'skipped_images', 'things', 'crowd' (iscrowd and not
    ignore), 'ignored', 'stuff_segments', 'void_stuff', 'problems',
    'problems_by_reason' (reason's first words -> count)}.
  """
  things = result.instances['annotations']
  stuff = sum(1 for ann in result.panoptic['annotations']
              for s in ann['segments_info'] if not _ISTHING[s['category_id']])
  reasons = collections.Counter(p.reason.split(':')[0]
                                for p in result.problems)
  images = len(result.panoptic['images'])
  return {
      'images': images,
      'skipped_images': (num_pngs - images) if num_pngs is not None else None,
      'things': len(things),
      'crowd': sum(1 for a in things if a['iscrowd'] and not a['ignore']),
      'ignored': sum(1 for a in things if a['ignore']),
      'stuff_segments': stuff,
      'void_stuff': result.void_stuff,
      'problems': len(result.problems),
      'problems_by_reason': dict(reasons),
  }


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m data.bdd100k_panoptic',
      description='BDD100K pan_seg bitmasks -> COCO panoptic PNGs and JSON, '
      'instances JSON and Model Garden TFRecords with panoptic masks.')
  parser.add_argument('--bitmask_dir', required=True,
                      help='e.g. bdd100k/labels/pan_seg/bitmasks/val')
  parser.add_argument('--image_dir', required=True,
                      help='e.g. bdd100k/images/10k/val')
  parser.add_argument('--output_dir', required=True)
  parser.add_argument('--split', required=True,
                      help='writes panoptic_SPLIT.json, panoptic_SPLIT/, '
                      'SPLIT.json, SPLIT-*.tfrecord')
  parser.add_argument('--num_shards', type=int, default=1)
  parser.add_argument('--image_ext', default='.jpg',
                      help="the images' extension, or several tried in "
                      "order: '.jpg,.png'")
  parser.add_argument('--ignore_as', choices=IGNORE_AS, default='crowd',
                      help='what a thing with the ignore attribute becomes')
  parser.add_argument('--num_processes', type=int, default=0,
                      help='worker processes (0: this one)')
  parser.add_argument('--strict', action='store_true',
                      help='write nothing if there is any problem')
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The command; returns the exit status."""
  args = _parser().parse_args(argv)
  if args.num_shards < 1:
    print('error: --num_shards must be >= 1', file=sys.stderr)
    return 2
  start = time.time()
  print(f'bdd100k pan_seg {args.split}: converting {args.bitmask_dir}',
        flush=True)
  try:
    result = write_split(
        args.bitmask_dir, args.image_dir, args.output_dir, args.split,
        args.num_shards, args.image_ext, args.ignore_as, args.num_processes,
        progress=coco_tfrecord.Progress(), strict=args.strict)
  except (ValueError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  for problem in result.problems[:_MAX_PROBLEMS_PRINTED]:
    print(f'problem: {problem}')
  if len(result.problems) > _MAX_PROBLEMS_PRINTED:
    print(f'problem: ... and '
          f'{len(result.problems) - _MAX_PROBLEMS_PRINTED} more')
  num_pngs = sum(1 for n in os.listdir(args.bitmask_dir)
                 if n.lower().endswith('.png'))
  s = summarize(result, num_pngs)
  reasons = ', '.join(f'{k} {v}' for k, v in
                      sorted(s['problems_by_reason'].items()))
  print(f'bdd100k pan_seg {args.split} -> {args.output_dir}: {s["images"]} '
        f'images ({s["skipped_images"]} skipped), {s["things"]} thing '
        f'segments ({s["crowd"]} crowd, {s["ignored"]} ignored), '
        f'{s["stuff_segments"]} stuff segments ({s["void_stuff"]} crowd/'
        f'ignore stuff made void), {s["problems"]} problem(s)'
        + (f' ({reasons})' if reasons else '') +
        f', {args.num_shards} shard(s) ({time.time() - start:.1f}s)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
