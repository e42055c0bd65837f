r"""Generates a small synthetic PANOPTIC dataset ("shapes panoptic").

  python -m data.shapes_panoptic --output_dir=/tmp/shapes_panoptic \
      [--num_train=1000] [--num_val=200] [--image_size=128] [--seed=0] \
      [--num_train_shards=2] [--num_val_shards=1]

Each RGB image is an outdoor-like scene of three STUFF classes, with the
flat-coloured shapes of the instance "shapes" set (`shapes_dataset`) drawn
on top as THINGS:

  things  THING_CATEGORIES = {1: 'circle', 2: 'square', 4: 'triangle'}
  stuff   STUFF_CATEGORIES = {92: 'sky', 93: 'road', 94: 'grass'}

A horizon at a random height (slightly tilted) splits the sky (a blue
vertical gradient with a little noise) from the ground. The ground is road
(neutral grey, fine per-pixel noise, sometimes a dashed pale centre line)
with one or two grass regions (green, coarse blotchy noise): verges along a
side of the road or polygon/rectangle patches. Every stuff region covers at
least `MIN_STUFF_FRACTION` of the image before things are drawn.

Stuff ids are above 91 on purpose: Model Garden's converter writes the
semantic PNG ('image/segmentation/class/encoded') as 1 for things and
`category_id - 90` for stuff (COCO's stuff ids are 92-200); smaller stuff
ids do not fit its uint8 mask (NumPy 2 raises OverflowError).

Deterministic choices (index = the image's index within its split):
  * `index % 10 == 0`: no thing at all (stuff only, 10% of the images);
  * `index % 4 == 1`: a void rectangle of random noise, drawn over the
    stuff and under the things (category 0 in the panoptic PNG, in no
    segment); things that would hide more than half of it are not drawn;
  * `index % 7 == 3` (and not `index % 10 == 0`): a crowd, 3-5 small
    touching shapes of one category drawn first and annotated as ONE
    segment with iscrowd 1; things that would hide more than half of it
    are not drawn;
  * other shapes follow `shapes_dataset`'s sampling and occlusion rules
    (`_sample_shapes`, `MAX_OCCLUSION`); a thing with fewer than
    `MIN_VISIBLE_AREA` visible pixels is not annotated and its visible
    pixels are void (they show an object, not stuff).
Every pixel is exactly one of: a thing segment's (its visible pixels), void,
or the stuff segment of its stuff class. Masks come from the same
rasterisation as the image.

Layout written under `output_dir`, per split in ('train', 'val'):
  <split>/images/<split>_000000.png    RGB images.
  <split>/panoptic/<split>_000000.png  COCO panoptic PNGs: segment id =
                                       R + 256 G + 256^2 B, 0 = void; a
                                       segment's id is 256 * category_id +
                                       k + 1 (k = its index in
                                       segments_info).
  <split>.json                         COCO instances JSON of the things
                                       (compressed RLE, iscrowd 0 or 1),
                                       the 3 thing categories.
  panoptic_<split>.json                COCO panoptic JSON; segments_info
                                       lists the things first, in the
                                       instances JSON's order, then the
                                       stuff by id; categories have
                                       isthing 1 / 0.
  <split>-0000i-of-0000N.tfrecord      Built by Model Garden's own
                                       `create_coco_tf_record.
                                       create_tf_example` with
                                       include_masks and
                                       include_panoptic_masks: the instance
                                       keys plus 'image/panoptic/
                                       category_mask' (dataset category
                                       ids, 0 = void), 'image/panoptic/
                                       instance_mask' (the k-th thing of
                                       the image has instance id k, stuff
                                       and void 0) and 'image/segmentation/
                                       class/encoded'; 'image/format' is
                                       'png'.
Two details of calling Model Garden's converter
(`coco_panoptic.model_garden_panoptic`): it reads the panoptic PNG as uint8
and computes R + 256 G + 256^2 B on it, which NumPy 2 refuses (NumPy 1
widened the types), so the PNG is handed to it as int64 (the same ids); and
it reads the absl flag --panoptic_skip_crowd, which is held False (crowd
segments kept) for the call without parsing or changing any other flag.

The output is deterministic (same arguments, byte-identical files) and a
split appears only complete (`generate_split`).
"""

