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
    a redis-server from PATH on a free port for this session."""
    import os
    import shutil
    import subprocess

    import redis

    from lineguard.broker import free_port

    url = os.environ.get("LINEGUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        client.ping()
    except redis.RedisError:
        client = None
    if client is not None:
        yield url
        keys = list(client.scan_iter(match="lgtest-*", count=1000))  # what the tests wrote
        if keys:
            client.delete(*keys)
        return
    if shutil.which("redis-server") is None:
        pytest.fail(f"no Redis at {url} and no redis-server on PATH: install Redis "
                    "(e.g. apt install redis-server) or set LINEGUARD_TEST_REDIS_URL")
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no",
                               "--dir", str(tmp_path_factory.mktemp("redis"))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    from tests.streaming import wait_until

    wait_until(lambda: _answers(url), 10)
    yield url
    server.kill()
    server.wait()


def _answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False
