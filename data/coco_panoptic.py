r"""COCO panoptic TFRecords through Model Garden's create_coco_tf_record.py.

  python -m data.coco_panoptic --image_dir=COCO/train2017 \
      --object_annotations_file=COCO/annotations/instances_train2017.json \
      --panoptic_annotations_file=COCO/annotations/panoptic_train2017.json \
      --panoptic_masks_dir=COCO/annotations/panoptic_train2017 \
      --include_masks --include_panoptic_masks \
      --output_file_prefix=coco_panoptic/train --num_shards=256

takes exactly the flags of Model Garden's
`official/vision/data/create_coco_tf_record.py` and runs its `main`, with
one mend (`model_garden_panoptic`): its panoptic PNG decoding computes
R + 256 G + 256^2 B on uint8 arrays, which NumPy 2 (this project's) refuses
with an OverflowError on the first image; here its PNG reader returns int64,
which gives the ids it computed under NumPy 1. The records carry the
instance keys and `image/panoptic/category_mask`,
`image/panoptic/instance_mask` (read by `dataloaders/panoptic_decoder.py`).

The project's own panoptic converters (`data/shapes_panoptic.py`,
`data/bdd100k_panoptic.py`) call Model Garden's `create_tf_example` inside
the same context.
"""

import contextlib
from typing import Iterator, Optional

from absl import app
from absl import flags
import numpy as np

from official.vision.data import create_coco_tf_record
from official.vision.data import tfrecord_lib

_SKIP_CROWD = 'panoptic_skip_crowd'


@contextlib.contextmanager
def model_garden_panoptic(stuff_offset: Optional[int] = None,
                          skip_crowd: Optional[bool] = False
                          ) -> Iterator[None]:
  """Lets Model Garden's converter encode panoptic masks, for the block.

  Within the block:
  * its panoptic PNG reader returns int64 (R + 256 G + 256^2 B overflows
    uint8 under NumPy 2);
  * `--panoptic_skip_crowd` reads `skip_crowd` (None: the flag as it is),
    also when absl flags were never parsed (the flag is marked present; no
    other flag changes), and exists if a command deleted it;
  * with `stuff_offset`, its semantic mask writes stuff category c as
    c - stuff_offset (its own 90 fits COCO's stuff ids 92..200 only).
  All are restored afterwards.

  Args:
    stuff_offset: the semantic mask's stuff offset; None: Model Garden's.
    skip_crowd: the value `--panoptic_skip_crowd` reads; None: unchanged.

  Yields:
    None.
  """
  module = create_coco_tf_record
  # pylint: disable=protected-access
  if _SKIP_CROWD not in flags.FLAGS:  # coco_tfrecord.define_flags drops it.
    flags.DEFINE_boolean(_SKIP_CROWD, False,
                         'Read by create_coco_tf_record.')
  flag = flags.FLAGS[_SKIP_CROWD]
  saved_flag = (flag.value, flag.present, flag.using_default_value)
  read_image = tfrecord_lib.read_image
  offset = module._STUFF_CLASSES_OFFSET

  def read_wide(path):
    return np.asarray(read_image(path)).astype(np.int64)

  try:
    if skip_crowd is not None:
      flag.value = skip_crowd
    if not flags.FLAGS.is_parsed():
      flag.present = max(flag.present, 1)  # Readable without parsing.
    tfrecord_lib.read_image = read_wide
    if stuff_offset is not None:
      module._STUFF_CLASSES_OFFSET = stuff_offset
    yield
  finally:
    module._STUFF_CLASSES_OFFSET = offset
    tfrecord_lib.read_image = read_image
    flag.value, flag.present, flag.using_default_value = saved_flag
  # pylint: enable=protected-access


def main(argv) -> None:
  with model_garden_panoptic(skip_crowd=None):
    create_coco_tf_record.main(argv)


if __name__ == '__main__':
  app.run(main)