import argparse
import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from PIL import ImageDraw
import tensorflow as tf

from common import atomic_io
from common import panoptic_png as panoptic_png_lib
from data import coco_checks
from data import coco_panoptic
from data import coco_tfrecord
from data import coco_utils
from data import shapes_dataset
from official.vision.data import create_coco_tf_record

THING_CATEGORIES = dict(shapes_dataset.CATEGORIES)
STUFF_CATEGORIES = {92: 'sky', 93: 'road', 94: 'grass'}
CATEGORIES = {**THING_CATEGORIES, **STUFF_CATEGORIES}
SPLITS = shapes_dataset.SPLITS
MIN_VISIBLE_AREA = shapes_dataset.MIN_VISIBLE_AREA
MAX_OCCLUSION = shapes_dataset.MAX_OCCLUSION
# Smallest share of the image of each stuff region (sky, road, each grass
# region) before things are drawn.
MIN_STUFF_FRACTION = 0.06
MIN_IMAGE_SIZE = 32

_SKY, _ROAD, _GRASS = 92, 93, 94
# The instance set's rasterisation, sampling and annotation, reused.
# pylint: disable=protected-access
_draw_mask = shapes_dataset._draw_mask
_object_colour = shapes_dataset._object_colour
_sample_shapes = shapes_dataset._sample_shapes
_annotation = shapes_dataset._annotation
# pylint: enable=protected-access
_SPLIT_CODES = {'train': 0, 'val': 1}
_STREAM = 17  # Keeps the random streams apart from shapes_dataset's.
_MAX_TRIES = 50


def has_things(index: int) -> bool:
  """Whether image `index` of a split may have things (not 1 in 10)."""
  return index % 10 != 0


def has_void(index: int) -> bool:
  """Whether image `index` of a split has a void rectangle."""
  return index % 4 == 1


def has_crowd(index: int) -> bool:
  """Whether image `index` of a split has a crowd segment."""
  return index % 7 == 3 and has_things(index)


# ------------------------------------------------------------------- stuff


def _smooth_noise(rng: np.random.Generator, size: int, cells: int,
                  std: float) -> np.ndarray:
  """[size, size] noise of `cells` x `cells` blobs, bilinearly upsampled."""
  grid = rng.normal(0.0, std, size=(cells + 1, cells + 1))
  t = np.linspace(0.0, cells, size)
  # Interpolate along x for each grid row, then along y for each column.
  rows = np.stack([np.interp(t, np.arange(cells + 1), r) for r in grid])
  return np.stack([np.interp(t, np.arange(cells + 1), c)
                   for c in rows.T]).T


def _polygon_mask(points: Sequence[Tuple[float, float]],
                  size: int) -> np.ndarray:
  canvas = Image.new('L', (size, size), 0)
  ImageDraw.Draw(canvas).polygon([tuple(map(float, p)) for p in points],
                                 fill=1)
  return np.asarray(canvas, dtype=bool)


def _grass_polygon(rng: np.random.Generator, size: int, horizon: float,
                   side: Optional[int]) -> List[Tuple[float, float]]:
  """A verge on `side` (0 left, 1 right) or, if None, a patch."""
  s = float(size)
  if side is not None:
    top = rng.uniform(0.08, 0.35) * s  # Width at the horizon.
    bottom = rng.uniform(0.2, 0.5) * s  # Width at the bottom edge.
    points = [(-1.0, horizon - 0.2 * s), (top, horizon - 0.2 * s),
              (bottom, s + 1.0), (-1.0, s + 1.0)]
    if side:
      points = [(s - x, y) for x, y in points]
    return points
  cx = rng.uniform(0.2, 0.8) * s
  cy = rng.uniform(horizon + 0.3 * (s - horizon), s)
  if rng.random() < 0.4:  # An axis-aligned rectangle.
    w, h = rng.uniform(0.25, 0.55, size=2) * s
    return [(cx - w / 2, cy - h / 2), (cx + w / 2, cy - h / 2),
            (cx + w / 2, cy + h / 2), (cx - w / 2, cy + h / 2)]
  num = int(rng.integers(5, 9))
  angles = np.sort(rng.uniform(0.0, 2 * np.pi, size=num))
  radii = rng.uniform(0.15, 0.3) * s * rng.uniform(0.7, 1.2, size=num)
  return [(cx + r * np.cos(a), cy + r * np.sin(a))
          for a, r in zip(angles, radii)]


