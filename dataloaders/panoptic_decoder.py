"""Decodes COCO-panoptic TFRecords: Model Garden's instance keys plus its
panoptic masks.

Records from Model Garden's `official/vision/data/create_coco_tf_record.py
--include_masks --include_panoptic_masks --panoptic_annotations_file=...
--panoptic_masks_dir=...` (and this project's `data/shapes_panoptic.py` and
`data/bdd100k_panoptic.py`, which write through it) carry, besides the
instance keys that Model Garden's `TfExampleDecoder` reads:

  image/panoptic/category_mask  PNG uint8: the dataset category id of each
                                pixel (thing or stuff), 0 = void
  image/panoptic/instance_mask  PNG uint8: the instance id of each thing
                                pixel within the image, 0 elsewhere
"""

import tensorflow as tf

from official.vision.dataloaders import tf_example_decoder

CATEGORY_MASK_KEY = 'image/panoptic/category_mask'
INSTANCE_MASK_KEY = 'image/panoptic/instance_mask'


class PanopticTfExampleDecoder(tf_example_decoder.TfExampleDecoder):
  """Model Garden's decoder, plus 'groundtruth_panoptic_category_mask' and
  'groundtruth_panoptic_instance_mask' (uint8 [height, width])."""

  def __init__(self, **kwargs):
    kwargs.setdefault('include_mask', True)
    super().__init__(**kwargs)
    self._panoptic_features = {
        CATEGORY_MASK_KEY: tf.io.FixedLenFeature((), tf.string, ''),
        INSTANCE_MASK_KEY: tf.io.FixedLenFeature((), tf.string, ''),
    }

  def _decode_panoptic_mask(self, png: tf.Tensor, key: str,
                            image: tf.Tensor) -> tf.Tensor:
    present = tf.debugging.Assert(
        tf.strings.length(png) > 0,
        [f'A record has no {key}: a panoptic model reads records written '
         'with --include_panoptic_masks (see README, Panoptic datasets).'])
    with tf.control_dependencies([present]):
      mask = tf.io.decode_png(png, channels=1, dtype=tf.uint8)[:, :, 0]
    same_size = tf.debugging.assert_equal(
        tf.shape(mask), tf.shape(image)[0:2],
        message=f'{key} is not the size of its image.')
    with tf.control_dependencies([same_size]):
      mask = tf.identity(mask)
    mask.set_shape([None, None])
    return mask

  def decode(self, serialized_example):
    decoded = super().decode(serialized_example)
    parsed = tf.io.parse_single_example(serialized_example,
                                        self._panoptic_features)
    for key, name in ((CATEGORY_MASK_KEY, 'category'),
                      (INSTANCE_MASK_KEY, 'instance')):
      decoded[f'groundtruth_panoptic_{name}_mask'] = (
          self._decode_panoptic_mask(parsed[key], key, decoded['image']))
    return decoded
