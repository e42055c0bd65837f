"""UniPercepNet-S export module: Model Garden's vision `ExportModule`.

Each signature takes a batch of images (uint8 tensors, encoded JPEG/PNG
bytes or serialized tf.Examples with `image/encoded`) and runs, in graph:

  decode (bytes, examples; grayscale and RGBA -> RGB, 16-bit PNGs scaled
  to 8 bits; bytes of no image format fail naming their batch element, see
  `decode_image_bytes`) -> per image, the evaluation preprocessing
  (`preprocess_ops.preprocess_for_inference`: resize to fit the input size,
  a side never below one pixel, pad, normalise) -> the model -> boxes back
  to original-image pixels, classes to the dataset's category ids ->
  optionally masks pasted at the original image size.

The `tflite` input type (Model Garden's name; TFLite and ONNX exports use
it) takes float32 network inputs `[B, H, W, 3]` preprocessed outside the
model as `preprocess_ops.preprocess_for_inference` does; its boxes are in
pixels of that input, and it has no `image_info` (see
`inference_for_tflite`).

Outputs (D = max_num_detections):
  num_detections      int32   [B]
  detection_boxes     float32 [B, D, 4]  ymin, xmin, ymax, xmax, pixels of
                                         the original image
  detection_scores    float32 [B, D]
  detection_classes   int32   [B, D]     dataset category ids, 0: padding
  detection_masks     float32 [B, D, M, M] probabilities inside each box, or
                      with `full_size_masks` uint8 [B, D, H, W] 0/1 masks of
                      the original image (H, W: the largest image of the
                      batch; each image's own size is in image_info)
  image_info          float32 [B, 4, 2]  Model Garden's: original size,
                                         input size, scale, offset (0)
A panoptic model (`model.panoptic.stuff_category_ids`) adds, at the network
input's resolution (the original image is its top-left
round(original size x scale) pixels):
  category_mask       int32   [B, H, W]  dataset category id of each pixel
                                         (thing or stuff), 0: void
  instance_mask       int32   [B, H, W]  d + 1 on the pixels of detection
                                         slot d, 0 for stuff and void
"""

from typing import Dict, List, Optional, Sequence

import tensorflow as tf
import tf_keras

from official.core import config_definitions as cfg
from official.vision.serving import export_base
from official_ext.vision.ops import mask_ops
from dataloaders import category_ids as category_ids_lib
from dataloaders.ops import preprocess_ops
from modeling import factory

# Model Garden's input type of float32 network inputs preprocessed outside
# the model (resized, padded, normalised), as TFLite and ONNX exports take.
PREPROCESSED_INPUT = 'tflite'
# Masks pasted at full size are 1 where the pasted probability reaches this.
MASK_THRESHOLD = 0.5
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# The leading bytes of the formats `tf.io.decode_image` reads, as it tells
# them apart: (offset, bytes) pairs that must all match.
_IMAGE_SIGNATURES = (
    ((0, b'\xff\xd8\xff'),),  # JPEG.
    ((0, _PNG_SIGNATURE),),
    ((0, b'GIF8'),),  # GIF.
    ((0, b'BM'),),  # BMP.
    ((0, b'RIFF'), (8, b'WEBP')),  # WebP.
)
_IMAGE_FORMATS = 'a JPEG, PNG, GIF, BMP or WebP image'
# A PNG's bit depth: the byte after the signature, IHDR's length and type,
# width and height.
_PNG_BIT_DEPTH_OFFSET = 24


