"""Operator tools against the real broker and Redis: record and replay, validation online and
offline, threshold control of a running worker."""

import json

import pytest

from alerting.service import AlertingService
from alerting.settings import AlertingSettings
from detector.datasets import export_elpv
from detector.worker import DetectorWorker
from lineguard.cli import main
from producer.recording import read_recording
from shared.schemas import FrameHeaders
from tests.streaming import (
    kafka_settings,
    make_topics,
    read_topic,
    redis_settings,
    running,
    unique,
    wait_until,
)
from tests.test_pipeline import HTTP, detector_settings, elpv_frames, inspections, publish


@pytest.fixture
def env(monkeypatch, broker, redis_url):
    """Point the CLI at the test broker, fresh topics and a fresh Redis key prefix."""
    kafka = kafka_settings(broker.bootstrap)
    topics = make_topics(kafka)
    redis = redis_settings(redis_url)
    for key, value in {"KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap, "REDIS__URL": redis.url,
                       "REDIS__PREFIX": redis.prefix, "KAFKA__SESSION_TIMEOUT_MS": "3000",
                       "KAFKA__HEARTBEAT_INTERVAL_MS": "1000"}.items():
        monkeypatch.setenv(f"LINEGUARD_{key}", value)
    for name in ("frames", "inspections", "alerts", "defects", "dead_letter"):
        monkeypatch.setenv(f"LINEGUARD_TOPICS__{name.upper()}__NAME", getattr(topics, name).name)
    return kafka, topics, redis


