"""Tests for serving/visualize.py: drawing detections, grids and PNG output."""

import colorsys

import numpy as np
from PIL import Image
import pytest

from serving import visualize

_BOX = [10, 10, 30, 30]  # ymin, xmin, ymax, xmax.
_CLASS = 3
_GREY = 100


def _box_mask():
  """A [1, 64, 64] mask that is 1 exactly in `_BOX`."""
  mask = np.zeros((1, 64, 64), np.float32)
  mask[0, _BOX[0]:_BOX[2], _BOX[1]:_BOX[3]] = 1.
  return mask


def _draw_one(image, masks=None, **kwargs):
  """Draws one class-3 detection with score 0.9 in `_BOX`."""
  return visualize.draw_detections(
      image, np.array([_BOX], np.float32), np.array([_CLASS]),
      np.array([0.9]), masks=masks, **kwargs)


def _tinted(value):
  """The blend of grey `value` with the class colour, per channel."""
  color = np.array(visualize.class_color(_CLASS), np.float64)
  return np.round(0.55 * value + 0.45 * color).astype(np.uint8)


def test_class_color_is_deterministic_and_distinct():
  assert visualize.class_color(_CLASS) == visualize.class_color(_CLASS)
  colors = {visualize.class_color(i) for i in range(1, 21)}
  assert len(colors) == 20
  assert (0, 0, 0) not in colors


def test_box_outline_on_black_image():
  image = np.zeros((64, 64, 3), np.uint8)
  original = image.copy()
  out = _draw_one(image)
  color = np.array(visualize.class_color(_CLASS), np.uint8)

  assert out.shape == (64, 64, 3)
  assert out.dtype == np.uint8
  assert not np.shares_memory(out, image)
  np.testing.assert_array_equal(image, original)
  # The label fills rows 10..23 from the top-left; check the edges below it.
  np.testing.assert_array_equal(out[27, 10], color)  # Left edge.
  np.testing.assert_array_equal(out[27, 29], color)  # Right edge.
  np.testing.assert_array_equal(out[29, 20], color)  # Bottom edge.
  # Just inside the outline, and everything away from box and label: black.
  np.testing.assert_array_equal(out[26, 11:29], 0)
  np.testing.assert_array_equal(out[30:], 0)
  np.testing.assert_array_equal(out[:10], 0)
  np.testing.assert_array_equal(out[:, :10], 0)
  # The label is drawn (text and fill) inside the image at the top-left.
  assert np.any(out[10:24, 11:29] != 0)


def test_mask_of_the_box_tints_box_interior_only():
  image = np.full((64, 64, 3), _GREY, np.uint8)
  original = image.copy()
  out = _draw_one(image, masks=_box_mask())

  np.testing.assert_array_equal(image, original)
  interior = out[25:29, 11:29]  # Below the label, inside the outline.
  assert np.all(interior != _GREY)
  np.testing.assert_array_equal(interior, np.broadcast_to(
      _tinted(_GREY), interior.shape))
  np.testing.assert_array_equal(out[30:], image[30:])
  np.testing.assert_array_equal(out[:, :10], image[:, :10])
  np.testing.assert_array_equal(out[:10], image[:10])


def test_zero_mask_leaves_box_interior_unchanged():
  image = np.full((64, 64, 3), _GREY, np.uint8)
  out = _draw_one(image, masks=np.zeros((1, 64, 64), np.float32))
  np.testing.assert_array_equal(out[25:29, 11:29], _GREY)


def test_masks_must_have_the_image_size():
  image = np.full((64, 64, 3), _GREY, np.uint8)
  with pytest.raises(ValueError, match=r'\(1, 64, 64\).*got \(1, 4, 4\)'):
    _draw_one(image, masks=np.ones((1, 4, 4), np.float32))


def test_full_image_mask_tints_only_the_mask():
  image = np.full((64, 64, 3), _GREY, np.uint8)
  mask = np.zeros((1, 64, 64), np.float32)
  mask[0, 12:28, 12:28] = 0.9
  mask[0, 40:50, 40:50] = 0.4  # Below mask_threshold: not drawn.
  out = _draw_one(image, masks=mask)

  np.testing.assert_array_equal(out[24:28, 12:28], np.broadcast_to(
      _tinted(_GREY), (4, 16, 3)))
  np.testing.assert_array_equal(out[24:28, 28], _GREY)  # Inside box, no mask.
  np.testing.assert_array_equal(out[30:], image[30:])
  np.testing.assert_array_equal(out[:, :10], image[:, :10])


def test_boolean_full_image_mask_same_as_probabilities():
  image = np.full((64, 64, 3), _GREY, np.uint8)
  mask = np.zeros((1, 64, 64), bool)
  mask[0, 12:28, 12:28] = True
  np.testing.assert_array_equal(
      _draw_one(image, masks=mask),
      _draw_one(image, masks=mask.astype(np.float32)))


