"""Pure logic of the streaming services: contracts, frame validation, batching, regions,
thresholds, settings, webhook, sources and health endpoints (no broker, no Redis)."""

import json
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import cv2
import numpy as np
import pytest
import zmq
from prometheus_client import CollectorRegistry

from alerting.regions import crop_box, find_regions
from alerting.service import bound_event
from alerting.webhook import post_event
from detector.batching import MicroBatcher
from detector.decoding import FrameLimits, FrameRejectedError, decode_frame, sniff_image
from detector.settings import DetectorSettings
from producer.sources import open_source
from shared.schemas import (
    AlertRequest,
    DefectEvent,
    DefectRegion,
    FrameHeaders,
    InspectionRecord,
    SchemaError,
    Timings,
    decode_normalised_map,
    encode_normalised_map,
    pack_alert,
    unpack_alert,
)
from shared.service import Health, HealthServer
from shared.settings import HttpSettings, SettingsError
from shared.thresholds import ThresholdError, parse_threshold


def _headers(**changes) -> list[tuple[str, bytes]]:
    fields = {"frame_id": "f-1", "line_id": "line-1", "camera_id": "cam-1",
              "capture_time": datetime(2026, 11, 28, tzinfo=UTC), "sequence": 3,
              "content_type": "image/jpeg"} | changes
    return FrameHeaders(**fields).to_kafka()


