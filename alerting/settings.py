"""Settings of the alerting service (environment variables LINEGUARD_*, optional YAML file)."""

from pydantic import Field, SecretStr

from shared.settings import RedisSettings, ServiceSettings


class AlertingSettings(ServiceSettings):
    """One alerting service: a member of `group_id` consuming `topics.alerts`."""

    group_id: str = "lineguard-alerting"
    worker_id: str = "alerting"
    redis: RedisSettings = RedisSettings()
    # Regions: pixels whose normalised score reaches the frame's threshold, 8-connected,
    # at least min_region_area frame pixels (the peak region is kept even when smaller)
    min_region_area: int = Field(16, ge=1)
    max_regions: int = Field(8, ge=1, le=64)
    crop_margin: float = Field(0.25, ge=0, le=2)  # of the region's size, on each side
    crop_size: int = Field(256, ge=32, le=2048)  # longest side of a crop
    overlay_size: int = Field(320, ge=32, le=2048)  # longest side of the whole-frame overlay
    jpeg_quality: int = Field(85, ge=30, le=100)
    max_event_bytes: int = Field(900_000, ge=10_000)
    # A redelivered frame gives the same event id; it is not published again within this window
    dedup_window_s: float = Field(600.0, ge=0)
    webhook_url: str | None = None
    webhook_token: SecretStr | None = None  # sent as "Authorization: Bearer <token>"
    webhook_timeout_s: float = Field(5.0, gt=0)
    webhook_retries: int = Field(3, ge=0, le=20)
    max_frame_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_frame_pixels: int = Field(40_000_000, ge=1)
    max_records: int = Field(16, ge=1, le=1000)
    send_timeout_s: float = Field(30.0, gt=0)
