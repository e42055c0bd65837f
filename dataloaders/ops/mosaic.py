"""The stage-1 mosaic of 4 images, as a Model Garden `InputReader` sample_fn.

As `official/projects/yolo/ops/mosaic.py`, the mosaic is an object whose
dataset function goes to the reader as `sample_fn`; it runs after decoding
and before the parser, on examples already prepared by
`unipercepnet_parser.Parser.prepare` (boxes in pixels, masks as box-aligned
crops), so each mosaic consumes 4 shuffled images.
"""

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from dataloaders.ops import transforms
from official.vision.ops import box_ops

MOSAIC_SIZE = 4
# Keys of a prepared example that the mosaic consumes.
_MOSAIC_KEYS = ('image', 'image_shape', 'boxes', 'classes', 'masks',
                'num_instances')
# A panoptic example's semantic target, moved with the image when present.
_SEMANTIC_KEY = 'semantic'
# Its value where no image lies (the semantic head's ignore label).
_SEMANTIC_FILL = 255


class Mosaic:
  """mmdet-style mosaic of 4 prepared examples."""

  def __init__(self, tile_size: int, mask_crop_size: int,
               pad_value: float = 114.):
    """Initialises the mosaic.

    Args:
      tile_size: side of the square each image is fitted into; the mosaic
        canvas is twice this size.
      mask_crop_size: side of the box-aligned mask crops.
      pad_value: value of the canvas where no image lies (0..255 scale).
    """
    self._tile_size = tile_size
    self._mask_crop_size = mask_crop_size
    self._pad_value = float(pad_value)

  def mosaic(self, examples: Sequence[Mapping[str, tf.Tensor]],
             center: Optional[Tuple[Any, Any]] = None
             ) -> Dict[str, tf.Tensor]:
    """Places 4 prepared examples around a centre.

    Each image is resized to fit a `tile_size` square (aspect kept) and
    placed around `center` of a 2 * tile canvas filled with `pad_value`:
    example 0 top-left (its bottom-right corner at the centre), 1 top-right,
    2 bottom-left, 3 bottom-right; parts beyond the canvas are cut. Boxes are
    scaled, shifted, clipped to the pasted region (crops re-sampled when
    clipped) and empty ones dropped.

    Args:
      examples: 4 dicts with 'image' [h, w, 3], 'boxes' [n, 4] pixel yxyx,
        'classes' [n], 'masks' [n, S, S] (from `Parser.prepare`), and
        optionally all 'semantic' [h, w, 1] labels (255 where no image
        lies in the mosaic).
      center: optional (y, x) integer centre; random in [0.5, 1.5] * tile
        otherwise.

    Returns:
      A dict with 'image' (float32 [2T, 2T, 3]), 'image_shape', 'boxes',
      'classes', 'masks', 'num_instances' (and 'semantic').
    """
    if len(examples) != MOSAIC_SIZE:
      raise ValueError(f'mosaic needs {MOSAIC_SIZE} examples, got '
                       f'{len(examples)}.')
    tile = self._tile_size
    canvas_size = 2 * tile
    if center is None:
      center = tf.random.uniform([2], tile // 2, tile + tile // 2 + 1,
                                 dtype=tf.int32)
      yc, xc = center[0], center[1]
    else:
      yc = tf.cast(center[0], tf.int32)
      xc = tf.cast(center[1], tf.int32)

    canvas = tf.zeros([canvas_size, canvas_size, 3], tf.float32)
    all_boxes, all_classes, all_masks, all_semantic = [], [], [], []
    for i, example in enumerate(examples):
      size = tf.cast(tf.shape(example['image'])[0:2], tf.float32)
      scale = tf.minimum(tile / size[0], tile / size[1])
      new_size = tf.maximum(tf.cast(tf.round(size * scale), tf.int32), 1)
      h, w = new_size[0], new_size[1]
      top, left = i < 2, i % 2 == 0
      # Paste region on the canvas.
      y1 = tf.maximum(yc - h, 0) if top else yc
      y2 = yc if top else tf.minimum(yc + h, canvas_size)
      x1 = tf.maximum(xc - w, 0) if left else xc
      x2 = xc if left else tf.minimum(xc + w, canvas_size)
      # Matching corner of the resized image.
      iy1 = h - (y2 - y1) if top else 0
      ix1 = w - (x2 - x1) if left else 0
      transform = transforms.GeometricTransform(
          size, new_size, offset=tf.stack([iy1 - y1, ix1 - x1]),
          window=tf.stack([y1, x1, y2, x2]),
          output_size=[canvas_size, canvas_size])
      canvas += tf.pad(transform.visible_part(example['image']) -
                       self._pad_value, transform.paddings)
      all_boxes.append(transform.apply_boxes(example['boxes']))
      all_masks.append(transform.apply_masks(
          example['masks'], example['boxes'], self._mask_crop_size))
      all_classes.append(tf.cast(example['classes'], tf.int32))
      if _SEMANTIC_KEY in example:
        all_semantic.append(tf.pad(
            tf.cast(transform.visible_label(example[_SEMANTIC_KEY]),
                    tf.int32), transform.paddings,
            constant_values=_SEMANTIC_FILL))
    canvas += self._pad_value
    canvas.set_shape([canvas_size, canvas_size, 3])
    boxes = tf.concat(all_boxes, axis=0)
    indices = box_ops.get_non_empty_box_indices(boxes)
    result = {
        'image': canvas,
        'image_shape': tf.constant([canvas_size, canvas_size], tf.int32),
        'boxes': tf.gather(boxes, indices),
        'classes': tf.gather(tf.concat(all_classes, axis=0), indices),
        'masks': tf.gather(tf.concat(all_masks, axis=0), indices),
        'num_instances': tf.shape(indices)[0],
    }
    if all_semantic:
      # The tiles' windows do not overlap and each is IGNORE outside its own.
      semantic = tf.reduce_min(tf.stack(all_semantic), axis=0)
      semantic.set_shape([canvas_size, canvas_size, 1])
      result[_SEMANTIC_KEY] = tf.cast(semantic, tf.uint8)
    return result

  def mosaic_from_batch(self, batch: Mapping[str, tf.Tensor]
                        ) -> Dict[str, tf.Tensor]:
    """`mosaic` on a padded batch of 4 prepared examples (tf.data map fn).

    Args:
      batch: `padded_batch(4)` of prepared examples restricted to 'image',
        'image_shape', 'boxes', 'classes', 'masks', 'num_instances'.

    Returns:
      The output of `mosaic`.
    """
    examples = []
    for i in range(MOSAIC_SIZE):
      h, w = batch['image_shape'][i][0], batch['image_shape'][i][1]
      n = batch['num_instances'][i]
      examples.append({
          'image': batch['image'][i][:h, :w, :],
          'boxes': batch['boxes'][i][:n],
          'classes': batch['classes'][i][:n],
          'masks': batch['masks'][i][:n],
      })
      if _SEMANTIC_KEY in batch:
        examples[-1][_SEMANTIC_KEY] = batch[_SEMANTIC_KEY][i][:h, :w, :]
    return self.mosaic(examples)

  def sample_fn(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
    """The reader's `sample_fn`: groups prepared examples by 4 into mosaics."""
    keys = _MOSAIC_KEYS + (_SEMANTIC_KEY,)
    dataset = dataset.map(lambda x: {k: x[k] for k in keys if k in x},
                          num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.padded_batch(MOSAIC_SIZE, drop_remainder=True)
    return dataset.map(self.mosaic_from_batch,
                       num_parallel_calls=tf.data.AUTOTUNE)
