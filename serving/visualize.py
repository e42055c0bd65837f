"""Draws detections, instance masks and panoptic segmentations on images;
tiles and saves them.

Only numpy and Pillow are used, so the module is cheap to import (no
TensorFlow). Typical use:

  canvas = visualize.draw_detections(
      image, boxes, classes, scores, masks=masks,
      class_names={1: 'circle', 2: 'square'}, scale=3)
  visualize.save_png('/tmp/demo/grid.png',
                     visualize.make_grid([canvas, other], columns=2))
  # A panoptic segmentation: category ids (0 void) and instance ids (0 for
  # stuff and void) of each pixel.
  canvas = visualize.draw_panoptic(image, category_mask, instance_mask,
                                   class_names={1: 'circle', 7: 'sky'})

Boxes are [ymin, xmin, ymax, xmax] in image pixels, in continuous
coordinates: the box covers the pixels with ymin <= row < ymax and
xmin <= col < xmax (after rounding), and its outline is drawn on the pixels
just inside that region.
"""

import colorsys
import os
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

_MASK_ALPHA = 0.45
_LABEL_PADDING = 2
_GOLDEN_RATIO_CONJUGATE = 0.618033988749895

Color = Tuple[int, int, int]


def class_color(class_id: int) -> Color:
  """Returns a deterministic, saturated RGB colour for a class id.

  Hues are spread by the golden ratio, so neighbouring ids get well separated
  colours and no id maps to black or white.

  Args:
    class_id: an integer class (category) id.

  Returns:
    An (r, g, b) tuple of ints in [0, 255].
  """
  hue = (int(class_id) * _GOLDEN_RATIO_CONJUGATE + 0.1) % 1.0
  r, g, b = colorsys.hsv_to_rgb(hue, 0.8, 0.95)
  return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


def _to_rgb_uint8(image: np.ndarray) -> np.ndarray:
  """Returns a new [H, W, 3] uint8 copy of a grey or RGB image."""
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim == 2:
    image = np.stack([image] * 3, axis=-1)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(
        f'Expected an image of shape [H, W, 3], got {image.shape}.')
  if image.dtype != np.uint8:
    image = np.clip(np.round(image), 0, 255)
  return image.astype(np.uint8, copy=True)


def _resize_float(array: np.ndarray, width: int, height: int) -> np.ndarray:
  """Bilinearly resizes a 2-D float array to [height, width]."""
  resized = Image.fromarray(np.asarray(array, np.float32)).resize(
      (int(width), int(height)), resample=Image.BILINEAR)
  return np.asarray(resized, dtype=np.float32)


def _scaled_canvas(canvas: np.ndarray, scale: float) -> np.ndarray:
  """The canvas resized by `scale` (nearest neighbour), each side >= 1."""
  if scale <= 0:
    raise ValueError(f'scale must be positive, got {scale}.')
  height, width = canvas.shape[:2]
  out_height = max(int(round(height * scale)), 1)
  out_width = max(int(round(width * scale)), 1)
  if (out_height, out_width) == (height, width):
    return canvas
  return np.asarray(Image.fromarray(canvas).resize(
      (out_width, out_height), resample=Image.NEAREST))


def _box_pixels(box: np.ndarray) -> Tuple[int, int, int, int]:
  """Rounds a [ymin, xmin, ymax, xmax] box to integer pixel bounds.

  Args:
    box: float array of shape [4].

  Returns:
    (y0, x0, y1, x1) with y1 > y0 and x1 > x0: the box covers rows
    [y0, y1) and columns [x0, x1). Not clipped to the image.
  """
  y0, x0, y1, x1 = (int(round(float(v))) for v in box)
  return y0, x0, max(y1, y0 + 1), max(x1, x0 + 1)


def _load_font(font_size: int) -> ImageFont.ImageFont:
  """Returns Pillow's default font, at `font_size` when FreeType exists."""
  try:
    return ImageFont.load_default(size=font_size)
  except (TypeError, ImportError, OSError):  # Old Pillow or no FreeType.
    return ImageFont.load_default()


