"""Helpers for tests against the real embedded broker and real Redis: settings with their own
topics and keys, services in threads, reading a topic, ELPV frames as camera bytes."""

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
from kafka import KafkaConsumer

from detector.calibration import calibrate
from detector.datasets import elpv_cells
from detector.frames import read_image
from detector.inference import Inspector
from detector.store import save_model
from shared.kafka import client_options, create_topics
from shared.settings import KafkaSettings, RedisSettings, TopicSettings, TopicSpec
from tests.conftest import small_model


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def kafka_settings(bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=bootstrap, session_timeout_ms=3000,
                         heartbeat_interval_ms=1000, bootstrap_timeout_ms=5000,
                         request_timeout_ms=10_000, max_poll_interval_ms=30_000)


def make_topics(kafka: KafkaSettings, frames_partitions: int = 4) -> TopicSettings:
    """A fresh set of topics for one test (names unique), created on the broker."""
    tag = uuid.uuid4().hex[:8]
    day = 24 * 3600_000
    topics = TopicSettings(
        frames=TopicSpec(name=f"frames-{tag}", partitions=frames_partitions, retention_ms=day),
        inspections=TopicSpec(name=f"inspections-{tag}", partitions=2, retention_ms=day),
        alerts=TopicSpec(name=f"alerts-{tag}", partitions=2, retention_ms=day),
        defects=TopicSpec(name=f"defects-{tag}", partitions=1, retention_ms=day),
        dead_letter=TopicSpec(name=f"dlq-{tag}", partitions=1, retention_ms=day))
    create_topics(kafka, topics.all())
    return topics


def redis_settings(url: str) -> RedisSettings:
    return RedisSettings(url=url, prefix=unique("lgtest"))


def elpv_paths(good: int, defective: int) -> tuple[list[Path], list[Path]]:
    return elpv_cells("good")[:good], elpv_cells("defective")[:defective]


def jpeg_bytes(path: Path, quality: int = 92) -> bytes:
    image = read_image(path)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def write_small_model(directory: Path) -> Path:
    """A 64-pixel model (ImageNet teacher, untrained student) calibrated on 16 good ELPV cells."""
    model = small_model()
    good, _ = elpv_paths(16, 0)
    scores = Inspector(model, calibrate(np.linspace(1, 2, 10))).inspect(
        [read_image(p) for p in good]).scores
    save_model(directory, model, calibrate(scores), {"images": len(good), "source": "elpv"})
    return directory


@contextmanager
def running(service) -> Iterator:
    """Run a service's loop in a thread; stop() and join on exit."""
    thread = threading.Thread(target=service.run, name=type(service).__name__, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        service.stop()
        thread.join(timeout=60)
        assert not thread.is_alive(), f"{type(service).__name__} did not stop"


def read_topic(kafka: KafkaSettings, topic: str, count: int, timeout_s: float = 60.0,
               more_s: float = 0.0) -> list:
    """Read records of a topic from the beginning until `count` arrived (then `more_s` longer,
    to catch extras) or the timeout."""
    consumer = KafkaConsumer(topic, **client_options(kafka), group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             fetch_max_bytes=52_428_800,
                             max_partition_fetch_bytes=kafka.max_message_bytes)
    records = []
    deadline = time.monotonic() + timeout_s
    extra_until = None
    try:
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
            if len(records) >= count:
                extra_until = extra_until or time.monotonic() + more_s
                if time.monotonic() >= extra_until:
                    break
    finally:
        consumer.close()
    return records


def wait_until(condition, timeout_s: float, interval_s: float = 0.05) -> float:
    """Seconds until condition() was true; raises AssertionError on timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")
