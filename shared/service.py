"""What every service process has: health and metrics endpoints, and a stop flag for signals."""

import signal
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from shared.logging import get_logger
from shared.settings import HttpSettings

log = get_logger("lineguard.service")


class Health:
    """Liveness (the loop keeps turning) and readiness (a service-defined check)."""

    def __init__(self, liveness_timeout_s: float) -> None:
        self.liveness_timeout_s = liveness_timeout_s
        self._beat = time.monotonic()
        self._ready_reasons: dict[str, str] = {"starting": "the service is starting"}

    def beat(self) -> None:
        self._beat = time.monotonic()

    def set_ready(self, name: str, ok: bool, why: str = "") -> None:
        if ok:
            self._ready_reasons.pop(name, None)
        else:
            self._ready_reasons[name] = why or name

    def live(self) -> tuple[bool, str]:
        stalled = time.monotonic() - self._beat
        if stalled > self.liveness_timeout_s:
            return False, f"consume loop stalled for {stalled:.0f} s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if self._ready_reasons:
            return False, "; ".join(self._ready_reasons.values())
        return True, "ok"


class HealthServer:
    """/livez, /readyz and /metrics over HTTP in a daemon thread."""

    def __init__(self, settings: HttpSettings, health: Health, registry: CollectorRegistry) -> None:
        handler = _handler(health, registry)
        self._server = ThreadingHTTPServer((settings.host, settings.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    def start(self) -> "HealthServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(health: Health, registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/livez", "/readyz"):
                ok, why = health.live() if path == "/livez" else health.ready()
                self._send(200 if ok else 503, (why + "\n").encode(), "text/plain")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # probes would flood the log
            pass

    return Handler


def stop_on_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT ask the service to drain and exit (main thread only)."""
    def handler(signum: int, _frame) -> None:
        log.info("stop requested", signal=signal.Signals(signum).name)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
