"""TOOD-style task-aligned head on a single feature level.

Data flow (one level, A anchors per cell, K classes):

  x -> N stacked 3x3 conv+BN+ReLU -> concat of their outputs = feat (N*F ch)
  feat -> TaskDecomposition(cls) -> 3x3 conv -> A*K class logits
  feat -> 1x1 -> ReLU -> 3x3 -> probability logit; score = sqrt(sig * sig)
  feat -> TaskDecomposition(reg) -> 3x3 conv -> A*4 deltas * scale
       -> decoded on the anchors (XYWH deltas, centre clamp)
  feat -> 1x1 -> ReLU -> 3x3 -> A*4*2 offsets: each box coordinate is
       resampled from the decoded-box map at its own offset; where that
       inverts the first anchor's box, the cell keeps all its unsampled
       boxes (the reference's rule, see `resample_boxes`).
"""

import math
from typing import Any, Dict, Mapping, Optional, Sequence

import tensorflow as tf
import tf_keras

from official.vision.ops import anchor_generator
from official_ext.vision.modeling.layers import nn_layers
from official_ext.vision.ops import box_ops as box_ops_ext
from official_ext.vision.ops import sampling_ops


def _prior_bias(prior_prob: float) -> float:
  return -math.log((1. - prior_prob) / prior_prob)


def single_level_anchors(feature_height: int, feature_width: int, stride: int,
                         anchor_size: float, scales: Sequence[float],
                         aspect_ratios: Sequence[float],
                         center_offset: float = 0.) -> tf.Tensor:
  """Anchors `[H * W * A, 4]` (yxyx, pixels), in (row, column, anchor) order.

  Cell (i, j) has its anchors centred at `((i + center_offset) * stride,
  (j + center_offset) * stride)`: 0 is mmdet's default (the reference's),
  0.5 Model Garden's cell centres.
  """
  generator = anchor_generator.AnchorGeneratorv1(
      anchor_sizes=[anchor_size], scales=list(scales),
      aspect_ratios=list(aspect_ratios), strides=[stride])
  anchors = generator([feature_height * stride, feature_width * stride])[0]
  # Model Garden centres anchors on the cells: move them by the difference.
  return tf.reshape(anchors, [-1, 4]) - (0.5 - center_offset) * stride


def resample_boxes(boxes: tf.Tensor, offsets: tf.Tensor) -> tf.Tensor:
  """TOOD's deformable sampling of a decoded-box map.

  Args:
    boxes: `[B, H, W, A, 4]` boxes (yxyx) at each cell and anchor.
    offsets: `[B, H, W, A, 4, 2]`, per coordinate `(dy, dx)` in cells.

  Returns:
    `[B, H, W, A, 4]`: each coordinate bilinearly sampled from its own channel
    of the box map at its own offset. Where the sampling inverts the FIRST
    anchor's box (ymin > ymax or xmin > xmax), every anchor of that cell
    keeps its unsampled box; inverted boxes of the other anchors stay, as in
    the reference (mmdet's TOOD tests channels 0-3 only).
  """
  shape = tf.shape(boxes)
  height, width = boxes.shape[1], boxes.shape[2]
  channels = boxes.shape[3] * 4
  sampled = sampling_ops.deformable_resample(
      tf.reshape(boxes, [-1, height, width, channels]),
      tf.reshape(offsets, [-1, height, width, channels, 2]))
  sampled = tf.reshape(sampled, shape)
  first = sampled[:, :, :, 0, :]
  inverted = (first[..., 0] > first[..., 2]) | (first[..., 1] > first[..., 3])
  return tf.where(inverted[..., None, None], boxes, sampled)


