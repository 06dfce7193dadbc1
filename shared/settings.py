"""Settings the services share (Kafka, topics, Redis, HTTP) and how a service's settings load."""

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

ENV_PREFIX = "LINEGUARD_"
CONFIG_ENV = "LINEGUARD_CONFIG"
SECRETS_DIR_ENV = "LINEGUARD_SECRETS_DIR"
DEFAULT_SECRETS_DIR = "/run/secrets/lineguard"
MAX_SECRET_BYTES = 64 * 1024
_config_file: ContextVar[Path | None] = ContextVar("lineguard_config_file", default=None)


class SettingsError(ValueError):
    """A settings file that is missing or a value that does not validate."""


class KafkaSettings(BaseModel):
    """Connection to the Kafka cluster; security options pass straight to kafka-python."""

    model_config = ConfigDict(extra="forbid")

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "lineguard"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    # Consumer-group liveness: short in tests, Kafka's defaults in production
    session_timeout_ms: int = Field(45_000, ge=1_000)
    heartbeat_interval_ms: int = Field(3_000, ge=100)
    max_poll_interval_ms: int = Field(300_000, ge=1_000)
    request_timeout_ms: int = Field(30_000, ge=1_000)
    # Largest record any lineguard client writes or reads (frames up to max_frame_bytes + headers)
    max_message_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    linger_ms: int = Field(5, ge=0)
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    # How long a client tries to reach the cluster before it gives up with an error
    bootstrap_timeout_ms: int = Field(10_000, ge=100)


class TopicSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,200}$")
    partitions: int = Field(ge=1)
    retention_ms: int = Field(ge=-1)  # -1: keep forever
    replication_factor: int = Field(1, ge=1)


class TopicSettings(BaseModel):
    """Topic names, partitions and retention; `lineguard topics create` makes them."""

    model_config = ConfigDict(extra="forbid")

    frames: TopicSpec = TopicSpec(name="frames", partitions=8, retention_ms=24 * 3600_000)
    inspections: TopicSpec = TopicSpec(name="inspections", partitions=8, retention_ms=7 * 24 * 3600_000)
    alerts: TopicSpec = TopicSpec(name="lineguard.alerts", partitions=4, retention_ms=24 * 3600_000)
    defects: TopicSpec = TopicSpec(name="defects", partitions=4, retention_ms=30 * 24 * 3600_000)
    dead_letter: TopicSpec = TopicSpec(name="frames.dlq", partitions=1, retention_ms=14 * 24 * 3600_000)

    def all(self) -> list[TopicSpec]:
        return [self.frames, self.inspections, self.alerts, self.defects, self.dead_letter]


class RedisSettings(BaseModel):
    """Where the thresholds live; `prefix` namespaces every key lineguard reads or writes."""

    model_config = ConfigDict(extra="forbid")

    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None
    password: SecretStr | None = None
    ssl_ca_certs: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    prefix: str = Field("lineguard", pattern=r"^[A-Za-z0-9._:-]{1,64}$")
    socket_timeout_s: float = Field(0.5, gt=0)


class HttpSettings(BaseModel):
    """Health and metrics endpoints (/livez, /readyz, /metrics); port 0 picks a free port."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
    # /livez fails when the consume loop has not turned for this long
    liveness_timeout_s: float = Field(120.0, gt=0)


class SecretFilesSource(PydanticBaseSettingsSource):
    """Settings from files named like the environment variables (LINEGUARD_KAFKA__SASL_PASSWORD)
    in a directory, e.g. a mounted Kubernetes Secret, so secrets need not sit in the environment."""

    def __init__(self, settings_cls: type[BaseSettings], directory: Path) -> None:
        super().__init__(settings_cls)
        self.directory = directory

    def get_field_value(self, field, field_name):  # unused: __call__ builds the whole dict
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if not self.directory.is_dir():
            return values
        for path in sorted(self.directory.iterdir()):
            if not path.name.startswith(ENV_PREFIX) or not path.is_file():
                continue
            if path.stat().st_size > MAX_SECRET_BYTES:
                raise SettingsError(f"secret file {path} is larger than {MAX_SECRET_BYTES} bytes")
            keys = path.name.removeprefix(ENV_PREFIX).lower().split("__")
            target = values
            for key in keys[:-1]:
                target = target.setdefault(key, {})
            target[keys[-1]] = path.read_text().strip()
        return values


class ServiceSettings(BaseSettings):
    """Base of every service's Settings: LINEGUARD_* environment variables (nested with `__`,
    e.g. LINEGUARD_KAFKA__BOOTSTRAP_SERVERS), then files of the same names in the secrets
    directory (LINEGUARD_SECRETS_DIR, /run/secrets/lineguard), then an optional YAML file,
    then the defaults."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__",
                                      extra="forbid", nested_model_default_partial_update=True)

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    http: HttpSettings = HttpSettings()

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _config_file.get()
        secrets = Path(os.environ.get(SECRETS_DIR_ENV, DEFAULT_SECRETS_DIR))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings,
                                                     SecretFilesSource(settings_cls, secrets)]
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    @classmethod
    def load(cls, config: Path | str | None = None, **overrides: Any):
        """Settings from `config` (or the file named by LINEGUARD_CONFIG), the environment,
        and `overrides` (highest priority)."""
        path = config or os.environ.get(CONFIG_ENV) or None
        if path is not None and not Path(path).is_file():
            raise SettingsError(f"settings file not found: {path}")
        token = _config_file.set(Path(path) if path else None)
        try:
            return cls(**overrides)
        except ValueError as error:
            raise SettingsError(f"invalid {cls.__name__}: {error}") from error
        finally:
            _config_file.reset(token)