def _text_color(background: Color) -> Color:
  """Black or white, whichever reads better on `background`."""
  r, g, b = background
  luminance = 0.299 * r + 0.587 * g + 0.114 * b
  return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def _draw_label(draw: ImageDraw.ImageDraw, text: str, box_x: int, box_y: int,
                color: Color, font: ImageFont.ImageFont, image_width: int,
                image_height: int) -> None:
  """Draws `text` on a filled rectangle at a box's top-left corner.

  The label sits just above the box when there is room, else just inside its
  top edge, and is shifted to stay inside the image.

  Args:
    draw: the ImageDraw to draw with.
    text: the label text.
    box_x: the box's left pixel column.
    box_y: the box's top pixel row.
    color: the fill colour.
    font: the font.
    image_width: width of the image.
    image_height: height of the image.
  """
  left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
  width = right - left + 2 * _LABEL_PADDING
  height = bottom - top + 2 * _LABEL_PADDING
  x = min(max(box_x, 0), max(image_width - width, 0))
  y = box_y - height if box_y - height >= 0 else box_y
  y = min(max(y, 0), max(image_height - height, 0))
  draw.rectangle([x, y, x + width - 1, y + height - 1], fill=color)
  draw.text((x + _LABEL_PADDING - left, y + _LABEL_PADDING - top), text,
            fill=_text_color(color), font=font)


def draw_detections(image: np.ndarray,
                    boxes: np.ndarray,
                    classes: np.ndarray,
                    scores: np.ndarray,
                    masks: Optional[np.ndarray] = None,
                    class_names: Optional[Mapping[int, str]] = None,
                    score_threshold: float = 0.3,
                    mask_threshold: float = 0.5,
                    scale: float = 1,
                    line_width: Optional[int] = None,
                    font_size: int = 11) -> np.ndarray:
  """Draws boxes, labels and blended masks of detections on an image.

  Each detection with score >= `score_threshold` gets its mask blended in
  (alpha 0.45), its box outline and a "name 0.87" label, all in the colour of
  its class (`class_color`). Lower scores are drawn first, so the best
  detection ends up on top.

  Args:
    image: uint8 [H, W, 3] (or [H, W] grey) image. Not modified.
    boxes: [N, 4] boxes as [ymin, xmin, ymax, xmax] in pixels of `image`.
    classes: [N] integer class (dataset category) ids.
    scores: [N] scores.
    masks: None, or [N, H, W] probabilities or 0/1 masks of the image (box
      crops are pasted first, e.g. by `dataloaders.ops.mask_ops.paste_masks`,
      as predict.py does).
    class_names: optional mapping from class id to name; ids missing from it
      are shown as numbers.
    score_threshold: detections scoring below it are not drawn.
    mask_threshold: mask values strictly above it are foreground.
    scale: the output is `scale` times larger than `image` (nearest-neighbour
      resize); boxes and masks are scaled to match, text and lines are not,
      so small images become readable.
    line_width: box outline width in output pixels; defaults to
      max(1, round(scale)).
    font_size: label font size in output pixels.

  Returns:
    A new uint8 array of shape [round(H * scale), round(W * scale), 3].

  Raises:
    ValueError: on inconsistent shapes or a non-positive scale.
  """
  canvas = _to_rgb_uint8(image)
  height, width = canvas.shape[:2]
  boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
  classes = np.asarray(classes).reshape(-1).astype(np.int64)
  scores = np.asarray(scores, dtype=np.float64).reshape(-1)
  num = boxes.shape[0]
  if classes.shape[0] != num or scores.shape[0] != num:
    raise ValueError(f'Got {num} boxes, {classes.shape[0]} classes and '
                     f'{scores.shape[0]} scores.')
  if masks is not None:
    masks = np.asarray(masks)
    if masks.shape != (num, height, width):
      raise ValueError(f'Expected masks of shape {(num, height, width)} (one '
                       f'per box, at the image size), got {masks.shape}.')
  canvas = _scaled_canvas(canvas, scale)
  out_height, out_width = canvas.shape[:2]
  boxes = boxes * np.array([out_height / height, out_width / width] * 2)
  if line_width is None:
    line_width = max(1, int(round(scale)))

  keep = np.nonzero(scores >= score_threshold)[0]
  keep = keep[np.argsort(scores[keep], kind='stable')]
  if keep.size == 0:
    return np.array(canvas, dtype=np.uint8, copy=True)

  # Masks first, so that outlines and labels stay crisp on top of them.
  blended = canvas.astype(np.float32)
  if masks is not None:
    for i in keep:
      mask = masks[i].astype(np.float32)
      if mask.shape != (out_height, out_width):
        mask = _resize_float(mask, out_width, out_height)
      region = mask > mask_threshold
      color = np.array(class_color(classes[i]), dtype=np.float32)
      blended[region] = ((1.0 - _MASK_ALPHA) * blended[region] +
                         _MASK_ALPHA * color)
  pil_image = Image.fromarray(np.clip(np.round(blended), 0, 255).astype(
      np.uint8))

  draw = ImageDraw.Draw(pil_image)
  font = _load_font(font_size)
  for i in keep:
    color = class_color(classes[i])
    y0, x0, y1, x1 = _box_pixels(boxes[i])
    cy0, cx0 = max(y0, 0), max(x0, 0)
    cy1, cx1 = min(y1, out_height), min(x1, out_width)
    if cy1 <= cy0 or cx1 <= cx0:
      continue  # Entirely outside the image.
    # PIL's rectangle is inclusive and its width grows inwards.
    draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=color, width=line_width)
    class_id = int(classes[i])
    name = (class_names or {}).get(class_id, str(class_id))
    _draw_label(draw, f'{name} {scores[i]:.2f}', cx0, cy0, color, font,
                out_width, out_height)
  return np.asarray(pil_image, dtype=np.uint8).copy()