@tf_keras.utils.register_keras_serializable(package='Vision')
class TaskDecomposition(tf_keras.layers.Layer):
  """Layer attention over stacked features, then a 1x1 reduction + BN + ReLU.

  The attention weights (one per stacked layer, from the global average of
  `feat`) scale the reduction conv's input groups, which equals TOOD's
  per-sample reweighting of the reduction kernel.
  """

  def __init__(self,
               num_layers: int,
               feat_channels: int,
               attention_channels: int,
               use_sync_bn: bool = False,
               norm_momentum: float = 0.9,
               norm_epsilon: float = 1e-5,
               kernel_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               **kwargs):
    super().__init__(**kwargs)
    self._config_dict = {
        'num_layers': num_layers,
        'feat_channels': feat_channels,
        'attention_channels': attention_channels,
        'use_sync_bn': use_sync_bn,
        'norm_momentum': norm_momentum,
        'norm_epsilon': norm_epsilon,
        'kernel_regularizer': kernel_regularizer,
    }

  def build(self, input_shape):
    c = self._config_dict
    in_channels = int(input_shape[-1])
    if in_channels != c['num_layers'] * c['feat_channels']:
      raise ValueError(f'TaskDecomposition expects {c["num_layers"]} x '
                       f'{c["feat_channels"]} input channels, got '
                       f'{in_channels}.')
    small = tf_keras.initializers.RandomNormal(stddev=0.001)
    self._attention1 = tf_keras.layers.Dense(
        c['attention_channels'], activation='relu', kernel_initializer=small,
        kernel_regularizer=c['kernel_regularizer'], name='layer_attention1')
    self._attention2 = tf_keras.layers.Dense(
        c['num_layers'], activation='sigmoid', kernel_initializer=small,
        kernel_regularizer=c['kernel_regularizer'], name='layer_attention2')
    self._reduction = tf_keras.layers.Conv2D(
        c['feat_channels'], 1, use_bias=False,
        kernel_initializer=tf_keras.initializers.RandomNormal(stddev=0.01),
        kernel_regularizer=c['kernel_regularizer'], name='reduction_conv')
    self._norm = nn_layers.BatchNormalization(
        momentum=c['norm_momentum'], epsilon=c['norm_epsilon'],
        synchronized=c['use_sync_bn'], name='reduction_norm')
    self._attention1.build([None, in_channels])
    self._attention2.build([None, c['attention_channels']])
    self._reduction.build(input_shape)
    self._norm.build(tf.TensorShape(input_shape)[:-1].concatenate(
        [c['feat_channels']]))
    super().build(input_shape)

  def call(self, feat, training=None):
    c = self._config_dict
    pooled = tf.reduce_mean(feat, axis=[1, 2])
    weights = self._attention2(self._attention1(pooled))  # [B, num_layers]
    weights = tf.repeat(weights, c['feat_channels'], axis=-1)
    x = self._reduction(feat * tf.cast(weights[:, None, None, :], feat.dtype))
    return tf.nn.relu(self._norm(x, training=training))

  def get_config(self) -> Mapping[str, Any]:
    return dict(list(super().get_config().items()) +
                list(self._config_dict.items()))


