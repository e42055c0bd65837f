"""Tests of the export module's in-graph pre- and post-processing."""

import io

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from configs import unipercepnet as unipercepnet_cfg
from dataloaders import image_io
from dataloaders import image_io_test
from dataloaders import unipercepnet_parser
from dataloaders.ops import preprocess_ops
from serving import conftest
from serving import detection


def _png(image):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='PNG')
  return buffer.getvalue()


def test_paste_masks_batch_hand_computed():
  # A 2x2 crop with only its top-left cell on, pasted into a 4x4 box at the
  # origin: output pixel centres sample the crop at -0.25, 0.25, 0.75, 1.25
  # with zeros outside it (grid_sample); values .75, .75, .25, 0 along each
  # axis, products of at least 0.5 kept.
  masks = tf.constant([[[[1., 0.], [0., 0.]]]])
  boxes = tf.constant([[[0., 0., 4., 4.]]])
  pasted = detection.paste_masks_batch(masks, boxes, (5, 6)).numpy()
  expected = np.zeros([5, 6], np.uint8)
  expected[:2, :2] = 1
  assert pasted.dtype == np.uint8 and pasted.shape == (1, 1, 5, 6)
  np.testing.assert_array_equal(pasted[0, 0], expected)


def test_preprocessing_is_the_evaluation_parsers(small_module):
  image = conftest.random_image(48, 80)
  images, info = small_module.preprocess(tf.constant(image[np.newaxis]))
  # 80 -> 64 wide: scale 0.8, 38.4 -> 38 rows at the top-left; Model
  # Garden's scale is the scaled size over the original, per axis.
  np.testing.assert_allclose(info[0].numpy(),
                             [[48, 80], [64, 64], [38 / 48, .8], [0, 0]],
                             rtol=1e-6)
  parser = unipercepnet_parser.Parser(output_size=[64, 64], mask_crop_size=28)
  expected, _, valid = preprocess_ops.preprocess_for_inference(
      image, [64, 64], parser._pad_value)  # pylint: disable=protected-access
  np.testing.assert_array_equal(valid.numpy(), [38, 64])
  np.testing.assert_allclose(images[0].numpy(), expected.numpy(), atol=1e-6)
  # Padding rows hold the normalised pad value (114).
  pad = (114. - np.array(unipercepnet_cfg.MEAN_RGB)) / (
      np.array(unipercepnet_cfg.STDDEV_RGB))
  np.testing.assert_allclose(images[0, 40].numpy(),
                             np.broadcast_to(pad, [64, 3]), rtol=1e-5)


def test_outputs_in_original_pixels_with_dataset_ids(small_module):
  image = conftest.random_image(48, 80)
  out = small_module.serve(tf.constant(image[np.newaxis]))
  n = int(out['num_detections'][0])
  assert n > 0
  boxes = out['detection_boxes'][0, :n].numpy()
  assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= 48 + 1e-3).all()
  assert (boxes[:, [1, 3]] <= 80 + 1e-3).all()
  # The model clips at the 38 content rows of its input: 48 original rows.
  assert boxes[:, 2].max() > 40  # Uses the original scale, not the input's.
  classes = out['detection_classes'][0].numpy()
  assert set(classes[:n]) <= set(conftest.CATEGORY_IDS)
  assert (classes[n:] == 0).all()
  assert out['detection_masks'].shape[2:] == (28, 28)
  assert out['detection_masks'].dtype == tf.float32


def test_encoded_batches_may_mix_image_sizes(small_module):
  images = [conftest.random_image(48, 80, seed=1),
            conftest.random_image(70, 50, seed=2)]
  batch = small_module.inference_from_image_bytes(
      tf.constant([_png(i) for i in images]))
  for k, image in enumerate(images):
    single = small_module.serve(tf.constant(image[np.newaxis]))
    # oneDNN picks its conv kernels by batch size: float32 rounding differs
    # (boxes in pixels up to ~80: rtol 1e-5 is under a thousandth of one).
    for key in ('detection_boxes', 'detection_scores', 'image_info'):
      np.testing.assert_allclose(batch[key][k].numpy(), single[key][0].numpy(),
                                 atol=1e-4, rtol=1e-5, err_msg=key)


def test_grayscale_and_rgba_bytes_become_rgb(small_module):
  gray = conftest.random_image(40, 40)[..., 0]
  rgba = np.concatenate([np.stack([gray] * 3, -1),
                         np.full([40, 40, 1], 7, np.uint8)], -1)
  rgb = np.stack([gray] * 3, -1)
  outputs = [small_module.inference_from_image_bytes(tf.constant([_png(x)]))
             for x in (gray, rgba)]
  expected = small_module.serve(tf.constant(rgb[np.newaxis]))
  for out in outputs:
    np.testing.assert_allclose(out['detection_scores'].numpy(),
                               expected['detection_scores'].numpy(),
                               atol=1e-5)


