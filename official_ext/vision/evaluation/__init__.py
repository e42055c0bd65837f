"""Evaluation extensions of Model Garden's `official.vision.evaluation`."""
