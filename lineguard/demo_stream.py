"""The streaming half of `lineguard demo`: embedded broker, Redis, detector and alerting
services, frames replayed from a labelled recording, a live view at the terminal, defect crops
written to a folder, and everything stopped again at the end or on Ctrl-C."""

import contextlib
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import redis
from kafka import KafkaConsumer

from shared.logging import get_logger
from shared.schemas import unb64

log = get_logger("lineguard.demo")


class RedisUnavailableError(RuntimeError):
    """Neither a local Redis nor a redis-server binary to start one."""


@contextlib.contextmanager
def local_redis(url: str = "redis://127.0.0.1:6379/0", workdir: Path | None = None):
    """The local Redis when it answers, else a redis-server from PATH on a free port."""
    from lineguard.broker import free_port

    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
        yield url, None
        return
    except redis.RedisError:
        pass
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailableError(
            f"the demo needs Redis: none answers at {url} and redis-server is not on PATH. "
            "Install it (Debian/Ubuntu: apt install redis-server; macOS: brew install redis) "
            "or point LINEGUARD_REDIS__URL at one.")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(workdir or Path.cwd())],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    started_url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(started_url, socket_connect_timeout=0.2).ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RedisUnavailableError("redis-server did not start") from None
                time.sleep(0.05)
        log.info("started redis-server for the demo", url=started_url, pid=process.pid)
        yield started_url, process
    finally:
        process.terminate()
        process.wait(timeout=10)


def delete_keys(url: str, pattern: str) -> None:
    """Remove what a run wrote to a (possibly shared) Redis, so it is left as it was found."""
    with contextlib.suppress(redis.RedisError):
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)


class LiveView:
    """Prints defect events as they come and a status line every second; writes each event's
    overlay and crops as JPEG files."""

    def __init__(self, kafka, topics, crops: Path, total: int) -> None:
        from shared.kafka import client_options

        self.crops = crops
        self.total = total
        self.inspected = 0
        self.defective = 0
        self.events = 0
        self._stop = threading.Event()
        self._consumer = KafkaConsumer(topics.inspections.name, topics.defects.name,
                                       **client_options(kafka), group_id=None,
                                       auto_offset_reset="latest", enable_auto_commit=False,
                                       max_partition_fetch_bytes=kafka.max_message_bytes)
        self._topics = topics
        self._thread = threading.Thread(target=self._run, name="live-view", daemon=True)

    def start(self) -> "LiveView":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._consumer.close()

    def _run(self) -> None:
        from shared.schemas import DefectEvent, InspectionRecord

        last_status, last_shown = 0.0, None
        while not self._stop.is_set():
            for batch in self._consumer.poll(timeout_ms=200).values():
                for record in batch:
                    if record.topic == self._topics.inspections.name:
                        inspection = InspectionRecord.from_bytes(record.value)
                        self.inspected += 1
                        self.defective += inspection.verdict == "defective"
                    else:
                        self._show(DefectEvent.from_bytes(record.value))
            status = (self.inspected, self.defective, self.events)
            if status != last_shown and time.monotonic() - last_status > 1.0:
                last_status, last_shown = time.monotonic(), status
                print(f"  inspected {self.inspected:4d}/{self.total}   defective {self.defective:4d}"
                      f"   defect events {self.events:4d}", flush=True)

    def _show(self, event) -> None:
        self.events += 1
        self.crops.mkdir(parents=True, exist_ok=True)
        stem = f"{event.line_id}-{event.frame_id}"[:120]
        if event.overlay_jpeg:
            (self.crops / f"{stem}-overlay.jpg").write_bytes(unb64(event.overlay_jpeg))
        for index, region in enumerate(event.regions):
            if region.crop_jpeg:
                (self.crops / f"{stem}-region{index}.jpg").write_bytes(unb64(region.crop_jpeg))
        largest = max(event.regions, key=lambda r: r.area, default=None)
        size = f"{largest.width}x{largest.height}" if largest else "-"
        print(f"  DEFECT {event.frame_id:<40} score {event.score:.3f}  regions {len(event.regions)}"
              f"  largest {size:>7}  -> {self.crops.name}/{stem}-*.jpg", flush=True)


