r"""Generates a small synthetic instance-segmentation dataset ("shapes").

  python -m data.shapes_dataset --output_dir=/tmp/shapes \
      [--num_train=1000] [--num_val=200] [--image_size=128] [--seed=0]

Each image is an RGB uint8 PNG with a noisy, low-frequency colour-gradient
background and 0-5 flat-coloured shapes. The output is deterministic: the same
arguments give byte-identical images, JSON and TFRecords.

Categories are COCO-style with deliberately NON-contiguous ids, to exercise
id mapping in the input pipeline and the evaluator:

  {1: 'circle', 2: 'square', 4: 'triangle'}   (id 3 is unused)

Per image, shapes are drawn in order, so later shapes occlude earlier ones:
each instance's annotated mask is its drawn mask minus the union of the masks
drawn after it. A shape that would hide more than `MAX_OCCLUSION` of an
earlier shape is not drawn at all, so every annotated object keeps most of
itself visible. Instances with fewer than `MIN_VISIBLE_AREA` visible pixels
(shapes mostly outside the image) are dropped (their pixels stay in the image
but are not annotated).

Deterministic choices, so that tests can rely on them:
  * every image whose index within its split satisfies `i % 10 == 0` has no
    object (about 10% of the images; other images can also end up empty if
    all their shapes are dropped, which is rare);
  * every image with `i % 10 == 5` has at least two shapes and its second
    shape is centred inside the first one's extent, so overlap before
    occlusion occurs whenever a split has at least 6 images. The statistics
    returned by `generate` count overlapping pairs over all images.

Layout written under `output_dir`, per split in ('train', 'val'):
  <split>/images/<split>_000000.png ...
  <split>.json                       COCO instances JSON, RLE segmentations
                                     (pycocotools compressed RLE of the exact
                                     visible mask), iscrowd 0.
  <split>-0000i-of-0000N.tfrecord    Model Garden `create_coco_tf_record.py
                                     --include_masks` format, built with its
                                     own `create_tf_example` from the JSON and
                                     PNGs (with `image/format` set to 'png').
A split appears only complete (`generate_split`): an interrupted run leaves
none of its files.
"""

import json
import os
import time
from typing import Any, Dict, List, Sequence, Tuple

from absl import app
from absl import flags
import numpy as np
from PIL import Image
from PIL import ImageDraw
from pycocotools import mask as mask_lib

from common import atomic_io
from data import coco_tfrecord
from data import coco_utils

CATEGORIES = {1: 'circle', 2: 'square', 4: 'triangle'}
MIN_VISIBLE_AREA = 20
# Largest fraction of a drawn shape that later shapes may hide.
MAX_OCCLUSION = 0.5
MAX_OBJECTS = 5
SPLITS = ('train', 'val')

_SPLIT_CODES = {'train': 0, 'val': 1}
_NOISE_STD = 8.0
_MIN_COLOUR_DISTANCE = 120.0


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
  """Returns a float32 [size, size, 3] low-frequency colour gradient."""
  # Bilinear interpolation between four random corner colours, plus a weak
  # low-frequency sinusoid so the texture is not a plain gradient.
  corners = rng.uniform(40.0, 215.0, size=(2, 2, 3))
  t = np.linspace(0.0, 1.0, size, dtype=np.float32)
  ty, tx = t[:, None, None], t[None, :, None]
  top = corners[0, 0] * (1 - tx) + corners[0, 1] * tx
  bottom = corners[1, 0] * (1 - tx) + corners[1, 1] * tx
  image = top * (1 - ty) + bottom * ty
  freq = rng.uniform(0.5, 2.0, size=2)
  phase = rng.uniform(0.0, 2 * np.pi, size=2)
  wave = (np.sin(2 * np.pi * freq[0] * t[:, None] + phase[0]) +
          np.sin(2 * np.pi * freq[1] * t[None, :] + phase[1]))
  image = image + 10.0 * wave[:, :, None]
  return image.astype(np.float32)


def _object_colour(rng: np.random.Generator,
                   background: np.ndarray) -> np.ndarray:
  """Samples a colour far from every background corner and the mean."""
  refs = np.stack([background[0, 0], background[0, -1], background[-1, 0],
                   background[-1, -1], background.mean(axis=(0, 1))])
  best, best_dist = None, -1.0
  for _ in range(32):
    colour = rng.integers(0, 256, size=3).astype(np.float32)
    dist = float(np.min(np.linalg.norm(refs - colour, axis=1)))
    if dist >= _MIN_COLOUR_DISTANCE:
      return colour
    if dist > best_dist:
      best, best_dist = colour, dist
  return best


def _shape_polygon(category_id: int, cx: float, cy: float, extent: float,
                   angle: float) -> List[Tuple[float, float]]:
  """Returns the vertices of a square (2) or triangle (4) of given extent."""
  if category_id == 2:
    r = extent / 2.0 * np.sqrt(2.0)  # Half-diagonal of a square of side e.
    thetas = angle + np.pi / 4 + np.arange(4) * np.pi / 2
  else:
    r = extent / np.sqrt(3.0)  # Circumradius of an equilateral triangle.
    thetas = angle - np.pi / 2 + np.arange(3) * 2 * np.pi / 3
  return [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in thetas]


