"""Settings of the camera producer (environment variables LINEGUARD_*, optional YAML file)."""

from pydantic import Field

from shared.schemas import ID_PATTERN
from shared.settings import ServiceSettings


class ProducerSettings(ServiceSettings):
    """One producer process publishing one source's frames for one line and camera."""

    line_id: str = Field("line-1", pattern=ID_PATTERN)
    camera_id: str = Field("camera-1", pattern=ID_PATTERN)
    fps: float = Field(0.0, ge=0)  # 0: as fast as the broker takes them
    max_in_flight: int = Field(32, ge=1, le=10_000)
    send_retries: int = Field(3, ge=0, le=100)
    # Give up (non-zero exit) after this many frames in a row could not be delivered
    max_consecutive_failures: int = Field(10, ge=1)
    jpeg_quality: int = Field(90, ge=30, le=100)  # for sources that give raw pixels (video)
    max_frame_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    send_timeout_s: float = Field(60.0, gt=0)