def test_detections_below_score_threshold_are_not_drawn():
  image = np.zeros((64, 64, 3), np.uint8)
  boxes = np.array([[40, 5, 60, 25], [40, 35, 60, 55]], np.float32)
  classes = np.array([1, 2])
  scores = np.array([0.2, 0.9])

  out = visualize.draw_detections(image, boxes, classes, scores,
                                   score_threshold=0.3)
  # The 0.2 detection's box and its label above it are missing.
  np.testing.assert_array_equal(out[:, :20], 0)
  np.testing.assert_array_equal(out[40:, :30], 0)
  np.testing.assert_array_equal(out[59, 45], visualize.class_color(2))

  out = visualize.draw_detections(image, boxes, classes, scores,
                                  score_threshold=0.1)
  np.testing.assert_array_equal(out[59, 15], visualize.class_color(1))
  np.testing.assert_array_equal(out[50, 5], visualize.class_color(1))


def test_no_detections_returns_an_equal_copy():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
  out = visualize.draw_detections(
      image, np.zeros((0, 4)), np.zeros((0,), np.int32), np.zeros((0,)),
      masks=np.zeros((0, 32, 48)))
  np.testing.assert_array_equal(out, image)
  assert out.dtype == np.uint8
  assert not np.shares_memory(out, image)


def test_scale_draws_at_three_times_the_coordinates():
  image = np.zeros((64, 64, 3), np.uint8)
  image[0, 0] = 255
  out = _draw_one(image, scale=3)
  color = np.array(visualize.class_color(_CLASS), np.uint8)

  assert out.shape == (192, 192, 3)
  np.testing.assert_array_equal(out[:3, :3], 255)  # Nearest upscaling.
  np.testing.assert_array_equal(out[3, 3], 0)
  # Box [30, 30, 90, 90] with a 3-pixel outline on its inner side.
  np.testing.assert_array_equal(out[80, 30:33], np.broadcast_to(color, (3, 3)))
  np.testing.assert_array_equal(out[80, 87:90], np.broadcast_to(color, (3, 3)))
  np.testing.assert_array_equal(out[87:90, 60], np.broadcast_to(color, (3, 3)))
  np.testing.assert_array_equal(out[80, 29], 0)
  np.testing.assert_array_equal(out[80, 33:87], 0)
  np.testing.assert_array_equal(out[80, 90:], 0)
  np.testing.assert_array_equal(out[90:], 0)


def test_scale_applies_to_masks():
  image = np.full((64, 64, 3), _GREY, np.uint8)
  out = _draw_one(image, masks=_box_mask(), scale=3)
  np.testing.assert_array_equal(out[80:87, 33:87], np.broadcast_to(
      _tinted(_GREY), (7, 54, 3)))
  np.testing.assert_array_equal(out[90:], _GREY)


def test_make_grid_pads_different_sizes():
  images = [np.full((10, 20, 3), 10, np.uint8),
            np.full((30, 15, 3), 20, np.uint8),
            np.full((5, 5, 3), 30, np.uint8)]
  grid = visualize.make_grid(images, columns=2, margin=4)

  # Cells of 30 x 20, 2 rows and 2 columns, 4-pixel margins.
  assert grid.shape == (2 * 30 + 3 * 4, 2 * 20 + 3 * 4, 3)
  assert grid.dtype == np.uint8
  np.testing.assert_array_equal(grid[4:14, 4:24], 10)
  np.testing.assert_array_equal(grid[4:34, 28:43], 20)
  np.testing.assert_array_equal(grid[38:43, 4:9], 30)
  expected_sum = (10 * 10 * 20 + 20 * 30 * 15 + 30 * 5 * 5 +
                  255 * (grid.shape[0] * grid.shape[1] - 200 - 450 - 25)) * 3
  assert int(grid.astype(np.int64).sum()) == expected_sum


def test_make_grid_rejects_empty_input():
  with pytest.raises(ValueError):
    visualize.make_grid([], columns=2)


def test_save_png_round_trips_and_creates_directories(tmp_path):
  rng = np.random.default_rng(1)
  image = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
  path = tmp_path / 'a' / 'b' / 'grid.png'
  visualize.save_png(str(path), image)

  with Image.open(path) as loaded:
    assert loaded.format == 'PNG'
    np.testing.assert_array_equal(np.asarray(loaded), image)


# A 64 x 64 panoptic segmentation: stuff 7 on the top half, void on the
# bottom-left quarter, two touching instances of class 3 (ids 1 and 2) on
# the bottom-right, stuff 8 around them.
_STUFF, _OTHER_STUFF, _THING = 7, 8, 3


def _panoptic_masks():
  category = np.zeros((64, 64), np.int32)
  instance = np.zeros((64, 64), np.int32)
  category[:32] = _STUFF
  category[32:, 32:] = _OTHER_STUFF
  category[36:51, 36:61] = _THING
  instance[36:51, 36:47] = 1
  instance[36:51, 47:61] = 2
  return category, instance


def _blend(value, color, alpha):
  return np.round((1 - alpha) * value + alpha * np.array(
      color, np.float64)).astype(np.uint8)


