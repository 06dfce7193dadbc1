"""Evaluation of a model on labelled test images: metrics, report and pictures."""
