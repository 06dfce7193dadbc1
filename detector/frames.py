"""Frame decoding and resizing to a model's input: uint8 arrays in, uint8 RGB squares out."""

from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class FrameError(ValueError):
    """A frame that cannot be inspected (undecodable, empty, wrong shape or type)."""


def to_rgb8(frame: np.ndarray) -> np.ndarray:
    """Any decoded frame (gray, gray+alpha, BGR-free RGB, RGBA, 8 or 16 bit) -> (H, W, 3) uint8."""
    if not isinstance(frame, np.ndarray) or frame.size == 0:
        raise FrameError("frame is empty or not an array")
    if frame.dtype == np.uint16:
        frame = (frame / 257.0).round().astype(np.uint8)
    elif frame.dtype != np.uint8:
        raise FrameError(f"frame dtype must be uint8 or uint16, got {frame.dtype}")
    if frame.ndim == 2:
        return np.repeat(frame[:, :, None], 3, axis=2)
    if frame.ndim == 3 and frame.shape[2] == 1:
        return np.repeat(frame, 3, axis=2)
    if frame.ndim == 3 and frame.shape[2] == 2:
        return np.repeat(frame[:, :, :1], 3, axis=2)
    if frame.ndim == 3 and frame.shape[2] in (3, 4):
        return np.ascontiguousarray(frame[:, :, :3])
    raise FrameError(f"frame shape {frame.shape} is not gray or colour")


def fit_to_square(frame: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Resize an (H, W, 3) uint8 frame to (size, size, 3): stretch, or keep aspect and reflect-pad."""
    height, width = frame.shape[:2]
    if mode == "stretch" or height == width:
        return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA
                          if min(height, width) > size else cv2.INTER_LINEAR)
    if mode != "pad":
        raise ValueError(f"unknown resize mode {mode!r}")
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    resized = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_AREA
                         if scale < 1 else cv2.INTER_LINEAR)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    return cv2.copyMakeBorder(resized, top, size - new_h - top, left, size - new_w - left,
                              cv2.BORDER_REFLECT_101)


def valid_region(shape: tuple[int, int], size: int, mode: str) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the frame's content inside the model-sized square."""
    height, width = shape
    if mode == "stretch" or height == width:
        return 0, 0, size, size
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    return (size - new_h) // 2, (size - new_w) // 2, new_h, new_w


def map_to_frame(anomaly_map: np.ndarray, frame_shape: tuple[int, int], mode: str) -> np.ndarray:
    """Bring a model-sized anomaly map back onto the original frame's pixel grid."""
    top, left, height, width = valid_region(frame_shape, anomaly_map.shape[0], mode)
    crop = anomaly_map[top:top + height, left:left + width]
    return cv2.resize(crop, (frame_shape[1], frame_shape[0]), interpolation=cv2.INTER_LINEAR)


def read_image(path: Path) -> np.ndarray:
    """Read an image file as (H, W, 3) RGB uint8; a clear error names the path when it fails."""
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise FrameError(f"cannot decode image {path}")
    if image.ndim == 3 and image.shape[2] >= 3:
        image = cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2RGB)
    return to_rgb8(image)


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
