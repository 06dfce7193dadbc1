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


@pytest.fixture(scope="session")
def broker():
    """The embedded Kafka-compatible broker on a free port, for the whole test session."""
    from lineguard.broker import EmbeddedBroker

    with EmbeddedBroker() as running_broker:
        yield running_broker


@pytest.fixture(scope="session")
def pipeline_model(tmp_path_factory):
    from tests.streaming import write_small_model

    return write_small_model(tmp_path_factory.mktemp("pipeline-model"))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """The machine's Redis at 127.0.0.1:6379 (or LINEGUARD_TEST_REDIS_URL); when none answers,
    a redis-server from PATH on a free port for this session (the demo's own helper)."""
    import os

    from lineguard.demo_stream import delete_keys, local_redis

    url = os.environ.get("LINEGUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    with local_redis(url, workdir=tmp_path_factory.mktemp("redis")) as (running_url, _):
        yield running_url
        delete_keys(running_url, "lgtest-*")  # what the tests wrote
