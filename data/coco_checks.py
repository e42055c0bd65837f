"""Checks of COCO annotations, shared by the converter and the dataset check.

`check_segmentation` and `check_bbox` return (kind, detail) pairs, the kinds
being `tools/check_dataset.py`'s problem kinds. `validate` runs them over a
whole COCO dict for `coco_tfrecord.write_tfrecords`, which writes nothing
unless every image and annotation passes.

Masks are rasterised and measured by pycocotools (`coco_utils`). A
compressed RLE's counts string is read here first (`compressed_rle_runs`):
pycocotools decodes a string whose runs cover fewer pixels than its size
without complaint, leaving the rest of the mask uninitialised memory, and
has no call that returns the runs.

Imports neither TensorFlow nor Model Garden (the dataset check runs without
them).
"""

import math
import os
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from data import coco_utils

# The kinds that stop the conversion (`validate`).
CONVERTER_ERRORS = frozenset([
    'invalid_bbox', 'empty_bbox', 'converter_skip', 'missing_segmentation',
    'invalid_polygon', 'invalid_rle', 'rle_size_mismatch'])
_MAX_LISTED = 10


def is_id(value: Any) -> bool:
  return isinstance(value, (int, str)) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def positive_int(value: Any) -> Optional[int]:
  """`value` as an int when it is a positive whole number, else None."""
  if is_number(value) and value > 0 and float(value).is_integer():
    return int(value)
  return None


def fmt(value: Any, limit: int = 80) -> str:
  """A JSON value much as the file writes it, cut to `limit` characters."""
  if isinstance(value, (list, tuple)):
    text = '[' + ', '.join(fmt(v, limit) for v in value[:limit]) + ']'
  else:
    text = repr(value)
  return text if len(text) <= limit else text[:limit - 3] + '...'


def segmentation_kind(segmentation: Any) -> str:
  """'polygons', 'uncompressed RLE', 'compressed RLE' or 'other'."""
  if isinstance(segmentation, list):
    return 'polygons'
  if isinstance(segmentation, dict):
    counts = segmentation.get('counts')
    if isinstance(counts, list):
      return 'uncompressed RLE'
    if isinstance(counts, (str, bytes)):
      return 'compressed RLE'
  return 'other'


def compressed_rle_runs(counts: Any) -> np.ndarray:
  """The run lengths of a compressed COCO RLE string, checked.

  The string holds one number per run, 5 bits per character (offset by 48),
  least significant first; bit 0x20 continues the number, bit 0x10 of the
  last character is its sign. From the fourth run on, a number is the
  difference to the run two before.

  Args:
    counts: the RLE's `counts` string (str or bytes).

  Returns:
    int64 run lengths.

  Raises:
    ValueError: for a character outside the code, a string that ends inside
      a number, or a negative run.
  """
  if isinstance(counts, str):
    counts = counts.encode('latin-1', errors='replace')
  codes = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
  if not codes.size:
    return np.zeros([0], np.int64)
  if codes.min() < 0 or codes.max() > 63:
    raise ValueError('holds characters outside the RLE code')
  last = (codes & 0x20) == 0
  if not last[-1]:
    raise ValueError('ends inside a number')
  ends = np.flatnonzero(last)
  starts = np.concatenate([[0], ends[:-1] + 1])
  group = np.repeat(np.arange(ends.size), ends - starts + 1)
  shift = 5 * (np.arange(codes.size) - starts[group])
  if shift.max() > 55:
    raise ValueError('holds a number too long for a run length')
  values = np.add.reduceat((codes & 0x1f) << shift, starts)
  negative = (codes[ends] & 0x10) != 0
  values[negative] -= np.left_shift(1, shift[ends[negative]] + 5)
  runs = values.copy()
  runs[3::2] = np.cumsum(values[1::2])[1:]
  runs[4::2] = np.cumsum(values[2::2])[1:]
  if runs.size and runs.min() < 0:
    raise ValueError('decodes to a negative run')
  return runs


