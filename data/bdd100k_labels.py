"""BDD100K instance-segmentation labels -> COCO dicts.

Both official label formats are read (`scalabel_to_coco`,
`bitmasks_to_coco`); the facts below follow BDD100K's toolkit
(`bdd100k/configs/ins_seg.toml`, `to_coco`, `to_bitmasks`):

* Scalabel JSON with RLE masks (`ins_seg_{train,val}_rle.json`): a list of
  frames or `{"frames": [...], "config": {...}}`; a frame is
  `{"name": "x.jpg", "labels": [...]}`, a label
  `{"id", "category", "attributes": {"crowd", ...}, "rle": {"counts", "size"}}`.
* Bitmask PNGs (`bitmasks/<split>/<stem>.png`, one per image): RGBA uint8,
  R = category id, G = `truncated << 3 | occluded << 2 | crowd << 1 | ignore`,
  instance id = (B << 8) + A, 0 = background.

Categories are the 8 BDD100K instance classes with ids 1..8. Category names
go through `NAME_MAPPING` first; names of `IGNORE_MAPPING` are kept as their
target class but ignored, as BDD100K's evaluation does: `iscrowd: 1` and
`ignore: 1`. A label with the `crowd` attribute gets `iscrowd: 1`,
`ignore: 0`. Every annotation also keeps its BDD100K label id (the instance
id for bitmasks) as `bdd100k_id`.

Labels that cannot be converted (unknown category, no RLE, empty mask, RLE
of another size than the image, a bitmask instance whose pixels disagree on
category or attributes) are skipped and returned as `Problem`s
naming the file, the frame and the label; conversion never stops for them.
"""

import json
import os
from typing import (Any, Callable, Dict, Iterable, List, Mapping, NamedTuple,
                    Optional, Sequence, Tuple)

import numpy as np
from PIL import Image
from pycocotools import mask as mask_lib

from data import coco_utils

CATEGORIES = (
    (1, 'pedestrian', 'human'),
    (2, 'rider', 'human'),
    (3, 'car', 'vehicle'),
    (4, 'truck', 'vehicle'),
    (5, 'bus', 'vehicle'),
    (6, 'train', 'vehicle'),
    (7, 'motorcycle', 'bike'),
    (8, 'bicycle', 'bike'),
)
NAME_MAPPING = {
    'bike': 'bicycle',
    'caravan': 'car',
    'motor': 'motorcycle',
    'person': 'pedestrian',
    'van': 'car',
}
IGNORE_MAPPING = {
    'other person': 'pedestrian',
    'other vehicle': 'car',
    'trailer': 'truck',
}

# Bits of the bitmasks' G channel.
IGNORE_BIT = 1
CROWD_BIT = 2
OCCLUDED_BIT = 4
TRUNCATED_BIT = 8

_NAME_TO_ID = {name: cat_id for cat_id, name, _ in CATEGORIES}
ID_TO_NAME = {cat_id: name for cat_id, name, _ in CATEGORIES}
# At most this many names in an error message.
_MAX_NAMES_IN_ERROR = 20

# Called after each image with (images done, total images).
ProgressFn = Optional[Callable[[int, int], None]]


class Problem(NamedTuple):
  """A label that was skipped, and why."""
  source: str  # The labels JSON or the bitmask PNG.
  frame: str  # The frame (image) name.
  label: str  # The label id (instance id for bitmasks).
  reason: str

  def __str__(self) -> str:
    return (f'{self.source}: frame {self.frame}: label {self.label}: '
            f'{self.reason}')


def coco_categories() -> List[Dict[str, Any]]:
  """The COCO `categories` list of BDD100K instance segmentation."""
  return [{'id': cat_id, 'name': name, 'supercategory': supercategory}
          for cat_id, name, supercategory in CATEGORIES]


def map_category(category: Any) -> Tuple[Optional[int], bool]:
  """Maps a BDD100K category name to (category id, ignored).

  Args:
    category: the label's category name.

  Returns:
    (id, False) for a class (after `NAME_MAPPING`), (id, True) for a name of
    `IGNORE_MAPPING` and (None, False) for anything else.
  """
  if not isinstance(category, str):
    return None, False
  name = NAME_MAPPING.get(category, category)
  if name in _NAME_TO_ID:
    return _NAME_TO_ID[name], False
  if name in IGNORE_MAPPING:
    return _NAME_TO_ID[IGNORE_MAPPING[name]], True
  return None, False


