"""Backbone configs for the backbones in `official_ext.vision.modeling`."""

import dataclasses

from official.modeling import hyperparams
from official.vision.configs import backbones


@dataclasses.dataclass
class RegNet(hyperparams.Config):
  """RegNetX; `model_id` is a key of `regnet.REGNET_PARAMS`."""
  model_id: str = 'regnetx_4.0gf'
  stem_filters: int = 32
  channel_attention: bool = False
  attention_reduction: int = 16
  # Keep BN statistics frozen (BN in inference mode) while training.
  norm_eval: bool = True


@dataclasses.dataclass
class CAResNet(hyperparams.Config):
  """Bottleneck ResNet v1.5 (50, 101 or 152) with optional channel attention."""
  model_id: int = 50
  channel_attention: bool = False
  attention_reduction: int = 16
  norm_eval: bool = True


@dataclasses.dataclass
class VoVNet(hyperparams.Config):
  """VoVNet-v2 with eSE; `model_id` is a key of `vovnet.VOVNET_SPECS`."""
  model_id: str = 'V-39-eSE'
  norm_eval: bool = True


@dataclasses.dataclass
class Backbone(backbones.Backbone):
  """Model Garden's backbone OneOf config, plus `regnet`, `ca_resnet` and
  `vovnet`."""
  regnet: RegNet = dataclasses.field(default_factory=RegNet)
  ca_resnet: CAResNet = dataclasses.field(default_factory=CAResNet)
  vovnet: VoVNet = dataclasses.field(default_factory=VoVNet)
