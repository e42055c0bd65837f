"""What Model Garden's create_coco_tf_record.py does with valid annotations.

Model Garden's `official/vision/data/create_coco_tf_record.py
--include_masks` reads masks only as COCO 2017 writes them: polygons on
ordinary annotations, uncompressed RLE on crowd ones, and it needs
`iscrowd`. `annotation_warnings` lists, for one annotation whose mask is
otherwise valid, what that converter does with it instead;
`python -m data.coco_tfrecord` converts them all. (What it drops silently,
boxes with w or h <= 0 or ending beyond the image, is a problem of its own
in `tools/check_dataset.py`, `converter_skip`: this project's converter
refuses those boxes.)

Read from Model Garden 2.20's `coco_segmentation_to_mask_png`, which calls
`pycocotools.mask.frPyObjects(segmentation, height, width)`, decodes it,
and takes the maximum over the last axis unless the annotation is a crowd.
"""

import collections
from typing import Any, List, Mapping, Tuple

from data import coco_checks

_USE = 'convert with python -m data.coco_tfrecord instead'
_STOPS = f'create_coco_tf_record.py stops on it; {_USE}'

# Warning kinds, in the order they are printed, with what they mean.
KINDS = collections.OrderedDict([
    ('mg_compressed_rle', 'compressed RLE (string counts), crowd or not: '
     'create_coco_tf_record.py stops with "ValueError: invalid literal for '
     'int() with base 10"'),
    ('mg_rle_not_crowd', 'uncompressed RLE on a non-crowd annotation: it '
     'stops with "AxisError: axis 2 is out of bounds for array of dimension '
     '2"'),
    ('mg_crowd_polygons', 'polygons on a crowd annotation: one polygon or '
     'five and more stop it ("TypeError: Cannot handle this data type"), two '
     'to four are written as a 2- to 4-channel PNG whose decoded mask is '
     'wrong'),
    ('mg_no_iscrowd', 'no iscrowd field (as in LVIS): it stops with '
     '"KeyError: \'iscrowd\'" (python -m data.coco_tfrecord reads it as 0, '
     'as COCO evaluation does)'),
])


def annotation_warnings(ann: Mapping[str, Any],
                        mask_valid: bool = True) -> List[Tuple[str, str]]:
  """(kind, detail) pairs: what create_coco_tf_record.py does with `ann`.

  Args:
    ann: a COCO annotation (a dict).
    mask_valid: whether its segmentation passed
      `coco_checks.check_segmentation`; the mask warnings need it.

  Returns:
    One pair per kind of `KINDS` that applies, the detail naming what it
    does and the converter to use.
  """
  found = []
  segmentation = ann.get('segmentation')
  kind = coco_checks.segmentation_kind(segmentation)
  crowd = bool(ann.get('iscrowd'))
  if mask_valid and kind == 'compressed RLE':
    found.append(('mg_compressed_rle', f'compressed RLE: {_STOPS}'))
  elif mask_valid and kind == 'uncompressed RLE' and not crowd:
    found.append(('mg_rle_not_crowd',
                  f'uncompressed RLE, not a crowd: {_STOPS}'))
  elif mask_valid and kind == 'polygons' and crowd:
    n = len(segmentation)
    found.append(('mg_crowd_polygons', f'crowd of {n} polygon(s): ' + (
        _STOPS if n == 1 or n > 4 else 'create_coco_tf_record.py writes a '
        f'wrong mask; {_USE}')))
  if 'iscrowd' not in ann:
    found.append(('mg_no_iscrowd', f'no iscrowd: {_STOPS}'))
  return found
