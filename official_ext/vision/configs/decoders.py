"""Decoder configs for the decoders in `official_ext.vision.modeling`."""

import dataclasses
from typing import List

from official.modeling import hyperparams
from official.vision.configs import decoders


@dataclasses.dataclass
class DilatedEncoder(hyperparams.Config):
  """YOLOF's DilatedEncoder on one backbone level: the model config's
  `level` (as Model Garden's FPN builder reads `min_level`/`max_level`)."""
  num_filters: int = 512
  bottleneck_filters: int = 128
  dilation_rates: List[int] = dataclasses.field(
      default_factory=lambda: [2, 4, 6, 8])


@dataclasses.dataclass
class Decoder(decoders.Decoder):
  """Model Garden's decoder OneOf config, plus `dilated_encoder`."""
  dilated_encoder: DilatedEncoder = dataclasses.field(
      default_factory=DilatedEncoder)
