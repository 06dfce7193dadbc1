"""Settings of the detector worker (environment variables LINEGUARD_*, optional YAML file)."""

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field

from detector.decoding import FrameLimits
from shared.settings import RedisSettings, ServiceSettings


class DetectorSettings(ServiceSettings):
    """One detector worker: a member of `group_id` consuming `topics.frames`."""

    group_id: str = "lineguard-detector"
    worker_id: str = Field(default_factory=socket.gethostname)
    # The model for lines without their own; line_models maps line id -> model directory
    model: Path = Path("models/default")
    line_models: dict[str, Path] = Field(default_factory=dict)
    device: str = "cpu"
    precision: Literal["float32", "bfloat16", "float16"] = "float32"
    # Micro-batching: a batch closes when it has max_batch frames or its oldest frame has
    # waited max_wait_ms since it was polled
    max_batch: int = Field(16, ge=1, le=1024)
    max_wait_ms: float = Field(50.0, ge=0)
    decode_threads: int = Field(2, ge=1, le=64)
    # Bounds on what is read from the network
    max_frame_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_frame_pixels: int = Field(40_000_000, ge=1)
    max_frame_side: int = Field(16_384, ge=16)
    redis: RedisSettings = RedisSettings()
    threshold_refresh_s: float = Field(1.0, gt=0)
    # How long to wait for the broker to acknowledge a batch's outputs before giving up
    send_timeout_s: float = Field(30.0, gt=0)

    def frame_limits(self) -> FrameLimits:
        return FrameLimits(self.max_frame_bytes, self.max_frame_pixels, self.max_frame_side)