def decode_image_bytes(encoded: tf.Tensor, name: tf.Tensor) -> tf.Tensor:
  """In-graph: one image file's bytes -> uint8 RGB [h, w, 3].

  `tf.io.decode_image(channels=3, expand_animations=False)` (JPEG, PNG,
  BMP, the first frame of a GIF or WebP; gray and alpha to RGB) except:

    * bytes of none of these formats fail with "assertion failed: [NAME is
      not a JPEG, PNG, GIF, BMP or WebP image]" (TensorFlow's own error,
      "Unknown image file format", does not say which image);
    * 16-bit PNG samples v become round(v * 255 / 65535), as
      `dataloaders.image_io` reads them (decode_image keeps the high byte,
      v // 256: 255 becomes 0, not 1).

  Args:
    encoded: scalar string, the image file's contents.
    name: scalar string naming the image in the error (e.g. its index in
      the batch).

  Returns:
    uint8 [height, width, 3].
  """
  # The leading bytes, padded so that every offset below exists.
  header = tf.strings.join([tf.strings.substr(encoded, 0, 32), b'\0' * 32])

  def starts_with(offset, signature):
    return tf.equal(tf.strings.substr(header, offset, len(signature)),
                    signature)

  is_image = tf.reduce_any(tf.stack([
      tf.reduce_all(tf.stack([starts_with(*part) for part in signature]))
      for signature in _IMAGE_SIGNATURES]))
  check = tf.debugging.Assert(
      is_image, [tf.strings.join([name, f' is not {_IMAGE_FORMATS}'])])
  with tf.control_dependencies([check]):  # Checked before decoding.
    encoded = tf.identity(encoded)
  is_16_bit_png = tf.logical_and(
      starts_with(0, _PNG_SIGNATURE),
      starts_with(_PNG_BIT_DEPTH_OFFSET, b'\x10'))

  def decode_16_bit_png():
    samples = tf.io.decode_png(encoded, channels=3, dtype=tf.uint16)
    # v * 255 / 65535 = v / 257, never halfway between integers.
    return tf.cast(tf.round(tf.cast(samples, tf.float32) / 257.), tf.uint8)

  image = tf.cond(
      is_16_bit_png, decode_16_bit_png,
      lambda: tf.io.decode_image(encoded, channels=3, dtype=tf.uint8,
                                 expand_animations=False))
  image.set_shape([None, None, 3])
  return image


