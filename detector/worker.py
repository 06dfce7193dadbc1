"""The detector worker: consume frames, decode in a thread pool, micro-batch, infer, publish
inspections (and alert requests for defective frames), then commit. At-least-once."""

import threading
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from detector.batching import MicroBatcher
from detector.decoding import FrameRejectedError, decode_frame
from detector.frames import fit_to_square
from detector.inference import Inspector
from detector.settings import DetectorSettings
from detector.telemetry import DetectorMetrics
from lineguard import __version__
from shared.kafka import (
    AssignmentTracker,
    BrokerProbe,
    commit_processed,
    consumer_lag,
    make_consumer,
    make_producer,
    send_dead_letter,
    wait_for_acks,
)
from shared.logging import get_logger
from shared.schemas import (
    AlertRequest,
    FrameHeaders,
    InspectionRecord,
    Timings,
    encode_normalised_map,
    pack_alert,
    utc_now,
)
from shared.service import Health, HealthServer
from shared.thresholds import ThresholdCache

log = get_logger("lineguard.detector")


@dataclass
class Decoded:
    meta: FrameHeaders
    prepared: np.ndarray  # (S, S, 3) uint8 at the line's model size
    frame_shape: tuple[int, int]
    decode_s: float
    queue_wait_s: float


@dataclass
class Pending:
    record: ConsumerRecord
    decoded: Future  # -> Decoded, or raises FrameRejectedError

    @property
    def partition(self) -> TopicPartition:
        return TopicPartition(self.record.topic, self.record.partition)


class ModelRouter:
    """Which loaded model inspects which line: per-line models, else the default one."""

    def __init__(self, default: Path, per_line: dict[str, Path], device: str, precision: str) -> None:
        loaded: dict[Path, Inspector] = {}

        def load(path: Path) -> Inspector:
            key = Path(path).resolve()
            if key not in loaded:
                loaded[key] = Inspector.from_directory(Path(path), device=device, precision=precision)
                manifest = loaded[key].manifest
                log.info("model loaded", path=str(path), model_id=manifest.model_id,
                         image_size=loaded[key].image_size)
            return loaded[key]

        self.default = load(default)
        self.per_line = {line: load(path) for line, path in per_line.items()}

    def for_line(self, line_id: str) -> Inspector:
        return self.per_line.get(line_id, self.default)


