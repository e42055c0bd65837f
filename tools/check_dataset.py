r"""Checks a COCO-format instance-segmentation dataset before a training run.

  python tools/check_dataset.py --annotation_file=DATA/train.json \
      [--image_dir=IMAGES] [--check_images] [--tfrecords='DATA/train-*'] \
      [--max_problems=50]

Reads a COCO annotation file (COCO 2017, or any COCO-format JSON; masks as
polygons, uncompressed RLE or compressed RLE; `iscrowd` and `ignore` flags)
and prints:

  * a per-class table: instances (not crowd, not ignored), crowd/ignored
    annotations, images with at least one instance, and the instances'
    small / medium / large counts by COCO's area ranges (area < 32^2,
    < 96^2, else; the annotation's `area` as COCO evaluation uses it);
  * totals: images, annotations, images without any annotation, categories
    without instances, segmentation encodings;
  * every problem found, one line each, naming the file and the annotation /
    image / category (see `KINDS`). Annotations that Model Garden's
    `create_coco_tf_record.py` silently drops are their own kind
    (`converter_skip`), in addition to any bbox problem that causes it;
  * warnings, one line each, for the annotations Model Garden's
    `create_coco_tf_record.py --include_masks` cannot convert though
    `python -m data.coco_tfrecord` does (compressed RLE, uncompressed RLE
    outside crowds, polygons on crowds, no `iscrowd`: see
    `tools/model_garden_converter.py`);
  * with --image_dir, image files that are missing; with --check_images also
    files PIL cannot decode or whose size differs from the JSON (opens every
    image);
  * with --tfrecords (globs, comma-separated), the number of examples against
    the number of images, and the first 20 records decoded by Model Garden's
    `TfExampleDecoder(include_mask=True)`. TensorFlow is only imported then.

Exit status: 0 without problems (warnings do not count), 1 with problems (at
most --max_problems lines per kind are printed, then a count of the rest), 2
when the annotation file (or --image_dir) cannot be read at all, or for a
usage error.

The checks are a library: `check_annotations` returns a `Report`,
`check_tfrecords` a `TfRecordStats`, `format_report` renders a report.
The checks of one segmentation or bbox are `data/coco_checks.py`'s, which
the converter's validation runs too: pycocotools rasterises and measures
the masks; an RLE's counts are checked first, as pycocotools trusts them.
"""

import collections
import concurrent.futures
import dataclasses
import json
import os
import re
import sys
from typing import (Any, Callable, Dict, List, Mapping, Optional, Sequence,
                    TextIO, Tuple)

from absl import app
from absl import flags

from PIL import Image

from data import coco_checks
from tools import model_garden_converter

# COCO evaluation's area ranges.
SMALL_AREA = 32**2
MEDIUM_AREA = 96**2
# The tolerance for a bbox beyond the image border, in pixels.
BBOX_TOLERANCE = 1.0
# Below this IoU between the mask's own box and the bbox, they disagree.
MIN_MASK_BBOX_IOU = 0.5
TFRECORD_SAMPLE = 20
PROGRESS_EVERY = 1000
_EXAMPLES = 5

