"""Recordings: frames as image files plus a JSON-lines manifest of their headers, timing and
labels. Written one frame at a time, so a recording cut short stays usable up to its last
complete line.

RECORDING/
  recording.json    {"format": "lineguard-recording", "format_version": 1, "source": ..., "created": ...}
  manifest.jsonl    one RecordedFrame per line, in recording order
  frames/NNNNNN.jpg the frame's bytes exactly as recorded (.jpg or .png)
  masks/NNNNNN.png  ground-truth defect mask, when the source has one (MVTec AD layout)
"""

import json
import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from detector.frames import IMAGE_SUFFIXES
from producer.sources import SourceFrame, encode_image
from shared.logging import get_logger
from shared.schemas import FrameHeaders, headers_dict

FORMAT = "lineguard-recording"
FORMAT_VERSION = 1
MANIFEST = "manifest.jsonl"
log = get_logger("lineguard.recording")


class RecordingError(ValueError):
    """A folder that is not a recording, or one without a usable frame."""


class RecordedFrame(BaseModel):
    """One manifest line."""

    model_config = ConfigDict(extra="forbid")

    index: int
    file: str  # relative to the recording
    mask: str | None = None
    offset_s: float  # capture time relative to the recording's first frame
    headers: FrameHeaders
    extra_headers: list[tuple[str, str]] = []  # other headers the record carried, in order
    defect_type: str | None = None  # MVTec AD folder name, when known

    @property
    def label(self) -> Literal["good", "defective"] | None:
        return self.headers.label