def _stuff_layout(rng: np.random.Generator, size: int
                  ) -> Tuple[np.ndarray, float, float]:
  """Samples the stuff classes' layout.

  Args:
    rng: the image's generator.
    size: image side.

  Returns:
    (stuff, horizon, slope): int32 [size, size] stuff category ids and the
    horizon line y = horizon + slope * (x - size / 2).
  """
  ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
  min_area = MIN_STUFF_FRACTION * size * size
  for _ in range(_MAX_TRIES):
    horizon = rng.uniform(0.3, 0.55) * size
    slope = rng.uniform(-0.15, 0.15)
    ground = ys >= horizon + slope * (xs - size / 2)
    num_regions = int(rng.integers(1, 3))
    sides = [0, 1]
    rng.shuffle(sides)
    grass = np.zeros((size, size), dtype=bool)
    ok = True
    for k in range(num_regions):
      verge = rng.random() < 0.6
      region = _polygon_mask(
          _grass_polygon(rng, size, horizon, sides[k] if verge else None),
          size) & ground
      ok &= region.sum() >= min_area
      grass |= region
    road = ground & ~grass
    ok &= road.sum() >= 2 * min_area and (~ground).sum() >= 2 * min_area
    if ok:
      break
  stuff = np.full((size, size), _SKY, dtype=np.int32)
  stuff[road] = _ROAD
  stuff[grass] = _GRASS
  return stuff, horizon, slope


