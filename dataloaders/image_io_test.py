"""Tests of image_io: every supported kind read faithfully, the rest refused."""

import io
import re
import struct
import zlib

import numpy as np
from PIL import Image
import pytest

from dataloaders import image_io

# 16-bit values and their 8-bit round(v * 255 / 65535): 255 / 257 = 0.99,
# 32767 / 257 = 127.498, 32896 / 257 = 128.0. (Keeping the high byte, as
# Pillow does for colour, would give 0, 0, 100, 127, 128, 255.)
VALUES_16 = [0, 255, 257 * 100, 32767, 32896, 65535]
VALUES_8 = [0, 1, 100, 127, 128, 255]


def png_16_bit(array) -> bytes:
  """A 16-bit PNG of uint16 [h, w] (gray) or [h, w, C] (C: 2 to 4).

  Pillow writes 16-bit gray PNGs only; the format is simple enough to
  write by hand: the signature, IHDR, one zlib-compressed IDAT of the rows
  (each after filter type 0, samples big-endian), IEND.
  """
  array = np.asarray(array, np.uint16)
  if array.ndim == 2:
    array = array[..., np.newaxis]
  height, width, channels = array.shape
  colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]

  def chunk(kind, payload):
    return (struct.pack('>I', len(payload)) + kind + payload +
            struct.pack('>I', zlib.crc32(kind + payload)))

  rows = b''.join(b'\x00' + row.astype('>u2').tobytes() for row in array)
  header = struct.pack('>IIBBBBB', width, height, 16, colour_type, 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) +
          chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))


def _encode(image: Image.Image, image_format: str, **kwargs) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=image_format, **kwargs)
  return buffer.getvalue()


def _decode(data: bytes) -> np.ndarray:
  image = image_io.decode_image_bytes(data, 'test image')
  assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
  return image


def test_16_bit_gray_png_is_scaled_not_clipped_to_white(tmp_path):
  path = tmp_path / 'depth.png'
  Image.fromarray(np.array([VALUES_16], np.uint16)).save(path)
  assert Image.open(path).mode == 'I;16'
  image = image_io.read_image(str(path))
  assert image.shape == (1, 6, 3)
  np.testing.assert_array_equal(image, np.array([VALUES_8] * 3).T[None])


def test_16_bit_tiff_gray_is_scaled():
  big_endian = Image.frombytes('I;16B', (6, 1),
                               np.array(VALUES_16, '>u2').tobytes())
  # 'I': 32-bit signed, as older Pillow versions read 16-bit PNGs.
  signed = Image.fromarray(np.array([VALUES_16], np.int32))
  for image in (big_endian, signed):
    data = _encode(image, 'TIFF')
    assert Image.open(io.BytesIO(data)).mode == image.mode
    np.testing.assert_array_equal(_decode(data),
                                  np.array([VALUES_8] * 3).T[None])


def test_48_and_64_bit_colour_pngs_are_scaled_and_alpha_dropped():
  red = np.array([VALUES_16], np.uint16)
  rgb = np.stack([red, 65535 - red, np.full_like(red, 257 * 7)], -1)
  # Pillow reads these as 8-bit RGB(A) keeping only the high bytes.
  assert Image.open(io.BytesIO(png_16_bit(rgb))).mode == 'RGB'
  expected = np.stack([VALUES_8, [255 - v for v in VALUES_8], [7] * 6], -1)
  np.testing.assert_array_equal(_decode(png_16_bit(rgb))[0], expected)
  rgba = np.concatenate([rgb, np.full_like(red, 3)[..., None]], -1)
  np.testing.assert_array_equal(_decode(png_16_bit(rgba))[0], expected)
  gray_alpha = np.stack([red, np.zeros_like(red)], -1)
  np.testing.assert_array_equal(_decode(png_16_bit(gray_alpha))[0],
                                np.array([VALUES_8] * 3).T)


def test_8_bit_modes_become_rgb_with_alpha_dropped():
  gray = np.array([[0, 100, 255]], np.uint8)
  rgb = np.array([[[255, 0, 0], [0, 128, 0], [10, 20, 30]]], np.uint8)
  alpha = np.array([[0, 128, 255]], np.uint8)
  palette = Image.fromarray(rgb).convert('P', palette=Image.Palette.ADAPTIVE,
                                         colors=3)
  cases = {
      'L': (Image.fromarray(gray), np.stack([gray] * 3, -1)),
      'LA': (Image.fromarray(np.stack([gray, alpha], -1)),
             np.stack([gray] * 3, -1)),
      '1': (Image.fromarray(gray > 50),
            np.full([1, 3, 3], 255, np.uint8) * [[[0], [1], [1]]]),
      'RGBA': (Image.fromarray(np.dstack([rgb, alpha])), rgb),
      'P': (palette, rgb),
      'P with transparency': (palette, rgb),
  }
  for name, (image, expected) in cases.items():
    kwargs = {'transparency': 0} if 'transparency' in name else {}
    data = _encode(image, 'PNG', **kwargs)
    assert Image.open(io.BytesIO(data)).mode == name.split()[0], name
    np.testing.assert_array_equal(_decode(data), expected, err_msg=name)
  # CMYK (TIFF keeps it): no ink is white; magenta and yellow make red.
  cmyk = Image.fromarray(np.array([[[0, 0, 0, 0], [0, 255, 255, 0],
                                    [0, 0, 0, 255]]], np.uint8), mode='CMYK')
  np.testing.assert_array_equal(
      _decode(_encode(cmyk, 'TIFF')),
      [[[255, 255, 255], [255, 0, 0], [0, 0, 0]]])