# Problem kinds, in the order they are printed, with what they mean.
KINDS = collections.OrderedDict([
    ('invalid_category', 'category entry without a valid id or name'),
    ('duplicate_category_id', 'category id used by an earlier category'),
    ('invalid_image', 'image entry without a valid id, file_name, height or '
     'width'),
    ('duplicate_image_id', 'image id used by an earlier image'),
    ('invalid_annotation', 'annotation that is not an object, or lacks id '
     'or area (both converters need area)'),
    ('duplicate_annotation_id', 'annotation id used by an earlier annotation'),
    ('unknown_image_id', 'annotation whose image_id is not in images'),
    ('unknown_category_id', 'annotation whose category_id is not in '
     'categories'),
    ('invalid_bbox', 'bbox that is not 4 finite numbers'),
    ('empty_bbox', 'bbox with width or height <= 0'),
    ('bbox_outside_image', f'bbox beyond the image by more than '
     f'{BBOX_TOLERANCE:g} px'),
    ('converter_skip', 'annotation create_coco_tf_record.py silently drops '
     '(w <= 0, h <= 0, x + w > width or y + h > height): it will not be in '
     'the TFRecords'),
    ('missing_segmentation', 'segmentation missing, empty or of no COCO '
     'kind'),
    ('invalid_polygon', 'polygon that is not a list of an even number (>= 6) '
     'of finite coordinates'),
    ('invalid_rle', 'RLE with a bad size or counts'),
    ('rle_size_mismatch', 'RLE size different from the image\'s height and '
     'width'),
    ('empty_mask', 'mask with no pixels'),
    ('mask_bbox_mismatch', f'mask\'s own box and bbox with IoU < '
     f'{MIN_MASK_BBOX_IOU:g}'),
    ('missing_image_file', 'image file not in --image_dir'),
    ('unreadable_image', 'image file PIL cannot decode'),
    ('image_size_mismatch', 'image file of another size than the JSON says'),
    ('tfrecord_missing', 'TFRecord glob that matches no file'),
    ('tfrecord_unreadable', 'TFRecord file that is corrupt or truncated, or a '
     'record that does not decode'),
    ('tfrecord_count_mismatch', 'number of TFRecord examples different from '
     'the number of images'),
    ('tfrecord_mismatch', 'sampled record that disagrees with itself or the '
     'JSON'),
])


_is_id = coco_checks.is_id
_is_number = coco_checks.is_number
_positive_int = coco_checks.positive_int
_fmt = coco_checks.fmt
_WARNING_KINDS = model_garden_converter.KINDS


class AnnotationFileError(Exception):
  """The annotation file cannot be read or is not a COCO dataset at all."""


@dataclasses.dataclass(frozen=True)
class Problem:
  """One problem: its kind (a key of `KINDS`), the ids it concerns and a line.

  `message` is the full line, starting with the file it is about.
  """
  kind: str
  message: str
  image_id: Any = None
  annotation_id: Any = None
  category_id: Any = None
  file_name: Optional[str] = None


@dataclasses.dataclass
class ClassStats:
  """Counts of one category."""
  category_id: Any
  name: str
  instances: int = 0
  crowd: int = 0  # Crowd or ignored annotations.
  images: int = 0  # Images with at least one instance.
  small: int = 0
  medium: int = 0
  large: int = 0


@dataclasses.dataclass
class TfRecordStats:
  """What `check_tfrecords` found."""
  patterns: str
  files: List[str]
  num_examples: int
  num_sampled: int
  num_decoded: int
  problems: List[Problem]


@dataclasses.dataclass
class Report:
  """What `check_annotations` found in one annotation file."""
  source: str
  num_images: int
  num_annotations: int
  classes: List[ClassStats]
  empty_images: int
  empty_image_examples: List[str]
  segmentation_kinds: Dict[str, int]
  problems: List[Problem]
  images_with_instances: int = 0
  image_dir: Optional[str] = None
  images_checked: bool = False
  tfrecords: Optional[TfRecordStats] = None
  # What Model Garden's create_coco_tf_record.py cannot convert (kinds of
  # model_garden_converter.KINDS); no problem for python -m data.coco_tfrecord.
  warnings: List[Problem] = dataclasses.field(default_factory=list)

  @property
  def unused_categories(self) -> List[ClassStats]:
    """Categories without instances (crowd ones do not count)."""
    return [c for c in self.classes if not c.instances]

  def problems_of(self, kind: str) -> List[Problem]:
    return [p for p in self.problems if p.kind == kind]

  def problem_counts(self) -> Dict[str, int]:
    return dict(collections.Counter(p.kind for p in self.problems))


