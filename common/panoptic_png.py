"""COCO panoptic PNGs: segment id = R + 256 G + 256^2 B (0: void).

The format of panopticapi's PNGs, which the converters write
(`data/shapes_panoptic.py`, `data/bdd100k_panoptic.py`), Model Garden's
converter reads, and `serving/predict.py` writes for predictions.
"""

import numpy as np


def encode_segment_ids(segment_ids: np.ndarray) -> np.ndarray:
  """uint8 [H, W, 3] RGB of int [H, W] segment ids (below 256^3)."""
  ids = np.asarray(segment_ids).astype(np.int64)
  return np.stack([ids % 256, ids // 256 % 256, ids // 256**2 % 256],
                  axis=-1).astype(np.uint8)


def decode_segment_ids(rgb: np.ndarray) -> np.ndarray:
  """int32 [H, W] segment ids of a panoptic PNG's RGB pixels."""
  rgb = np.asarray(rgb).astype(np.int32)
  return rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]
