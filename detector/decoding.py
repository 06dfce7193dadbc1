"""Frames read from Kafka: validated headers and bounded sizes before any pixel is decoded."""

import struct
from dataclasses import dataclass

import cv2
import numpy as np

from detector.frames import FrameError, to_rgb8
from shared.schemas import FrameHeaders, KafkaHeaders, SchemaError

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class FrameRejectedError(Exception):
    """A frame that goes to the dead-letter topic; `reason` is a short stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class FrameLimits:
    max_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 16_384


def sniff_image(data: bytes) -> tuple[str, int, int]:
    """(content type, width, height) read from a JPEG's SOF or a PNG's IHDR, without decoding."""
    if data.startswith(_PNG_SIGNATURE):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise FrameRejectedError("undecodable", "PNG without an IHDR chunk")
        width, height = struct.unpack(">II", data[16:24])
        return "image/png", width, height
    if data.startswith(b"\xff\xd8"):
        position = 2
        while position + 4 <= len(data):
            if data[position] != 0xFF:
                raise FrameRejectedError("undecodable", "JPEG marker expected")
            marker = data[position + 1]
            if marker == 0xFF:  # fill byte
                position += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                position += 2
                continue
            length = struct.unpack(">H", data[position + 2:position + 4])[0]
            if marker in _JPEG_SOF:
                if position + 9 > len(data):
                    break
                height, width = struct.unpack(">HH", data[position + 5:position + 9])
                return "image/jpeg", width, height
            if marker == 0xDA or length < 2:
                break
            position += 2 + length
        raise FrameRejectedError("undecodable", "JPEG without a frame header (SOF)")
    raise FrameRejectedError("unsupported-content", "not a JPEG or PNG image")


def decode_frame(value: bytes | None, headers: KafkaHeaders | None,
                 limits: FrameLimits) -> tuple[FrameHeaders, np.ndarray]:
    """Validate a `frames` record and decode it to (H, W, 3) uint8 RGB, or raise FrameRejectedError."""
    try:
        meta = FrameHeaders.from_kafka(headers)
    except SchemaError as error:
        raise FrameRejectedError("bad-headers", str(error)) from None
    if not value:
        raise FrameRejectedError("undecodable", "empty record value")
    if len(value) > limits.max_bytes:
        raise FrameRejectedError("oversized", f"{len(value)} bytes > limit {limits.max_bytes}")
    content_type, width, height = sniff_image(value)
    if content_type != meta.content_type:
        raise FrameRejectedError("bad-headers",
                            f"content_type header says {meta.content_type}, bytes are {content_type}")
    if content_type == "image/jpeg" and not value.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise FrameRejectedError("undecodable", "truncated JPEG (no end-of-image marker)")
    if width == 0 or height == 0:
        raise FrameRejectedError("undecodable", f"image is {width}x{height}")
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise FrameRejectedError("oversized", f"{width}x{height} pixels exceeds the limit "
                                         f"({limits.max_pixels} pixels, {limits.max_side} a side)")
    image = cv2.imdecode(np.frombuffer(value, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FrameRejectedError("undecodable", f"{content_type} data could not be decoded")
    if image.shape[:2] != (height, width):
        raise FrameRejectedError("undecodable", "decoded size differs from the image header")
    if image.ndim == 3 and image.shape[2] >= 3:
        image = cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2RGB)
    try:
        return meta, to_rgb8(image)
    except FrameError as error:
        raise FrameRejectedError("undecodable", str(error)) from None
