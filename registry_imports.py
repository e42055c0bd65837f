"""Importing this module registers every UniPercepNet experiment, task,
backbone and decoder with Model Garden's registries (as
`official.vision.registry_imports` does for Model Garden's own), and the
assigner stages `losses.assigner_schedule` names."""

# pylint: disable=unused-import
from official.vision import registry_imports as _vision_registry_imports
from official_ext.vision.modeling import backbones
from official_ext.vision.modeling import decoders
from configs import unipercepnet as _unipercepnet_configs
from losses import unipercepnet_losses as _assigner_stages
from tasks import unipercepnet as _unipercepnet_task
