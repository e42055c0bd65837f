"""COCO segmentations and RLEs through pycocotools, for the dataset tools.

The converters (`coco_tfrecord.py`, `bdd100k_labels.py`,
`shapes_dataset.py`) and the checks (`coco_checks.py`, which
`tools/check_dataset.py` runs too) read, measure and write COCO masks with
these. A COCO segmentation is a list of polygons, an
uncompressed RLE (list `counts`) or a compressed RLE (string `counts`);
pycocotools works on RLEs with bytes `counts`, JSON holds strings.

Imports neither TensorFlow nor Model Garden (the dataset check runs without
them).
"""

from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
from pycocotools import mask as mask_lib


def uncompressed_rle(mask: np.ndarray) -> Dict[str, Any]:
  """Column-major uncompressed RLE, as pycocotools.frPyObjects accepts it."""
  flat = np.asarray(mask, dtype=np.uint8).ravel(order='F')
  change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
  bounds = np.concatenate([[0], change, [flat.size]])
  counts = np.diff(bounds).tolist()
  if flat[0]:
    counts = [0] + counts
  return {'counts': counts, 'size': list(mask.shape)}


def to_rle(segmentation: Any, height: int, width: int) -> Dict[str, Any]:
  """A COCO segmentation of any kind as a pycocotools RLE (bytes counts).

  Polygons are rasterised and merged, an uncompressed RLE is compressed, a
  compressed one gets bytes counts. Nothing is validated: pycocotools
  trusts the counts.

  Args:
    segmentation: a list of polygons or an RLE dict.
    height: the image height (for polygons).
    width: the image width (for polygons).

  Returns:
    {'size': [height, width], 'counts': bytes}.
  """
  if isinstance(segmentation, list):
    return mask_lib.merge(mask_lib.frPyObjects(segmentation, height, width))
  rle = dict(segmentation)
  if isinstance(rle['counts'], list):
    return mask_lib.frPyObjects(rle, height, width)
  if isinstance(rle['counts'], str):
    rle['counts'] = rle['counts'].encode('ascii')
  return rle


def annotation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
  """uint8 [height, width] mask of a COCO segmentation of any kind.

  Args:
    segmentation: a list of polygons, an uncompressed RLE (list counts) or
      a compressed RLE (string or bytes counts).
    height: the image height.
    width: the image width.

  Returns:
    The 0/1 mask.
  """
  return mask_lib.decode(to_rle(segmentation, height, width))


def area_and_box(rle: Mapping[str, Any]) -> Tuple[int, Optional[List[int]]]:
  """Pixel count and [x, y, w, h] pixel box of an RLE; box None if empty."""
  area = int(mask_lib.area(rle))
  if not area:
    return 0, None
  return area, [int(v) for v in mask_lib.toBbox(rle)]


def rle_fields(rle: Mapping[str, Any]) -> Dict[str, Any]:
  """'bbox', 'area' and 'segmentation' of a COCO annotation of an RLE.

  Args:
    rle: a pycocotools RLE (bytes counts) of a non-empty mask.

  Returns:
    {'bbox': the mask's pixel box [x, y, w, h] (ints), 'area': float pixel
    count, 'segmentation': the RLE with str counts, as JSON holds it}.
  """
  area, box = area_and_box(rle)
  return {
      'bbox': box,
      'area': float(area),
      'segmentation': {'size': [int(v) for v in rle['size']],
                       'counts': rle['counts'].decode('ascii')},
  }