def _jpeg(height=48, width=64) -> bytes:
    rng = np.random.default_rng(0)
    _, data = cv2.imencode(".jpg", rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    return data.tobytes()


def _png(height=48, width=64) -> bytes:
    _, data = cv2.imencode(".png", np.zeros((height, width), np.uint8))
    return data.tobytes()


def test_frame_headers_round_trip_and_refusals():
    headers = _headers(part_id="p-9", label="defective")
    parsed = FrameHeaders.from_kafka(headers)
    assert parsed.frame_id == "f-1" and parsed.sequence == 3 and parsed.label == "defective"
    assert parsed.capture_time == datetime(2026, 11, 28, tzinfo=UTC)
    missing = [h for h in headers if h[0] != "line_id"]
    with pytest.raises(SchemaError, match="line_id"):
        FrameHeaders.from_kafka(missing)
    with pytest.raises(SchemaError, match="longer than"):
        FrameHeaders.from_kafka([*headers, ("note", b"x" * 300)])
    with pytest.raises(SchemaError, match="too many"):
        FrameHeaders.from_kafka([(f"h{i}", b"1") for i in range(40)])
    with pytest.raises(SchemaError, match="line_id"):
        FrameHeaders.from_kafka(_headers() and [(k, b"a b/../" if k == "line_id" else v)
                                                for k, v in _headers()])
    with pytest.raises(SchemaError, match="schema_version"):
        FrameHeaders.from_kafka([(k, b"2" if k == "schema_version" else v) for k, v in _headers()])


def test_sniff_reads_sizes_without_decoding():
    assert sniff_image(_jpeg(48, 64)) == ("image/jpeg", 64, 48)
    assert sniff_image(_png(30, 20)) == ("image/png", 20, 30)
    with pytest.raises(FrameRejectedError) as error:
        sniff_image(b"GIF89a....")
    assert error.value.reason == "unsupported-content"


def test_decode_frame_rejects_with_a_reason_for_each_kind_of_bad_frame():
    limits = FrameLimits(max_bytes=50_000, max_pixels=100 * 100, max_side=200)
    meta, rgb = decode_frame(_jpeg(), _headers(), limits)
    assert rgb.shape == (48, 64, 3) and meta.camera_id == "cam-1"
    cases = {
        "undecodable": (_jpeg()[:-200], _headers()),  # truncated
        "oversized": (_jpeg(200, 200), _headers()),  # 40,000 pixels > 10,000
        "bad-headers": (_jpeg(), _headers(content_type="image/png")),  # says PNG, is JPEG
        "unsupported-content": (b"not an image at all", _headers()),
    }
    for reason, (value, headers) in cases.items():
        with pytest.raises(FrameRejectedError) as error:
            decode_frame(value, headers, limits)
        assert error.value.reason == reason, (reason, error.value)
    with pytest.raises(FrameRejectedError) as error:
        decode_frame(b"x" * 60_000, _headers(), limits)
    assert error.value.reason == "oversized"
    with pytest.raises(FrameRejectedError) as error:
        decode_frame(_jpeg(), [h for h in _headers() if h[0] != "frame_id"], limits)
    assert error.value.reason == "bad-headers"


def test_micro_batcher_closes_on_size_or_wait():
    batcher: MicroBatcher[int] = MicroBatcher(max_batch=3, max_wait_s=0.5)
    assert batcher.wait_s(0.0) is None and not batcher.ready(0.0)
    batcher.add(1, 0.0)
    batcher.add(2, 0.1)
    assert not batcher.ready(0.2) and batcher.wait_s(0.2) == pytest.approx(0.3)
    assert batcher.ready(0.5)
    batcher.add(3, 0.2)
    batcher.add(4, 0.3)
    assert batcher.ready(0.3) and batcher.wait_s(0.3) == 0.0
    assert batcher.take() == [1, 2, 3] and len(batcher) == 1
    assert batcher.drop(lambda item: item == 4) == 1 and len(batcher) == 0


def test_regions_are_components_over_threshold_largest_peak_first():
    normalised = np.zeros((100, 120), np.float32)
    normalised[10:20, 10:30] = 0.7  # 200 px
    normalised[60:70, 80:85] = 0.9  # 50 px, higher peak
    normalised[90, 5] = 0.95  # 1 px speck
    regions = find_regions(normalised, threshold=0.5, min_area=16, max_regions=8)
    assert [(r.x, r.y, r.width, r.height, r.area) for r in regions] == [
        (80, 60, 5, 10, 50), (10, 10, 20, 10, 200)]
    assert regions[0].peak_score == pytest.approx(0.9)
    only_speck = np.zeros((50, 50), np.float32)
    only_speck[5, 5] = 0.8
    kept = find_regions(only_speck, 0.5, min_area=16, max_regions=8)
    assert len(kept) == 1 and kept[0].area == 1  # the peak region stays even when small
    assert find_regions(normalised, 0.5, 1, max_regions=1)[0].peak_score == pytest.approx(0.95)
    box = crop_box(regions[1], 0.25, normalised.shape)
    assert box == (0, 0, 30 + 16, 20 + 16)  # grown by >= 16 px, clipped at the frame's edge


def _inspection(**changes) -> InspectionRecord:
    fields = dict(frame_id="f-1", line_id="line-1", camera_id="cam-1", sequence=1,
                  capture_time=datetime.now(UTC), inspected_time=datetime.now(UTC), score=0.7,
                  score_raw=1.5, threshold=0.5, threshold_source="model", verdict="defective",
                  model_id="m", model_version="0.1.0", frame_width=64, frame_height=48,
                  timings=Timings(queue_wait_ms=1, decode_ms=1, inference_ms=1, batch_size=1),
                  worker_id="w", source_partition=0, source_offset=7) | changes
    return InspectionRecord(**fields)


def test_alert_envelope_round_trip_and_stable_event_id():
    request = AlertRequest(inspection=_inspection(), content_type="image/jpeg", map_resize="pad")
    normalised = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    frame = _jpeg()
    back, map_png, frame_back = unpack_alert(pack_alert(request, encode_normalised_map(normalised), frame))
    assert back == request and frame_back == frame
    assert np.abs(decode_normalised_map(map_png) - normalised).max() < 1e-4
    with pytest.raises(SchemaError):
        unpack_alert(b"XXXX" + bytes(20))
    with pytest.raises(SchemaError):
        unpack_alert(b"LGA1" + (10**6).to_bytes(4, "big") + bytes(20))
    # the same frame inspected twice (another worker, another time) keeps its event id
    again = _inspection(worker_id="other", source_offset=99, score=0.8)
    assert again.event_id() == request.inspection.event_id()
    assert _inspection(frame_id="f-2").event_id() != again.event_id()


def test_events_are_bounded_by_dropping_crops_first():
    crop = "A" * 40_000
    event = DefectEvent(
        event_id="e", frame_id="f", line_id="l", camera_id="c", sequence=0,
        capture_time=datetime.now(UTC), inspected_time=datetime.now(UTC),
        published_time=datetime.now(UTC), score=0.9, score_raw=2, threshold=0.5,
        threshold_source="model", model_id="m", model_version="v", frame_width=10, frame_height=10,
        regions=[DefectRegion(x=0, y=0, width=1, height=1, area=1, peak_score=0.9 - i / 10,
                              crop_jpeg=crop) for i in range(3)], overlay_jpeg="B" * 20_000)
    bounded = bound_event(event, 110_000)
    assert len(bounded.to_bytes()) <= 110_000 and bounded.truncated
    assert [r.crop_jpeg is not None for r in bounded.regions] == [True, True, False]
    assert bounded.overlay_jpeg is not None
    assert not bound_event(event, 1_000_000).truncated


@pytest.mark.parametrize("text", ["abc", "nan", "inf", "0", "1", "-0.2", "1.5", ""])
def test_bad_thresholds_are_refused_with_a_message(text):
    with pytest.raises(ThresholdError, match="threshold"):
        parse_threshold(text)


def test_good_thresholds_parse():
    assert parse_threshold(b"0.25") == 0.25 and parse_threshold("0.999") == 0.999


def test_settings_come_from_yaml_then_environment(tmp_path, monkeypatch):
    config = tmp_path / "detector.yaml"
    config.write_text("max_batch: 7\nkafka:\n  bootstrap_servers: yaml:9092\n  client_id: from-yaml\n"
                      "line_models:\n  line-b: /models/b\n"
                      "topics:\n  frames:\n    name: cams\n    partitions: 3\n    retention_ms: 1000\n")
    monkeypatch.setenv("LINEGUARD_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    monkeypatch.setenv("LINEGUARD_KAFKA__SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("LINEGUARD_MAX_WAIT_MS", "12")
    settings = DetectorSettings.load(config)
    assert settings.max_batch == 7 and settings.max_wait_ms == 12
    assert settings.kafka.bootstrap_servers == "env:9092"  # environment wins over the file
    assert settings.kafka.client_id == "from-yaml"
    assert settings.topics.frames.name == "cams" and settings.topics.defects.name == "defects"
    assert str(settings.line_models["line-b"]) == "/models/b"
    assert "s3cret" not in repr(settings) and "s3cret" not in settings.model_dump_json()
    with pytest.raises(SettingsError, match="not found"):
        DetectorSettings.load(tmp_path / "missing.yaml")
    monkeypatch.setenv("LINEGUARD_MAX_BATCH", "0")
    with pytest.raises(SettingsError, match="max_batch"):
        DetectorSettings.load()


class _FlakyEndpoint(BaseHTTPRequestHandler):
    statuses: ClassVar[list[int]] = []
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            self.bodies.append(body)
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_retries_server_errors_and_not_client_errors():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        _FlakyEndpoint.statuses[:] = [500, 503]
        assert post_event(url, b'{"a": 1}', timeout_s=2, retries=3, backoff_s=0.01)
        assert _FlakyEndpoint.bodies == [b'{"a": 1}'] and not _FlakyEndpoint.statuses
        _FlakyEndpoint.statuses[:] = [400, 200]
        assert not post_event(url, b"{}", timeout_s=2, retries=3, backoff_s=0.01)
        assert _FlakyEndpoint.statuses == [200]  # no retry after a 4xx
        _FlakyEndpoint.statuses[:] = [500, 500, 500]
        assert not post_event(url, b"{}", timeout_s=2, retries=1, backoff_s=0.01)
    finally:
        server.shutdown()
    assert not post_event(url, b"{}", timeout_s=0.5, retries=1, backoff_s=0.01)  # gone


def test_zmq_source_takes_valid_messages_and_skips_bad_ones():
    endpoint = f"ipc:///tmp/lineguard-test-zmq-{time.monotonic_ns()}"
    frames = open_source(f"zmq:{endpoint}", idle_timeout_s=5, max_bytes=100_000)

    def camera():
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.connect(endpoint)
        push.send_multipart([json.dumps({"camera_id": "cam-z", "label": "good"}).encode(), _jpeg()])
        push.send_multipart([b"{not json", _jpeg()])
        push.send_multipart([json.dumps({"camera_id": "bad id!"}).encode(), _jpeg()])
        push.send_multipart([json.dumps({"content_type": "image/png"}).encode(), _jpeg()])
        push.send_multipart([json.dumps({"frame_id": "f-7"}).encode(), _png()])
        push.send_multipart([json.dumps({"end": True}).encode()])
        push.close(linger=2000)

    sender = threading.Thread(target=camera)
    sender.start()  # ZeroMQ queues what is pushed before the producer binds
    received = list(frames)
    sender.join()
    assert [(f.camera_id, f.frame_id, f.content_type, f.label) for f in received] == [
        ("cam-z", None, "image/jpeg", "good"), (None, "f-7", "image/png", None)]


def test_video_source_gives_jpeg_frames(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for value in (0, 100, 200):
        writer.write(np.full((48, 64, 3), value, np.uint8))
    writer.release()
    frames = list(open_source(str(path)))
    assert len(frames) == 3 and all(f.content_type == "image/jpeg" for f in frames)
    assert sniff_image(frames[0].data)[1:] == (64, 48)
    with pytest.raises(ValueError, match="cannot open"):
        list(open_source(str(tmp_path / "missing.mp4")))


def test_health_endpoints_report_liveness_and_readiness():
    health = Health(liveness_timeout_s=0.3)
    server = HealthServer(HttpSettings(host="127.0.0.1", port=0), health, CollectorRegistry()).start()

    def get(path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    try:
        assert get("/livez")[0] == 200
        assert get("/readyz") == (503, "the service is starting\n")
        health.set_ready("starting", True)
        health.set_ready("broker", False, "Kafka not reachable")
        assert get("/readyz") == (503, "Kafka not reachable\n")
        health.set_ready("broker", True)
        assert get("/readyz")[0] == 200
        time.sleep(0.4)
        status, text = get("/livez")
        assert status == 503 and "stalled" in text
        assert get("/metrics")[0] == 200 and get("/nope")[0] == 404
    finally:
        server.stop()


def test_kafka_security_settings_pass_through_without_leaking():
    from shared.kafka import client_options
    from shared.settings import KafkaSettings

    settings = KafkaSettings(bootstrap_servers="a:9093,b:9093", security_protocol="SASL_SSL",
                             sasl_mechanism="SCRAM-SHA-512", sasl_username="lineguard",
                             sasl_password="p4ss", ssl_cafile="/etc/kafka/ca.crt")
    options = client_options(settings)
    assert options["bootstrap_servers"] == ["a:9093", "b:9093"]
    assert (options["sasl_mechanism"], options["sasl_plain_username"],
            options["sasl_plain_password"]) == ("SCRAM-SHA-512", "lineguard", "p4ss")
    assert options["ssl_cafile"] == "/etc/kafka/ca.crt" and options["security_protocol"] == "SASL_SSL"
    assert "p4ss" not in repr(settings) and "p4ss" not in str(settings.model_dump())
    assert "sasl_plain_password" not in client_options(KafkaSettings())


def test_every_setting_is_documented():
    from pathlib import Path

    from pydantic import BaseModel

    from alerting.settings import AlertingSettings
    from producer.settings import ProducerSettings

    doc = (Path(__file__).resolve().parents[1] / "docs" / "streaming.md").read_text()

    def names(model: type[BaseModel], prefix: str):
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                if name != "topics":
                    yield from names(annotation, f"{prefix}{name.upper()}__")
            else:
                yield f"{prefix}{name.upper()}"

    missing = {name for cls in (DetectorSettings, AlertingSettings, ProducerSettings)
               for name in names(cls, "LINEGUARD_") if f"`{name}`" not in doc}
    assert not missing, f"settings missing from docs/streaming.md: {sorted(missing)}"


def test_secrets_can_come_from_files_named_like_the_variables(tmp_path, monkeypatch):
    from alerting.settings import AlertingSettings

    (tmp_path / "LINEGUARD_KAFKA__SASL_PASSWORD").write_text("from-file\n")
    (tmp_path / "LINEGUARD_WEBHOOK_TOKEN").write_text("token")
    (tmp_path / "unrelated.txt").write_text("ignored")
    monkeypatch.setenv("LINEGUARD_SECRETS_DIR", str(tmp_path))
    settings = AlertingSettings.load()
    assert settings.kafka.sasl_password.get_secret_value() == "from-file"
    assert settings.webhook_token.get_secret_value() == "token"
    monkeypatch.setenv("LINEGUARD_KAFKA__SASL_PASSWORD", "from-env")  # the environment wins
    assert AlertingSettings.load().kafka.sasl_password.get_secret_value() == "from-env"
    (tmp_path / "LINEGUARD_REDIS__PASSWORD").write_bytes(b"x" * 70_000)
    with pytest.raises(SettingsError, match="larger than"):
        AlertingSettings.load()
