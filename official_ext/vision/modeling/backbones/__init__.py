"""Backbones; importing this package registers them with Model Garden."""
from official_ext.vision.modeling.backbones.ca_resnet import CAResNet
from official_ext.vision.modeling.backbones.regnet import RegNet
from official_ext.vision.modeling.backbones.vovnet import VoVNet