@tf_keras.utils.register_keras_serializable(package='Vision')
class TOODHead(tf_keras.layers.Layer):
  """Task-aligned head with anchors, box decoding and deformable sampling."""

  def __init__(self,
               num_classes: int,
               stride: int = 32,
               anchor_size: float = 32.,
               anchor_center_offset: float = 0.,
               anchor_scales: Sequence[float] = (1., 2., 4., 8., 16.),
               aspect_ratios: Sequence[float] = (1.,),
               num_stacked_convs: int = 6,
               num_filters: int = 256,
               attention_channels: int = 32,
               branch_channels: int = 64,
               ctr_clamp: Optional[float] = 32.,
               deformable_sampling: bool = True,
               prior_prob: float = 0.01,
               use_sync_bn: bool = False,
               norm_momentum: float = 0.9,
               norm_epsilon: float = 1e-5,
               kernel_regularizer: Optional[
                   tf_keras.regularizers.Regularizer] = None,
               **kwargs):
    super().__init__(**kwargs)
    self._config_dict = {
        'num_classes': num_classes,
        'stride': stride,
        'anchor_size': anchor_size,
        'anchor_center_offset': anchor_center_offset,
        'anchor_scales': list(anchor_scales),
        'aspect_ratios': list(aspect_ratios),
        'num_stacked_convs': num_stacked_convs,
        'num_filters': num_filters,
        'attention_channels': attention_channels,
        'branch_channels': branch_channels,
        'ctr_clamp': ctr_clamp,
        'deformable_sampling': deformable_sampling,
        'prior_prob': prior_prob,
        'use_sync_bn': use_sync_bn,
        'norm_momentum': norm_momentum,
        'norm_epsilon': norm_epsilon,
        'kernel_regularizer': kernel_regularizer,
    }

  @property
  def num_anchors(self) -> int:
    c = self._config_dict
    return len(c['anchor_scales']) * len(c['aspect_ratios'])

  def _conv(self, filters, kernel_size, stddev, bias=0., use_bias=True,
            activation=None, name=None):
    return tf_keras.layers.Conv2D(
        filters, kernel_size, padding='same', use_bias=use_bias,
        activation=activation,
        kernel_initializer=tf_keras.initializers.RandomNormal(stddev=stddev),
        bias_initializer=tf_keras.initializers.Constant(bias),
        kernel_regularizer=self._config_dict['kernel_regularizer'], name=name)

  def build(self, input_shape):
    c = self._config_dict
    a, k, f = self.num_anchors, c['num_classes'], c['num_filters']
    norm_kwargs = dict(momentum=c['norm_momentum'], epsilon=c['norm_epsilon'],
                       synchronized=c['use_sync_bn'])
    self._stacked_convs, self._stacked_norms = [], []
    for i in range(c['num_stacked_convs']):
      self._stacked_convs.append(
          self._conv(f, 3, 0.01, use_bias=False, name=f'stacked_conv{i}'))
      self._stacked_norms.append(nn_layers.BatchNormalization(
          name=f'stacked_norm{i}', **norm_kwargs))
    decomposition_kwargs = dict(
        num_layers=c['num_stacked_convs'], feat_channels=f,
        attention_channels=c['attention_channels'],
        kernel_regularizer=c['kernel_regularizer'],
        use_sync_bn=c['use_sync_bn'], norm_momentum=c['norm_momentum'],
        norm_epsilon=c['norm_epsilon'])
    self._cls_decomposition = TaskDecomposition(
        name='cls_decomposition', **decomposition_kwargs)
    self._reg_decomposition = TaskDecomposition(
        name='reg_decomposition', **decomposition_kwargs)
    prior = _prior_bias(c['prior_prob'])
    self._cls_conv = self._conv(a * k, 3, 0.01, bias=prior, name='cls_conv')
    self._reg_conv = self._conv(a * 4, 3, 0.01, name='reg_conv')
    self._prob_conv1 = self._conv(c['branch_channels'], 1, 0.01,
                                  activation='relu', name='prob_conv1')
    self._prob_conv2 = self._conv(1, 3, 0.01, bias=prior, name='prob_conv2')
    if c['deformable_sampling']:
      self._offset_conv1 = self._conv(c['branch_channels'], 1, 0.001,
                                      activation='relu', name='offset_conv1')
      self._offset_conv2 = self._conv(a * 8, 3, 0.001, name='offset_conv2')
    self._scale = self.add_weight(
        'scale', shape=[], initializer='ones', trainable=True)
    super().build(input_shape)

  def call(self, inputs, training=None) -> Dict[str, tf.Tensor]:
    """Runs the head.

    Args:
      inputs: `[B, H, W, C]`, one feature map at `stride`; H and W static.
      training: Keras training flag.

    Returns:
      A dict, `N = H * W * A` in (row, column, anchor) order:
        `cls_logits` `[B, N, K]`, `prob_logits` `[B, N, 1]`, `cls_scores`
        `[B, N, K]` (sqrt of the product of both sigmoids), `box_preds`
        `[B, N, 4]` decoded and resampled boxes in pixels (yxyx),
        `box_deltas` `[B, N, 4]` (after the scale), `anchor_boxes` `[N, 4]`.
    """
    c = self._config_dict
    a, k = self.num_anchors, c['num_classes']
    height, width = inputs.shape[1], inputs.shape[2]
    if height is None or width is None:
      raise ValueError('TOODHead needs a static feature size, got '
                       f'{inputs.shape}.')

    x = inputs
    stacked = []
    for conv, norm in zip(self._stacked_convs, self._stacked_norms):
      x = tf.nn.relu(norm(conv(x), training=training))
      stacked.append(x)
    feat = tf.concat(stacked, axis=-1)

    cls_logits = self._cls_conv(
        self._cls_decomposition(feat, training=training))
    prob_logits = self._prob_conv2(self._prob_conv1(feat))
    deltas = self._reg_conv(self._reg_decomposition(feat, training=training))

    cls_logits = tf.reshape(tf.cast(cls_logits, tf.float32), [-1, height,
                                                              width, a, k])
    prob_logits = tf.cast(prob_logits, tf.float32)[:, :, :, None, :]
    scores = tf.sqrt(tf.sigmoid(cls_logits) * tf.sigmoid(prob_logits))
    prob_logits = tf.broadcast_to(prob_logits, tf.shape(scores[..., :1]))

    anchors = single_level_anchors(height, width, c['stride'],
                                   c['anchor_size'], c['anchor_scales'],
                                   c['aspect_ratios'],
                                   c['anchor_center_offset'])
    scale = tf.cast(self._scale, tf.float32)  # Read as float16 under AMP.
    deltas = tf.reshape(tf.cast(deltas, tf.float32) * scale,
                        [-1, height, width, a, 4])
    boxes = box_ops_ext.decode_boxes_xywh(
        deltas, tf.reshape(anchors, [height, width, a, 4]),
        ctr_clamp=c['ctr_clamp'])
    if c['deformable_sampling']:
      offsets = tf.cast(self._offset_conv2(self._offset_conv1(feat)),
                        tf.float32)
      boxes = resample_boxes(boxes, tf.reshape(
          offsets, [-1, height, width, a, 4, 2]))

    n = height * width * a
    return {
        'cls_logits': tf.reshape(cls_logits, [-1, n, k]),
        'prob_logits': tf.reshape(prob_logits, [-1, n, 1]),
        'cls_scores': tf.reshape(scores, [-1, n, k]),
        'box_preds': tf.reshape(boxes, [-1, n, 4]),
        'box_deltas': tf.reshape(deltas, [-1, n, 4]),
        'anchor_boxes': anchors,
    }

  def get_config(self) -> Mapping[str, Any]:
    return dict(list(super().get_config().items()) +
                list(self._config_dict.items()))
