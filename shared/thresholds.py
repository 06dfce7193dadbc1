"""Per-line thresholds in Redis: the key layout, validated writes with an audit trail, and the
worker-side cache that follows pub/sub notifications and survives Redis outages.

Key layout (PREFIX is RedisSettings.prefix, `lineguard` by default):
  PREFIX:threshold:default         the default for lines without their own key
  PREFIX:threshold:line:<line_id>  one line's threshold
  PREFIX:threshold:changed         pub/sub channel; the message is the line id or `*` (default)
  PREFIX:threshold:audit           stream of changes made through `lineguard threshold`
Values are decimal numbers in the model's normalised score units: 0 < value < 1, where 0.5 is
the model's calibrated default; a frame is defective when its normalised score >= threshold.
"""

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from shared.logging import get_logger
from shared.settings import RedisSettings

DEFAULT_LINE = "*"
log = get_logger("lineguard.thresholds")


class ThresholdError(ValueError):
    """A threshold value that is not a finite number strictly between 0 and 1."""


def parse_threshold(text: str | bytes | float) -> float:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ThresholdError(f"threshold {text!r} is not a number") from None
    if not math.isfinite(value) or not 0.0 < value < 1.0:
        raise ThresholdError(f"threshold {text!r} must be a finite number with 0 < value < 1 "
                             "(normalised score units; 0.5 is the model's default)")
    return value


@dataclass(frozen=True)
class ThresholdKeys:
    prefix: str = "lineguard"

    @property
    def default(self) -> str:
        return f"{self.prefix}:threshold:default"

    def line(self, line_id: str) -> str:
        return f"{self.prefix}:threshold:line:{line_id}"

    @property
    def line_pattern(self) -> str:
        return f"{self.prefix}:threshold:line:*"

    @property
    def channel(self) -> str:
        return f"{self.prefix}:threshold:changed"

    @property
    def audit(self) -> str:
        return f"{self.prefix}:threshold:audit"

    def line_of(self, key: str) -> str:
        return key.removeprefix(f"{self.prefix}:threshold:line:")


def connect(settings: RedisSettings) -> redis.Redis:
    """A client with short timeouts, so a Redis outage never stalls a caller for long."""
    options = {"socket_timeout": settings.socket_timeout_s,
               "socket_connect_timeout": settings.socket_timeout_s,
               "username": settings.username,
               "password": settings.password.get_secret_value() if settings.password else None,
               "decode_responses": False}
    if settings.url.startswith("rediss://"):
        options.update(ssl_ca_certs=_path(settings.ssl_ca_certs), ssl_certfile=_path(settings.ssl_certfile),
                       ssl_keyfile=_path(settings.ssl_keyfile))
    return redis.Redis.from_url(settings.url, **options)


def _path(value) -> str | None:
    return str(value) if value is not None else None


@dataclass(frozen=True)
class ResolvedThreshold:
    value: float
    source: str  # "redis-line" | "redis-default" | "model"


