"""The network input: padding, normalisation, and serving's preprocessing.

Every pipeline ends by padding the transformed image (`pad_value`) to the
network input and normalising it with `MEAN_RGB` / `STDDEV_RGB` (0..255 RGB
scale); `preprocess_for_inference` is evaluation's whole preprocessing, which
the exported SavedModel runs in its graph.
"""

from typing import Optional, Sequence, Tuple

import tensorflow as tf

from configs import unipercepnet as unipercepnet_cfg
from dataloaders.ops import transforms


def pad_and_normalize(image: tf.Tensor,
                      valid_size: tf.Tensor,
                      pad_value: float,
                      dtype: tf.DType = tf.float32,
                      pad_size: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Fills the padding with pad_value, normalises (MEAN_RGB / STDDEV_RGB).

  Args:
    image: float32 [height, width, 3], 0..255, content at the top-left.
    valid_size: int32 [2], the extent of the content.
    pad_value: value of the padding pixels before normalisation.
    dtype: dtype of the result.
    pad_size: [2] extent (at the top-left) that padding with `pad_value`
      fills; beyond it the normalised image is 0 (the reference pads to its
      test scale with `pad_value`, then to a multiple of 32 with zeros after
      normalisation). None: all of the image.

  Returns:
    The network input, [height, width, 3] of `dtype`.
  """
  height, width = image.shape[0], image.shape[1]

  def inside(size):
    size = tf.cast(size, tf.int32)
    rows = tf.range(height)[:, tf.newaxis] < size[0]
    cols = tf.range(width)[tf.newaxis, :] < size[1]
    return tf.logical_and(rows, cols)[..., tf.newaxis]

  mean = tf.constant(unipercepnet_cfg.MEAN_RGB, tf.float32)
  std = tf.constant(unipercepnet_cfg.STDDEV_RGB, tf.float32)
  padding = tf.constant(pad_value, tf.float32)
  if pad_size is not None:
    padding = tf.where(inside(pad_size), padding, mean)
  image = tf.where(inside(valid_size), image, padding)
  image = (image - mean) / std
  image.set_shape([height, width, 3])
  return tf.cast(image, dtype)


def normalize_for_network(image: tf.Tensor,
                          transform: transforms.GeometricTransform,
                          pad_value: float,
                          dtype: tf.DType = tf.float32,
                          test_scale: Optional[Sequence[int]] = None
                          ) -> tf.Tensor:
  """`pad_and_normalize` of an image moved by `transform`.

  Args:
    image: output of `transform.apply_image` (0..255, maybe jittered).
    transform: the transform.
    pad_value: value of the padding pixels before normalisation.
    dtype: dtype of the result.
    test_scale: the reference's test resize bounds (see
      `transforms.fit_box`): the padding fills the fitting box with
      `pad_value` and the rest of the input with the mean colour.

  Returns:
    The network input, [height, width, 3] of `dtype`.
  """
  pad_size = (transforms.fit_box(transform.image_info[0, :],
                                 transform.output_size, test_scale)
              if test_scale else None)
  return pad_and_normalize(image, transform.valid_size, pad_value, dtype,
                           pad_size)


def preprocess_for_inference(image: tf.Tensor,
                             output_size: Sequence[int],
                             pad_value: float = 114.,
                             test_scale: Optional[Sequence[int]] = None
                             ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """An image as evaluation feeds it to the network; also used by serving.

  Args:
    image: [h, w, 3] uint8 (or 0..255 float) RGB image of any size.
    output_size: [height, width] of the network input.
    pad_value: value of the padding pixels before normalisation.
    test_scale: see `transforms.fit_box`; the padding fills the fitting box
      with `pad_value` and the rest of the input with the mean colour.

  Returns:
    (float32 [height, width, 3] network input, image_info [4, 2],
    valid_size int32 [2]).
  """
  transform = transforms.resize_crop_transform(
      tf.shape(image)[0:2], output_size, test_scale=test_scale)
  image = normalize_for_network(transform.apply_image(image), transform,
                                pad_value, test_scale=test_scale)
  return image, transform.image_info, transform.valid_size
