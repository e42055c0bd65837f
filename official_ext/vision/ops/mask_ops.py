"""Ops on box-aligned instance masks ("crops").

An instance mask travels through the input pipeline as an S x S crop aligned
with its box, never at full image size. Sampling convention
(`crop_and_resize_cells`): a box [y1, x1, y2, x2] in continuous pixel
coordinates (pixel i covers [i, i + 1]) is split into S x S equal cells and
the mask is bilinearly sampled at the cell centres (RoIAlign with one sample
per bin). Crop pixel (i, j) therefore covers the box region
[y1 + i * h / S, y1 + (i + 1) * h / S] x [...]. When a box gets clipped, its
crop is re-sampled on the visible sub-window (`recrop_masks`); pasting a
crop back (`paste_masks`) is a half-pixel-centred resize to the box size.
"""

from typing import Tuple

import tensorflow as tf


def crop_and_resize_cells(masks: tf.Tensor, boxes: tf.Tensor,
                          crop_size: int) -> tf.Tensor:
  """Samples each mask at the cell centres of a crop_size^2 grid in its box.

  Args:
    masks: float [N, H, W] masks (full images, or earlier crops).
    boxes: float [N, 4] yxyx boxes in continuous pixel coordinates of the
      masks' frame (pixel i covers [i, i + 1]).
    crop_size: side S of the output crops.

  Returns:
    float32 [N, S, S] crops. Sample positions are clamped to the pixel-centre
    range [0, H - 1] x [0, W - 1], so a box touching the frame border reads
    the border pixels (no zero fade-in); samples of a box extending beyond
    the frame by more than half a pixel get clamped likewise (an error of at
    most half a pixel for boxes inside the frame).
  """
  masks = tf.cast(masks, tf.float32)
  boxes = tf.cast(boxes, tf.float32)
  shape = tf.shape(masks)
  height = tf.cast(shape[1], tf.float32)
  width = tf.cast(shape[2], tf.float32)
  y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
  cell_h = (y2 - y1) / crop_size
  cell_w = (x2 - x1) / crop_size
  # Pixel-index positions of the first and last sample.
  sy1 = tf.clip_by_value(y1 + 0.5 * cell_h - 0.5, 0., height - 1.)
  sy2 = tf.clip_by_value(y2 - 0.5 * cell_h - 0.5, 0., height - 1.)
  sx1 = tf.clip_by_value(x1 + 0.5 * cell_w - 0.5, 0., width - 1.)
  sx2 = tf.clip_by_value(x2 - 0.5 * cell_w - 0.5, 0., width - 1.)
  norm_h = tf.maximum(height - 1., 1.)
  norm_w = tf.maximum(width - 1., 1.)
  sample_boxes = tf.stack(
      [sy1 / norm_h, sx1 / norm_w, sy2 / norm_h, sx2 / norm_w], axis=-1)
  crops = tf.image.crop_and_resize(
      masks[..., tf.newaxis], sample_boxes,
      box_indices=tf.range(shape[0], dtype=tf.int32),
      crop_size=[crop_size, crop_size], method='bilinear')
  return crops[..., 0]


def recrop_masks(masks: tf.Tensor, boxes: tf.Tensor, clipped_boxes: tf.Tensor,
                 crop_size: int) -> tf.Tensor:
  """Re-samples box-aligned crops on the visible part of clipped boxes.

  Args:
    masks: float [N, S, S] crops aligned with `boxes`.
    boxes: float [N, 4] yxyx boxes before clipping.
    clipped_boxes: float [N, 4] the same boxes after clipping (inside
      `boxes`).
    crop_size: S.

  Returns:
    float32 [N, S, S] crops aligned with `clipped_boxes`; crops of boxes that
    were not clipped are returned unchanged.
  """
  y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
  h = tf.maximum(y2 - y1, 1e-6)
  w = tf.maximum(x2 - x1, 1e-6)
  cy1, cx1, cy2, cx2 = tf.unstack(clipped_boxes, axis=-1)
  window = tf.stack([(cy1 - y1) / h, (cx1 - x1) / w,
                     (cy2 - y1) / h, (cx2 - x1) / w], axis=-1) * crop_size
  recropped = crop_and_resize_cells(masks, window, crop_size)
  changed = tf.reduce_any(tf.abs(boxes - clipped_boxes) > 1e-4, axis=-1)
  return tf.where(changed[:, tf.newaxis, tf.newaxis], recropped,
                  tf.cast(masks, tf.float32))


def paste_masks(masks: tf.Tensor, boxes: tf.Tensor,
                image_size: Tuple[int, int]) -> tf.Tensor:
  """Pastes box-aligned crops back into full images, as the reference does.

  The inverse of `crop_and_resize_cells`, and mmdet's `_do_paste_mask`:
  each output pixel centre is mapped into its box's S x S crop and sampled
  bilinearly with zeros outside the crop (`grid_sample`,
  `align_corners=False`), within the box grown to whole pixels plus one
  pixel on each side; pixels outside that window are 0.

  Args:
    masks: float [N, S, S] crops.
    boxes: float [N, 4] yxyx pixel boxes.
    image_size: (height, width) of the output.

  Returns:
    float32 [N, height, width] masks.
  """
  masks = tf.cast(masks, tf.float32)
  boxes = tf.cast(boxes, tf.float32)
  size = masks.shape[1]
  height, width = image_size
  y1, x1, y2, x2 = [b[:, tf.newaxis] for b in tf.unstack(boxes, axis=-1)]

  def axis_weights(start, end, length):
    """[N, length, S] bilinear weights and [N, length] window of one axis."""
    pixels = tf.range(length, dtype=tf.float32)[tf.newaxis]
    # Crop index coordinates of the pixel centres.
    c = (pixels + 0.5 - start) / tf.maximum(end - start, 1e-6) * size - 0.5
    low = tf.floor(c)
    frac = c - low
    low = tf.cast(low, tf.int32)

    def one_hot(index):
      # Zero rows for indices outside the crop. tf.one_hot gives them for
      # negative indices too, but ONNX's OneHot counts those from the end:
      # they are moved past it first.
      return tf.one_hot(tf.where(index < 0, size, index), size)

    weights = (one_hot(low) * (1. - frac)[..., None] +
               one_hot(low + 1) * frac[..., None])
    window = ((pixels >= tf.floor(start) - 1.) &
              (pixels < tf.math.ceil(end) + 1.))
    return weights, window

  wy, inside_y = axis_weights(y1, y2, height)  # [N, H, S], [N, H]
  wx, inside_x = axis_weights(x1, x2, width)   # [N, W, S], [N, W]
  pasted = tf.einsum('nhs,nst,nwt->nhw', wy, masks, wx)
  inside = tf.logical_and(inside_y[:, :, tf.newaxis],
                          inside_x[:, tf.newaxis, :])
  return tf.where(inside, pasted, tf.zeros_like(pasted))