def stream_demo(model_dir: Path, data: Path, out: Path, small: bool) -> dict:
    """Stream the data's labelled test images through the pipeline and summarise."""
    from alerting.service import AlertingService
    from alerting.settings import AlertingSettings
    from detector.settings import DetectorSettings
    from detector.worker import DetectorWorker
    from lineguard.broker import EmbeddedBroker
    from lineguard.tool_settings import ToolSettings
    from lineguard.validation import validate_online
    from producer.recording import read_recording, record_mvtec
    from shared.kafka import create_topics
    from shared.settings import HttpSettings, KafkaSettings, RedisSettings

    out = Path(out)
    recording = out / "recording"
    if recording.exists():
        shutil.rmtree(recording)
    record_mvtec(data, recording, line_id="demo-line", camera_id="demo-cam")
    total = len(read_recording(recording))
    crops = out / "defects"
    if crops.exists():
        shutil.rmtree(crops)
    prefix = f"lineguard-demo-{uuid.uuid4().hex[:6]}"
    services: list = []
    threads: list[threading.Thread] = []
    started = {}
    with EmbeddedBroker(log_file=out / "broker.log") as broker, local_redis(workdir=out) as (url, server):
        started = {"broker_pid": broker.process.pid, "redis_pid": server.pid if server else None,
                   "broker": broker.bootstrap, "redis": url}
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, session_timeout_ms=6000,
                              heartbeat_interval_ms=2000)
        redis_settings = RedisSettings(url=url, prefix=prefix)
        http = HttpSettings(host="127.0.0.1", port=0)
        tool = ToolSettings(kafka=kafka, redis=redis_settings)
        create_topics(kafka, tool.topics.all())
        services = [
            DetectorWorker(DetectorSettings(kafka=kafka, redis=redis_settings, model=model_dir,
                                            http=http, worker_id="demo-detector", max_wait_ms=20)),
            AlertingService(AlertingSettings(kafka=kafka, redis=redis_settings, http=http)),
        ]
        view = None
        try:
            for service in services:
                thread = threading.Thread(target=service.run, name=type(service).__name__, daemon=True)
                thread.start()
                threads.append(thread)
            _wait_for(lambda: all(service.partitions.assigned for service in services), 60)
            threshold = _pick_threshold(recording, model_dir, out, redis_settings)
            print(f"demo-line threshold set in Redis to {threshold:.3f} (F1-max on these labelled "
                  "frames, offline)", flush=True)
            print(f"streaming {total} labelled frames through broker {broker.bootstrap} and Redis "
                  f"{url} (detector and alerting running; Ctrl-C stops everything)", flush=True)
            view = LiveView(kafka, tool.topics, crops, total).start()
            report = validate_online(recording, tool, out / "validation", line_id="demo-line",
                                     speed=None if small else 1.0, timeout_s=60)
            time.sleep(1.2)  # let the live view print its last status line
        finally:
            if view is not None:
                view.stop()
            for service in services:
                service.stop()
            for thread in threads:
                thread.join(timeout=30)
            delete_keys(url, f"{prefix}:*")
    metrics, frames = report["metrics"], report["frames"]
    latency = report["latency"]["capture_to_inspection"] or {}
    return {
        "stream_frames_sent": frames["sent"], "stream_inspected": frames["inspected"],
        "stream_lost": frames["lost"], "stream_defect_events": frames["defect_events"],
        "stream_precision": _round(metrics.get("precision")),
        "stream_recall": _round(metrics.get("recall")),
        "stream_image_auroc": _round(metrics.get("image_auroc")),
        "capture_to_inspection_p50_ms": latency.get("p50_ms"),
        "defect_crops": str(crops), "validation_report": str(out / "validation" / "report.md"),
        **started,
    }


def _wait_for(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the demo services did not join their consumer groups in time")
        time.sleep(0.1)


def _pick_threshold(recording: Path, model_dir: Path, out: Path, redis_settings) -> float:
    """Run the model offline on the recording and set the demo line's threshold in Redis to the
    F1-max threshold, the way an operator would after `lineguard validate --offline`."""
    from lineguard.validation import validate_offline
    from shared.thresholds import ThresholdKeys, connect, set_threshold

    report = validate_offline(recording, model_dir, out / "validation-offline")
    threshold = min(0.999, max(0.001, report["metrics"]["best_f1_threshold"]))
    set_threshold(connect(redis_settings), ThresholdKeys(redis_settings.prefix), "demo-line",
                  threshold, who="lineguard demo", reason="F1-max of an offline validation")
    return threshold


def _round(value):
    return round(value, 3) if isinstance(value, float) else value