class RecordingWriter:
    def __init__(self, folder: Path, source: str) -> None:
        self.folder = Path(folder)
        (self.folder / "frames").mkdir(parents=True, exist_ok=True)
        if (self.folder / MANIFEST).exists():
            raise RecordingError(f"{self.folder} already holds a recording")
        (self.folder / "recording.json").write_text(json.dumps(
            {"format": FORMAT, "format_version": FORMAT_VERSION, "source": source,
             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2) + "\n")
        self._manifest = open(self.folder / MANIFEST, "a", encoding="utf-8")  # noqa: SIM115
        self._first: datetime | None = None
        self.count = 0

    def add(self, data: bytes, headers: FrameHeaders, extra_headers=(), mask: bytes | None = None,
            defect_type: str | None = None) -> RecordedFrame:
        suffix = ".jpg" if headers.content_type == "image/jpeg" else ".png"
        name = f"frames/{self.count:06d}{suffix}"
        _write_atomic(self.folder / name, data)
        mask_name = None
        if mask is not None:
            (self.folder / "masks").mkdir(exist_ok=True)
            mask_name = f"masks/{self.count:06d}.png"
            _write_atomic(self.folder / mask_name, mask)
        self._first = self._first or headers.capture_time
        entry = RecordedFrame(index=self.count, file=name, mask=mask_name,
                              offset_s=(headers.capture_time - self._first).total_seconds(),
                              headers=headers, extra_headers=list(extra_headers),
                              defect_type=defect_type)
        self._manifest.write(entry.model_dump_json() + "\n")
        self._manifest.flush()  # a line per frame: a cut-short recording keeps what it has
        self.count += 1
        return entry

    def close(self) -> None:
        self._manifest.flush()
        os.fsync(self._manifest.fileno())
        self._manifest.close()

    def __enter__(self) -> "RecordingWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def read_recording(folder: Path) -> list[RecordedFrame]:
    """The manifest's complete entries whose frame file exists (a torn last line is skipped)."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise RecordingError(f"{folder} is not a recording: {manifest} not found")
    entries = []
    lines = manifest.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = RecordedFrame.model_validate_json(line)
        except ValidationError as error:
            if number == len(lines):
                log.warning("last manifest line is incomplete; skipped", line=number)
                continue
            raise RecordingError(f"{manifest}:{number} is not a valid entry: {error}") from None
        if not (folder / entry.file).is_file():
            log.warning("frame file missing; entry skipped", file=entry.file)
            continue
        entries.append(entry)
    if not entries:
        raise RecordingError(f"{folder} holds no frames")
    return entries


def replay_frames(folder: Path, entries: list[RecordedFrame], speed: float | None,
                  line_id: str | None = None, fresh_ids: str | None = None,
                  restamp: bool = False) -> Iterator[SourceFrame]:
    """Frames of a recording for the publisher: at the original pace divided by `speed` (None:
    as fast as possible), optionally onto another line, with ids prefixed by `fresh_ids`, and
    with capture times set to the moment of sending (`restamp`)."""
    for entry in entries:
        headers = entry.headers
        changes = {}
        if line_id:
            changes["line_id"] = line_id
        if fresh_ids:
            changes["frame_id"] = f"{fresh_ids}-{headers.frame_id}"[:128]
        if changes:
            headers = headers.model_copy(update=changes)
        yield SourceFrame((Path(folder) / entry.file).read_bytes(), headers.content_type,
                          capture_time=headers.capture_time, headers=headers,
                          restamp=restamp, extra_headers=entry.extra_headers,
                          due_s=None if speed is None else entry.offset_s / speed,
                          origin=entry.file)


def record_source(frames: Iterator[SourceFrame], folder: Path, source: str, line_id: str,
                  camera_id: str, limit: int | None = None) -> int:
    """Record frames from any producer source, with the headers the producer would send."""
    from producer.publisher import headers_for

    with RecordingWriter(folder, source) as writer:
        for sequence, frame in enumerate(frames):
            if limit is not None and sequence >= limit:
                break
            writer.add(frame.data, headers_for(frame, line_id, camera_id, sequence))
        return writer.count


def record_mvtec(root: Path, folder: Path, line_id: str, camera_id: str,
                 limit: int | None = None) -> int:
    """Record an MVTec AD layout's test/ images: labels from the folder names, masks from
    ground_truth/ where they exist. Capture times are spaced 0.1 s apart."""
    from datetime import UTC, timedelta

    root = Path(root)
    test = root / "test"
    if not test.is_dir():
        raise RecordingError(f"{root} has no test/ folder (MVTec AD layout)")
    items = []
    for kind in sorted(p for p in test.iterdir() if p.is_dir()):
        files = sorted(p for p in kind.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        items.extend((kind.name, path) for path in (files[:limit] if limit else files))
    start = datetime.now(UTC)
    with RecordingWriter(folder, f"mvtec:{root}") as writer:
        for sequence, (kind, path) in enumerate(items):
            data, content_type = encode_image(path.read_bytes(), 95)
            label = "good" if kind == "good" else "defective"
            mask_path = root / "ground_truth" / kind / f"{path.stem}_mask.png"
            headers = FrameHeaders(
                frame_id=f"{kind}-{path.stem}"[:128], line_id=line_id, camera_id=camera_id,
                capture_time=start + timedelta(seconds=0.1 * sequence), sequence=sequence,
                content_type=content_type, label=label)
            writer.add(data, headers, mask=mask_path.read_bytes() if mask_path.is_file() else None,
                       defect_type=None if kind == "good" else kind)
        return writer.count


def record_topic(consumer, folder: Path, source: str, line_id: str | None = None,
                 since: datetime | None = None, until: datetime | None = None,
                 count: int | None = None, idle_timeout_s: float = 5.0) -> tuple[int, int]:
    """Record valid frames from an assigned consumer (positioned by the caller) until `count`
    frames, a capture time past `until`, or `idle_timeout_s` without records. Returns
    (recorded, skipped as invalid)."""
    skipped = 0
    with RecordingWriter(folder, source) as writer:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < idle_timeout_s:
            polled = consumer.poll(timeout_ms=200)
            records = [r for batch in polled.values() for r in batch]  # per partition, in order
            if records:
                idle_since = time.monotonic()
            for record in records:
                try:
                    headers = FrameHeaders.from_kafka(record.headers)
                    extra = [(k, v) for k, v in headers_dict(record.headers).items()
                             if k not in FrameHeaders.model_fields]
                except ValueError:
                    skipped += 1
                    continue
                if line_id and headers.line_id != line_id:
                    continue
                if since and headers.capture_time < since:
                    continue
                if until and headers.capture_time > until:
                    continue
                writer.add(record.value, headers, extra)
                if count is not None and writer.count >= count:
                    return writer.count, skipped
        return writer.count, skipped
