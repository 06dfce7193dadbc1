"""Message contracts of every topic, defined once: frame headers, inspections, alerts, defects,
dead letters. Every service encodes and decodes through these models."""

import base64
import struct
import uuid
from datetime import UTC, datetime
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SCHEMA_VERSION = 1
CONTENT_TYPES = ("image/jpeg", "image/png")
ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
MAX_HEADERS = 32
MAX_HEADER_KEY_BYTES = 64
MAX_HEADER_VALUE_BYTES = 256
# Stable namespace for defect event ids: the same frame always gives the same event id
EVENT_NAMESPACE = uuid.UUID("5b0c7f64-8a4e-4d2e-9a51-6f1c3e0b7d21")

KafkaHeaders = list[tuple[str, bytes]]


class SchemaError(ValueError):
    """A message that does not follow its contract; the text says what is wrong."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class FrameHeaders(BaseModel):
    """Kafka headers of a `frames` record; the record's value is the encoded image, its key the
    camera id (one camera's frames stay in order on one partition)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frame_id: str = Field(pattern=ID_PATTERN)
    line_id: str = Field(pattern=ID_PATTERN)
    camera_id: str = Field(pattern=ID_PATTERN)
    capture_time: datetime
    sequence: int = Field(ge=0)
    content_type: Literal["image/jpeg", "image/png"]
    schema_version: int = SCHEMA_VERSION
    part_id: str | None = Field(None, pattern=ID_PATTERN)
    label: Literal["good", "defective"] | None = None

    _validate_time = field_validator("capture_time")(lambda cls, v: _aware(v))

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(f"schema_version {value} is not supported (this is {SCHEMA_VERSION})")
        return value

    def to_kafka(self) -> KafkaHeaders:
        values = self.model_dump(mode="json", exclude_none=True)
        return [(key, str(value).encode()) for key, value in values.items()]

    @classmethod
    def from_kafka(cls, headers: KafkaHeaders | None) -> "FrameHeaders":
        """Validate headers read from the network: bounded in count and size, all required."""
        fields = headers_dict(headers)
        try:
            return cls.model_validate({k: v for k, v in fields.items() if k in cls.model_fields})
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'headers'}: {e['msg']}"
                                 for e in error.errors())
            raise SchemaError(f"invalid frame headers: {problems}") from None


def headers_dict(headers: KafkaHeaders | None) -> dict[str, str]:
    """Kafka headers as text, refusing too many, too long or non-UTF-8 ones."""
    headers = headers or []
    if len(headers) > MAX_HEADERS:
        raise SchemaError(f"too many headers: {len(headers)} > {MAX_HEADERS}")
    fields: dict[str, str] = {}
    for key, value in headers:
        if len(key.encode()) > MAX_HEADER_KEY_BYTES:
            raise SchemaError(f"header name longer than {MAX_HEADER_KEY_BYTES} bytes")
        if value is not None and len(value) > MAX_HEADER_VALUE_BYTES:
            raise SchemaError(f"header {key!r} longer than {MAX_HEADER_VALUE_BYTES} bytes")
        try:
            fields[key] = value.decode() if value is not None else ""
        except UnicodeDecodeError:
            raise SchemaError(f"header {key!r} is not UTF-8") from None
    return fields


class Timings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue_wait_ms: float  # from the record's broker timestamp to the start of decoding
    decode_ms: float
    inference_ms: float  # the whole batch's model time
    batch_size: int


class InspectionRecord(BaseModel):
    """One `inspections` record per inspected frame (JSON, keyed by camera id)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    frame_id: str
    line_id: str
    camera_id: str
    sequence: int
    part_id: str | None = None
    label: Literal["good", "defective"] | None = None
    capture_time: datetime
    inspected_time: datetime
    score: float = Field(ge=0, le=1)  # normalised: the model's calibration, 0.5 = its default
    score_raw: float
    threshold: float
    threshold_source: Literal["redis-line", "redis-default", "model"]
    verdict: Literal["good", "defective"]
    model_id: str
    model_version: str
    frame_width: int
    frame_height: int
    timings: Timings
    worker_id: str
    source_partition: int
    source_offset: int

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "InspectionRecord":
        return cls.model_validate_json(data)

    def event_id(self) -> str:
        """The id of this frame's defect event: the same every time the frame is processed."""
        return str(uuid.uuid5(EVENT_NAMESPACE, f"{self.line_id}/{self.camera_id}/{self.frame_id}"))


class AlertRequest(BaseModel):
    """What the detector hands the alerting service for a defective frame (internal topic)."""

    model_config = ConfigDict(extra="forbid")

    inspection: InspectionRecord
    content_type: Literal["image/jpeg", "image/png"]
    map_resize: Literal["stretch", "pad"]  # how the frame was fitted into the model's square
    map_encoding: Literal["png16-normalised"] = "png16-normalised"