def _stuff_image(rng: np.random.Generator, stuff: np.ndarray,
                 horizon: float, slope: float) -> np.ndarray:
  """float32 [size, size, 3] textures of the stuff layout."""
  size = stuff.shape[0]
  ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
  line = np.maximum(horizon + slope * (xs - size / 2), 1.0)
  # Sky: deep blue at the top, pale towards the horizon, a little noise.
  top = rng.uniform([25, 70, 170], [60, 115, 225])
  low = rng.uniform([140, 175, 215], [185, 210, 250])
  t = np.clip(ys / line, 0.0, 1.0)[:, :, None]
  sky = top * (1 - t) + low * t + rng.normal(0.0, 2.5, (size, size, 1))
  # Road: neutral grey with fine per-pixel noise.
  grey = rng.uniform(90.0, 140.0)
  road = (grey + rng.uniform(-4.0, 4.0, size=3) +
          rng.normal(0.0, 12.0, (size, size, 1)) +
          rng.normal(0.0, 2.0, (size, size, 3)))
  if rng.random() < 0.6:  # A dashed centre line, in perspective.
    vx = rng.uniform(0.4, 0.6) * size
    bx = rng.uniform(0.35, 0.65) * size
    depth = np.clip((ys - horizon) / (size - horizon), 0.0, 1.0)
    half_width = 0.3 + 0.02 * size * depth
    dashes = np.floor(np.sqrt(depth) * 8.0 + rng.uniform()) % 2 == 0
    stripe = (np.abs(xs - (vx + (bx - vx) * depth)) < half_width) & dashes
    road[stripe] = rng.uniform(200.0, 235.0) + rng.normal(
        0.0, 4.0, (int(stripe.sum()), 3))
  # Grass: green with coarse blotches and a little fine noise.
  green = rng.uniform([45, 115, 25], [90, 165, 70])
  blotches = _smooth_noise(rng, size, max(2, size // 10), 22.0)
  grass = (green + blotches[:, :, None] * np.array([0.5, 1.0, 0.4]) +
           rng.normal(0.0, 4.0, (size, size, 3)))
  image = np.where((stuff == _SKY)[:, :, None], sky,
                   np.where((stuff == _ROAD)[:, :, None], road, grass))
  return image.astype(np.float32)


# ------------------------------------------------------------------ things


def _crowd_members(rng: np.random.Generator, size: int
                   ) -> Tuple[int, List[np.ndarray]]:
  """(category id, member masks) of a crowd of 3-5 touching shapes."""
  category_ids = sorted(THING_CATEGORIES)
  category_id = int(category_ids[rng.integers(len(category_ids))])
  extent = max(rng.uniform(0.09, 0.13) * size, 8.0)
  # Centres closer than twice the inscribed radius: the shapes overlap.
  step = (0.45 if category_id == 4 else 0.75) * extent
  lo, hi = extent / 2 + 1, size - extent / 2 - 1
  centres = [rng.uniform(0.2 * size, 0.8 * size, size=2)]
  for _ in range(int(rng.integers(3, 6)) - 1):
    base = centres[int(rng.integers(len(centres)))]
    angle = rng.uniform(0.0, 2 * np.pi)
    centres.append(np.clip(base + step * np.array([np.cos(angle),
                                                   np.sin(angle)]), lo, hi))
  masks = [_draw_mask(category_id, float(cx), float(cy), extent,
                      float(rng.uniform(0.0, 2 * np.pi)), size)
           for cx, cy in centres]
  return category_id, masks


def _void_box(rng: np.random.Generator, size: int,
              avoid: np.ndarray) -> Tuple[int, int, int, int]:
  """(y0, x0, y1, x1) of a small rectangle, away from `avoid` if it can."""
  for _ in range(_MAX_TRIES):
    h, w = (rng.uniform(0.08, 0.18, size=2) * size).astype(int) + 1
    y0 = int(rng.integers(0, size - h + 1))
    x0 = int(rng.integers(0, size - w + 1))
    if not avoid[y0:y0 + h, x0:x0 + w].any():
      break
  return y0, x0, y0 + h, x0 + w


def _hides_too_much(mask: np.ndarray, drawn: Sequence[np.ndarray]) -> bool:
  """shapes_dataset's rule: would `mask` hide over MAX_OCCLUSION of one?"""
  covered = mask.copy()
  for earlier in reversed(drawn):
    area = earlier.sum()
    if area and (earlier & covered).sum() > MAX_OCCLUSION * area:
      return True
    covered |= earlier
  return False


def render_panoptic(seed: int, split: str, index: int,
                    image_size: int = 128) -> Dict[str, Any]:
  """Renders one image and its panoptic labels deterministically.

  Args:
    seed: global seed.
    split: 'train' or 'val'.
    index: index of the image within its split.
    image_size: height and width in pixels.

  Returns:
    {'image': uint8 [H, W, 3], 'segments': list of {'category_id',
    'iscrowd', 'mask' (bool [H, W])}, the things in drawing order then the
    stuff by id (non-empty masks, pairwise disjoint), 'void': bool [H, W]
    (the pixels of no segment), 'dropped': things left unannotated}.
  """
  size = image_size
  rng = np.random.default_rng([seed, _SPLIT_CODES[split], index, _STREAM])
  stuff, horizon, slope = _stuff_layout(rng, size)
  canvas = _stuff_image(rng, stuff, horizon, slope)
  # Thing colours are kept far from these (as shapes_dataset keeps them
  # far from its background's corners and mean).
  refs = [np.median(canvas[stuff == c], axis=0)
          for c in STUFF_CATEGORIES if (stuff == c).any()]
  palette = np.stack((refs + [canvas[0, 0], canvas[-1, -1]])[:4]).reshape(
      2, 2, 3)

  # Drawing order: void, crowd, shapes; items are (kind, category, mask).
  items = []
  crowd = np.zeros((size, size), dtype=bool)
  if has_crowd(index):
    crowd_category, members = _crowd_members(rng, size)
    crowd = np.logical_or.reduce(members)
  if has_void(index):
    y0, x0, y1, x1 = _void_box(rng, size, avoid=crowd)
    canvas[y0:y1, x0:x1] = rng.integers(0, 256, size=(y1 - y0, x1 - x0, 3))
    void = np.zeros((size, size), dtype=bool)
    void[y0:y1, x0:x1] = True
    items.append(('void', 0, void))
  if has_crowd(index):
    for m in members:
      canvas[m] = _object_colour(rng, palette)
    items.append(('crowd', crowd_category, crowd))
  shapes = _sample_shapes(rng, index, size) if has_things(index) else []
  for shape in shapes:
    m = _draw_mask(shape['category_id'], shape['cx'], shape['cy'],
                   shape['extent'], shape['angle'], size)
    colour = _object_colour(rng, palette)
    if _hides_too_much(m, [mask for _, _, mask in items]):
      continue
    canvas[m] = colour
    items.append(('thing', shape['category_id'], m))
  canvas += rng.normal(0.0, 2.0, size=canvas.shape).astype(np.float32)
  image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)

  owner = np.full((size, size), -1, dtype=np.int32)
  for j, (_, _, m) in enumerate(items):
    owner[m] = j
  void = np.zeros((size, size), dtype=bool)
  segments, dropped = [], 0
  for j, (kind, category_id, _) in enumerate(items):
    visible = owner == j
    if kind == 'void':
      void |= visible
    elif visible.sum() < MIN_VISIBLE_AREA:
      void |= visible
      dropped += 1
    else:
      segments.append(dict(category_id=category_id, mask=visible,
                           iscrowd=int(kind == 'crowd')))
  for category_id in sorted(STUFF_CATEGORIES):
    m = (owner < 0) & (stuff == category_id)
    if m.any():
      segments.append(dict(category_id=category_id, mask=m, iscrowd=0))
  return dict(image=image, segments=segments, void=void, dropped=dropped)


# ------------------------------------------------------------------ writing


def segment_id(category_id: int, k: int) -> int:
  """Panoptic id of the k-th segment of an image (unique, never 0)."""
  return 256 * category_id + k + 1


def panoptic_png(segments: Sequence[Dict[str, Any]],
                 size: int) -> np.ndarray:
  """uint8 [size, size, 3] COCO panoptic PNG of an image's segments."""
  ids = np.zeros((size, size), dtype=np.int64)
  for k, segment in enumerate(segments):
    ids[segment['mask']] = segment_id(segment['category_id'], k)
  return panoptic_png_lib.encode_segment_ids(ids)


def _box(mask: np.ndarray) -> List[int]:
  ys, xs = np.nonzero(mask)
  return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
          int(ys.max() - ys.min() + 1)]


