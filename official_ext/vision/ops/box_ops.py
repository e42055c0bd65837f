"""Box ops Model Garden's `official.vision.ops.box_ops` lacks.

Boxes are `[ymin, xmin, ymax, xmax]` in pixels, as in Model Garden. Deltas are
`[dy, dx, dh, dw]` (Model Garden's order) of the "delta XYWH" coding used by
mmdet's `DeltaXYWHBBoxCoder` with means 0 and stds 1:

  dy = (cy - acy) / ah,  dx = (cx - acx) / aw,
  dh = log(h / ah),      dw = log(w / aw).

Decoding may clamp the centre shift to +-`ctr_clamp` pixels (YOLOF): then only
the upper side of dh/dw is clipped, as in YOLOF; otherwise both sides are.
"""

import math
from typing import Optional

import tensorflow as tf

# Largest log size ratio a decoded box may have: log(1000 / 16).
BBOX_XFORM_CLIP = math.log(1000. / 16.)


def _centers_sizes(boxes: tf.Tensor):
  ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
  h = ymax - ymin
  w = xmax - xmin
  return ymin + 0.5 * h, xmin + 0.5 * w, h, w


def decode_boxes_xywh(deltas: tf.Tensor,
                      anchors: tf.Tensor,
                      ctr_clamp: Optional[float] = None,
                      max_log_ratio: float = BBOX_XFORM_CLIP) -> tf.Tensor:
  """Decodes `[..., 4]` deltas on anchors (broadcastable) to boxes."""
  deltas = tf.convert_to_tensor(deltas)
  anchors = tf.cast(anchors, deltas.dtype)
  acy, acx, ah, aw = _centers_sizes(anchors)
  dy, dx, dh, dw = tf.unstack(deltas, axis=-1)
  shift_y = dy * ah
  shift_x = dx * aw
  if ctr_clamp is not None:
    shift_y = tf.clip_by_value(shift_y, -ctr_clamp, ctr_clamp)
    shift_x = tf.clip_by_value(shift_x, -ctr_clamp, ctr_clamp)
    dh = tf.minimum(dh, max_log_ratio)
    dw = tf.minimum(dw, max_log_ratio)
  else:
    dh = tf.clip_by_value(dh, -max_log_ratio, max_log_ratio)
    dw = tf.clip_by_value(dw, -max_log_ratio, max_log_ratio)
  cy = acy + shift_y
  cx = acx + shift_x
  half_h = 0.5 * ah * tf.exp(dh)
  half_w = 0.5 * aw * tf.exp(dw)
  return tf.stack([cy - half_h, cx - half_w, cy + half_h, cx + half_w],
                  axis=-1)