class DetectorWorker:
    def __init__(self, settings: DetectorSettings, router: ModelRouter | None = None) -> None:
        self.settings = settings
        self.router = router or ModelRouter(settings.model, settings.line_models, settings.device,
                                            settings.precision)
        self.metrics = DetectorMetrics()
        self.health = Health(settings.http.liveness_timeout_s)
        self.health.set_ready("starting", True)
        self.health.set_ready("broker", False, "Kafka not checked yet")
        self.batcher: MicroBatcher[Pending] = MicroBatcher(settings.max_batch,
                                                           settings.max_wait_ms / 1000)
        self.limits = settings.frame_limits()
        self.thresholds = ThresholdCache(settings.redis, settings.threshold_refresh_s)
        self._threshold_sources: dict[str, str] = {}
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self.http: HealthServer | None = None
        self.processed = 0
        self._observed = 0.0
        # Frames polled from a partition that a rebalance takes away are dropped uncommitted:
        # the partition's new owner inspects them
        self.partitions = AssignmentTracker("detector", on_revoked=lambda revoked: self.batcher.drop(
            lambda pending: pending.partition in revoked))

    def stop(self) -> None:
        """Ask the loop to finish: the frames already polled are inspected and committed."""
        self._stop.set()

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> None:
        self._start()
        try:
            while not self._stop.is_set():
                self.health.beat()
                self._poll()
                if self.batcher.ready(time.monotonic()):
                    self._process(self.batcher.take())
                self._observe()
            while len(self.batcher):  # drain what was polled before the stop
                self._process(self.batcher.take())
        finally:
            self._close()

    def _poll(self) -> None:
        room = 2 * self.settings.max_batch - len(self.batcher)
        if room <= 0:
            return
        wait = self.batcher.wait_s(time.monotonic())
        timeout_ms = 200 if wait is None else int(wait * 1000)
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=room)
        now = time.monotonic()
        for records in polled.values():
            for record in records:
                self.batcher.add(Pending(record, self._pool.submit(self._decode, record)), now)

    def _process(self, batch: list[Pending]) -> None:
        sends = []
        ready: list[tuple[Pending, Decoded]] = []
        for pending in batch:
            try:
                ready.append((pending, pending.decoded.result()))
            except FrameRejectedError as rejected:
                sends.append(self._dead_letter(pending.record, rejected))
        for inspector, items in self._by_model(ready).items():
            sends.extend(self._inspect(inspector, items))
        wait_for_acks(self.producer, sends, self.settings.send_timeout_s)
        committed = commit_processed(self.consumer, [p.record for p in batch])
        self.metrics.commits.labels("ok" if committed else "failed").inc()
        self.processed += len(batch)

    # -- helpers -----------------------------------------------------------------------------
    def _decode(self, record: ConsumerRecord) -> Decoded:
        started = time.time()
        try:
            meta, rgb = decode_frame(record.value, record.headers, self.limits)
            inspector = self.router.for_line(meta.line_id)
            prepared = fit_to_square(rgb, inspector.image_size, inspector.resize)
        except FrameRejectedError:
            raise
        except Exception as error:
            raise FrameRejectedError("undecodable", f"{type(error).__name__}: {error}") from None
        decode_s = time.time() - started
        self.metrics.decode_seconds.observe(decode_s)
        return Decoded(meta, prepared, rgb.shape[:2], decode_s,
                       max(0.0, started - record.timestamp / 1000))

    def _by_model(self, ready: list[tuple[Pending, Decoded]]) -> dict[Inspector, list]:
        groups: dict[Inspector, list] = defaultdict(list)
        for pending, decoded in ready:
            groups[self.router.for_line(decoded.meta.line_id)].append((pending, decoded))
        return groups

    def _inspect(self, inspector: Inspector, items: list[tuple[Pending, Decoded]]) -> list:
        started = time.perf_counter()
        result = inspector.inspect_prepared(np.stack([d.prepared for _, d in items]))
        inference_s = time.perf_counter() - started
        self.metrics.inference_seconds.observe(inference_s)
        self.metrics.batch_size.observe(len(items))
        manifest = inspector.manifest
        sends = []
        for index, (pending, decoded) in enumerate(items):
            meta = decoded.meta
            threshold = self.thresholds.resolve(meta.line_id,
                                                inspector.calibration.default_threshold)
            self._note_threshold(meta.line_id, threshold.value, threshold.source)
            score = float(result.normalised[index])
            verdict = "defective" if score >= threshold.value else "good"
            record = InspectionRecord(
                frame_id=meta.frame_id, line_id=meta.line_id, camera_id=meta.camera_id,
                sequence=meta.sequence, part_id=meta.part_id, label=meta.label,
                capture_time=meta.capture_time, inspected_time=utc_now(), score=score,
                score_raw=float(result.scores[index]), threshold=threshold.value,
                threshold_source=threshold.source, verdict=verdict, model_id=manifest.model_id,
                model_version=manifest.lineguard_version, frame_height=decoded.frame_shape[0],
                frame_width=decoded.frame_shape[1],
                timings=Timings(queue_wait_ms=decoded.queue_wait_s * 1000,
                                decode_ms=decoded.decode_s * 1000,
                                inference_ms=inference_s * 1000, batch_size=len(items)),
                worker_id=self.settings.worker_id, source_partition=pending.record.partition,
                source_offset=pending.record.offset)
            key = meta.camera_id.encode()
            sends.append(self.producer.send(self.settings.topics.inspections.name, key=key,
                                             value=record.to_bytes()))
            if verdict == "defective":
                request = AlertRequest(inspection=record, content_type=meta.content_type,
                                       map_resize=inspector.resize)
                map_png = encode_normalised_map(inspector.calibration.normalise(result.maps[index]))
                sends.append(self.producer.send(
                    self.settings.topics.alerts.name, key=key, headers=pending.record.headers,
                    value=pack_alert(request, map_png, pending.record.value)))
            log.debug("inspected", frame_id=meta.frame_id, line_id=meta.line_id,
                      camera_id=meta.camera_id, score=round(score, 4), verdict=verdict)
            self.metrics.consumed.labels(meta.line_id).inc()
            self.metrics.inspected.labels(meta.line_id, verdict).inc()
            self.metrics.capture_to_inspection.labels(meta.line_id).observe(
                (record.inspected_time - meta.capture_time).total_seconds())
        return sends

    def _dead_letter(self, record: ConsumerRecord, rejected: FrameRejectedError):
        ids = _ids(record.headers)
        log.warning("frame dead-lettered", reason=rejected.reason, detail=rejected.detail,
                    partition=record.partition, offset=record.offset, **ids)
        self.metrics.consumed.labels(ids.get("line_id", "unknown")).inc()
        self.metrics.dead_lettered.labels(rejected.reason).inc()
        return send_dead_letter(self.producer, self.settings.topics.dead_letter.name, record,
                                rejected.reason, rejected.detail, self.settings.worker_id)

    def _note_threshold(self, line_id: str, value: float, source: str) -> None:
        previous = self._threshold_sources.get(line_id)
        if previous is not None and previous != source:
            self.metrics.threshold.remove(line_id, previous)
        self._threshold_sources[line_id] = source
        self.metrics.threshold.labels(line_id, source).set(value)

    def _observe(self) -> None:
        """Gauges that are read, not counted: at most once a second."""
        now = time.monotonic()
        if now - self._observed < 1.0:
            return
        self._observed = now
        age = self.thresholds.age_s()
        if age is not None:
            self.metrics.threshold_cache_age.set(age)
        for partition, lag in consumer_lag(self.consumer).items():
            self.metrics.consumer_lag.labels(partition.topic, str(partition.partition)).set(lag)

    def _start(self) -> None:
        settings = self.settings
        self.producer = make_producer(settings.kafka)
        self.consumer = make_consumer(settings.kafka, settings.group_id)
        self.consumer.subscribe([settings.topics.frames.name], listener=self.partitions)
        self.thresholds.start()
        self.probe = BrokerProbe(settings.kafka,
                                 lambda ok, why: self.health.set_ready("broker", ok, why)).start()
        if settings.http.enabled:
            self.http = HealthServer(settings.http, self.health, self.metrics.registry).start()
        log.info("detector worker started", worker_id=settings.worker_id, group=settings.group_id,
                 topic=settings.topics.frames.name, max_batch=settings.max_batch,
                 max_wait_ms=settings.max_wait_ms, http_port=self.http.port if self.http else None,
                 version=__version__)

    def _close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for closer in (lambda: self.consumer.close(), lambda: self.producer.close(timeout=10),
                       self.thresholds.stop, lambda: self.probe.stop(),
                       lambda: self.http and self.http.stop()):
            try:
                closer()
            except Exception as error:
                log.warning("error while closing", error=str(error))
        log.info("detector worker stopped", processed=self.processed)


def _ids(headers) -> dict[str, str]:
    """Frame, line and camera ids from raw headers, for logs only (never trusted)."""
    wanted = {"frame_id", "line_id", "camera_id"}
    return {k: v[:128].decode(errors="replace") for k, v in (headers or [])
            if k in wanted and v is not None}