def _check_polygons(segmentation: list, height: Optional[int],
                    width: Optional[int], measure: bool):
  """(findings, pixel area, vertex box) of a polygon segmentation."""
  if all(is_number(v) for v in segmentation):
    return [('invalid_polygon', f'segmentation is a flat list of '
             f'{len(segmentation)} numbers, not a list of polygons')
           ], None, None
  bad, good = [], []
  for j, polygon in enumerate(segmentation):
    try:
      coords = np.asarray(polygon, np.float64)
    except (TypeError, ValueError):
      coords = None
    if coords is None or coords.ndim != 1 or not np.isfinite(coords.sum()):
      bad.append(f'polygon {j} is not a list of finite numbers')
    elif coords.size < 6:
      bad.append(f'polygon {j} has {coords.size} coordinates, fewer than 6')
    elif coords.size % 2:
      bad.append(f'polygon {j} has an odd number of coordinates '
                 f'({coords.size})')
    else:
      good.append(coords)
  if bad:  # The rest is not the whole mask: no further checks.
    return [('invalid_polygon', '; '.join(bad))], None, None
  if height is None or width is None or not measure:
    return [], None, None
  area, _ = coco_utils.area_and_box(coco_utils.to_rle(good, height, width))
  points = (good[0] if len(good) == 1 else np.concatenate(good)).reshape(-1, 2)
  (x0, y0), (x1, y1) = points.min(0).tolist(), points.max(0).tolist()
  return [], area, [x0, y0, x1 - x0, y1 - y0]


def _rle_runs(counts: Any) -> Tuple[Optional[np.ndarray], Optional[str]]:
  """(run lengths, None) of an RLE's counts of either kind, or (None, why)."""
  if isinstance(counts, (str, bytes)):
    try:
      return compressed_rle_runs(counts), None
    except ValueError as e:
      return None, f'RLE counts string {e}'
  if not isinstance(counts, list):
    return None, (f'RLE counts is a {type(counts).__name__}, not a list or '
                  'a string')
  try:
    runs = np.asarray(counts)
  except ValueError:
    runs = np.zeros([0], object)
  integral = runs.dtype.kind in 'iu' or (
      runs.dtype.kind == 'f' and np.isfinite(runs).all()
      and (runs == np.round(runs)).all())
  if runs.ndim != 1 or not integral or (runs.size and runs.min() < 0):
    return None, 'RLE counts are not non-negative integers'
  return runs.astype(np.int64), None


def _check_rle(segmentation: dict, height: Optional[int],
               width: Optional[int], measure: bool):
  """(findings, pixel area, pixel box) of an RLE segmentation."""
  size = segmentation.get('size')
  if not (isinstance(size, (list, tuple)) and len(size) == 2
          and all(positive_int(v) for v in size)):
    return [('invalid_rle', f'RLE size {fmt(size)} is not [height, '
             f'width]')], None, None
  rle_height, rle_width = (int(v) for v in size)
  runs, error = _rle_runs(segmentation.get('counts'))
  if error:
    return [('invalid_rle', error)], None, None
  total = int(runs.sum())
  if total != rle_height * rle_width:
    return [('invalid_rle', f'RLE counts cover {total} pixels, its size '
             f'{rle_height}x{rle_width} has {rle_height * rle_width}')
           ], None, None
  findings = []
  if height is not None and width is not None and (
      [rle_height, rle_width] != [height, width]):
    findings.append(('rle_size_mismatch', f'RLE size [{rle_height}, '
                     f'{rle_width}] differs from the image\'s [height, '
                     f'width] [{height}, {width}]'))
  if not measure:
    return findings, None, None
  # The counts are whole: pycocotools may measure them.
  area, box = coco_utils.area_and_box(coco_utils.to_rle(
      segmentation, rle_height, rle_width))
  return findings, area, box


def check_segmentation(segmentation: Any, height: Optional[int] = None,
                       width: Optional[int] = None, measure: bool = True):
  """Checks one COCO segmentation of any kind.

  Args:
    segmentation: the annotation's `segmentation` (None when missing).
    height: the image height, or None when unknown (polygons are then not
      rasterised and an RLE's size is not compared).
    width: the image width, or None.
    measure: whether to compute the area and box (pycocotools rasterises
      polygons for the area); without, only the findings.

  Returns:
    (findings, area, box): a list of (kind, detail) pairs; the mask's pixel
    count and its own [x, y, w, h] box (the polygons' extent, or the RLE's
    pixel box), both None when they cannot be computed; box is None for an
    empty mask.
  """
  if segmentation is None:
    return [('missing_segmentation', 'has no segmentation')], None, None
  if isinstance(segmentation, (list, dict)) and not segmentation:
    return [('missing_segmentation', 'segmentation is empty')], None, None
  if isinstance(segmentation, list):
    return _check_polygons(segmentation, height, width, measure)
  if isinstance(segmentation, dict):
    return _check_rle(segmentation, height, width, measure)
  return [('missing_segmentation', f'segmentation is a '
           f'{type(segmentation).__name__}, not polygons or RLE')], None, None