@dataclasses.dataclass
class _Image:
  id: Any
  file_name: Optional[str]
  height: Optional[int]
  width: Optional[int]
  num_annotations: int = 0


def _fmt_box(box: Sequence[float]) -> str:
  return '[' + ', '.join(f'{v:g}' for v in box) + ']'


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
  """IoU of two [x, y, w, h] boxes."""
  w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
  h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
  inter = max(w, 0.0) * max(h, 0.0)
  union = a[2] * a[3] + b[2] * b[3] - inter
  return inter / union if union > 0 else 0.0


class _Checker:
  """Accumulates problems and counts over one COCO dict."""

  def __init__(self, source: str):
    self.source = source
    self.name = os.path.basename(source.rstrip('/')) or source
    self.problems: List[Problem] = []
    self.warnings: List[Problem] = []  # model_garden_converter's.
    self.images_with_instances = 0

  def add(self, kind: str, where: str, detail: str, **ids):
    self.problems.append(Problem(kind, f'{self.name}: {where}: {detail}',
                                 **ids))

  def categories(self, entries: list) -> Dict[Any, ClassStats]:
    stats = {}
    for i, cat in enumerate(entries):
      cid = cat.get('id') if isinstance(cat, dict) else None
      if not _is_id(cid):
        self.add('invalid_category', f'categories[{i}]',
                 f'no valid id in {_fmt(cat)}')
        continue
      name = cat.get('name')
      where = f'category {_fmt(cid)} {_fmt(name)}'
      if cid in stats:
        self.add('duplicate_category_id', where, f'duplicate category id '
                 f'(first used by {_fmt(stats[cid].name)})', category_id=cid)
        continue
      if not isinstance(name, str) or not name:
        self.add('invalid_category', where, 'has no name', category_id=cid)
        name = ''
      stats[cid] = ClassStats(cid, name)
    return stats

  def images(self, entries: list) -> Dict[Any, _Image]:
    images = {}
    for i, image in enumerate(entries):
      iid = image.get('id') if isinstance(image, dict) else None
      if not _is_id(iid):
        self.add('invalid_image', f'images[{i}]',
                 f'no valid id in {_fmt(image)}')
        continue
      file_name = image.get('file_name')
      if not isinstance(file_name, str) or not file_name:
        file_name = None
      where = f'image {_fmt(iid)}' + (f" '{file_name}'" if file_name else '')
      ids = dict(image_id=iid, file_name=file_name)
      if iid in images:
        self.add('duplicate_image_id', where, f'duplicate image id (first '
                 f"used by '{images[iid].file_name}')", **ids)
        continue
      height = _positive_int(image.get('height'))
      width = _positive_int(image.get('width'))
      missing = [k for k in ('file_name', 'height', 'width') if k not in image]
      bad = [f'{k} {_fmt(image[k])}' for k, v in (
          ('file_name', file_name), ('height', height), ('width', width))
             if k in image and v is None]
      if missing or bad:
        detail = []
        if missing:
          detail.append('lacks ' + ', '.join(missing))
        if bad:
          detail.append('has invalid ' + ', '.join(bad))
        self.add('invalid_image', where, '; '.join(detail), **ids)
      if height is None or width is None:
        height = width = None
      images[iid] = _Image(iid, file_name, height, width)
    return images

  def annotations(self, entries: list, images: Mapping[Any, _Image],
                  classes: Mapping[Any, ClassStats]) -> Dict[str, int]:
    """Checks annotations, counting into `images` and `classes`."""
    seen = {}
    kinds = collections.Counter()
    class_images = collections.defaultdict(set)
    for i, ann in enumerate(entries):
      if not isinstance(ann, dict):
        self.add('invalid_annotation', f'annotations[{i}]',
                 f'is not an object: {_fmt(ann)}')
        continue
      aid = ann.get('id')
      aid = aid if _is_id(aid) else None
      iid = ann.get('image_id')
      image = images.get(iid) if _is_id(iid) else None
      cid = ann.get('category_id')
      stats = classes.get(cid) if _is_id(cid) else None
      problems = []  # (kind, detail).

      missing = [k for k in ('id', 'area') if k not in ann]
      if aid is None and 'id' in ann:
        missing.append(f'a valid id (has {_fmt(ann["id"])})')
      if missing:
        problems.append(('invalid_annotation', 'lacks ' + ', '.join(missing)))
      if aid is not None:
        if aid in seen:
          problems.append(('duplicate_annotation_id', f'duplicate annotation '
                           f'id (first used at annotations[{seen[aid]}])'))
        else:
          seen[aid] = i
      if image is None:
        problems.append(('unknown_image_id', f'image_id {_fmt(iid)} is not '
                         'in images' if 'image_id' in ann else
                         'has no image_id'))
      if stats is None:
        problems.append(('unknown_category_id', f'category_id {_fmt(cid)} '
                         'is not in categories' if 'category_id' in ann else
                         'has no category_id'))

      height = image.height if image else None
      width = image.width if image else None
      bbox_problems, bbox = coco_checks.check_bbox(
          ann.get('bbox'), height, width, BBOX_TOLERANCE)
      problems += bbox_problems
      segmentation = ann.get('segmentation')
      kinds[coco_checks.segmentation_kind(segmentation)] += 1
      seg_problems, mask_area, mask_box = coco_checks.check_segmentation(
          segmentation, height, width)
      problems += seg_problems
      if mask_area == 0:
        problems.append(('empty_mask', 'mask has no pixels'))
      if mask_area and mask_box and bbox and min(bbox[2:]) > 0:
        iou = _iou(mask_box, bbox)
        if iou < MIN_MASK_BBOX_IOU:
          problems.append(('mask_bbox_mismatch', f'mask\'s own box '
                           f'{_fmt_box(mask_box)} and bbox {_fmt(ann["bbox"])}'
                           f' have IoU {iou:.2f}'))
      where = f'annotation {_fmt(aid)}' if aid is not None else (
          f'annotations[{i}]')
      if image is not None:
        where += f' (image {_fmt(iid)}' + (
            f" '{image.file_name}')" if image.file_name else ')')
      for kind, detail in model_garden_converter.annotation_warnings(
          ann, not seg_problems):
        self.warnings.append(Problem(
            kind, f'{self.name}: {where}: {detail}', annotation_id=aid,
            image_id=iid, file_name=image.file_name if image else None))
      if problems:
        for kind, detail in problems:
          self.add(kind, where, detail, annotation_id=aid, image_id=iid,
                   file_name=image.file_name if image else None,
                   category_id=cid if kind == 'unknown_category_id' else None)

      if image is None or stats is None:
        continue
      image.num_annotations += 1
      if ann.get('iscrowd') or ann.get('ignore'):
        stats.crowd += 1
        continue
      stats.instances += 1
      class_images[cid].add(iid)
      area = ann.get('area')
      if not _is_number(area) or area < 0:
        area = mask_area if mask_area is not None else (
            bbox[2] * bbox[3] if bbox else None)
      if area is None:
        continue
      if area < SMALL_AREA:
        stats.small += 1
      elif area < MEDIUM_AREA:
        stats.medium += 1
      else:
        stats.large += 1
    for cid, image_ids in class_images.items():
      classes[cid].images = len(image_ids)
    self.images_with_instances = len(set().union(*class_images.values()))
    return dict(kinds)

  def image_files(self, images: Sequence[_Image], image_dir: str,
                  check_images: bool,
                  progress: Optional[Callable[[int, int], None]]):
    """Missing files; with `check_images`, undecodable or resized ones."""
    present = []
    for image in images:
      if image.file_name is None:
        continue
      path = os.path.join(image_dir, image.file_name)
      if _file_exists(path):
        present.append((image, path))
      else:
        self.add('missing_image_file', f"image {_fmt(image.id)} "
                 f"'{image.file_name}'", f'no file {path}',
                 image_id=image.id, file_name=image.file_name)
    if not check_images:
      return
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
      results = pool.map(_image_size, [path for _, path in present])
      for done, ((image, path), (size, error)) in enumerate(
          zip(present, results), 1):
        where = f"image {_fmt(image.id)} '{image.file_name}'"
        ids = dict(image_id=image.id, file_name=image.file_name)
        if error:
          self.add('unreadable_image', where, f'{path}: {error}', **ids)
        elif image.width is not None and size != (image.width, image.height):
          self.add('image_size_mismatch', where, f'{path} is {size[0]}x'
                   f'{size[1]} (width x height), the JSON says {image.width}x'
                   f'{image.height}', **ids)
        if progress and (done % PROGRESS_EVERY == 0 or done == len(present)):
          progress(done, len(present))