def _serialized_example(image: Dict[str, Any],
                        annotations: Sequence[Dict[str, Any]],
                        panoptic_annotation: Dict[str, Any], image_dir: str,
                        panoptic_dir: str) -> bytes:
  """One image as a tf.Example, by Model Garden's create_tf_example."""
  converted = []
  for ann in annotations:
    # As coco_tfrecord hands masks over: uncompressed RLE, one part for an
    # ordinary annotation, the RLE itself for a crowd one.
    rle = coco_utils.uncompressed_rle(coco_utils.annotation_mask(
        ann['segmentation'], image['height'], image['width']))
    converted.append(dict(ann, segmentation=rle if ann['iscrowd'] else [rle]))
  with coco_panoptic.model_garden_panoptic():
    example, skipped = create_coco_tf_record.create_tf_example(
        image, [image_dir], panoptic_masks_dir=panoptic_dir,
        bbox_annotations=converted, id_to_name_map=THING_CATEGORIES,
        panoptic_annotation=panoptic_annotation,
        is_category_thing={c: c in THING_CATEGORIES for c in CATEGORIES},
        include_panoptic_masks=True, include_masks=True)
  if skipped:
    raise ValueError(f"{image['file_name']}: Model Garden skipped "
                     f'{skipped} annotation(s).')
  example.features.feature['image/format'].bytes_list.value[:] = [b'png']
  return example.SerializeToString(deterministic=True)


def _new_stats(num_images: int) -> Dict[str, Any]:
  return dict(images=num_images, thing_segments=0, crowd_segments=0,
              stuff_segments=0, void_images=0, images_without_things=0,
              dropped_things=0,
              per_category_segments={v: 0 for v in CATEGORIES.values()},
              pixel_fractions={v: 0.0 for v in
                               list(CATEGORIES.values()) + ['void']})