def _draw_mask(category_id: int, cx: float, cy: float, extent: float,
               angle: float, size: int) -> np.ndarray:
  """Draws one shape into a [size, size] bool mask."""
  canvas = Image.new('L', (size, size), 0)
  draw = ImageDraw.Draw(canvas)
  if category_id == 1:
    r = extent / 2.0
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
  else:
    draw.polygon(_shape_polygon(category_id, cx, cy, extent, angle), fill=1)
  return np.asarray(canvas, dtype=bool)


def _sample_shapes(rng: np.random.Generator, index: int,
                   size: int) -> List[Dict[str, Any]]:
  """Samples the shape parameters of image `index` of a split."""
  if index % 10 == 0:
    return []
  force_overlap = index % 10 == 5
  num = int(rng.integers(2 if force_overlap else 1, MAX_OBJECTS + 1))
  category_ids = sorted(CATEGORIES)
  # At the default 128 px: 26..96 px.
  min_extent, max_extent = 0.2 * size, 0.75 * size
  shapes = []
  for k in range(num):
    # Log-uniform extent: every scale octave is equally common.
    extent = float(np.exp(rng.uniform(np.log(min_extent),
                                      np.log(max_extent))))
    if force_overlap and k == 1:
      first = shapes[0]
      half = first['extent'] / 3.0
      cx = first['cx'] + rng.uniform(-half, half)
      cy = first['cy'] + rng.uniform(-half, half)
    else:
      # Centres may lie slightly outside the image: shapes get clipped.
      margin = extent / 4.0
      cx, cy = rng.uniform(-margin, size + margin, size=2)
    category_id = int(category_ids[rng.integers(len(category_ids))])
    angle = float(rng.uniform(0.0, 2 * np.pi)) if rng.random() < 0.7 else 0.0
    shapes.append(dict(category_id=category_id, cx=float(cx), cy=float(cy),
                       extent=extent, angle=angle))
  return shapes


def render_image(
    seed: int, split: str, index: int, image_size: int = 128
) -> Tuple[np.ndarray, List[Dict[str, Any]], Dict[str, int]]:
  """Renders one image deterministically.

  Args:
    seed: global seed.
    split: 'train' or 'val'.
    index: index of the image within its split.
    image_size: height and width in pixels.

  Returns:
    (image, instances, stats): a uint8 [image_size, image_size, 3] array; a
    list of dicts with 'category_id' and 'mask' (bool [H, W], visible part
    only), in drawing order; and per-image counters 'drawn',
    'overlapping_pairs', 'occluded' and 'dropped'.
  """
  rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
  canvas = _background(rng, image_size)
  shapes = _sample_shapes(rng, index, image_size)
  drawn, kept_shapes = [], []
  for shape in shapes:
    m = _draw_mask(shape['category_id'], shape['cx'], shape['cy'],
                   shape['extent'], shape['angle'], image_size)
    colour = _object_colour(rng, canvas)
    covered = m.copy()
    hides_too_much = False
    for earlier in reversed(drawn):
      area = earlier.sum()
      if area and (earlier & covered).sum() > MAX_OCCLUSION * area:
        hides_too_much = True
        break
      covered |= earlier
    if hides_too_much:
      continue
    canvas[m] = colour
    drawn.append(m)
    kept_shapes.append(shape)
  shapes = kept_shapes
  canvas += rng.normal(0.0, _NOISE_STD, size=canvas.shape).astype(np.float32)
  image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)

  stats = dict(drawn=len(drawn), overlapping_pairs=0, occluded=0, dropped=0)
  for i in range(len(drawn)):
    for j in range(i + 1, len(drawn)):
      if np.any(drawn[i] & drawn[j]):
        stats['overlapping_pairs'] += 1

  instances = []
  covered = np.zeros((image_size, image_size), dtype=bool)
  for shape, m in zip(reversed(shapes), reversed(drawn)):
    visible = m & ~covered
    covered |= m
    if visible.sum() < m.sum():
      stats['occluded'] += 1
    if visible.sum() < MIN_VISIBLE_AREA:
      stats['dropped'] += 1
      continue
    instances.append(dict(category_id=shape['category_id'], mask=visible))
  instances.reverse()
  return image, instances, stats


def _annotation(mask: np.ndarray, category_id: int, image_id: int,
                ann_id: int) -> Dict[str, Any]:
  """COCO annotation of one visible mask (compressed RLE, tight bbox)."""
  rle = mask_lib.encode(np.asfortranarray(mask.astype(np.uint8)))
  return {
      'id': ann_id,
      'image_id': image_id,
      'category_id': category_id,
      **coco_utils.rle_fields(rle),
      'iscrowd': 0,
  }


