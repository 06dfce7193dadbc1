"""Where frames come from: image folders and globs, video files, RTSP streams and camera
indices through OpenCV, and ZeroMQ endpoints fed by a camera acquisition process."""

import glob
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import zmq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from detector.decoding import FrameRejectedError, sniff_image
from detector.frames import IMAGE_SUFFIXES
from shared.logging import get_logger
from shared.schemas import ID_PATTERN, FrameHeaders, utc_now

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mjpeg")
log = get_logger("lineguard.producer")


class SourceError(ValueError):
    """A source that cannot be opened or read; the text names it."""


@dataclass
class SourceFrame:
    data: bytes
    content_type: str
    capture_time: datetime = field(default_factory=utc_now)
    frame_id: str | None = None
    camera_id: str | None = None
    part_id: str | None = None
    label: str | None = None
    origin: str = ""  # a file name or stream position, for logs
    # Replays: the recorded headers (sent as they are), extra headers, when to send the frame
    # relative to the start (None: at once or at the producer's fps), and whether to set the
    # capture time to the moment of sending
    headers: FrameHeaders | None = None
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    due_s: float | None = None
    restamp: bool = False


def encode_image(data: bytes, jpeg_quality: int) -> tuple[bytes, str]:
    """Keep JPEG and PNG bytes as they are; transcode anything else OpenCV reads to PNG."""
    try:
        content_type, _, _ = sniff_image(data)
        return data, content_type
    except FrameRejectedError:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise SourceError("not an image OpenCV can read") from None
        ok, png = cv2.imencode(".png", image)
        if not ok:
            raise SourceError("could not re-encode the image as PNG") from None
        return png.tobytes(), "image/png"


def image_files(spec: str) -> list[Path]:
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True)
                       if Path(p).suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SourceError(f"no images found in {spec}")
    return files


def folder_frames(spec: str, loop: bool = False, label: str | None = None,
                  jpeg_quality: int = 90) -> Iterator[SourceFrame]:
    """Every image of a folder (recursively) or glob, in name order; `loop` repeats them."""
    files = image_files(spec)
    while True:
        for path in files:
            try:
                data, content_type = encode_image(path.read_bytes(), jpeg_quality)
            except (OSError, SourceError) as error:
                log.error("image skipped", path=str(path), error=str(error))
                continue
            yield SourceFrame(data, content_type, label=label, origin=str(path))
        if not loop:
            return


def video_frames(uri: str, jpeg_quality: int = 90, limit: int | None = None) -> Iterator[SourceFrame]:
    """Frames of a video file, an RTSP/HTTP stream or a camera (`camera:N`), as JPEG."""
    target: str | int = int(uri.split(":", 1)[1]) if uri.startswith("camera:") else uri
    capture = cv2.VideoCapture(target)
    if not capture.isOpened():
        raise SourceError(f"cannot open video source {uri}")
    try:
        count = 0
        while limit is None or count < limit:
            ok, bgr = capture.read()
            if not ok:
                return
            captured = utc_now()
            ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            if ok:
                yield SourceFrame(jpeg.tobytes(), "image/jpeg", capture_time=captured,
                                  origin=f"{uri}#{count}")
            count += 1
    finally:
        capture.release()


class ZmqFrameMeta(BaseModel):
    """The JSON part of a ZeroMQ message [metadata, image bytes] from an acquisition process."""

    model_config = ConfigDict(extra="forbid")

    end: bool = False  # the acquisition process is done: the producer finishes
    frame_id: str | None = Field(None, pattern=ID_PATTERN)
    camera_id: str | None = Field(None, pattern=ID_PATTERN)
    capture_time: datetime | None = None
    content_type: Literal["image/jpeg", "image/png"] | None = None
    part_id: str | None = Field(None, pattern=ID_PATTERN)
    label: Literal["good", "defective"] | None = None