def test_record_from_the_topic_and_replay_keeps_bytes_headers_and_order(env, tmp_path, monkeypatch,
                                                                        capsys):
    kafka, topics, _ = env
    frames = elpv_frames(4, 2)
    publish(kafka, topics, "line-r", frames[:3], camera="cam-a")
    publish(kafka, topics, "line-r", frames[3:], camera="cam-b")
    publish(kafka, topics, "line-other", frames[:1], camera="cam-a")
    original = read_topic(kafka, topics.frames.name, 7)
    recording = tmp_path / "rec"
    assert main(["record", str(recording), "--line", "line-r", "--idle-timeout", "2"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["frames"] == 6
    assert len(read_recording(recording)) == 6

    replayed_topic = unique("replayed")
    monkeypatch.setenv("LINEGUARD_TOPICS__FRAMES__NAME", replayed_topic)
    assert main(["replay", str(recording), "--as-fast-as-possible"]) == 0
    assert '"sent": 6' in capsys.readouterr().out
    replayed = read_topic(kafka, replayed_topic, 6, more_s=0.5)

    def per_camera(records):
        cameras: dict[str, list] = {}
        for record in records:
            meta = FrameHeaders.from_kafka(record.headers)
            if meta.line_id == "line-r":
                cameras.setdefault(meta.camera_id, []).append((record.value, record.headers))
        return cameras

    assert per_camera(replayed) == per_camera(original)
    assert sorted(len(v) for v in per_camera(replayed).values()) == [3, 3]

    # a recording is also a producer source: same images, labels kept, new ids
    from producer.sources import open_source

    as_source = list(open_source(str(recording)))
    assert [f.data for f in as_source] == [(recording / e.file).read_bytes()
                                           for e in read_recording(recording)]
    assert [f.label for f in as_source] == [e.headers.label for e in read_recording(recording)]


def test_recording_cut_short_stays_usable(tmp_path):
    from producer.recording import RecordingError, RecordingWriter

    frames = elpv_frames(2, 0)
    with RecordingWriter(tmp_path / "rec", "test") as writer:
        for index, frame in enumerate(frames):
            writer.add(frame.data, FrameHeaders(frame_id=f"f{index}", line_id="l", camera_id="c",
                                                capture_time=frame.capture_time, sequence=index,
                                                content_type="image/jpeg"))
    manifest = tmp_path / "rec" / "manifest.jsonl"
    manifest.write_text(manifest.read_text() + '{"index": 2, "file": "frames/0000')  # torn write
    assert [e.headers.frame_id for e in read_recording(tmp_path / "rec")] == ["f0", "f1"]
    with pytest.raises(RecordingError, match="not a recording"):
        read_recording(tmp_path)


def test_validation_through_the_pipeline_matches_offline(env, pipeline_model, tmp_path, capsys):
    kafka, topics, redis = env
    data = tmp_path / "elpv"
    export_elpv(data, limit=8)
    recording = tmp_path / "rec"
    assert main(["record", str(recording), "--mvtec", str(data), "--line", "line-v"]) == 0
    entries = read_recording(recording)
    assert {e.headers.label for e in entries} == {"good", "defective"} and len(entries) == 16

    worker = DetectorWorker(detector_settings(kafka, topics, redis, pipeline_model))
    alerting = AlertingService(AlertingSettings(kafka=kafka, topics=topics, redis=redis, http=HTTP,
                                                group_id=unique("alerting")))
    with running(worker), running(alerting):
        assert main(["validate", str(recording), "--out", str(tmp_path / "online"),
                     "--timeout", "60"]) == 0
    online = json.loads((tmp_path / "online" / "report.json").read_text())
    assert main(["validate", str(recording), "--offline", "--model", str(pipeline_model),
                 "--out", str(tmp_path / "offline")]) == 0
    offline = json.loads((tmp_path / "offline" / "report.json").read_text())

    assert online["frames"]["sent"] == 16 and online["frames"]["lost"] == 0
    assert online["frames"]["inspected"] == 16
    assert online["frames"]["defect_events"] == online["metrics"]["true_positives"] + \
        online["metrics"]["false_positives"]
    for key in ("true_positives", "false_positives", "false_negatives", "true_negatives"):
        assert online["metrics"][key] == offline["metrics"][key], key
    for key in ("image_auroc", "best_f1", "best_f1_threshold", "target_recall_threshold"):
        assert online["metrics"][key] == pytest.approx(offline["metrics"][key], abs=1e-3), key
    assert online["latency"]["capture_to_inspection"]["count"] == 16
    assert online["latency"]["capture_to_inspection"]["p50_ms"] > 0
    for name in ("report.md", "scores.png", "roc.png"):
        assert (tmp_path / "online" / name).stat().st_size > 0


def test_threshold_set_changes_a_running_workers_verdicts_and_is_audited(env, pipeline_model, capsys):
    kafka, topics, redis = env
    worker = DetectorWorker(detector_settings(kafka, topics, redis, pipeline_model))
    frames = elpv_frames(2, 0)
    with running(worker):
        publish(kafka, topics, "line-s", frames[:1])
        first = inspections(kafka, topics, 1)[0]
        assert first.verdict == "good"  # a good cell under the model's default threshold
        assert main(["threshold", "set", "line-s", "0.0001", "--reason", "catch everything"]) == 0
        took = wait_until(lambda: worker.thresholds.resolve("line-s", 0.5).value == 0.0001, 5)
        assert took < 1.0
        publish(kafka, topics, "line-s", frames[1:])
        second = inspections(kafka, topics, 2)[-1]
        assert (second.verdict, second.threshold_source) == ("defective", "redis-line")
        assert main(["threshold", "set", "line-s", "1.5"]) == 2  # refused, nothing written
        assert "0 < value < 1" in capsys.readouterr().err
    assert main(["threshold", "history", "line-s"]) == 0
    history = capsys.readouterr().out.strip().splitlines()
    assert len(history) == 1 and "unset -> 0.0001" in history[0] and "catch everything" in history[0]
    assert main(["threshold", "get", "line-s"]) == 0
    assert "0.0001 (line key)" in capsys.readouterr().out
    assert main(["threshold", "unset", "line-s"]) == 0
    assert main(["threshold", "list"]) == 0
    assert "line-s" not in capsys.readouterr().out.split("removed")[-1]