class ThresholdCache:
    """Thresholds a worker uses, read from Redis by a background thread.

    The thread reads every threshold key at start, on every pub/sub notification and every
    `refresh_s`; the consume loop only reads the in-memory copy and never waits for Redis. When
    Redis is down the last known values (or the model's default) stay in use and the outage is
    logged once; an invalid value is logged and ignored (the previous valid value stays).
    """

    def __init__(self, settings: RedisSettings, refresh_s: float = 1.0,
                 on_refresh: Callable[[bool], None] | None = None) -> None:
        self.keys = ThresholdKeys(settings.prefix)
        self.settings = settings
        self.refresh_s = refresh_s
        self._on_refresh = on_refresh
        self._lock = threading.Lock()
        self._default: float | None = None
        self._lines: dict[str, float] = {}
        self._rejected: dict[str, bytes] = {}
        self._last_success: float | None = None
        self._redis_down = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "ThresholdCache":
        self.refresh()
        self._thread = threading.Thread(target=self._follow, name="threshold-cache", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def resolve(self, line_id: str, model_default: float) -> ResolvedThreshold:
        with self._lock:
            if line_id in self._lines:
                return ResolvedThreshold(self._lines[line_id], "redis-line")
            if self._default is not None:
                return ResolvedThreshold(self._default, "redis-default")
        return ResolvedThreshold(model_default, "model")

    def age_s(self) -> float | None:
        """Seconds since the last successful read of Redis (None: never read)."""
        return None if self._last_success is None else time.monotonic() - self._last_success

    def refresh(self, client: redis.Redis | None = None) -> bool:
        """Read all threshold keys once; False (and the cache unchanged) when Redis fails."""
        try:
            client = client or connect(self.settings)
            line_keys = sorted(client.scan_iter(match=self.keys.line_pattern, count=500))
            values = client.mget([self.keys.default, *line_keys])
        except redis.RedisError as error:
            self._note_outage(error)
            return False
        if self._redis_down:
            log.info("redis reachable again; thresholds refreshed")
        self._redis_down = False
        default = self._accept(self.keys.default, values[0], self._default)
        lines: dict[str, float] = {}
        for key, raw in zip(line_keys, values[1:], strict=True):
            name = self.keys.line_of(key.decode())
            accepted = self._accept(key.decode(), raw, self._lines.get(name))
            if accepted is not None:
                lines[name] = accepted
        with self._lock:
            self._default, self._lines = default, lines
        self._last_success = time.monotonic()
        if self._on_refresh:
            self._on_refresh(True)
        return True

    def _accept(self, key: str, raw: bytes | None, previous: float | None) -> float | None:
        if raw is None:
            self._rejected.pop(key, None)
            return None
        try:
            value = parse_threshold(raw)
        except ThresholdError as error:
            if self._rejected.get(key) != raw:
                log.error("invalid threshold in redis ignored", key=key, error=str(error),
                          keeping=previous)
                self._rejected[key] = raw
            return previous
        self._rejected.pop(key, None)
        return value

    def _note_outage(self, error: Exception) -> None:
        if not self._redis_down:
            log.warning("redis unavailable; keeping the last known thresholds", error=str(error),
                        lines=sorted(self._lines), default=self._default)
        self._redis_down = True
        if self._on_refresh:
            self._on_refresh(False)

    def _follow(self) -> None:
        """Refresh on notifications and every refresh_s; reconnect after outages."""
        while not self._stop.is_set():
            client = connect(self.settings)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.keys.channel)
                self.refresh(client)
                next_refresh = time.monotonic() + self.refresh_s
                while not self._stop.is_set():
                    wait = max(0.0, next_refresh - time.monotonic())
                    message = pubsub.get_message(timeout=min(wait, 0.25))
                    if message is not None or time.monotonic() >= next_refresh:
                        self.refresh(client)
                        next_refresh = time.monotonic() + self.refresh_s
            except redis.RedisError as error:
                self._note_outage(error)
                self._stop.wait(self.refresh_s)
            finally:
                try:
                    pubsub.close()
                    client.close()
                except redis.RedisError:
                    pass


def set_threshold(client: redis.Redis, keys: ThresholdKeys, line_id: str, value: float | str,
                  who: str, reason: str = "") -> float | None:
    """Validate and write a threshold, append it to the audit stream and notify workers.
    Returns the previous value (None if there was none)."""
    checked = parse_threshold(value)
    key = _key(keys, line_id)
    previous = client.get(key)
    pipe = client.pipeline()
    pipe.set(key, repr(checked))
    pipe.xadd(keys.audit, {"line": line_id, "old": previous or b"", "new": repr(checked),
                           "who": who, "reason": reason, "time": f"{time.time():.3f}"},
              maxlen=10_000, approximate=True)
    pipe.publish(keys.channel, line_id)
    pipe.execute()
    try:
        return parse_threshold(previous) if previous is not None else None
    except ThresholdError:
        return None


def _key(keys: ThresholdKeys, line_id: str) -> str:
    return keys.default if line_id == DEFAULT_LINE else keys.line(line_id)


def unset_threshold(client: redis.Redis, keys: ThresholdKeys, line_id: str, who: str,
                    reason: str = "") -> bool:
    """Remove a line's threshold (it falls back to the default); audited and notified."""
    key = _key(keys, line_id)
    previous = client.get(key)
    if previous is None:
        return False
    pipe = client.pipeline()
    pipe.delete(key)
    pipe.xadd(keys.audit, {"line": line_id, "old": previous, "new": "", "who": who,
                           "reason": reason, "time": f"{time.time():.3f}"},
              maxlen=10_000, approximate=True)
    pipe.publish(keys.channel, line_id)
    pipe.execute()
    return True


def list_thresholds(client: redis.Redis, keys: ThresholdKeys) -> dict[str, str]:
    """Every threshold key's raw text: line id -> value (DEFAULT_LINE for the default)."""
    line_keys = sorted(client.scan_iter(match=keys.line_pattern, count=500))
    values = client.mget([keys.default, *line_keys])
    found = {DEFAULT_LINE: values[0]} if values[0] is not None else {}
    for key, value in zip(line_keys, values[1:], strict=True):
        if value is not None:
            found[keys.line_of(key.decode())] = value
    return {line: value.decode(errors="replace") for line, value in found.items()}


def threshold_history(client: redis.Redis, keys: ThresholdKeys, line_id: str | None = None,
                      count: int = 20) -> list[dict[str, str]]:
    """The newest `count` audited changes (of one line, when given), oldest first."""
    entries = []
    for entry_id, fields in client.xrevrange(keys.audit, count=count if line_id is None else 10_000):
        row = {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
        if line_id is None or row.get("line") == line_id:
            entries.append({"id": entry_id.decode(), **row})
        if len(entries) >= count:
            break
    return entries[::-1]