def _write_split(root: str, split: str, num_images: int, image_size: int,
                 seed: int, num_shards: int) -> Dict[str, Any]:
  """Writes one split's files under `root`; returns its statistics."""
  image_dir = os.path.join(root, split, 'images')
  panoptic_dir = os.path.join(root, split, 'panoptic')
  os.makedirs(image_dir, exist_ok=True)
  os.makedirs(panoptic_dir, exist_ok=True)
  info = {'description': 'Synthetic shapes panoptic', 'version': '1.0'}
  coco = {'info': info, 'licenses': [], 'images': [], 'annotations': [],
          'categories': [{'id': k, 'name': v, 'supercategory': 'shape'}
                         for k, v in sorted(THING_CATEGORIES.items())]}
  panoptic = {
      'info': info, 'licenses': [], 'images': [], 'annotations': [],
      'categories': [
          {'id': k, 'name': v, 'isthing': int(k in THING_CATEGORIES),
           'supercategory': 'shape' if k in THING_CATEGORIES else 'scene'}
          for k, v in sorted(CATEGORIES.items())]}
  stats = _new_stats(num_images)
  pixels = {c: 0 for c in list(CATEGORIES) + [0]}
  ann_id = 1
  paths = coco_tfrecord.shard_paths(os.path.join(root, split), num_shards)
  writers = [tf.io.TFRecordWriter(p) for p in paths]
  try:
    for index in range(num_images):
      rendered = render_panoptic(seed, split, index, image_size)
      segments = rendered['segments']
      image_id = index + 1
      file_name = f'{split}_{index:06d}.png'
      Image.fromarray(rendered['image']).save(
          os.path.join(image_dir, file_name), format='PNG')
      Image.fromarray(panoptic_png(segments, image_size)).save(
          os.path.join(panoptic_dir, file_name), format='PNG')
      image = {'id': image_id, 'file_name': file_name,
               'height': image_size, 'width': image_size}
      annotations, segments_info = [], []
      for k, segment in enumerate(segments):
        category_id, mask = segment['category_id'], segment['mask']
        area = int(mask.sum())
        segments_info.append({
            'id': segment_id(category_id, k), 'category_id': category_id,
            'area': area, 'bbox': _box(mask), 'iscrowd': segment['iscrowd']})
        pixels[category_id] += area
        stats['per_category_segments'][CATEGORIES[category_id]] += 1
        if category_id in THING_CATEGORIES:
          annotations.append(dict(
              _annotation(mask, category_id, image_id, ann_id),
              iscrowd=segment['iscrowd']))
          ann_id += 1
      panoptic_annotation = {'image_id': image_id, 'file_name': file_name,
                             'segments_info': segments_info}
      coco['images'].append(image)
      coco['annotations'].extend(annotations)
      panoptic['images'].append(dict(image))
      panoptic['annotations'].append(panoptic_annotation)
      coco_checks.validate(dict(coco, images=[image],
                                annotations=annotations), image_dir)
      writers[index % num_shards].write(_serialized_example(
          image, annotations, panoptic_annotation, image_dir, panoptic_dir))

      void_pixels = int(rendered['void'].sum())
      pixels[0] += void_pixels
      stats['thing_segments'] += len(annotations)
      stats['crowd_segments'] += sum(a['iscrowd'] for a in annotations)
      stats['stuff_segments'] += len(segments) - len(annotations)
      stats['void_images'] += int(void_pixels > 0)
      stats['images_without_things'] += int(not annotations)
      stats['dropped_things'] += rendered['dropped']
  finally:
    for writer in writers:
      writer.close()
  total = max(num_images, 1) * image_size * image_size
  for c, n in pixels.items():
    stats['pixel_fractions'][CATEGORIES.get(c, 'void')] = n / total
  with open(os.path.join(root, f'{split}.json'), 'w') as f:
    json.dump(coco, f, sort_keys=True)
  with open(os.path.join(root, f'panoptic_{split}.json'), 'w') as f:
    json.dump(panoptic, f, sort_keys=True)
  return stats