ALERT_MAGIC = b"LGA1"
_LENGTH = struct.Struct(">I")


def encode_normalised_map(normalised: np.ndarray) -> bytes:
    """A normalised anomaly map (values in [0, 1]) as a 16-bit grayscale PNG."""
    levels = np.clip(np.rint(normalised * 65535.0), 0, 65535).astype(np.uint16)
    ok, png = cv2.imencode(".png", levels)
    if not ok:
        raise RuntimeError("could not encode the anomaly map")
    return png.tobytes()


def decode_normalised_map(png: bytes, max_side: int = 4096) -> np.ndarray:
    levels = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    if levels is None or levels.dtype != np.uint16 or levels.ndim != 2 or max(levels.shape) > max_side:
        raise ValueError("anomaly map is not a 16-bit single-channel PNG of a sensible size")
    return levels.astype(np.float32) / 65535.0


def pack_alert(request: AlertRequest, map_png: bytes, frame: bytes) -> bytes:
    """Internal alert value: magic, JSON request, the normalised anomaly map as a 16-bit PNG,
    then the frame's original bytes (binary, so a frame is not inflated by base64)."""
    meta = request.model_dump_json().encode()
    return b"".join([ALERT_MAGIC, _LENGTH.pack(len(meta)), meta, _LENGTH.pack(len(map_png)),
                     map_png, frame])


def unpack_alert(value: bytes, max_meta_bytes: int = 64 * 1024) -> tuple[AlertRequest, bytes, bytes]:
    if len(value) < 12 or value[:4] != ALERT_MAGIC:
        raise SchemaError("not a lineguard alert record (bad magic)")
    meta_len = _LENGTH.unpack_from(value, 4)[0]
    if meta_len > max_meta_bytes or 8 + meta_len + 4 > len(value):
        raise SchemaError("alert record metadata length out of bounds")
    meta = value[8:8 + meta_len]
    map_len = _LENGTH.unpack_from(value, 8 + meta_len)[0]
    map_start = 12 + meta_len
    if map_start + map_len > len(value):
        raise SchemaError("alert record map length out of bounds")
    try:
        request = AlertRequest.model_validate_json(meta)
    except ValidationError as error:
        raise SchemaError(f"invalid alert metadata: {error.errors()[0]['msg']}") from None
    return request, value[map_start:map_start + map_len], value[map_start + map_len:]


class DefectRegion(BaseModel):
    """A connected region of the normalised anomaly map above the threshold, in frame pixels."""

    model_config = ConfigDict(extra="forbid")

    x: int
    y: int
    width: int
    height: int
    area: int  # pixels above the threshold
    peak_score: float  # highest normalised score inside the region
    crop_jpeg: str | None = None  # base64 JPEG: the region (with margin) and the map overlaid
    crop_box: tuple[int, int, int, int] | None = None  # x, y, width, height of the crop


class DefectEvent(BaseModel):
    """One `defects` record per defective frame (JSON, keyed by line id)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    event_id: str
    frame_id: str
    line_id: str
    camera_id: str
    sequence: int
    part_id: str | None = None
    capture_time: datetime
    inspected_time: datetime
    published_time: datetime
    score: float
    score_raw: float
    threshold: float
    threshold_source: str
    model_id: str
    model_version: str
    frame_width: int
    frame_height: int
    regions: list[DefectRegion]
    overlay_jpeg: str | None = None  # base64 JPEG thumbnail of the whole frame with the map
    truncated: bool = False  # some crops were dropped to keep the event under its size limit

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "DefectEvent":
        return cls.model_validate_json(data)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


class DeadLetter(BaseModel):
    """Why a record was dead-lettered and where it came from. The dead-letter record keeps the
    original value and headers; these fields are added as `dlq.*` headers."""

    model_config = ConfigDict(extra="forbid")

    reason: str  # a short code: undecodable, oversized, bad-headers, unsupported-content, ...
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    worker_id: str
    time: datetime

    def to_kafka(self) -> KafkaHeaders:
        values = self.model_dump(mode="json")
        return [(f"dlq.{key}", str(value)[:MAX_HEADER_VALUE_BYTES * 4].encode())
                for key, value in values.items()]

    @classmethod
    def from_kafka(cls, headers: KafkaHeaders) -> "DeadLetter":
        fields = {k[4:]: v.decode() for k, v in headers if k.startswith("dlq.")}
        return cls.model_validate(fields)


def dead_letter_headers(original: KafkaHeaders | None, letter: DeadLetter) -> KafkaHeaders:
    """The original headers (as many as fit the limits) followed by the dlq.* ones."""
    kept = [(k, v if v is not None else b"") for k, v in (original or [])
            if not k.startswith("dlq.")][:MAX_HEADERS]
    kept = [(k[:MAX_HEADER_KEY_BYTES * 4], v[:4096]) for k, v in kept]
    return kept + letter.to_kafka()