@pytest.mark.parametrize('orientation,corner', [
    (1, (0, 0)),
    # 6: stored rotated counter-clockwise; turned clockwise, the stored
    # top-left corner is at the top-right.
    (6, (0, 30)),
    # 8: the other way; it lands at the bottom-left.
    (8, (50, 0)),
    (3, (30, 50)),
])
def test_exif_orientation_is_applied(tmp_path, orientation, corner):
  # 40 x 60, black with a red 10 x 10 top-left corner, as a phone stores it.
  stored = np.zeros([40, 60, 3], np.uint8)
  stored[:10, :10] = [255, 0, 0]
  exif = Image.Exif()
  exif[0x0112] = orientation
  path = tmp_path / 'phone.jpg'
  Image.fromarray(stored).save(path, exif=exif, quality=95, subsampling=0)
  image = image_io.read_image(str(path))
  turned = orientation in (6, 8)
  assert image.shape == ((60, 40, 3) if turned else (40, 60, 3))
  red = np.argwhere(image[..., 0] > 128)
  np.testing.assert_array_equal(red.min(0), corner)
  np.testing.assert_array_equal(red.max(0), np.array(corner) + 9)
  y, x = corner  # JPEG rings at the edges; the inside stays red.
  assert (image[y + 2:y + 8, x + 2:x + 8, 0] > 240).all()
  assert (image[y + 2:y + 8, x + 2:x + 8, 1:] < 15).all()


def _bad_inputs():
  random = np.random.default_rng(0).integers(0, 256, [30, 40, 3], np.uint8)
  png = _encode(Image.fromarray(random), 'PNG')
  jpeg = _encode(Image.fromarray(random), 'JPEG')
  floats = _encode(Image.fromarray(np.ones([4, 4], np.float32)), 'TIFF')
  wide = _encode(Image.fromarray(np.array([[0, 70000]], np.int32)), 'TIFF')
  return {
      'half.png': (png[:len(png) // 2], 'image file is truncated'),
      'half.jpg': (jpeg[:len(jpeg) // 2], 'image file is truncated'),
      # Decoded by TensorFlow (see image_io): no IEND chunk.
      'cut16.png': (png_16_bit(np.full([30, 40, 3], 999))[:-12],
                    r'Invalid PNG data, size \d+$'),
      'float.tif': (floats, "unsupported pixel mode 'F'"),
      'int32.tif': (wide, r'32-bit integer pixels \(0..70000\) beyond'),
      'notes.txt': (b'not an image\n', 'not an image, or a format'),
      'empty.png': (b'', 'the file is empty'),
  }


def test_unreadable_images_are_refused_by_name_and_reason(tmp_path):
  for name, (data, reason) in _bad_inputs().items():
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ValueError) as error:
      image_io.read_image(str(path))
    message = str(error.value)
    assert message.startswith(f'cannot read image {path}: '), message
    assert re.search(reason, message), message
    with pytest.raises(ValueError, match=f'^cannot read image {name}: '):
      image_io.decode_image_bytes(data, name)


def test_missing_files_and_folders_are_refused_by_name(tmp_path):
  with pytest.raises(ValueError, match=(
      f'^cannot read image {tmp_path}/missing.jpg: No such file')):
    image_io.read_image(str(tmp_path / 'missing.jpg'))
  with pytest.raises(ValueError, match=f'^cannot read image {tmp_path}: Is a'):
    image_io.read_image(str(tmp_path))


def test_decompression_bombs_are_refused(monkeypatch):
  # Pillow refuses images of more than twice MAX_IMAGE_PIXELS pixels.
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)
  data = _encode(Image.new('RGB', (20, 15)), 'PNG')
  with pytest.raises(ValueError, match=(
      r'^cannot read image bomb.png: Image size \(300 pixels\) exceeds limit '
      r'of 200 pixels, could be decompression bomb')):
    image_io.decode_image_bytes(data, 'bomb.png')
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)
  assert _decode(data).shape == (15, 20, 3)