def _beyond(box: Sequence[float], height: int, width: int) -> List[str]:
  """How an [x, y, w, h] box ends beyond the image's right or bottom edge."""
  x, y, w, h = box
  return ([f'x + w = {x + w:g} > width {width}'] if x + w > width else []) + (
      [f'y + h = {y + h:g} > height {height}'] if y + h > height else [])


def check_bbox(bbox: Any, height: Optional[int], width: Optional[int],
               tolerance: float = 1.0):
  """(findings, bbox as 4 floats or None) of an annotation's bbox.

  Args:
    bbox: the annotation's [x, y, w, h] (None when missing).
    height: the image height, or None when unknown.
    width: the image width, or None.
    tolerance: pixels a box may extend beyond the image before it is
      'bbox_outside_image' ('converter_skip' has none).
  """
  if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4
          and all(is_number(v) for v in bbox)):
    if bbox is None:
      return [('invalid_bbox', 'has no bbox')], None
    return [('invalid_bbox', f'bbox {fmt(bbox)} is not 4 finite '
             'numbers')], None
  x, y, w, h = (float(v) for v in bbox)
  findings = []
  if w > 0 and h > 0 and (height is None or (
      x >= 0 and y >= 0 and x + w <= width and y + h <= height)):
    return findings, (x, y, w, h)  # The common case, quickly.
  text = f'bbox {fmt(bbox)}'
  empty = [f'{"zero" if v == 0 else "negative"} {name}'
           for name, v in (('width', w), ('height', h)) if v <= 0]
  if empty:
    findings.append(('empty_bbox', f'{text} has {" and ".join(empty)}'))
  if height is None or width is None:
    return findings, (x, y, w, h)
  outside = []
  if x < -tolerance:
    outside.append(f'starts at x={x:g}')
  if y < -tolerance:
    outside.append(f'starts at y={y:g}')
  if x + w > width + tolerance:
    outside.append(f'ends at x={x + w:g}')
  if y + h > height + tolerance:
    outside.append(f'ends at y={y + h:g}')
  if outside:
    findings.append(('bbox_outside_image', f'{text} lies outside the '
                     f'{width}x{height} image: {", ".join(outside)}'))
  # Model Garden's coco_annotations_to_lists drops these (and keeps boxes
  # that start left of or above the image).
  skips = [f'{name} <= 0' for name, v in (('w', w), ('h', h)) if v <= 0]
  skips += _beyond((x, y, w, h), height, width)
  if skips:
    findings.append(('converter_skip', f'{text}: create_coco_tf_record.py '
                     f'drops it ({", ".join(skips)})'))
  return findings, (x, y, w, h)


def _is_local(path: str) -> bool:
  return '://' not in path


def _images(entries: Sequence[Any], image_dir: Optional[str],
            errors: List[str]) -> Mapping[int, Mapping[str, Any]]:
  """Images by id; appends what is wrong with them to `errors`."""
  images = {}
  for i, image in enumerate(entries):
    iid = image.get('id') if isinstance(image, dict) else None
    where = f'image {fmt(iid)} (images[{i}])'
    if not is_int(iid):
      errors.append(f'images[{i}]: id {fmt(iid)} is not an integer (the '
                    'model reads image ids as int64)')
      continue
    if iid in images:
      errors.append(f'{where}: duplicate image id')
      continue
    images[iid] = image
    file_name = image.get('file_name')
    bad = [f'{key} {fmt(image.get(key))}' for key in ('height', 'width')
           if positive_int(image.get(key)) is None]
    if not isinstance(file_name, str) or not file_name:
      bad.insert(0, f'file_name {fmt(file_name)}')
    if bad:
      errors.append(f'{where}: invalid {", ".join(bad)}')
    elif image_dir is not None and _is_local(image_dir) and not (
        os.path.isfile(os.path.join(image_dir, file_name))):
      errors.append(f"{where} '{file_name}': no file "
                    f'{os.path.join(image_dir, file_name)}')
  return images