def _is_remote(path: str) -> bool:
  return '://' in path


def _file_exists(path: str) -> bool:
  if _is_remote(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.io.gfile.exists(path)
  return os.path.isfile(path)


def _image_size(path: str) -> Tuple[Optional[Tuple[int, int]], Optional[str]]:
  """((width, height), None) of a fully decoded image, or (None, error)."""
  try:
    if _is_remote(path):
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      with tf.io.gfile.GFile(path, 'rb') as f, Image.open(f) as image:
        image.load()
        return image.size, None
    with Image.open(path) as image:
      image.load()
      return image.size, None
  except Exception as e:  # pylint: disable=broad-except
    return None, f'{type(e).__name__}: {e}'


def load_annotations(path: str) -> Dict[str, Any]:
  """The parsed JSON of `path`; AnnotationFileError naming it if it fails."""
  try:
    if _is_remote(path):
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      with tf.io.gfile.GFile(path, 'rb') as f:
        return json.loads(f.read())
    with open(path, 'rb') as f:
      return json.load(f)
  except OSError as e:
    raise AnnotationFileError(
        f'{path}: cannot be read: {e.strerror or e}') from e
  except ValueError as e:  # JSONDecodeError, UnicodeDecodeError.
    raise AnnotationFileError(f'{path}: not valid JSON: {e}') from e
  except Exception as e:  # pylint: disable=broad-except
    # tf.errors.OpError for remote files.
    raise AnnotationFileError(f'{path}: cannot be read: {e}') from e


def check_annotations(
    coco_dict: Mapping[str, Any], source_name: str,
    image_dir: Optional[str] = None, check_images: bool = False,
    progress: Optional[Callable[[int, int], None]] = None) -> Report:
  """Checks a COCO instances dict; see the module docstring.

  Args:
    coco_dict: the parsed annotation file.
    source_name: the file's path; problem lines start with its base name.
    image_dir: when given, every image's file_name must exist under it.
    check_images: with `image_dir`, decode every image with PIL and compare
      its size with the JSON's.
    progress: called as progress(done, total) every `PROGRESS_EVERY`
      decoded images and at the end.

  Returns:
    A `Report`.

  Raises:
    AnnotationFileError: when `coco_dict` is not a dict with `images`,
      `annotations` and `categories` lists.
  """
  if not isinstance(coco_dict, Mapping):
    raise AnnotationFileError(f'{source_name}: holds a '
                              f'{type(coco_dict).__name__}, not a COCO '
                              'object')
  keys = ('images', 'annotations', 'categories')
  missing = [k for k in keys if k not in coco_dict]
  if missing:
    raise AnnotationFileError(f'{source_name}: missing '
                              f'{", ".join(repr(k) for k in missing)}')
  for key in keys:
    if not isinstance(coco_dict[key], list):
      raise AnnotationFileError(f'{source_name}: {key!r} is a '
                                f'{type(coco_dict[key]).__name__}, not a '
                                'list')
  checker = _Checker(source_name)
  classes = checker.categories(coco_dict['categories'])
  images = checker.images(coco_dict['images'])
  kinds = checker.annotations(coco_dict['annotations'], images, classes)
  if image_dir is not None:
    checker.image_files(list(images.values()), image_dir, check_images,
                        progress)
  empty = [image for image in images.values() if not image.num_annotations]
  return Report(
      source=source_name,
      num_images=len(coco_dict['images']),
      num_annotations=len(coco_dict['annotations']),
      classes=list(classes.values()),
      empty_images=len(empty),
      empty_image_examples=[str(image.file_name or image.id)
                            for image in empty[:_EXAMPLES]],
      segmentation_kinds=kinds,
      problems=checker.problems,
      warnings=checker.warnings,
      images_with_instances=checker.images_with_instances,
      image_dir=image_dir,
      images_checked=bool(image_dir is not None and check_images))


def check_tfrecords(patterns: str, num_images: Optional[int] = None,
                    image_ids: Optional[Sequence[Any]] = None,
                    source_name: str = 'the JSON',
                    sample_size: int = TFRECORD_SAMPLE) -> TfRecordStats:
  """Counts TFRecord examples and decodes the first `sample_size`.

  Args:
    patterns: globs, comma-separated.
    num_images: the number of images the examples should match.
    image_ids: the JSON's image ids; a sampled record's source_id must be
      one of them.
    source_name: the annotation file, for messages.
    sample_size: records decoded with Model Garden's TfExampleDecoder.

  Returns:
    A `TfRecordStats`.
  """
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  from official.vision.dataloaders import tf_example_decoder
  # pylint: enable=g-import-not-at-top
  problems = []
  files = []
  for pattern in (p.strip() for p in patterns.split(',')):
    if not pattern:
      continue
    matched = sorted(tf.io.gfile.glob(pattern))
    if not matched:
      problems.append(Problem('tfrecord_missing',
                              f'{pattern}: matches no file'))
    files += [path for path in matched if path not in files]

  count = 0
  sample = []
  for path in files:
    n = 0
    try:
      for record in tf.data.TFRecordDataset(path, buffer_size=1 << 22):
        if len(sample) < sample_size:
          sample.append((path, n, record))
        n += 1
    except tf.errors.OpError as e:
      problems.append(Problem('tfrecord_unreadable', f'{path}: unreadable '
                              f'after {n} records: {_tf_error(e)}'))
    count += n

  decoder = tf_example_decoder.TfExampleDecoder(include_mask=True)
  known_ids = None if image_ids is None else {str(i) for i in image_ids}
  decoded = 0
  for path, index, record in sample:
    where = f'{path}: record {index}'
    try:
      example = decoder.decode(record)
      shape = example['image'].shape
      masks = example['groundtruth_instance_masks'].shape
      boxes = example['groundtruth_boxes'].shape
      source_id = example['source_id'].numpy().decode('utf-8', 'replace')
      height, width = int(example['height']), int(example['width'])
    except Exception as e:  # pylint: disable=broad-except
      problems.append(Problem('tfrecord_unreadable', f'{where} does not '
                              f'decode: {_tf_error(e)}'))
      continue
    decoded += 1
    if (height, width) != tuple(shape[:2]):
      problems.append(Problem('tfrecord_mismatch', f'{where}: image is '
                              f'{shape[1]}x{shape[0]}, image/height and '
                              f'width say {width}x{height}'))
    if masks[0] != boxes[0]:
      problems.append(Problem('tfrecord_mismatch', f'{where}: {masks[0]} '
                              f'masks for {boxes[0]} boxes'))
    if known_ids is not None and source_id not in known_ids:
      problems.append(Problem('tfrecord_mismatch', f'{where}: source_id '
                              f'{source_id!r} is not an image id of '
                              f'{source_name}'))
  if num_images is not None and files and count != num_images:
    problems.append(Problem('tfrecord_count_mismatch', f'{patterns}: '
                            f'{count} examples, {source_name} has '
                            f'{num_images} images'))
  return TfRecordStats(patterns, files, count, len(sample), decoded, problems)


def _tf_error(error: Exception) -> str:
  """The first line of a TensorFlow error, without its op wrapping."""
  message = getattr(error, 'message', None) or str(error) or (
      type(error).__name__)
  message = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', message)
  message = re.sub(r'\s*\[Op:[^\]]*\].*', '', message.splitlines()[0])
  return message.strip()


def _table(rows: List[List[str]], right: Sequence[bool]) -> List[str]:
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  return ['  '.join(cell.rjust(w) if r else cell.ljust(w)
                    for cell, w, r in zip(row, widths, right)).rstrip()
          for row in rows]


def format_report(report: Report, max_problems: int = 50) -> str:
  """The report as text: table, totals, TFRecords and problems."""
  lines = [f'Annotation file: {report.source}']
  header = ['id', 'name', 'instances', 'crowd/ignored', 'images', 'small',
            'medium', 'large']
  rows = [header]
  for c in report.classes:
    rows.append([str(c.category_id), c.name] + [str(v) for v in (
        c.instances, c.crowd, c.images, c.small, c.medium, c.large)])
  total = lambda attr: str(sum(getattr(c, attr) for c in report.classes))
  rows.append(['', 'total', total('instances'), total('crowd'),
               str(report.images_with_instances), total('small'),
               total('medium'), total('large')])
  lines += [''] + _table(rows, [True, False] + [True] * 6) + ['']
  lines.append(f'(images: those with an instance of the class, or of any in '
               f'the total; sizes by area < {SMALL_AREA}, < {MEDIUM_AREA}, '
               'else)')

  instances = sum(c.instances for c in report.classes)
  crowd = sum(c.crowd for c in report.classes)
  lines.append(f'Images: {report.num_images}')
  uncounted = report.num_annotations - instances - crowd
  lines.append(f'Annotations: {report.num_annotations} ({instances} '
               f'instances, {crowd} crowd/ignored'
               + (f', {uncounted} not counted: invalid or of an unknown image '
                  'or category)' if uncounted else ')'))
  if report.segmentation_kinds:
    lines.append('Segmentations: ' + ', '.join(
        f'{n} {kind}' for kind, n in sorted(report.segmentation_kinds.items())))
  empty = f'Images without annotations: {report.empty_images}'
  if report.empty_images:
    more = ', ...' if report.empty_images > len(
        report.empty_image_examples) else ''
    empty += ' (' + ', '.join(f"'{name}'" for name in
                              report.empty_image_examples) + more + ')'
  lines.append(empty)
  unused = report.unused_categories
  lines.append(f'Categories: {len(report.classes)}; without instances: '
               + (', '.join(f'{c.category_id} {c.name!r}' for c in unused)
                  if unused else 'none'))
  if report.image_dir is not None:
    lines.append(f'Image files under {report.image_dir}: '
                 + ('decoded and sized' if report.images_checked
                    else 'checked to exist'))
  if report.tfrecords is not None:
    t = report.tfrecords
    lines.append(f'TFRecords {t.patterns}: {t.num_examples} examples in '
                 f'{len(t.files)} files (JSON: {report.num_images} images); '
                 f'{t.num_decoded} of the first {t.num_sampled} decode')

  if report.warnings:
    lines += ['', f'Warnings: {_counts(report.warnings, _WARNING_KINDS)} '
              "for Model Garden's create_coco_tf_record.py --include_masks, "
              'which cannot convert these annotations; python -m '
              'data.coco_tfrecord can']
    lines += _listing(report.warnings, _WARNING_KINDS, max_problems)
  lines.append('')
  if not report.problems:
    lines.append('No problems found for python -m data.coco_tfrecord '
                 '(warnings above for create_coco_tf_record.py).'
                 if report.warnings else 'No problems found.')
    return '\n'.join(lines)
  lines.append(f'Problems: {_counts(report.problems, KINDS)}')
  lines += _listing(report.problems, KINDS, max_problems)
  return '\n'.join(lines)


def _counts(found: Sequence[Problem], kinds: Mapping[str, str]) -> str:
  """'N (kind n, ...)', the kinds in their order."""
  counts = collections.Counter(p.kind for p in found)
  return f'{len(found)} (' + ', '.join(
      f'{kind} {counts[kind]}' for kind in kinds if kind in counts) + ')'


def _listing(found: Sequence[Problem], kinds: Mapping[str, str],
             max_problems: int) -> List[str]:
  """For each kind found: its meaning, then at most `max_problems` lines."""
  lines = []
  for kind, meaning in kinds.items():
    of_kind = [p for p in found if p.kind == kind]
    if not of_kind:
      continue
    lines.append(f'-- {kind} ({len(of_kind)}): {meaning}')
    lines += [p.message for p in of_kind[:max_problems]]
    if len(of_kind) > max_problems:
      lines.append(f'   ... and {len(of_kind) - max_problems} more {kind}')
  return lines


def run(annotation_file: str, image_dir: Optional[str] = None,
        tfrecords: Optional[str] = None, check_images: bool = False,
        max_problems: int = 50, out: Optional[TextIO] = None,
        err: Optional[TextIO] = None) -> int:
  """Checks and prints; returns the exit status (0, 1 or 2)."""
  out = out or sys.stdout
  err = err or sys.stderr
  if image_dir is not None and not _is_remote(image_dir) and (
      not os.path.isdir(image_dir)):
    print(f'error: --image_dir {image_dir} is not a directory', file=err)
    return 2

  def progress(done, total):
    print(f'  decoded {done}/{total} images', file=err, flush=True)

  try:
    coco = load_annotations(annotation_file)
    report = check_annotations(coco, annotation_file, image_dir,
                               check_images, progress)
  except AnnotationFileError as e:
    print(f'error: {e}', file=err)
    return 2
  if tfrecords:
    report.tfrecords = check_tfrecords(
        tfrecords, report.num_images,
        [image['id'] for image in coco['images']
         if isinstance(image, dict) and _is_id(image.get('id'))],
        os.path.basename(annotation_file))
    report.problems.extend(report.tfrecords.problems)
  print(format_report(report, max_problems), file=out)
  return 1 if report.problems else 0


def define_flags():
  """Defines the command's flags.

  Only when run as a script: Model Garden's create_coco_tf_record.py (which
  data/coco_tfrecord.py imports) defines --image_dir at import time,
  so module-level flags would clash in a process that imports both.
  """
  flags.DEFINE_string('annotation_file', None,
                      'COCO-format instances JSON to check.')
  flags.DEFINE_string('image_dir', None, 'Directory of the images\' '
                      'file_names: reports missing files.')
  flags.DEFINE_bool('check_images', False, 'With --image_dir, decode every '
                    'image with PIL and compare its size with the JSON (slow: '
                    'opens every file).')
  flags.DEFINE_string('tfrecords', None, 'TFRecord glob(s), comma-separated: '
                      'counts examples and decodes the first '
                      f'{TFRECORD_SAMPLE}.')
  flags.DEFINE_integer('max_problems', 50, 'Problem lines printed per kind.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}', exitcode=2)
  args = flags.FLAGS
  if not args.annotation_file:
    raise app.UsageError('--annotation_file is required.', exitcode=2)
  if args.check_images and not args.image_dir:
    raise app.UsageError('--check_images needs --image_dir.', exitcode=2)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # No cuInit noise.
  return run(args.annotation_file, args.image_dir, args.tfrecords,
             args.check_images, args.max_problems)


if __name__ == '__main__':
  define_flags()
  app.run(main)