def _empty_coco() -> Dict[str, Any]:
  return {
      'info': {'description': 'BDD100K instance segmentation',
               'version': '1.0'},
      'licenses': [],
      'images': [],
      'annotations': [],
      'categories': coco_categories(),
  }


def _annotation(rle: Mapping[str, Any], ann_id: int, image_id: int,
                category_id: int, iscrowd: bool, ignore: bool,
                bdd100k_id: Any) -> Dict[str, Any]:
  """A COCO annotation of a compressed RLE (bytes counts), box from the mask."""
  return {
      'id': ann_id,
      'image_id': image_id,
      'category_id': category_id,
      **coco_utils.rle_fields(rle),
      'iscrowd': int(iscrowd or ignore),
      'ignore': int(ignore),
      'bdd100k_id': bdd100k_id,
  }


def _image_size(image_dir: str, file_name: str) -> Tuple[int, int]:
  """(height, width) of an image file, from its header."""
  with Image.open(os.path.join(image_dir, file_name)) as image:
    width, height = image.size
  return height, width


def find_missing_images(file_names: Iterable[str],
                        image_dir: str) -> List[str]:
  """The file names that are not files in `image_dir`, in input order."""
  return [name for name in file_names
          if not os.path.isfile(os.path.join(image_dir, name))]


def _missing_images_error(missing: Sequence[str],
                          image_dir: str) -> FileNotFoundError:
  shown = ', '.join(missing[:_MAX_NAMES_IN_ERROR])
  more = len(missing) - _MAX_NAMES_IN_ERROR
  if more > 0:
    shown += f' and {more} more'
  return FileNotFoundError(
      f'{len(missing)} image file(s) missing from {image_dir}: {shown}')


def check_images(coco: Mapping[str, Any], image_dir: str) -> None:
  """Checks that every image of a COCO dict exists and has its size.

  Only the image headers are read.

  Args:
    coco: a COCO dict.
    image_dir: directory holding the images' `file_name`s.

  Raises:
    FileNotFoundError: naming the missing files.
    ValueError: naming the files whose size differs from the JSON's.
  """
  names = [image['file_name'] for image in coco['images']]
  missing = find_missing_images(names, image_dir)
  if missing:
    raise _missing_images_error(missing, image_dir)
  wrong = []
  for image in coco['images']:
    size = _image_size(image_dir, image['file_name'])
    if size != (image['height'], image['width']):
      wrong.append(f'{image["file_name"]} is {size[0]}x{size[1]}, labels say '
                   f'{image["height"]}x{image["width"]}')
  if wrong:
    raise ValueError(f'{len(wrong)} image(s) in {image_dir} have another size '
                     'than their labels: ' +
                     '; '.join(wrong[:_MAX_NAMES_IN_ERROR]))


def load_scalabel(path: str) -> List[Dict[str, Any]]:
  """Reads the frames of a Scalabel JSON (a list or {'frames': [...]})."""
  with open(path) as f:
    data = json.load(f)
  if isinstance(data, dict):
    if 'frames' not in data:
      raise ValueError(f'{path}: a Scalabel dict needs a "frames" list.')
    data = data['frames']
  if not isinstance(data, list):
    raise ValueError(f'{path}: expected a list of frames.')
  return data


def _compressed_rle(rle: Any) -> Dict[str, Any]:
  """A Scalabel `rle` as a pycocotools RLE with bytes counts.

  Args:
    rle: {'counts': compressed string (or uncompressed list), 'size': [h, w]}.

  Returns:
    The RLE.

  Raises:
    ValueError: when it is not an RLE.
  """
  if not isinstance(rle, dict) or 'counts' not in rle or 'size' not in rle:
    raise ValueError('rle is not {"counts", "size"}')
  size = rle['size']
  if (not isinstance(size, (list, tuple)) or len(size) != 2 or
      not all(isinstance(v, int) and v > 0 for v in size)):
    raise ValueError(f'bad rle size {size!r}')
  if not isinstance(rle['counts'], (str, list)):
    raise ValueError(
        f'bad rle counts of type {type(rle["counts"]).__name__}')
  return coco_utils.to_rle({'size': [size[0], size[1]],
                            'counts': rle['counts']}, size[0], size[1])