def _write_split(root: str, split: str, num_images: int, image_size: int,
                 seed: int, num_shards: int) -> Dict[str, Any]:
  """Writes one split's images, JSON and shards under `root`; its stats."""
  image_dir = os.path.join(root, split, 'images')
  os.makedirs(image_dir, exist_ok=True)
  coco = {
      'info': {'description': 'Synthetic shapes', 'version': '1.0'},
      'licenses': [],
      'categories': [{'id': k, 'name': v, 'supercategory': 'shape'}
                     for k, v in sorted(CATEGORIES.items())],
      'images': [],
      'annotations': [],
  }
  stats = dict(images=num_images, annotations=0, empty_images=0, drawn=0,
               overlapping_pairs=0, occluded=0, dropped=0,
               per_category={v: 0 for v in CATEGORIES.values()})
  ann_id = 1
  for index in range(num_images):
    image, instances, image_stats = render_image(seed, split, index,
                                                 image_size)
    image_id = index + 1
    file_name = f'{split}_{index:06d}.png'
    Image.fromarray(image).save(os.path.join(image_dir, file_name),
                                format='PNG')
    coco['images'].append({'id': image_id, 'file_name': file_name,
                           'height': image_size, 'width': image_size})
    for inst in instances:
      coco['annotations'].append(
          _annotation(inst['mask'], inst['category_id'], image_id, ann_id))
      stats['per_category'][CATEGORIES[inst['category_id']]] += 1
      ann_id += 1
    for key in ('drawn', 'overlapping_pairs', 'occluded', 'dropped'):
      stats[key] += image_stats[key]
    stats['annotations'] += len(instances)
    stats['empty_images'] += int(not instances)

  with open(os.path.join(root, f'{split}.json'), 'w') as f:
    json.dump(coco, f, sort_keys=True)
  coco_tfrecord.write_tfrecords(coco, image_dir, os.path.join(root, split),
                                num_shards)
  return stats


def generate_split(output_dir: str, split: str, num_images: int,
                   image_size: int = 128, seed: int = 0,
                   num_shards: int = 1) -> Dict[str, Any]:
  """Writes one split; returns its paths, counts and statistics.

  The split is written into a hidden staging directory and moved into
  `output_dir` once complete, its JSON last (`atomic_io.atomic_files`): a
  split that fails leaves `output_dir` as it was, and a split written again
  replaces `<split>/` whole.
  """
  json_name = f'{split}.json'
  with atomic_io.atomic_files(output_dir, last=[json_name]) as staging:
    stats = _write_split(staging, split, num_images, image_size, seed,
                         num_shards)
  return {'image_dir': os.path.join(output_dir, split, 'images'),
          'json': os.path.join(output_dir, json_name),
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
    image_size: height and width of the square images.
    seed: seed; the same arguments give byte-identical outputs.
    num_train_shards: number of train TFRecord shards.
    num_val_shards: number of val TFRecord shards.

  Returns:
    {'train': split_info, 'val': split_info, 'categories': CATEGORIES} where
    split_info is {'image_dir', 'json', 'tfrecords' (list of paths),
    'stats': {'images', 'annotations', 'empty_images', 'drawn',
    'overlapping_pairs', 'occluded', 'dropped', 'per_category'}}.
  """
  if image_size < 16:
    raise ValueError(f'image_size must be >= 16, got {image_size}.')
  os.makedirs(output_dir, exist_ok=True)
  result = {'categories': dict(CATEGORIES)}
  for split, num, shards in (('train', num_train, num_train_shards),
                             ('val', num_val, num_val_shards)):
    result[split] = generate_split(output_dir, split, num, image_size, seed,
                                   shards)
  return result


_OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'Output directory.')
_NUM_TRAIN = flags.DEFINE_integer('num_train', 1000, 'Training images.')
_NUM_VAL = flags.DEFINE_integer('num_val', 200, 'Validation images.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 128, 'Image side in pixels.')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')
_NUM_TRAIN_SHARDS = flags.DEFINE_integer('num_train_shards', 2,
                                         'Train TFRecord shards.')
_NUM_VAL_SHARDS = flags.DEFINE_integer('num_val_shards', 1,
                                       'Val TFRecord shards.')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  start = time.time()
  result = generate(_OUTPUT_DIR.value, num_train=_NUM_TRAIN.value,
                    num_val=_NUM_VAL.value, image_size=_IMAGE_SIZE.value,
                    seed=_SEED.value, num_train_shards=_NUM_TRAIN_SHARDS.value,
                    num_val_shards=_NUM_VAL_SHARDS.value)
  parts = []
  for split in SPLITS:
    s = result[split]['stats']
    parts.append(f'{split}: {s["images"]} images, {s["annotations"]} '
                 f'instances, {s["empty_images"]} empty, '
                 f'{len(result[split]["tfrecords"])} shard(s)')
  print(f'shapes dataset -> {_OUTPUT_DIR.value}: ' + '; '.join(parts) +
        f' ({time.time() - start:.1f}s)')


if __name__ == '__main__':
  flags.mark_flag_as_required('output_dir')
  app.run(main)
