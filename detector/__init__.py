"""Detector: the teacher-student anomaly model, its training, evaluation and export."""
