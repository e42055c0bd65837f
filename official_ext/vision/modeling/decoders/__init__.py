"""Decoders; importing this package registers them with Model Garden."""
from official_ext.vision.modeling.decoders.dilated_encoder import DilatedEncoder
