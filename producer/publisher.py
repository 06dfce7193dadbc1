"""Publishing frames: paced to a frame rate, bounded in flight, retried on broker errors."""

import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from kafka import KafkaProducer

from producer.settings import ProducerSettings
from producer.sources import SourceFrame
from shared.logging import get_logger
from shared.schemas import FrameHeaders, utc_now

log = get_logger("lineguard.producer")


def headers_for(frame: SourceFrame, line_id: str, camera_id: str, sequence: int) -> FrameHeaders:
    """The headers a producer gives a frame from a source: ids from the source or settings."""
    return FrameHeaders(
        frame_id=frame.frame_id or uuid.uuid4().hex, line_id=line_id,
        camera_id=frame.camera_id or camera_id, capture_time=frame.capture_time,
        sequence=sequence, content_type=frame.content_type, part_id=frame.part_id,
        label=frame.label)


class BrokerGoneError(RuntimeError):
    """Too many frames in a row could not be delivered: the broker stays unreachable."""


@dataclass
class Summary:
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    retried: int = 0
    elapsed_s: float = 0.0
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        rate = self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return {"sent": self.sent, "failed": self.failed, "skipped": self.skipped,
                "retried": self.retried, "elapsed_s": round(self.elapsed_s, 3),
                "frames_per_s": round(rate, 2)}


@dataclass
class _InFlight:
    future: object
    value: bytes
    key: bytes
    headers: list
    frame_id: str
    attempts: int = 1


class FramePublisher:
    def __init__(self, settings: ProducerSettings, producer: KafkaProducer) -> None:
        self.settings = settings
        self.producer = producer
        self.sequence = 0
        self._consecutive_failures = 0
        self.sent_headers: list[FrameHeaders] = []  # what was handed to the broker, in order

    def headers_for(self, frame: SourceFrame) -> FrameHeaders:
        if frame.headers is not None:
            headers = frame.headers
            if frame.restamp:
                headers = headers.model_copy(update={"capture_time": utc_now()})
        else:
            headers = headers_for(frame, self.settings.line_id, self.settings.camera_id,
                                  self.sequence)
        self.sequence += 1
        return headers

    def publish(self, frames: Iterable[SourceFrame], limit: int | None = None,
                stop=lambda: False) -> Summary:
        """Send frames until the source ends, `limit` frames were taken, or stop() is true."""
        s = self.settings
        summary = Summary()
        in_flight: deque[_InFlight] = deque()
        started = time.monotonic()
        taken = 0
        frames = iter(frames)
        try:
            while not stop() and (limit is None or taken < limit):
                # Pace before taking the frame, so a frame's capture time is when it is sent
                if s.fps > 0:
                    time.sleep(max(0.0, started + taken / s.fps - time.monotonic()))
                frame = next(frames, None)
                if frame is None:
                    break
                taken += 1
                if frame.due_s is not None:
                    time.sleep(max(0.0, started + frame.due_s - time.monotonic()))
                if len(frame.data) > s.max_frame_bytes:
                    summary.skipped += 1
                    log.error("frame larger than max_frame_bytes skipped", origin=frame.origin,
                              size=len(frame.data))
                    continue
                headers = self.headers_for(frame)
                kafka_headers = headers.to_kafka() + [(k, v.encode()) for k, v in frame.extra_headers]
                item = _InFlight(None, frame.data, headers.camera_id.encode(), kafka_headers,
                                 headers.frame_id)
                self.sent_headers.append(headers)
                self._send(item)
                in_flight.append(item)
                while len(in_flight) >= s.max_in_flight:
                    self._settle(in_flight.popleft(), in_flight, summary)
            self.producer.flush(timeout=s.send_timeout_s)
            while in_flight:
                self._settle(in_flight.popleft(), in_flight, summary)
        finally:
            summary.elapsed_s = time.monotonic() - started
        return summary

    def _send(self, item: _InFlight) -> None:
        item.future = self.producer.send(self.settings.topics.frames.name, key=item.key,
                                         value=item.value, headers=item.headers)

    def _settle(self, item: _InFlight, in_flight: deque, summary: Summary) -> None:
        """Wait for the oldest send; resend it on failure up to send_retries times."""
        while True:
            try:
                item.future.get(timeout=self.settings.send_timeout_s)
                summary.sent += 1
                self._consecutive_failures = 0
                return
            except Exception as error:
                if item.attempts <= self.settings.send_retries:
                    item.attempts += 1
                    summary.retried += 1
                    log.warning("send failed; retrying", frame_id=item.frame_id,
                                attempt=item.attempts, error=str(error))
                    time.sleep(min(5.0, 0.2 * 2**item.attempts))
                    self._send(item)
                    continue
                summary.failed += 1
                summary.failures.append(f"{item.frame_id}: {error}")
                self._consecutive_failures += 1
                log.error("frame not delivered", frame_id=item.frame_id, error=str(error))
                if self._consecutive_failures >= self.settings.max_consecutive_failures:
                    raise BrokerGoneError(
                        f"{self._consecutive_failures} frames in a row were not delivered; last "
                        f"error: {error}") from error
                return