def test_instance_colors_differ_per_instance_near_the_class_hue():
  colors = [visualize.instance_color(_THING, k) for k in range(1, 30)]
  assert len(set(colors)) == len(colors)
  assert visualize.instance_color(_THING, 4) == colors[3]
  hue = lambda c: colorsys.rgb_to_hsv(*(np.array(c) / 255.))[0]
  base = hue(visualize.class_color(_THING))
  for color in colors:
    distance = abs(hue(color) - base)
    assert min(distance, 1 - distance) <= 0.061


def test_draw_panoptic_tints_stuff_and_things_outlines_instances():
  image = np.full((64, 64, 3), _GREY, np.uint8)
  original = image.copy()
  category, instance = _panoptic_masks()
  out = visualize.draw_panoptic(image, category, instance, labels=False,
                                stuff_alpha=0.3, thing_alpha=0.6)
  np.testing.assert_array_equal(image, original)
  assert out.shape == (64, 64, 3) and out.dtype == np.uint8
  # Void: unchanged.
  np.testing.assert_array_equal(out[32:, :32], _GREY)
  # Stuff: lightly tinted with the class colour, no outline.
  np.testing.assert_array_equal(out[:32], np.broadcast_to(
      _blend(_GREY, visualize.class_color(_STUFF), 0.3), (32, 64, 3)))
  np.testing.assert_array_equal(out[60, 40], _blend(
      _GREY, visualize.class_color(_OTHER_STUFF), 0.3))
  np.testing.assert_array_equal(out[35, 40], _blend(
      _GREY, visualize.class_color(_OTHER_STUFF), 0.3))
  # Things: strongly tinted with their own colours, interiors.
  first = visualize.instance_color(_THING, 1)
  second = visualize.instance_color(_THING, 2)
  assert first != second
  np.testing.assert_array_equal(out[37:50, 37:46], np.broadcast_to(
      _blend(_GREY, first, 0.6), (13, 9, 3)))
  np.testing.assert_array_equal(out[37:50, 48:60], np.broadcast_to(
      _blend(_GREY, second, 0.6), (13, 12, 3)))
  # Outlines: the pixels just inside each instance's border, its colour,
  # also where the two instances touch (columns 46 | 47).
  for row, col in ((36, 40), (50, 40), (43, 36), (43, 46)):
    np.testing.assert_array_equal(out[row, col], first)
  for row, col in ((36, 50), (50, 50), (43, 47), (43, 60)):
    np.testing.assert_array_equal(out[row, col], second)


def test_draw_panoptic_labels_each_segment_at_its_centre():
  image = np.full((64, 64, 3), _GREY, np.uint8)
  category, instance = _panoptic_masks()
  names = {_STUFF: 's', _OTHER_STUFF: 'o', _THING: 't'}
  plain = visualize.draw_panoptic(image, category, instance, labels=False)
  out = visualize.draw_panoptic(image, category, instance, class_names=names)
  changed = np.any(out != plain, axis=-1)
  # A label on each stuff segment and instance, around its centroid: the
  # top half's (16, 31); instances at (43, 41) and (43, 53); the stuff
  # around them is labelled at its pixel nearest its centroid.
  assert changed[15:18, 29:34].any()
  assert changed[42:45, 39:43].any()
  assert changed[42:45, 52:56].any()
  # Nothing else: void far from the labels, the corners.
  assert not changed[40:, :25].any()
  assert not changed[:5, :20].any() and not changed[:5, 44:].any()
  assert changed.sum() < 64 * 64 // 4


def test_draw_panoptic_scales_masks_and_outlines():
  image = np.full((64, 64, 3), _GREY, np.uint8)
  category, instance = _panoptic_masks()
  out = visualize.draw_panoptic(image, category, instance, labels=False,
                                scale=2)
  assert out.shape == (128, 128, 3)
  np.testing.assert_array_equal(out[64:, :64], _GREY)
  first = visualize.instance_color(_THING, 1)
  # Instance 1 covers rows 72..101, columns 72..93; 2-pixel outlines.
  np.testing.assert_array_equal(out[72:74, 80], np.broadcast_to(first,
                                                                (2, 3)))
  np.testing.assert_array_equal(out[74, 80], _blend(_GREY, first, 0.6))
  np.testing.assert_array_equal(out[86, 92:94], np.broadcast_to(first,
                                                                (2, 3)))


def test_draw_panoptic_masks_must_have_the_image_size():
  image = np.full((64, 64, 3), _GREY, np.uint8)
  category, instance = _panoptic_masks()
  with pytest.raises(ValueError, match=r'instance_mask of shape \(64, 64\)'):
    visualize.draw_panoptic(image, category, instance[:32])


def test_resize_label_map_takes_the_pixel_under_each_centre():
  labels = np.arange(12).reshape(3, 4)
  np.testing.assert_array_equal(
      visualize.resize_label_map(labels, 6, 8),
      np.kron(labels, np.ones((2, 2), np.int64)))
  # 3 -> 2 rows: centres 0.75 and 2.25 of the input: rows 0 and 2.
  np.testing.assert_array_equal(visualize.resize_label_map(labels, 2, 4),
                                labels[[0, 2]])
  np.testing.assert_array_equal(visualize.resize_label_map(labels, 3, 4),
                                labels)
