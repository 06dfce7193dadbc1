"""Shared fixtures: small models built from the packaged teacher weights."""

import numpy as np
import pytest
import torch

from detector.calibration import calibrate
from detector.model import ModelConfig, TeacherStudent
from shared.logging import configure_logging

configure_logging(json_output=False, level="warning")
torch.set_num_threads(2)


def small_model(**overrides) -> TeacherStudent:
    """A model at 64x64 with ImageNet teacher weights and a random (untrained) student."""
    torch.manual_seed(0)
    config = ModelConfig(**{"image_size": 64, **overrides})
    model = TeacherStudent(config)
    model.teacher.load_imagenet()
    return model.eval()


@pytest.fixture
def model() -> TeacherStudent:
    return small_model()


@pytest.fixture
def some_calibration():
    return calibrate(np.linspace(1.0, 2.0, 20))