def _scalabel_annotation(label: Mapping[str, Any], image: Dict[str, Any],
                         ann_id: int) -> Tuple[Optional[Dict[str, Any]], str]:
  """Converts one Scalabel label of `image`.

  Sets the image's height and width from the label's RLE if still None.

  Returns:
    (annotation, '') or (None, why the label is skipped).
  """
  category = label.get('category')
  category_id, ignore = map_category(category)
  if category_id is None:
    return None, f'unknown category: {category!r}'
  if label.get('rle') is None:
    return None, 'no rle'
  try:
    rle = _compressed_rle(label['rle'])
  except ValueError as e:
    return None, f'bad rle: {e}'
  height, width = rle['size']
  if image['height'] is None:
    image['height'], image['width'] = height, width
  elif (height, width) != (image['height'], image['width']):
    return None, (f'size mismatch: rle {height}x{width}, frame '
                  f'{image["height"]}x{image["width"]}')
  if not mask_lib.area(rle):
    return None, 'empty mask'
  crowd = bool((label.get('attributes') or {}).get('crowd', False))
  return _annotation(rle, ann_id, image['id'], category_id, crowd, ignore,
                     label.get('id')), ''


def scalabel_to_coco(frames: Sequence[Mapping[str, Any]],
                     image_dir: Optional[str] = None, source: str = '',
                     progress: ProgressFn = None
                    ) -> Tuple[Dict[str, Any], List[Problem]]:
  """Converts Scalabel frames with RLE masks to a COCO dict.

  Image ids are 1.. in frame order; a frame's size is its first RLE's. A
  frame without usable RLE (e.g. no labels) takes its size from its image in
  `image_dir`.

  Args:
    frames: Scalabel frames ({'name', 'labels'}).
    image_dir: directory of the images, or None. When given, every frame's
      image must be there; it is needed for frames without RLE.
    source: the frames' file, for problem reports.
    progress: called after each frame with (frames done, total).

  Returns:
    (coco, problems): the COCO dict and the skipped labels.

  Raises:
    ValueError: on a frame without a name, a repeated name, or a frame whose
      size is unknown because `image_dir` is None.
    FileNotFoundError: naming the frames' images missing from `image_dir`.
  """
  coco = _empty_coco()
  problems = []
  seen = set()
  need_size = []  # Images of frames without RLE.
  for index, frame in enumerate(frames):
    name = frame.get('name') if isinstance(frame, dict) else None
    if not name:
      raise ValueError(f'{source}: frame {index} has no name.')
    if name in seen:
      raise ValueError(f'{source}: frame name {name} is repeated.')
    seen.add(name)
    image = {'id': index + 1, 'file_name': name, 'height': None,
             'width': None}
    coco['images'].append(image)
    for label in frame.get('labels') or []:
      ann, reason = _scalabel_annotation(label, image,
                                         len(coco['annotations']) + 1)
      if ann is None:
        problems.append(Problem(source, name, str(label.get('id')), reason))
      else:
        coco['annotations'].append(ann)
    if image['height'] is None:
      need_size.append(image)
    if progress:
      progress(index + 1, len(frames))

  if image_dir is not None:
    missing = find_missing_images(
        (image['file_name'] for image in coco['images']), image_dir)
    if missing:
      raise _missing_images_error(missing, image_dir)
  if need_size:
    if image_dir is None:
      raise ValueError(
          f'{source}: {len(need_size)} frame(s) have no RLE to give their '
          f'size (e.g. {need_size[0]["file_name"]}); pass image_dir.')
    for image in need_size:
      image['height'], image['width'] = _image_size(image_dir,
                                                    image['file_name'])
  return coco, problems


def scalabel_file_to_coco(path: str, image_dir: Optional[str] = None,
                          progress: ProgressFn = None
                         ) -> Tuple[Dict[str, Any], List[Problem]]:
  """`scalabel_to_coco` of a Scalabel JSON file (`load_scalabel`)."""
  return scalabel_to_coco(load_scalabel(path), image_dir, source=path,
                          progress=progress)