def paste_masks_batch(masks: tf.Tensor, boxes: tf.Tensor,
                      image_size: tf.Tensor,
                      image_sizes: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Pastes box crops into full images and binarises them.

  Args:
    masks: float [B, D, M, M] probabilities of each box.
    boxes: float [B, D, 4] yxyx boxes, pixels of the target image.
    image_size: (height, width) of the (common) output, int scalars.
    image_sizes: optional [B, 2] (height, width) of each image; its masks
      are 0 beyond them.

  Returns:
    uint8 [B, D, height, width]: 1 where the bilinearly pasted probability
    is at least `MASK_THRESHOLD` (as the reference thresholds).
  """
  def paste_one(args):
    pasted = mask_ops.paste_masks(args[0], args[1], image_size)
    return tf.cast(pasted >= MASK_THRESHOLD, tf.uint8)

  pasted = tf.map_fn(paste_one, (masks, boxes),
                     fn_output_signature=tf.TensorSpec(
                         [masks.shape[1], None, None], tf.uint8))
  if image_sizes is not None:
    sizes = tf.cast(image_sizes, tf.int32)
    rows = tf.range(image_size[0])[None, :, None] < sizes[:, 0, None, None]
    cols = tf.range(image_size[1])[None, None, :] < sizes[:, 1, None, None]
    pasted *= tf.cast(rows & cols, tf.uint8)[:, None]
  return pasted


class UniPercepNetModule(export_base.ExportModule):
  """Serving signatures of a UniPercepNet-S model (see the module doc)."""

  def __init__(self,
               params: cfg.ExperimentConfig,
               *,
               batch_size: Optional[int],
               input_image_size: Sequence[int],
               input_type: str = 'image_tensor',
               num_channels: int = 3,
               model: Optional[tf_keras.Model] = None,
               input_name: Optional[str] = None,
               full_size_masks: bool = False):
    """Builds the module (and the model from `params` when not given).

    Args:
      params: the experiment; `task.model` defines the network and
        `task.category_ids` / `task.annotation_file` the output class ids.
      batch_size: fixed batch size of the signatures, or None (dynamic).
      input_image_size: [height, width] of the network input, multiples of
        the model's stride; images of any size are resized to fit it.
      input_type: the default signature's input (Model Garden's names).
      num_channels: must be 3.
      model: an already built model (its weights are used as they are).
      input_name: the signatures' input name (None: `inputs`).
      full_size_masks: output uint8 masks at the original image size
        instead of per-box probabilities.
    """
    stride = 2**params.task.model.level
    size = [int(s) for s in input_image_size]
    if len(size) != 2 or any(s <= 0 or s % stride for s in size):
      raise ValueError(f'input_image_size {list(input_image_size)} must be '
                       f'height,width, both multiples of {stride}.')
    if num_channels != 3:
      raise ValueError(f'num_channels is {num_channels}; the model reads RGB.')
    if full_size_masks and input_type == PREPROCESSED_INPUT:
      raise ValueError(f'full_size_masks needs the original image size, '
                       f'which input_type {PREPROCESSED_INPUT!r} does not '
                       'give.')
    self._full_size_masks = full_size_masks
    self._pad_value = params.task.validation_data.parser.pad_value
    self._test_scale = params.task.validation_data.parser.test_scale
    self._category_ids = category_ids_lib.resolve_category_ids(params.task)
    super().__init__(params, batch_size=batch_size, input_image_size=size,
                     input_type=input_type, num_channels=num_channels,
                     model=model, input_name=input_name)

  @property
  def category_ids(self) -> List[int]:
    return list(self._category_ids)

  def _build_model(self) -> tf_keras.Model:
    model_config = self.params.task.model
    input_size = list(self._input_image_size) + [3]
    model = factory.build_unipercepnet(
        tf_keras.layers.InputSpec(shape=[self._batch_size] + input_size),
        model_config)
    factory.build_and_trace(
        model, input_size,
        self.params.task.train_data.parser.mask_crop_size)
    return model

  # ------------------------------------------------------------ inputs.
  def _decode_image(self, encoded_image_bytes: tf.Tensor,
                    name: Optional[tf.Tensor] = None) -> tf.Tensor:
    """Image file bytes -> uint8 RGB [h, w, 3] (`decode_image_bytes`).

    Args:
      encoded_image_bytes: scalar string.
      name: scalar string naming the image in the error on bytes of no
        image format (default: 'an image').
    """
    return decode_image_bytes(encoded_image_bytes,
                              'an image' if name is None else name)

  def _decode_tf_example(self, tf_example_string_tensor: tf.Tensor,
                         name: Optional[tf.Tensor] = None) -> tf.Tensor:
    """A serialized tf.Example's `image/encoded` -> uint8 RGB [h, w, 3].

    Args:
      tf_example_string_tensor: scalar string.
      name: scalar string naming the example in the error on bytes of no
        image format (default: 'a tf.Example').
    """
    features = tf.io.parse_single_example(
        serialized=tf_example_string_tensor,
        features={'image/encoded': tf.io.FixedLenFeature((), tf.string)})
    return self._decode_image(
        features['image/encoded'],
        tf.strings.join(['image/encoded of ',
                         'a tf.Example' if name is None else name]))

  def _preprocess_one(self, image: tf.Tensor):
    image, image_info, _ = preprocess_ops.preprocess_for_inference(
        image, self._input_image_size, self._pad_value, self._test_scale)
    return image, image_info

  def _preprocess_specs(self):
    return (tf.TensorSpec(self._input_image_size + [3], tf.float32),
            tf.TensorSpec([4, 2], tf.float32))

  def preprocess(self, images: tf.Tensor):
    """uint8 [B, h, w, 3] -> (network inputs [B, H, W, 3], image_info)."""
    with tf.device('cpu:0'):
      return tf.map_fn(self._preprocess_one, images,
                       fn_output_signature=self._preprocess_specs(),
                       parallel_iterations=32)

  def _preprocess_encoded(self, decode_fn, inputs: tf.Tensor,
                          input_type: str):
    """Decodes and preprocesses each string (images may differ in size).

    Args:
      decode_fn: (string, name) -> uint8 [h, w, 3].
      inputs: string [B].
      input_type: the signature's input type; with the batch index, it
        names a string that is not an image in the error.
    """
    def preprocess_one(args):
      encoded, index = args
      name = tf.strings.format(input_type + ' element {}', index)
      return self._preprocess_one(decode_fn(encoded, name))

    with tf.device('cpu:0'):
      indices = tf.range(tf.shape(inputs)[0])
      return tf.map_fn(preprocess_one, (inputs, indices),
                       fn_output_signature=self._preprocess_specs(),
                       parallel_iterations=32)

  # ------------------------------------------------------- inference.
  def serve(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Detections of uint8 images `[B, h, w, 3]` (one size per batch)."""
    return self.detect(*self.preprocess(images))

  def detect(self, images: tf.Tensor,
             image_info: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Detections of preprocessed images (see the module doc)."""
    scale = image_info[:, 2, :]
    # With model.detection_generator.clip_boxes, boxes are clipped to the
    # valid (unpadded) region, as in evaluation.
    outputs = self.model.call(images, image_shape=image_info[:, 0, :] * scale,
                              training=False)
    boxes = outputs['detection_boxes'] / tf.tile(scale[:, tf.newaxis, :],
                                                  [1, 1, 2])
    table = tf.constant([0] + self._category_ids, tf.int32)
    detections = {
        'num_detections': tf.cast(outputs['num_detections'], tf.int32),
        'detection_boxes': boxes,
        'detection_scores': outputs['detection_scores'],
        'detection_classes': tf.gather(table, outputs['detection_classes']),
        'image_info': image_info,
    }
    if 'detection_masks' in outputs:
      masks = tf.cast(outputs['detection_masks'], tf.float32)
      if self._full_size_masks:
        largest = tf.cast(tf.reduce_max(image_info[:, 0, :], axis=0),
                          tf.int32)
        masks = paste_masks_batch(masks, boxes, (largest[0], largest[1]),
                                  image_info[:, 0, :])
      detections['detection_masks'] = masks
    if 'category_mask' in outputs:
      # The panoptic masks, at the network input's resolution (image_info
      # maps it to the original image): dataset category ids (0 void) and
      # the owning detection's slot + 1 (0 for stuff and void).
      stuff = list(self.params.task.model.panoptic.stuff_category_ids)
      panoptic_table = tf.constant([0] + self._category_ids + stuff,
                                   tf.int32)
      detections['category_mask'] = tf.gather(panoptic_table,
                                              outputs['category_mask'])
      detections['instance_mask'] = tf.cast(outputs['instance_mask'],
                                            tf.int32)
    return detections

  @tf.function
  def inference_for_tflite(self, inputs: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Detections of network inputs preprocessed outside (`tflite`).

    Model Garden's `tflite` input type: float32 `[B, H, W, 3]` images of the
    input size, already resized, padded and normalised as
    `preprocess_ops.preprocess_for_inference` does. Boxes are in pixels of
    that input (divide by the resize scale for the original image's);
    masks are per-box probabilities; there is no `image_info`.
    """
    size = tf.constant(self._input_image_size, tf.float32)
    info = tf.stack([size, size, [1., 1.], [0., 0.]])
    info = tf.tile(info[tf.newaxis], [tf.shape(inputs)[0], 1, 1])
    detections = self.detect(inputs, info)
    del detections['image_info']
    return detections

  @tf.function
  def inference_from_image_bytes(self, inputs: tf.Tensor):
    return self.detect(*self._preprocess_encoded(self._decode_image, inputs,
                                                 'image_bytes'))

  @tf.function
  def inference_from_tf_example(self, inputs: tf.Tensor):
    return self.detect(*self._preprocess_encoded(self._decode_tf_example,
                                                 inputs, 'tf_example'))