def _annotation_errors(ann: Mapping[str, Any],
                       image: Optional[Mapping[str, Any]],
                       category_ids: Mapping[int, Any]) -> List[str]:
  """What stops the conversion of one annotation (a dict)."""
  errors = []
  if image is None:
    errors.append(f'image_id {fmt(ann.get("image_id"))} is not in images')
  cid = ann.get('category_id')
  if not is_int(cid) or cid not in category_ids:
    errors.append(f'category_id {fmt(cid)} is not in categories')
  if not is_number(ann.get('area')) or ann['area'] < 0:
    errors.append(f'area {fmt(ann.get("area"))} is not a number >= 0'
                  if 'area' in ann else 'has no area')
  if ann.get('iscrowd', 0) not in (0, 1):
    errors.append(f'iscrowd {fmt(ann["iscrowd"])} is not 0 or 1')
  height = positive_int(image.get('height')) if image else None
  width = positive_int(image.get('width')) if image else None
  if height is None or width is None:
    height = width = None
  findings, box = check_bbox(ann.get('bbox'), height, width)
  findings += check_segmentation(ann.get('segmentation'), height, width,
                                 measure=False)[0]
  for kind, detail in findings:
    if kind == 'converter_skip':
      if not box or min(box[2:]) <= 0:
        continue  # An empty_bbox finding says it.
      detail = (f'bbox {fmt(ann["bbox"])} ends outside the {width}x{height} '
                f'image ({", ".join(_beyond(box, height, width))})')
    if kind in CONVERTER_ERRORS:
      errors.append(detail)
  return errors


def _where(ann: Mapping[str, Any], index: int,
           image: Optional[Mapping[str, Any]]) -> str:
  """'annotation ID (annotations[INDEX], image ID 'FILE')'."""
  parts = [f'annotations[{index}]'] + (
      [f"image {image['id']} '{image.get('file_name')}'"] if image else [])
  if 'id' not in ann:
    return parts[0] + (f' ({parts[1]})' if image else '')
  return f'annotation {fmt(ann["id"])} ({", ".join(parts)})'


def validate(coco: Any, image_dir: Optional[str] = None,
             source: Optional[str] = None) -> None:
  """Raises ValueError unless `write_tfrecords` can convert all of `coco`.

  Category and image ids must be unique integers, images need a file_name
  (a file under a local `image_dir`) and a positive height and width; an
  annotation needs a known image_id and category_id, an `area`, a bbox with
  w, h > 0 inside the image (Model Garden's converter would drop it), and a
  segmentation: polygons of >= 6 coordinates, or an RLE of the image's size
  whose counts cover it. `iscrowd` may be missing (0).

  Args:
    coco: a parsed COCO JSON.
    image_dir: the images' directory; None: files are not looked for.
    source: the JSON's path, for the message.

  Raises:
    ValueError: naming each offending entry (an annotation by id and index)
      and tools/check_dataset.py for a full report.
  """
  name = os.path.basename(source) if source else 'COCO dict'
  keys = ('images', 'annotations', 'categories')
  if not isinstance(coco, dict) or not all(
      isinstance(coco.get(k), list) for k in keys):
    raise ValueError(f'{name}: not a COCO dict with images, annotations '
                     'and categories lists.')
  errors = []
  category_ids = {}
  for i, cat in enumerate(coco['categories']):
    cid = cat.get('id') if isinstance(cat, dict) else None
    if not is_int(cid) or cid in category_ids:
      errors.append(f'categories[{i}]: id {fmt(cid)} is not a new integer')
      continue
    if not isinstance(cat.get('name'), str) or not cat['name']:
      errors.append(f'category {cid} (categories[{i}]): has no name')
    category_ids[cid] = i
  images = _images(coco['images'], image_dir, errors)
  for i, ann in enumerate(coco['annotations']):
    if not isinstance(ann, dict):
      errors.append(f'annotations[{i}]: is not an object')
      continue
    iid = ann.get('image_id')
    image = images.get(iid) if is_id(iid) else None
    where = _where(ann, i, image)
    errors += [f'{where}: {e}' for e in _annotation_errors(
        ann, image, category_ids)]
  if errors:
    more = len(errors) - _MAX_LISTED
    raise ValueError(
        f'{name}: {len(errors)} problem(s) to fix before converting '
        '(nothing was written):\n  ' + '\n  '.join(errors[:_MAX_LISTED])
        + (f'\n  ... and {more} more' if more > 0 else '')
        + '\nFor a full report: python tools/check_dataset.py '
        f'--annotation_file={source or "FILE"}'
        + (f' --image_dir={image_dir}' if image_dir else ''))