def read_bitmask(path: str) -> np.ndarray:
  """Reads a BDD100K bitmask PNG as a uint8 [height, width, 4] RGBA array.

  Raises:
    ValueError: if the PNG is not RGBA.
  """
  with Image.open(path) as image:
    if image.mode != 'RGBA':
      raise ValueError(f'{path}: a BDD100K bitmask is RGBA, this PNG is '
                       f'{image.mode}.')
    return np.asarray(image)


def bitmask_annotations(bitmask: np.ndarray, image_id: int, first_ann_id: int,
                        source: str = '', frame: str = ''
                       ) -> Tuple[List[Dict[str, Any]], List[Problem]]:
  """COCO annotations of one RGBA bitmask, in increasing instance id.

  Args:
    bitmask: uint8 [height, width, 4].
    image_id: the image's id.
    first_ann_id: id of the first annotation.
    source: the bitmask file, for problem reports.
    frame: the frame name, for problem reports.

  Returns:
    (annotations, problems).
  """
  category = bitmask[:, :, 0].ravel()
  attributes = bitmask[:, :, 1].ravel()
  instances = (bitmask[:, :, 2].astype(np.int32) << 8) | bitmask[:, :, 3]
  flat = instances.ravel()
  ids = np.flatnonzero(np.bincount(flat))
  ids = ids[ids != 0]
  # Each instance's category and attributes (from any of its pixels), and
  # the instances whose pixels disagree on them.
  cat_of = np.zeros(1 << 16, dtype=np.uint8)
  attr_of = np.zeros(1 << 16, dtype=np.uint8)
  cat_of[flat] = category
  attr_of[flat] = attributes
  disagree = (cat_of[flat] != category) | (attr_of[flat] != attributes)
  mixed = set(np.unique(flat[disagree]).tolist())
  # Fortran order, so that every `instances == k` is too and encodes as is.
  instances = np.asfortranarray(instances)

  annotations, problems = [], []
  for instance_id in ids.tolist():
    category_id = int(cat_of[instance_id])
    if instance_id in mixed:
      reason = 'mixed values: pixels of several categories or attributes'
    elif category_id not in ID_TO_NAME:
      reason = f'unknown category: id {category_id}'
    else:
      reason = ''
    if reason:
      problems.append(Problem(source, frame, str(instance_id), reason))
      continue
    rle = mask_lib.encode((instances == instance_id).view(np.uint8))
    attr = int(attr_of[instance_id])
    annotations.append(_annotation(
        rle, first_ann_id + len(annotations), image_id, category_id,
        iscrowd=bool(attr & CROWD_BIT), ignore=bool(attr & IGNORE_BIT),
        bdd100k_id=instance_id))
  return annotations, problems


def bitmasks_to_coco(bitmask_dir: str, image_ext: str = '.jpg',
                     progress: ProgressFn = None
                    ) -> Tuple[Dict[str, Any], List[Problem]]:
  """Converts a folder of BDD100K bitmask PNGs to a COCO dict.

  Each `<stem>.png` is the image `<stem><image_ext>`; image ids are 1.. in
  sorted file name order and every PNG gives an image, with or without
  instances.

  Args:
    bitmask_dir: folder of the PNGs.
    image_ext: extension of the images.
    progress: called after each PNG with (PNGs done, total).

  Returns:
    (coco, problems): the COCO dict and the skipped instances.

  Raises:
    ValueError: on an empty folder or a PNG that is not RGBA.
  """
  names = sorted(n for n in os.listdir(bitmask_dir)
                 if n.lower().endswith('.png'))
  if not names:
    raise ValueError(f'No PNG bitmasks in {bitmask_dir}.')
  coco = _empty_coco()
  problems = []
  for index, name in enumerate(names):
    path = os.path.join(bitmask_dir, name)
    bitmask = read_bitmask(path)
    image_id = index + 1
    file_name = os.path.splitext(name)[0] + image_ext
    coco['images'].append({'id': image_id, 'file_name': file_name,
                           'height': bitmask.shape[0],
                           'width': bitmask.shape[1]})
    annotations, image_problems = bitmask_annotations(
        bitmask, image_id, len(coco['annotations']) + 1, source=path,
        frame=file_name)
    coco['annotations'].extend(annotations)
    problems.extend(image_problems)
    if progress:
      progress(index + 1, len(names))
  return coco, problems