def generate_split(output_dir: str, split: str, num_images: int,
                   image_size: int = 128, seed: int = 0,
                   num_shards: int = 1) -> Dict[str, Any]:
  """Writes one split; returns its paths and statistics.

  The split is written into a hidden staging directory and moved into
  `output_dir` once complete, its two JSONs last (`atomic_io.atomic_files`):
  a split that fails leaves `output_dir` as it was, and a split written
  again replaces `<split>/` whole.

  Args:
    output_dir: destination directory.
    split: 'train' or 'val'.
    num_images: number of images.
    image_size: height and width of the square images.
    seed: seed.
    num_shards: number of TFRecord shards.

  Returns:
    {'image_dir', 'panoptic_dir', 'json', 'panoptic_json', 'tfrecords'
    (list of paths), 'stats'}; see `generate` for the statistics.
  """
  if split not in _SPLIT_CODES:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}.')
  if image_size < MIN_IMAGE_SIZE:
    raise ValueError(f'image_size must be >= {MIN_IMAGE_SIZE}, got '
                     f'{image_size}.')
  if num_shards < 1:
    raise ValueError(f'num_shards must be >= 1, got {num_shards}.')
  last = [f'{split}.json', f'panoptic_{split}.json']
  with atomic_io.atomic_files(output_dir, last=last) as staging:
    stats = _write_split(staging, split, num_images, image_size, seed,
                         num_shards)
  return {'image_dir': os.path.join(output_dir, split, 'images'),
          'panoptic_dir': os.path.join(output_dir, split, 'panoptic'),
          'json': os.path.join(output_dir, last[0]),
          'panoptic_json': os.path.join(output_dir, last[1]),
          'tfrecords': coco_tfrecord.shard_paths(
              os.path.join(output_dir, split), num_shards),
          'stats': stats}


def generate(output_dir: str, num_train: int = 1000, num_val: int = 200,
             image_size: int = 128, seed: int = 0, num_train_shards: int = 2,
             num_val_shards: int = 1) -> Dict[str, Any]:
  """Generates the train and val splits under `output_dir`.

  Args:
    output_dir: destination directory (created if missing).
    num_train: number of training images.
    num_val: number of validation images.
    image_size: height and width of the square images (>= 32).
    seed: seed; the same arguments give byte-identical outputs.
    num_train_shards: number of train TFRecord shards.
    num_val_shards: number of val TFRecord shards.

  Returns:
    {'thing_categories', 'stuff_categories', 'train': split_info, 'val':
    split_info}; split_info is {'image_dir', 'panoptic_dir', 'json',
    'panoptic_json', 'tfrecords', 'stats'} and 'stats' is {'images',
    'thing_segments' (crowd ones included), 'crowd_segments',
    'stuff_segments', 'void_images' (images with void pixels),
    'images_without_things', 'dropped_things' (too occluded to annotate,
    their pixels void), 'per_category_segments' {name: count},
    'pixel_fractions' {name or 'void': share of all pixels}}.
  """
  os.makedirs(output_dir, exist_ok=True)
  result = {'thing_categories': dict(THING_CATEGORIES),
            'stuff_categories': dict(STUFF_CATEGORIES)}
  for split, num, shards in (('train', num_train, num_train_shards),
                             ('val', num_val, num_val_shards)):
    result[split] = generate_split(output_dir, split, num, image_size, seed,
                                   shards)
  return result


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(
      description='Generates the synthetic shapes panoptic dataset.')
  parser.add_argument('--output_dir', required=True)
  parser.add_argument('--num_train', type=int, default=1000)
  parser.add_argument('--num_val', type=int, default=200)
  parser.add_argument('--image_size', type=int, default=128)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--num_train_shards', type=int, default=2)
  parser.add_argument('--num_val_shards', type=int, default=1)
  args = parser.parse_args(argv)
  start = time.time()
  result = generate(args.output_dir, num_train=args.num_train,
                    num_val=args.num_val, image_size=args.image_size,
                    seed=args.seed, num_train_shards=args.num_train_shards,
                    num_val_shards=args.num_val_shards)
  print(f'shapes panoptic dataset -> {args.output_dir}')
  for split in SPLITS:
    s = result[split]['stats']
    fractions = ', '.join(f'{name} {100 * v:.1f}%'
                          for name, v in s['pixel_fractions'].items())
    print(f'{split}: {s["images"]} images, {s["thing_segments"]} thing '
          f'segments ({s["crowd_segments"]} crowd), {s["stuff_segments"]} '
          f'stuff segments, {s["void_images"]} images with void, '
          f'{s["images_without_things"]} without things, '
          f'{len(result[split]["tfrecords"])} shard(s); pixels: {fractions}')
  print(f'elapsed {time.time() - start:.1f}s')


if __name__ == '__main__':
  main()