def test_full_size_masks_are_binary_at_the_largest_image_size(small_module):
  module = detection.UniPercepNetModule(
      small_module.params, batch_size=None, input_image_size=[64, 64],
      model=small_module.model, full_size_masks=True)
  images = [conftest.random_image(48, 80, seed=1),
            conftest.random_image(70, 50, seed=2)]
  out = module.inference_from_image_bytes(
      tf.constant([_png(i) for i in images]))
  masks = out['detection_masks'].numpy()
  assert masks.dtype == np.uint8 and masks.shape[2:] == (70, 80)
  assert set(np.unique(masks)) <= {0, 1}
  # Each mask lies inside its box grown to whole pixels plus one (the
  # reference's paste window); the first image's masks are empty below its
  # 48 rows.
  assert not masks[0, :, 48:].any()
  boxes = out['detection_boxes'].numpy()
  for k in range(int(out['num_detections'][1])):
    y1, x1, y2, x2 = boxes[1, k]
    rows, cols = np.nonzero(masks[1, k])
    if rows.size:
      assert rows.min() >= np.floor(y1) - 1 and rows.max() < np.ceil(y2) + 1
      assert cols.min() >= np.floor(x1) - 1 and cols.max() < np.ceil(x2) + 1
  assert masks[1].sum() > 0


def test_input_size_must_be_multiples_of_the_stride(small_module):
  with pytest.raises(ValueError, match='multiples of 32'):
    detection.UniPercepNetModule(small_module.params, batch_size=None,
                                 input_image_size=[64, 70],
                                 model=small_module.model)


def _encode(image, image_format, **kwargs):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format=image_format, **kwargs)
  return buffer.getvalue()


def _example(encoded):
  feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded]))
  return tf.train.Example(features=tf.train.Features(
      feature={'image/encoded': feature})).SerializeToString()


def test_bytes_of_no_image_format_are_named_by_their_batch_index(
    small_module):
  good = _png(conftest.random_image(20, 30))
  for bad in (b'not an image', b'', b'\x89PN'):
    with pytest.raises(tf.errors.InvalidArgumentError, match=(
        r'assertion failed: \[image_bytes element 1 is not a JPEG, PNG, GIF, '
        r'BMP or WebP image\]')):
      small_module.inference_from_image_bytes(tf.constant([good, bad, good]))
  with pytest.raises(tf.errors.InvalidArgumentError, match=(
      r'\[image/encoded of tf_example element 2 is not a JPEG')):
    small_module.inference_from_tf_example(tf.constant(
        [_example(good), _example(good), _example(b'<html>')]))


def test_decoding_is_tensorflows_for_8_bit_images():
  image = conftest.random_image(12, 10)
  gray = image[..., 0]
  for name, data in {
      'jpeg': _encode(image, 'JPEG'), 'png': _png(image),
      'gray png': _png(gray), 'gif': _encode(gray, 'GIF'),
      'bmp': _encode(image, 'BMP'),
      'webp': _encode(image, 'WEBP', lossless=True)}.items():
    np.testing.assert_array_equal(
        detection.decode_image_bytes(tf.constant(data), 'x').numpy(),
        tf.io.decode_image(data, channels=3,
                           expand_animations=False).numpy(), err_msg=name)


def test_16_bit_pngs_decode_scaled_as_image_io_reads_them():
  values = np.array([image_io_test.VALUES_16], np.uint16)
  expected = np.array(image_io_test.VALUES_8, np.uint8)
  # TensorFlow's decode_image keeps the high byte: 255 -> 0, not 1.
  np.testing.assert_array_equal(
      tf.io.decode_image(_png(values), channels=3)[0, :, 0],
      [0, 0, 100, 127, 128, 255])
  colour = np.stack([values, 65535 - values, values], -1)
  for data in (_png(values), image_io_test.png_16_bit(colour),
               image_io_test.png_16_bit(np.stack([values, values], -1))):
    decoded = detection.decode_image_bytes(tf.constant(data), 'x').numpy()
    assert decoded.dtype == np.uint8 and decoded.shape == (1, 6, 3)
    np.testing.assert_array_equal(decoded[0, :, 0], expected)
    np.testing.assert_array_equal(
        decoded, image_io.decode_image_bytes(data, 'x'))


@pytest.mark.parametrize('height,width', [(1, 4000), (4000, 1)])
def test_one_pixel_wide_images_are_detected_in(small_module, height, width):
  image = np.full([height, width, 3], 200, np.uint8)
  images, info = small_module.preprocess(tf.constant(image[np.newaxis]))
  # The short side keeps one row (column) of the 64 x 64 input: scale 1.
  long_scale = 64 / 4000
  scale = [1, long_scale] if height == 1 else [long_scale, 1]
  np.testing.assert_allclose(
      info[0].numpy(), [[height, width], [64, 64], scale, [0, 0]], rtol=1e-6)
  mean = np.array(unipercepnet_cfg.MEAN_RGB)
  std = np.array(unipercepnet_cfg.STDDEV_RGB)
  inputs = images[0].numpy()
  if width == 1:
    inputs = np.transpose(inputs, (1, 0, 2))
  # Row 0 is the image (all 64 columns), the rest padding (114).
  np.testing.assert_allclose(inputs[0] - (200. - mean) / std, 0., atol=1e-5)
  np.testing.assert_allclose(inputs[1:] - (114. - mean) / std, 0., atol=1e-5)
  out = small_module.inference_from_image_bytes(tf.constant([_png(image)]))
  np.testing.assert_allclose(out['image_info'].numpy(), info.numpy())
  n = int(out['num_detections'][0])
  boxes = out['detection_boxes'][0, :n].numpy()
  assert np.isfinite(boxes).all() and (boxes >= 0).all()
  assert (boxes[:, [0, 2]] <= height + 1e-3).all()
  assert (boxes[:, [1, 3]] <= width + 1e-3).all()
