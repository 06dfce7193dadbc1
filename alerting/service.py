"""The alerting service: alert requests in, defect events (regions, heatmap crops, overlay)
out on `defects`, once per frame within the dedup window. At-least-once."""

import threading
import time

import cv2
import numpy as np
import redis
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import CollectorRegistry, Counter, Histogram

from alerting.regions import crop_box, draw_boxes, encode_jpeg, find_regions, heat_overlay
from alerting.settings import AlertingSettings
from alerting.webhook import post_event
from detector.decoding import FrameLimits, FrameRejectedError, decode_frame
from detector.frames import map_to_frame
from shared.kafka import (
    AssignmentTracker,
    BrokerProbe,
    commit_processed,
    make_consumer,
    make_producer,
    send_dead_letter,
    wait_for_acks,
)
from shared.logging import get_logger
from shared.schemas import (
    DefectEvent,
    DefectRegion,
    SchemaError,
    b64,
    decode_normalised_map,
    unb64,
    unpack_alert,
    utc_now,
)
from shared.service import Health, HealthServer
from shared.thresholds import connect

log = get_logger("lineguard.alerting")


class AlertingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.defects = Counter("lineguard_defects", "Defect events published", ["line"], registry=r)
        self.suppressed = Counter("lineguard_defects_suppressed",
                                  "Redelivered frames not alerted again (dedup window)", registry=r)
        self.dead_lettered = Counter("lineguard_alerts_dead_lettered",
                                     "Alert requests that could not be turned into events",
                                     ["reason"], registry=r)
        self.capture_to_event = Histogram(
            "lineguard_capture_to_defect_seconds", "From capture to the defect event's ack",
            ["line"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=r)
        self.render_seconds = Histogram("lineguard_alert_render_seconds",
                                        "Finding regions and rendering crops for one frame",
                                        registry=r)
        self.webhook = Counter("lineguard_webhook_deliveries", "Webhook deliveries by outcome",
                               ["outcome"], registry=r)


class Deduplicator:
    """Remembers published event ids for `window_s`, in Redis (shared by all alerting
    instances) and in memory (when Redis is down)."""

    def __init__(self, client: redis.Redis, prefix: str, window_s: float) -> None:
        self.client = client
        self.prefix = prefix
        self.window_s = window_s
        self._local: dict[str, float] = {}
        self._redis_down = False

    def _key(self, event_id: str) -> str:
        return f"{self.prefix}:alerted:{event_id}"

    def seen(self, event_id: str) -> bool:
        now = time.monotonic()
        if self._local.get(event_id, -1e18) + self.window_s > now:
            return True
        try:
            found = bool(self.client.exists(self._key(event_id)))
            self._redis_down = False
            return found
        except redis.RedisError as error:
            self._note(error)
            return False

    def remember(self, event_id: str) -> None:
        now = time.monotonic()
        self._local[event_id] = now
        if len(self._local) > 100_000:
            self._local = {k: t for k, t in self._local.items() if t + self.window_s > now}
        if self.window_s <= 0:
            return
        try:
            self.client.set(self._key(event_id), b"1", px=int(self.window_s * 1000))
        except redis.RedisError as error:
            self._note(error)

    def _note(self, error: Exception) -> None:
        if not self._redis_down:
            log.warning("redis unavailable; deduplicating in memory only", error=str(error))
        self._redis_down = True


class AlertingService:
    def __init__(self, settings: AlertingSettings) -> None:
        self.settings = settings
        self.metrics = AlertingMetrics()
        self.health = Health(settings.http.liveness_timeout_s)
        self.health.set_ready("starting", True)
        self.health.set_ready("broker", False, "Kafka not checked yet")
        self.limits = FrameLimits(settings.max_frame_bytes, settings.max_frame_pixels)
        self.dedup = Deduplicator(connect(settings.redis), settings.redis.prefix,
                                  settings.dedup_window_s)
        self._stop = threading.Event()
        self.http: HealthServer | None = None
        self.published = 0
        self.partitions = AssignmentTracker("alerting")

    def stop(self) -> None:
        self._stop.set()

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> None:
        self._start()
        try:
            while not self._stop.is_set():
                self.health.beat()
                polled = self.consumer.poll(timeout_ms=200, max_records=self.settings.max_records)
                records = [r for batch in polled.values() for r in batch]
                if records:
                    self._process(records)
        finally:
            self._close()

    def _process(self, records: list[ConsumerRecord]) -> None:
        sends, events, batch_ids = [], [], set()
        for record in records:
            try:
                event = self.build_event(record)
            except (SchemaError, FrameRejectedError, ValueError) as error:
                sends.append(self._dead_letter(record, error))
                continue
            if event.event_id in batch_ids or self.dedup.seen(event.event_id):
                self.metrics.suppressed.inc()
                log.info("defect already alerted; not published again", event_id=event.event_id,
                         frame_id=event.frame_id, line_id=event.line_id)
                continue
            batch_ids.add(event.event_id)
            body = event.to_bytes()
            sends.append(self.producer.send(self.settings.topics.defects.name,
                                            key=event.line_id.encode(), value=body))
            events.append((event, body))
        wait_for_acks(self.producer, sends, self.settings.send_timeout_s)
        for event, body in events:
            self.dedup.remember(event.event_id)
            self.metrics.defects.labels(event.line_id).inc()
            self.metrics.capture_to_event.labels(event.line_id).observe(
                (utc_now() - event.capture_time).total_seconds())
            log.info("defect", event_id=event.event_id, frame_id=event.frame_id,
                     line_id=event.line_id, camera_id=event.camera_id, score=round(event.score, 4),
                     regions=len(event.regions))
            self._webhook(body)
        commit_processed(self.consumer, records)
        self.published += len(events)

    # -- helpers -----------------------------------------------------------------------------
    def build_event(self, record: ConsumerRecord) -> DefectEvent:
        """An alert request -> a bounded defect event (raises on a malformed request)."""
        started = time.perf_counter()
        request, map_png, frame_bytes = unpack_alert(record.value or b"")
        inspection = request.inspection
        _, rgb = decode_frame(frame_bytes, record.headers, self.limits)
        normalised = map_to_frame(decode_normalised_map(map_png), rgb.shape[:2], request.map_resize)
        s = self.settings
        found = find_regions(normalised, inspection.threshold, s.min_region_area, s.max_regions)
        overlay = heat_overlay(rgb, normalised)
        regions = []
        for region in found:
            box = crop_box(region, s.crop_margin, rgb.shape[:2])
            x, y, w, h = box
            crop = draw_boxes(overlay, [region])[y:y + h, x:x + w]
            regions.append(DefectRegion(x=region.x, y=region.y, width=region.width,
                                        height=region.height, area=region.area,
                                        peak_score=region.peak_score, crop_box=box,
                                        crop_jpeg=b64(encode_jpeg(crop, s.crop_size, s.jpeg_quality))))
        event = DefectEvent(
            event_id=inspection.event_id(), frame_id=inspection.frame_id,
            line_id=inspection.line_id, camera_id=inspection.camera_id,
            sequence=inspection.sequence, part_id=inspection.part_id,
            capture_time=inspection.capture_time, inspected_time=inspection.inspected_time,
            published_time=utc_now(), score=inspection.score, score_raw=inspection.score_raw,
            threshold=inspection.threshold, threshold_source=inspection.threshold_source,
            model_id=inspection.model_id, model_version=inspection.model_version,
            frame_width=rgb.shape[1], frame_height=rgb.shape[0], regions=regions,
            overlay_jpeg=b64(encode_jpeg(draw_boxes(overlay, found), s.overlay_size, s.jpeg_quality)))
        self.metrics.render_seconds.observe(time.perf_counter() - started)
        return bound_event(event, s.max_event_bytes)

    def _dead_letter(self, record: ConsumerRecord, error: Exception):
        reason = getattr(error, "reason", "bad-alert")
        log.error("alert request dead-lettered", reason=reason, detail=str(error),
                  partition=record.partition, offset=record.offset)
        self.metrics.dead_lettered.labels(reason).inc()
        return send_dead_letter(self.producer, self.settings.topics.dead_letter.name, record,
                                reason, str(error), self.settings.worker_id)

    def _webhook(self, body: bytes) -> None:
        s = self.settings
        if not s.webhook_url:
            return
        ok = post_event(s.webhook_url, body, s.webhook_timeout_s, s.webhook_retries,
                        s.webhook_token.get_secret_value() if s.webhook_token else None)
        self.metrics.webhook.labels("delivered" if ok else "failed").inc()

    def _start(self) -> None:
        s = self.settings
        self.producer = make_producer(s.kafka)
        self.consumer = make_consumer(s.kafka, s.group_id)
        self.consumer.subscribe([s.topics.alerts.name], listener=self.partitions)
        self.probe = BrokerProbe(s.kafka, lambda ok, why: self.health.set_ready("broker", ok, why)).start()
        if s.http.enabled:
            self.http = HealthServer(s.http, self.health, self.metrics.registry).start()
        log.info("alerting service started", group=s.group_id, topic=s.topics.alerts.name,
                 defects_topic=s.topics.defects.name, http_port=self.http.port if self.http else None)

    def _close(self) -> None:
        for closer in (lambda: self.consumer.close(), lambda: self.producer.close(timeout=10),
                       lambda: self.probe.stop(), lambda: self.http and self.http.stop()):
            try:
                closer()
            except Exception as error:
                log.warning("error while closing", error=str(error))
        log.info("alerting service stopped", published=self.published)


def bound_event(event: DefectEvent, max_bytes: int) -> DefectEvent:
    """Drop crops (lowest peak first), then the overlay, then regions, until the event fits."""
    event = event.model_copy(deep=True)
    while len(event.to_bytes()) > max_bytes:
        with_crop = [r for r in event.regions if r.crop_jpeg]
        if with_crop:
            with_crop[-1].crop_jpeg = None
        elif event.overlay_jpeg:
            event.overlay_jpeg = None
        elif len(event.regions) > 1:
            event.regions.pop()
        else:
            break
        event.truncated = True
    return event


def frame_from_event(jpeg_b64: str) -> np.ndarray:
    """Decode a crop or overlay of an event (RGB), e.g. to show or check it."""
    data = np.frombuffer(unb64(jpeg_b64), np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not a JPEG")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