def make_grid(images: Sequence[np.ndarray], columns: int, margin: int = 4,
              background: int = 255) -> np.ndarray:
  """Tiles images row by row into one image.

  Every cell is as large as the largest image; smaller images sit at their
  cell's top-left corner on `background`. Cells are separated, and the grid
  framed, by `margin` pixels of `background`.

  Args:
    images: a non-empty sequence of uint8 [h, w, 3] (or grey [h, w]) images,
      possibly of different sizes.
    columns: the number of cells per row (positive).
    margin: pixels between cells and around the grid.
    background: grey level of the margins and padding.

  Returns:
    A uint8 array of shape [rows * cell_h + (rows + 1) * margin,
    cols * cell_w + (cols + 1) * margin, 3], with
    rows = ceil(len(images) / columns) and cols = min(columns, len(images)).

  Raises:
    ValueError: if `images` is empty or `columns` is not positive.
  """
  if not images:
    raise ValueError('make_grid needs at least one image.')
  if columns < 1:
    raise ValueError(f'columns must be positive, got {columns}.')
  images = [_to_rgb_uint8(image) for image in images]
  cell_h = max(image.shape[0] for image in images)
  cell_w = max(image.shape[1] for image in images)
  cols = min(columns, len(images))
  rows = -(-len(images) // columns)
  grid = np.full((rows * cell_h + (rows + 1) * margin,
                  cols * cell_w + (cols + 1) * margin, 3),
                 background, dtype=np.uint8)
  for index, image in enumerate(images):
    row, col = divmod(index, columns)
    y = margin + row * (cell_h + margin)
    x = margin + col * (cell_w + margin)
    grid[y:y + image.shape[0], x:x + image.shape[1]] = image
  return grid


def save_png(path: str, image: np.ndarray) -> None:
  """Writes a uint8 image as PNG, creating missing parent directories.

  Args:
    path: the output file path.
    image: uint8 [H, W, 3] or grey [H, W] image.
  """
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.dtype != np.uint8:
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
  Image.fromarray(image).save(path, format='PNG')


_STUFF_ALPHA = 0.35
_THING_ALPHA = 0.6


def instance_color(class_id: int, instance_id: int) -> Color:
  """The colour of one thing instance: its class's, varied per instance.

  The hue stays near `class_color(class_id)`'s (within +-0.06) and the
  brightness varies, both spread by the golden ratio, so that instances of
  one class look alike yet distinct.

  Args:
    class_id: the instance's class (category) id.
    instance_id: its positive instance id.

  Returns:
    An (r, g, b) tuple of ints in [0, 255].
  """
  base = np.array(class_color(class_id), np.float64) / 255.
  hue, saturation, _ = colorsys.rgb_to_hsv(*base)
  step = (int(instance_id) * _GOLDEN_RATIO_CONJUGATE) % 1.0
  hue = (hue + 0.12 * (step - 0.5)) % 1.0
  value = 0.55 + 0.45 * ((int(instance_id) * 0.381966) % 1.0)
  r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
  return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


def resize_label_map(labels: np.ndarray, height: int,
                     width: int) -> np.ndarray:
  """Nearest-neighbour resize of an integer map to [height, width].

  Each output pixel takes the input pixel under its centre, so ids are
  kept and an integer upscale repeats each pixel.

  Args:
    labels: [h, w] array (any dtype).
    height: output height.
    width: output width.

  Returns:
    [height, width] array of `labels`' dtype.
  """
  labels = np.asarray(labels)
  in_height, in_width = labels.shape
  rows = np.minimum(np.floor((np.arange(height) + 0.5) * in_height /
                             height).astype(np.int64), in_height - 1)
  cols = np.minimum(np.floor((np.arange(width) + 0.5) * in_width /
                             width).astype(np.int64), in_width - 1)
  return labels[rows[:, np.newaxis], cols[np.newaxis, :]]


def _inner_border(segments: np.ndarray, width: int) -> np.ndarray:
  """bool [H, W]: pixels within `width` 4-neighbour steps of a pixel of
  another segment (the image's edge is no border)."""
  border = np.zeros(segments.shape, bool)
  for d in range(1, width + 1):
    differs = segments[d:] != segments[:-d]  # Row r + d vs row r.
    border[d:] |= differs
    border[:-d] |= differs
    differs = segments[:, d:] != segments[:, :-d]
    border[:, d:] |= differs
    border[:, :-d] |= differs
  return border


def _label_point(region: np.ndarray) -> Tuple[int, int]:
  """(row, col) of a region's pixel nearest its centroid (the centroid
  itself when it is inside)."""
  rows, cols = np.nonzero(region)
  cy, cx = rows.mean(), cols.mean()
  nearest = np.argmin((rows - cy)**2 + (cols - cx)**2)
  return int(rows[nearest]), int(cols[nearest])


def _draw_centered_label(draw: ImageDraw.ImageDraw, text: str, row: int,
                         col: int, color: Color, font: ImageFont.ImageFont,
                         image_width: int, image_height: int) -> None:
  """Draws `text` on a filled rectangle centred on (row, col), shifted to
  stay inside the image."""
  left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
  width = right - left + 2 * _LABEL_PADDING
  height = bottom - top + 2 * _LABEL_PADDING
  x = min(max(col - width // 2, 0), max(image_width - width, 0))
  y = min(max(row - height // 2, 0), max(image_height - height, 0))
  draw.rectangle([x, y, x + width - 1, y + height - 1], fill=color)
  draw.text((x + _LABEL_PADDING - left, y + _LABEL_PADDING - top), text,
            fill=_text_color(color), font=font)


def draw_panoptic(image: np.ndarray,
                  category_mask: np.ndarray,
                  instance_mask: np.ndarray,
                  class_names: Optional[Mapping[int, str]] = None,
                  stuff_alpha: float = _STUFF_ALPHA,
                  thing_alpha: float = _THING_ALPHA,
                  scale: float = 1.,
                  line_width: Optional[int] = None,
                  font_size: int = 11,
                  labels: bool = True) -> np.ndarray:
  """Draws a panoptic segmentation on an image.

  Stuff segments (category > 0, instance 0) are tinted lightly
  (`stuff_alpha`) with `class_color(category)`; each thing instance
  (instance > 0) more strongly (`thing_alpha`) with its own
  `instance_color(category, instance)`, and its outline (the pixels just
  inside its border with other segments) drawn in that colour. Void
  (category 0) stays as it is. Each segment gets one label, its category's
  name, centred on its pixel nearest its centroid (things on top).

  Args:
    image: uint8 [H, W, 3] (or [H, W] grey) image. Not modified.
    category_mask: int [H, W] category ids, 0 void.
    instance_mask: int [H, W] instance ids, 0 for stuff and void.
    class_names: optional category id -> name; missing ids show as numbers.
    stuff_alpha: opacity of the stuff tint.
    thing_alpha: opacity of the thing tint.
    scale: the output is `scale` times larger than `image` (nearest
      neighbour); text is not scaled.
    line_width: outline width in output pixels; default
      max(1, round(scale)).
    font_size: label font size in output pixels.
    labels: draw the labels.

  Returns:
    A new uint8 array of shape [round(H * scale), round(W * scale), 3].

  Raises:
    ValueError: on masks not of the image's size or a non-positive scale.
  """
  canvas = _to_rgb_uint8(image)
  height, width = canvas.shape[:2]
  category_mask = np.asarray(category_mask).astype(np.int64)
  instance_mask = np.asarray(instance_mask).astype(np.int64)
  for name, mask in (('category_mask', category_mask),
                     ('instance_mask', instance_mask)):
    if mask.shape != (height, width):
      raise ValueError(f'Expected a {name} of shape {(height, width)} (the '
                       f'image size), got {mask.shape}.')
  canvas = _scaled_canvas(canvas, scale)
  out_height, out_width = canvas.shape[:2]
  if (out_height, out_width) != (height, width):
    category_mask = resize_label_map(category_mask, out_height, out_width)
    instance_mask = resize_label_map(instance_mask, out_height, out_width)
  if line_width is None:
    line_width = max(1, int(round(scale)))
  instance_mask = np.where(category_mask > 0, instance_mask, 0)

  # One id per segment: (category, instance) pairs, void -1.
  keys = np.where(category_mask > 0,
                  category_mask * (instance_mask.max() + 1) + instance_mask,
                  -1)
  unique, segments = np.unique(keys, return_inverse=True)
  segments = segments.reshape(keys.shape)
  border = _inner_border(segments, line_width)
  blended = canvas.astype(np.float32)
  drawn = []  # (is thing, region, colour, category).
  for index, key in enumerate(unique):
    if key < 0:
      continue
    region = segments == index
    category = int(category_mask[region][0])
    instance = int(instance_mask[region][0])
    if instance:
      color, alpha = instance_color(category, instance), thing_alpha
    else:
      color, alpha = class_color(category), stuff_alpha
    color_array = np.array(color, np.float32)
    blended[region] = (1. - alpha) * blended[region] + alpha * color_array
    if instance:
      blended[region & border] = color_array
    drawn.append((bool(instance), region, color, category))
  pil_image = Image.fromarray(np.clip(np.round(blended), 0, 255).astype(
      np.uint8))
  if labels:
    draw = ImageDraw.Draw(pil_image)
    font = _load_font(font_size)
    for _, region, color, category in sorted(drawn, key=lambda d: d[0]):
      name = (class_names or {}).get(category, str(category))
      _draw_centered_label(draw, name, *_label_point(region), color, font,
                           out_width, out_height)
  return np.asarray(pil_image, dtype=np.uint8).copy()
