"""The streaming pipeline against the real embedded broker and real Redis: producer, detector
workers and alerting, at-least-once through kills, bad frames, rebalances and Redis outages."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from kafka.partitioner.default import murmur2

from alerting.service import AlertingService, frame_from_event
from alerting.settings import AlertingSettings
from detector.inference import Inspector
from detector.settings import DetectorSettings
from detector.worker import DetectorWorker
from lineguard.broker import free_port
from producer.publisher import FramePublisher
from producer.settings import ProducerSettings
from producer.sources import SourceFrame
from shared.kafka import make_producer
from shared.schemas import DeadLetter, DefectEvent, FrameHeaders, InspectionRecord, utc_now
from shared.settings import HttpSettings, RedisSettings
from shared.thresholds import ThresholdKeys, connect, set_threshold
from tests.streaming import (
    elpv_paths,
    jpeg_bytes,
    kafka_settings,
    make_topics,
    read_topic,
    redis_settings,
    running,
    unique,
    wait_until,
)

HTTP = HttpSettings(host="127.0.0.1", port=0)


def detector_settings(kafka, topics, redis, model, **changes) -> DetectorSettings:
    fields = dict(kafka=kafka, topics=topics, redis=redis, model=model, http=HTTP,
                  group_id=unique("detector"), worker_id=unique("worker"), max_wait_ms=20,
                  threshold_refresh_s=1.0)
    return DetectorSettings(**(fields | changes))


def publish(kafka, topics, line: str, frames: list[SourceFrame], camera: str = "cam-1", fps=0.0):
    settings = ProducerSettings(kafka=kafka, topics=topics, line_id=line, camera_id=camera, fps=fps)
    producer = make_producer(kafka)
    try:
        summary = FramePublisher(settings, producer).publish(frames)
    finally:
        producer.close()
    assert summary.sent == len(frames) and summary.failed == 0
    return summary


def inspections(kafka, topics, count, **kw) -> list[InspectionRecord]:
    return [InspectionRecord.from_bytes(r.value)
            for r in read_topic(kafka, topics.inspections.name, count, **kw)]


def elpv_frames(good: int, defective: int) -> list[SourceFrame]:
    good_paths, bad_paths = elpv_paths(good, defective)
    return ([SourceFrame(jpeg_bytes(p), "image/jpeg", label="good") for p in good_paths]
            + [SourceFrame(jpeg_bytes(p), "image/jpeg", label="defective") for p in bad_paths])


def metric(registry, name, **labels) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_frames_become_inspections_and_defect_events(broker, pipeline_model, redis_url):
    kafka = kafka_settings(broker.bootstrap)
    topics = make_topics(kafka)
    redis = redis_settings(redis_url)
    frames = elpv_frames(6, 6)
    decoded = [cv2.cvtColor(cv2.imdecode(np.frombuffer(f.data, np.uint8), cv2.IMREAD_COLOR),
                            cv2.COLOR_BGR2RGB) for f in frames]
    offline = np.sort(Inspector.from_directory(pipeline_model).inspect(decoded).normalised)
    threshold = float((offline[5] + offline[6]) / 2)  # half the frames above it
    set_threshold(connect(redis), ThresholdKeys(redis.prefix), "line-e2e", threshold, who="test")

    worker = DetectorWorker(detector_settings(kafka, topics, redis, pipeline_model))
    alerting = AlertingService(AlertingSettings(kafka=kafka, topics=topics, redis=redis, http=HTTP,
                                                group_id=unique("alerting")))
    with running(worker), running(alerting):
        publish(kafka, topics, "line-e2e", frames)
        records = inspections(kafka, topics, len(frames), more_s=1.0)
        sent = sorted(r.frame_id for r in records)
        assert len(sent) == len(frames) == len(set(sent))  # every frame once
        for record in records:
            assert record.threshold == pytest.approx(threshold)
            assert record.threshold_source == "redis-line"
            assert record.verdict == ("defective" if record.score >= threshold else "good")
        assert np.allclose(np.sort([r.score for r in records]), offline, atol=1e-4)
        defective = {r.frame_id for r in records if r.verdict == "defective"}
        assert len(defective) == 6

        events = [DefectEvent.from_bytes(r.value)
                  for r in read_topic(kafka, topics.defects.name, len(defective), more_s=1.0)]
        assert {e.frame_id for e in events} == defective and len(events) == len(defective)
        for event in events:
            assert event.regions and event.overlay_jpeg
            assert frame_from_event(event.overlay_jpeg).ndim == 3
            for region in event.regions:
                x, y, w, h = region.crop_box
                assert x >= 0 and y >= 0 and x + w <= event.frame_width and y + h <= event.frame_height
                assert x <= region.x and region.x + region.width <= x + w
                assert y <= region.y and region.y + region.height <= y + h
                crop = frame_from_event(region.crop_jpeg)
                assert abs(crop.shape[1] / crop.shape[0] - w / h) < 0.1
                assert region.peak_score >= threshold
        assert len(read_topic(kafka, topics.dead_letter.name, 1, timeout_s=0.5)) == 0

        # health and metrics over HTTP
        base = f"http://127.0.0.1:{worker.http.port}"
        wait_until(lambda: urllib.request.urlopen(base + "/readyz").status == 200, 10)
        text = urllib.request.urlopen(base + "/metrics").read().decode()
        assert 'lineguard_frames_inspected_total{line="line-e2e",verdict="defective"} 6.0' in text
        assert f'lineguard_consumer_lag{{partition="0",topic="{topics.frames.name}"}}' in text
        assert 'lineguard_threshold{line="line-e2e",source="redis-line"}' in text

        # a redelivered alert request does not produce a second event
        alert = read_topic(kafka, topics.alerts.name, 1)[0]
        producer = make_producer(kafka)
        producer.send(topics.alerts.name, key=alert.key, value=alert.value,
                      headers=alert.headers).get(10)
        producer.close()
        wait_until(lambda: metric(alerting.metrics.registry,
                                  "lineguard_defects_suppressed_total") == 1, 10)
        assert len(read_topic(kafka, topics.defects.name, 99, timeout_s=1.5)) == len(defective)


def test_threshold_written_to_redis_takes_effect_within_a_second(broker, pipeline_model, redis_url):
    kafka = kafka_settings(broker.bootstrap)
    topics = make_topics(kafka)
    redis = redis_settings(redis_url)
    client, keys = connect(redis), ThresholdKeys(redis.prefix)
    worker = DetectorWorker(detector_settings(kafka, topics, redis, pipeline_model))
    frames = elpv_frames(2, 0)
    with running(worker):
        publish(kafka, topics, "line-t", frames[:1])
        assert inspections(kafka, topics, 1)[0].threshold_source == "model"

        set_threshold(client, keys, "line-t", 0.001, who="test", reason="all defective")
        assert wait_until(lambda: worker.thresholds.resolve("line-t", 0.5).value == 0.001, 5) < 1.0
        publish(kafka, topics, "line-t", frames[1:])
        latest = inspections(kafka, topics, 2)[-1]
        assert (latest.threshold, latest.threshold_source, latest.verdict) == (
            0.001, "redis-line", "defective")

        client.set(keys.default, "0.42")  # plain SET, no notification: picked up on refresh
        wait_until(lambda: worker.thresholds.resolve("other", 0.5).value == 0.42, 3)
        client.set(keys.line("line-t"), "1.7")  # invalid: ignored, the last valid value stays
        time.sleep(1.5)
        assert worker.thresholds.resolve("line-t", 0.5).value == 0.001
    history = client.xrange(keys.audit)
    assert history[-1][1][b"new"] == b"0.001" and history[-1][1][b"who"] == b"test"
    client.delete(keys.default, keys.line("line-t"), keys.audit)


def test_bad_frames_go_to_the_dead_letter_topic_and_the_stream_goes_on(broker, pipeline_model,
                                                                       redis_url):
    kafka = kafka_settings(broker.bootstrap)
    topics = make_topics(kafka, frames_partitions=1)
    redis = redis_settings(redis_url)
    worker = DetectorWorker(detector_settings(kafka, topics, redis, pipeline_model,
                                              max_frame_bytes=100_000))
    good = jpeg_bytes(elpv_paths(1, 0)[0][0])
    noise = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    oversized = cv2.imencode(".png", noise)[1].tobytes()
    assert len(oversized) > 100_000

    def headers(sequence, **changes):
        fields = dict(frame_id=f"f{sequence}", line_id="line-d", camera_id="cam-1",
                      capture_time=utc_now(), sequence=sequence, content_type="image/jpeg")
        return FrameHeaders(**(fields | changes)).to_kafka()

    records = [
        (good[: len(good) // 2], headers(0)),  # corrupt: truncated JPEG
        (oversized, headers(1, content_type="image/png")),
        (good, [h for h in headers(2) if h[0] != "line_id"]),  # bad headers
        (good, headers(3)), (good, headers(4)), (good, headers(5)),
    ]
    producer = make_producer(kafka)
    for value, kafka_headers in records:
        producer.send(topics.frames.name, key=b"cam-1", value=value, headers=kafka_headers).get(10)
    producer.close()
    with running(worker):
        letters = read_topic(kafka, topics.dead_letter.name, 3, more_s=0.5)
        done = inspections(kafka, topics, 3, more_s=0.5)
    reasons = [DeadLetter.from_kafka(r.headers).reason for r in letters]
    assert reasons == ["undecodable", "oversized", "bad-headers"]
    for letter, (value, kafka_headers) in zip(letters, records, strict=False):
        assert letter.value == value  # the original bytes, untouched
        assert [h for h in letter.headers if not h[0].startswith("dlq.")] == kafka_headers
        assert DeadLetter.from_kafka(letter.headers).source_topic == topics.frames.name
    assert [r.frame_id for r in done] == ["f3", "f4", "f5"]
    assert metric(worker.metrics.registry, "lineguard_frames_dead_lettered_total",
                  reason="oversized") == 1


def _cameras_covering(partitions: int) -> list[str]:
    """Camera ids whose keys land on every partition (Kafka's default partitioner)."""
    chosen: dict[int, str] = {}
    for index in range(1000):
        camera = f"cam-{index}"
        chosen.setdefault((murmur2(camera.encode()) & 0x7FFFFFFF) % partitions, camera)
        if len(chosen) == partitions:
            return [chosen[p] for p in range(partitions)]
    raise AssertionError("no cover")


def test_two_workers_share_partitions_and_one_takes_over(broker, pipeline_model, redis_url):
    kafka = kafka_settings(broker.bootstrap)
    topics = make_topics(kafka, frames_partitions=4)
    redis = redis_settings(redis_url)
    group = unique("detector")
    first = DetectorWorker(detector_settings(kafka, topics, redis, pipeline_model, group_id=group))
    second = DetectorWorker(detector_settings(kafka, topics, redis, pipeline_model, group_id=group))
    cameras = _cameras_covering(4)
    frame = elpv_frames(1, 0)[0]
    with running(first):
        wait_until(lambda: len(first.partitions.assigned) == 4, 30)
        with running(second):
            wait_until(lambda: len(first.partitions.assigned) == 2
                       and len(second.partitions.assigned) == 2, 30)
            for camera in cameras:
                publish(kafka, topics, "line-g", [frame] * 3, camera=camera)
            inspections(kafka, topics, 12, more_s=0.5)
            assert first.processed > 0 and second.processed > 0
        # second stopped (left the group): first takes all partitions over
        wait_until(lambda: len(first.partitions.assigned) == 4, 30)
        taken_over = utc_now()
        for camera in cameras:  # new frames, captured after the takeover
            publish(kafka, topics, "line-g", [SourceFrame(frame.data, frame.content_type)
                                              for _ in range(2)], camera=camera)
        records = inspections(kafka, topics, 20, more_s=0.5)
    assert len({r.frame_id for r in records}) == 20
    later = [r for r in records if r.capture_time >= taken_over]
    assert len(later) == 8 and {r.worker_id for r in later} == {first.settings.worker_id}


def test_inspection_goes_on_with_cached_thresholds_when_redis_stops(broker, pipeline_model, tmp_path):
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        redis = RedisSettings(url=f"redis://127.0.0.1:{port}/0", prefix="lgtest")
        client = connect(redis)
        wait_until(lambda: _pings(client), 10)
        set_threshold(client, ThresholdKeys("lgtest"), "line-r", 0.2, who="test")
        kafka = kafka_settings(broker.bootstrap)
        topics = make_topics(kafka)
        worker = DetectorWorker(detector_settings(kafka, topics, redis, pipeline_model,
                                                  threshold_refresh_s=0.2))
        frames = elpv_frames(4, 0)
        with running(worker):
            publish(kafka, topics, "line-r", frames[:2])
            before = inspections(kafka, topics, 2)
            server.kill()
            server.wait()
            time.sleep(1.0)  # several refreshes fail meanwhile
            publish(kafka, topics, "line-r", frames[2:])
            after = inspections(kafka, topics, 4)
        for record in before + after:
            assert (record.threshold, record.threshold_source) == (0.2, "redis-line")
        assert len({r.frame_id for r in after}) == 4
    finally:
        if server.poll() is None:
            server.kill()


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


def test_killed_worker_loses_no_frame(broker, pipeline_model, redis_url, tmp_path):
    kafka = kafka_settings(broker.bootstrap)
    topics = make_topics(kafka, frames_partitions=2)
    redis = redis_settings(redis_url)
    config = tmp_path / "detector.yaml"
    config.write_text(yaml.safe_dump({
        "kafka": kafka.model_dump(mode="json", exclude_none=True),
        "topics": topics.model_dump(mode="json"), "redis": redis.model_dump(mode="json"),
        "model": str(pipeline_model), "group_id": unique("detector"), "max_batch": 2,
        "max_wait_ms": 10, "http": {"enabled": False}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
    command = [sys.executable, "-m", "lineguard.cli", "detector", "--config", str(config)]
    cwd = Path(__file__).resolve().parents[1]

    def start(name):
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(command, env=env | {"LINEGUARD_WORKER_ID": name}, cwd=cwd,
                                stdout=log, stderr=log)

    frames = elpv_frames(20, 20)
    worker = start("doomed")
    try:
        import threading

        sender = threading.Thread(target=publish, args=(kafka, topics, "line-k", frames),
                                  kwargs={"fps": 10.0})
        sender.start()
        inspections(kafka, topics, 8, timeout_s=120)  # the worker is mid-stream
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        sender.join()
        partial = inspections(kafka, topics, 1, timeout_s=5, more_s=1)
        assert len({r.frame_id for r in partial}) < len(frames)  # it really died mid-stream
        worker = start("restarted")
        records = inspections(kafka, topics, len(frames), timeout_s=120, more_s=1.0)
        seen = {r.frame_id for r in records}
        while len(seen) < len(frames) and worker.poll() is None:
            records = inspections(kafka, topics, len(records) + 1, timeout_s=10)
            seen = {r.frame_id for r in records}
        assert len(seen) == len(frames), (tmp_path / "restarted.log").read_text()[-2000:]
        assert {r.worker_id for r in records} == {"doomed", "restarted"}
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0  # drains, commits and exits cleanly
    finally:
        if worker.poll() is None:
            worker.kill()


def test_topics_and_produce_commands(broker, tmp_path, monkeypatch, capsys):
    from lineguard.cli import main

    kafka = kafka_settings(broker.bootstrap)
    frames_topic = unique("frames")
    monkeypatch.setenv("LINEGUARD_KAFKA__BOOTSTRAP_SERVERS", broker.bootstrap)
    monkeypatch.setenv("LINEGUARD_TOPICS__FRAMES__NAME", frames_topic)
    monkeypatch.setenv("LINEGUARD_TOPICS__FRAMES__PARTITIONS", "3")
    assert main(["topics", "create"]) == 0
    assert f"{frames_topic}: created (3 partitions" in capsys.readouterr().out
    assert main(["topics", "create"]) == 0
    assert f"{frames_topic}: exists" in capsys.readouterr().out

    folder = tmp_path / "images"
    folder.mkdir()
    for path in elpv_paths(3, 0)[0]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "notes.txt").write_text("not an image")
    assert main(["produce", str(folder), "--line", "line-c", "--camera", "cam-9"]) == 0
    assert '"sent": 3, "failed": 0' in capsys.readouterr().out
    records = read_topic(kafka, frames_topic, 3)
    metas = [FrameHeaders.from_kafka(r.headers) for r in records]
    assert [m.sequence for m in metas] == [0, 1, 2] and {m.camera_id for m in metas} == {"cam-9"}
    assert records[0].value == sorted(folder.glob("*.png"))[0].read_bytes()  # bytes as given

    monkeypatch.setenv("LINEGUARD_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("LINEGUARD_KAFKA__BOOTSTRAP_TIMEOUT_MS", "1000")
    assert main(["produce", str(folder)]) == 3
    assert "cannot reach Kafka" in capsys.readouterr().err


def test_lines_are_served_by_their_configured_models(broker, pipeline_model, redis_url, tmp_path):
    import shutil

    from detector.store import read_manifest

    other = tmp_path / "other-model"
    shutil.copytree(pipeline_model, other)
    manifest = read_manifest(other)
    (other / "model.json").write_text(
        manifest.model_copy(update={"model_id": "line-b-model"}).model_dump_json())
    kafka = kafka_settings(broker.bootstrap)
    topics = make_topics(kafka)
    worker = DetectorWorker(detector_settings(kafka, topics, redis_settings(redis_url), pipeline_model,
                                              line_models={"line-b": other}))
    frames = elpv_frames(2, 0)
    with running(worker):
        publish(kafka, topics, "line-a", frames)
        publish(kafka, topics, "line-b", frames)
        records = inspections(kafka, topics, 4)
    models = {(r.line_id, r.model_id) for r in records}
    assert models == {("line-a", read_manifest(pipeline_model).model_id), ("line-b", "line-b-model")}