def zmq_frames(endpoint: str, bind: bool = True, max_bytes: int = 8 * 1024 * 1024,
               idle_timeout_s: float | None = None, jpeg_quality: int = 90) -> Iterator[SourceFrame]:
    """Frames pushed over ZeroMQ (PULL socket) as multipart [JSON metadata, image bytes]. Bad
    messages are logged and skipped; `{"end": true}` or idle_timeout_s without a message ends."""
    context = zmq.Context.instance()
    socket = context.socket(zmq.PULL)
    socket.setsockopt(zmq.MAXMSGSIZE, max_bytes + 64 * 1024)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        (socket.bind if bind else socket.connect)(endpoint)
    except zmq.ZMQError as error:
        socket.close()
        verb = "bind" if bind else "connect"
        raise SourceError(f"cannot {verb} ZeroMQ endpoint {endpoint}: {error}") from None
    poller = zmq.Poller()
    poller.register(socket, zmq.POLLIN)
    try:
        count = 0
        while True:
            if not poller.poll(None if idle_timeout_s is None else int(idle_timeout_s * 1000)):
                log.info("zeromq source idle; finishing", endpoint=endpoint)
                return
            parts = socket.recv_multipart(copy=True)
            count += 1
            try:
                frame = _zmq_frame(parts, max_bytes, jpeg_quality)
            except SourceError as error:
                log.error("zeromq message skipped", endpoint=endpoint, error=str(error))
                continue
            if frame is None:
                return
            frame.origin = f"{endpoint}#{count}"
            yield frame
    finally:
        socket.close()


def _zmq_frame(parts: list[bytes], max_bytes: int, jpeg_quality: int) -> SourceFrame | None:
    if len(parts) not in (1, 2) or len(parts[0]) > 16 * 1024:
        raise SourceError("expected [JSON metadata (<= 16 KiB), image bytes]")
    try:
        meta = ZmqFrameMeta.model_validate(json.loads(parts[0]))
    except (ValueError, ValidationError) as error:
        raise SourceError(f"invalid metadata: {error}") from None
    if meta.end:
        return None
    if len(parts) != 2 or not parts[1]:
        raise SourceError("message has no image part")
    if len(parts[1]) > max_bytes:
        raise SourceError(f"image of {len(parts[1])} bytes exceeds {max_bytes}")
    data, content_type = encode_image(parts[1], jpeg_quality)
    if meta.content_type and meta.content_type != content_type:
        raise SourceError(f"metadata says {meta.content_type}, the bytes are {content_type}")
    return SourceFrame(data, content_type, capture_time=meta.capture_time or utc_now(),
                       frame_id=meta.frame_id, camera_id=meta.camera_id, part_id=meta.part_id,
                       label=meta.label)


def recording_frames(folder: str, loop: bool = False) -> Iterator[SourceFrame]:
    """A recording's frames as a camera would send them now (labels kept, new ids and times);
    `lineguard replay` sends them with their recorded headers instead."""
    from producer.recording import read_recording

    entries = read_recording(Path(folder))
    while True:
        for entry in entries:
            yield SourceFrame((Path(folder) / entry.file).read_bytes(), entry.headers.content_type,
                              part_id=entry.headers.part_id, label=entry.headers.label,
                              origin=entry.file)
        if not loop:
            return


def open_source(spec: str, *, loop: bool = False, label: str | None = None, jpeg_quality: int = 90,
                max_bytes: int = 8 * 1024 * 1024, idle_timeout_s: float | None = None,
                limit: int | None = None) -> Iterator[SourceFrame]:
    """A source from its spec: `zmq:ENDPOINT` (bind) or `zmq+connect:ENDPOINT`, `camera:N`,
    `rtsp://...`/`http://...`, a video file, a recording, or an image folder or glob."""
    if spec.startswith(("zmq:", "zmq+connect:")):
        scheme, endpoint = spec.split(":", 1)
        return zmq_frames(endpoint, bind=scheme == "zmq", max_bytes=max_bytes,
                          idle_timeout_s=idle_timeout_s, jpeg_quality=jpeg_quality)
    if spec.startswith(("camera:", "rtsp://", "rtsps://", "http://", "https://")) or \
            Path(spec).suffix.lower() in VIDEO_SUFFIXES:
        return video_frames(spec, jpeg_quality, limit)
    if (Path(spec) / "manifest.jsonl").is_file():
        return recording_frames(spec, loop=loop)
    return folder_frames(spec, loop=loop, label=label, jpeg_quality=jpeg_quality)
