"""Image files as uint8 RGB arrays: read faithfully, or refused by name.

`read_image` (a file) and `decode_image_bytes` (its contents) return the
image as TensorFlow's `decode_image(channels=3)` would, plus what it lacks:

  * 8-bit gray, gray + alpha, palette (with or without transparency), RGBA,
    CMYK and 1-bit images become RGB; alpha is dropped, not composited.
  * 16-bit images keep their brightness: each value v becomes
    round(v * 255 / 65535). (Pillow's own `convert('RGB')` clips 16-bit gray
    at 255, turning it white; Pillow reads 16-bit colour PNGs keeping only
    the high byte, v // 256, so TensorFlow decodes their samples here. Other
    16-bit colour files, e.g. 48-bit TIFFs, keep Pillow's high byte: at
    most one level below.)
  * The EXIF orientation (as phones write it) is applied, so the array is
    the upright picture.

Anything else raises ValueError("cannot read image NAME: REASON"): a missing,
empty, truncated or corrupt file, a format Pillow does not know, a
decompression bomb (Pillow's `Image.MAX_IMAGE_PIXELS` limit), float pixels or
integers beyond 16 bits (no standard 0..255 scale).
"""

import io
import re
import struct
import zlib

import numpy as np
from PIL import ExifTags
from PIL import Image
from PIL import ImageOps
import tensorflow as tf

# Modes that Pillow converts to RGB without losing anything but alpha.
_RGB_CONVERTIBLE_MODES = frozenset(
    {'1', 'L', 'LA', 'P', 'PA', 'RGB', 'RGBA', 'RGBX', 'CMYK', 'YCbCr'})
# Unsigned 16-bit gray; 'I' (32-bit signed) when its values fit 16 bits, as
# older Pillow versions read 16-bit gray PNGs.
_SIXTEEN_BIT_MODES = frozenset({'I;16', 'I;16B', 'I;16L', 'I;16N', 'I'})
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# PNG colour types with colour or alpha: Pillow keeps only the high byte of
# their 16-bit samples.
_PNG_COLOUR_TYPES_WITH_SEVERAL_SAMPLES = (2, 4, 6)
# What Pillow raises on unreadable data (UnidentifiedImageError and
# truncation are OSErrors).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError,
                  struct.error, zlib.error, Image.DecompressionBombError)


def scale_16_to_8_bits(values: np.ndarray) -> np.ndarray:
  """uint8 round(v * 255 / 65535) of 0..65535 values.

  v * 255 / 65535 is v / 257, never halfway between integers (257 is odd).

  Args:
    values: integer array of 0..65535 values.

  Returns:
    uint8 array of the same shape.
  """
  return np.round(np.asarray(values, np.float64) / 257.).astype(np.uint8)


def read_image(path: str) -> np.ndarray:
  """The image file at `path` as uint8 RGB [height, width, 3].

  Args:
    path: a local file path.

  Returns:
    The upright image (see the module doc).

  Raises:
    ValueError: "cannot read image PATH: REASON" (see the module doc).
  """
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise ValueError(f'cannot read image {path}: {e.strerror or e}') from e
  return decode_image_bytes(data, path)


def decode_image_bytes(data: bytes, name: str) -> np.ndarray:
  """Encoded image bytes as uint8 RGB [height, width, 3], like `read_image`.

  Args:
    data: the contents of an image file.
    name: what the error messages call the image (e.g. its path).

  Returns:
    The upright image (see the module doc).

  Raises:
    ValueError: "cannot read image NAME: REASON" (see the module doc).
  """
  try:
    return _decode(data)
  except Image.UnidentifiedImageError as e:
    raise ValueError(f'cannot read image {name}: not an image, or a format '
                     'that Pillow does not read') from e
  except _DECODE_ERRORS as e:
    raise ValueError(f'cannot read image {name}: {e}') from e


def _decode(data: bytes) -> np.ndarray:
  """`decode_image_bytes` raising the bare reason."""
  if not data:
    raise ValueError('the file is empty')
  with Image.open(io.BytesIO(data)) as image:
    image.load()  # Decodes all of it: truncation and corruption raise here.
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    if _is_16_bit_colour_png(data):
      rgb = _decode_16_bit_colour_png(data)
    else:
      rgb = _to_rgb(image)
  if orientation in range(2, 9):
    upright = Image.fromarray(rgb)
    upright.getexif()[ExifTags.Base.Orientation] = orientation
    rgb = np.asarray(ImageOps.exif_transpose(upright))
  return rgb


def _to_rgb(image: Image.Image) -> np.ndarray:
  """uint8 RGB pixels of a Pillow image of one of the supported modes."""
  if image.mode in _SIXTEEN_BIT_MODES:
    values = np.asarray(image)
    if image.mode == 'I' and values.size and (values.min() < 0 or
                                              values.max() > 65535):
      raise ValueError(
          f'32-bit integer pixels ({values.min()}..{values.max()}) beyond '
          'the 16-bit range 0..65535 have no standard 8-bit scale')
    return np.repeat(scale_16_to_8_bits(values)[..., np.newaxis], 3, axis=-1)
  if image.mode in _RGB_CONVERTIBLE_MODES:
    return np.asarray(image.convert('RGB'))
  raise ValueError(f'unsupported pixel mode {image.mode!r} (supported: 1-bit, '
                   '8-bit and 16-bit gray, palette and colour images)')


def _is_16_bit_colour_png(data: bytes) -> bool:
  """Whether `data` is a PNG of 16-bit colour and / or alpha samples."""
  # The IHDR chunk comes first: length, b'IHDR', width, height, bit depth,
  # colour type.
  return (data[:8] == _PNG_SIGNATURE and data[12:16] == b'IHDR' and
          len(data) > 25 and data[24] == 16 and
          data[25] in _PNG_COLOUR_TYPES_WITH_SEVERAL_SAMPLES)


def _decode_16_bit_colour_png(data: bytes) -> np.ndarray:
  """uint8 RGB of a 16-bit colour PNG, each sample scaled (Pillow truncates)."""
  try:
    pixels = tf.io.decode_png(data, channels=3, dtype=tf.uint16).numpy()
  except tf.errors.OpError as e:
    # Without TensorFlow's op decorations: '{{function_node ...}} Invalid
    # PNG data, size 60 [Op:DecodePng]' -> 'Invalid PNG data, size 60'.
    reason = re.sub(r'\{\{.*?\}\}\s*|\s*\[Op:\w+\]', '', e.message)
    raise ValueError(reason) from e
  return scale_16_to_8_bits(pixels)
