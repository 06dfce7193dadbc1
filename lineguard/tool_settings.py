"""Settings of the operator tools (threshold, record, replay, validate): the shared Kafka,
topics and Redis settings, plus the model an offline validation uses by default."""

from pathlib import Path

from shared.settings import RedisSettings, ServiceSettings


class ToolSettings(ServiceSettings):
    redis: RedisSettings = RedisSettings()
    model: Path = Path("models/default")
