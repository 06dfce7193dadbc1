"""`lineguard bench`: throughput, latency and cost, measured side by side on this machine.

Parts (each prints a table and lands in bench.json):
  model     the model alone: frames/s and latency per batch for each batch size, peak memory
  compare   our CoT student vs the symmetric STPM student and the plain residual student, for
            each teacher backbone (random weights: timing only), and anomalib's STFPM if installed
  pipeline  one detector worker through the real (embedded) broker at saturation, the model
            alone in the same run, and latency at half that load (capture to inspection and to
            defect event)
  sizes     pipeline frames/s for 256, 512 and 1024-pixel source frames
  workers   pipeline frames/s with 1 and 2 workers in one consumer group
  memory    the worker's decode-batch-infer path fed from memory (no Kafka), 1/2/4 decode threads
  decode    JPEG decoding with OpenCV on the CPU against torchvision.io.decode_jpeg on the device
Ratios are measured in the same run, so they hold on a noisy machine when absolute figures
do not.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from shared.logging import get_logger

log = get_logger("lineguard.bench")


@dataclass(frozen=True)
class BenchSize:
    image_size: int
    batch_sizes: tuple[int, ...]
    repeats: int
    pipeline_frames: int
    latency_seconds: float
    source_sizes: tuple[int, ...]
    pipeline_batch: int


FULL = BenchSize(256, (1, 2, 4, 8, 16, 32, 64), 3, 480, 20.0, (256, 512, 1024), 16)
QUICK = BenchSize(64, (1, 4), 1, 24, 2.0, (64, 128), 4)
GPU = BenchSize(256, (1, 2, 4, 8, 16, 32, 64, 128, 256), 5, 960, 20.0, (256, 512, 1024), 64)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_model(image_size: int, student: str = "cot", backbone: str = "efficientnet-lite0",
                pretrained: bool = True):
    from detector.model import ModelConfig, TeacherStudent

    model = TeacherStudent(ModelConfig(image_size=image_size, student=student, backbone=backbone))
    if pretrained:
        model.teacher.load_imagenet()
    return model.eval()


def time_batches(run, batch: torch.Tensor, repeats: int) -> list[float]:
    run(batch)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - started)
    return times


def model_runner(model, precision: str, device: str):
    dtype = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[precision]
    model = model.to(device)
    if device == "cpu" and dtype is not None:
        model = model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def run(frames: torch.Tensor):
        x = model.normaliser(frames.to(device))
        if device == "cpu" and dtype is not None:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(torch.device(device).type, dtype=dtype) if dtype else nullcontext():
            scores, maps = model(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return scores, maps

    return run


def random_frames(count: int, size: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 255, (count, size, size, 3), dtype=np.uint8))


def bench_model(size: BenchSize, device: str, precisions: list[str]) -> list[dict]:
    model = build_model(size.image_size)
    rows = []
    for precision in precisions:
        run = model_runner(model, precision, device)
        for batch_size in size.batch_sizes:
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            times = time_batches(run, random_frames(batch_size, size.image_size), size.repeats)
            best, median = min(times), statistics.median(times)
            rows.append({"precision": precision, "batch": batch_size,
                         "frames_per_s": round(batch_size / median, 1),
                         "frames_per_s_best": round(batch_size / best, 1),
                         "batch_latency_ms": round(median * 1000, 1),
                         "peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20
                                                  if device.startswith("cuda") else peak_rss_mib())})
    return rows


def stfpm_runner(image_size: int, device: str):
    """anomalib's STFPM (resnet18 teacher-student) with random weights, or None if absent."""
    try:
        from anomalib.models.image.stfpm import torch_model
    except ImportError:
        return None, "anomalib not installed (pip install 'lineguard[bench]')"
    original = torch_model.TimmFeatureExtractor

    def no_download(*args, **kwargs):  # speed only: the weights are never fetched
        kwargs["pre_trained"] = False
        return original(*args, **kwargs)

    torch_model.TimmFeatureExtractor = no_download
    try:
        model = torch_model.STFPMModel(layers=["layer1", "layer2", "layer3"], backbone="resnet18")
    finally:
        torch_model.TimmFeatureExtractor = original
    model = model.eval().to(device)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1) * 255

    @torch.inference_mode()
    def run(frames: torch.Tensor):
        x = (frames.to(device).permute(0, 3, 1, 2).float() - mean) / std
        return model(x)

    return run, "anomalib " + __import__("anomalib").__version__


def bench_compare(size: BenchSize, device: str) -> list[dict]:
    """Every variant timed in turn, round after round, so they share the machine's state."""
    batch_size = size.pipeline_batch
    frames = random_frames(batch_size, size.image_size)
    variants = {}
    for backbone in ("efficientnet-lite0", "resnet18"):
        for student in ("cot", "residual", "symmetric"):
            model = build_model(size.image_size, student, backbone, pretrained=False)
            variants[f"{student} / {backbone}"] = model_runner(model, "float32", device)
    stfpm, note = stfpm_runner(size.image_size, device)
    if stfpm is not None:
        variants["anomalib STFPM / resnet18"] = stfpm
    else:
        log.warning("anomalib STFPM left out", reason=note)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for run in variants.values():
        run(frames)  # warm-up
    for _ in range(max(3, size.repeats)):
        for name, run in variants.items():
            started = time.perf_counter()
            run(frames)
            times[name].append(time.perf_counter() - started)
    reference = statistics.median(times["cot / efficientnet-lite0"])
    return [{"model": name, "batch": batch_size,
             "frames_per_s": round(batch_size / statistics.median(t), 1),
             "cost_vs_default": round(statistics.median(t) / reference, 2)}
            for name, t in times.items()]


# -- the pipeline ------------------------------------------------------------------------------
def source_frames(count: int, side: int) -> list[bytes]:
    """Real ELPV cells (elpv-dataset) resized to side x side pixels, as JPEG (quality 90)."""
    from detector.datasets import elpv_cells
    from detector.frames import read_image

    paths = (elpv_cells("good")[: count // 2 + 1] + elpv_cells("defective")[: count // 2 + 1])
    frames = []
    for index in range(count):
        image = cv2.resize(read_image(paths[index % len(paths)]), (side, side),
                           interpolation=cv2.INTER_LINEAR)
        _, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 90])
        frames.append(data.tobytes())
    return frames


def write_bench_model(directory: Path, image_size: int) -> Path:
    """The default architecture (packaged ImageNet teacher, untrained student), calibrated on a
    few cells: the cost of inference does not depend on training."""
    from detector.calibration import calibrate
    from detector.datasets import elpv_cells
    from detector.frames import read_image
    from detector.inference import Inspector
    from detector.store import save_model

    model = build_model(image_size)
    frames = [read_image(p) for p in elpv_cells("good")[:16]]
    scores = Inspector(model, calibrate(np.linspace(1, 2, 8))).inspect(frames).scores
    save_model(directory, model, calibrate(scores), {"source": "lineguard bench"})
    return directory


class Rig:
    """Embedded broker, Redis, a model, and worker processes, for the pipeline parts."""

    def __init__(self, workdir: Path, size: BenchSize) -> None:
        self.workdir = workdir
        self.size = size

    @contextmanager
    def up(self):
        from lineguard.broker import EmbeddedBroker
        from lineguard.demo_stream import delete_keys, local_redis
        from shared.settings import KafkaSettings, RedisSettings

        with EmbeddedBroker(log_file=self.workdir / "broker.log") as broker, \
                local_redis(workdir=self.workdir) as (url, _):
            self.kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, session_timeout_ms=6000,
                                       heartbeat_interval_ms=2000, linger_ms=10)
            self.redis = RedisSettings(url=url, prefix=f"lineguard-bench-{uuid.uuid4().hex[:6]}")
            self.model = write_bench_model(self.workdir / "model", self.size.image_size)
            try:
                yield self
            finally:
                delete_keys(url, f"{self.redis.prefix}:*")

    def topics(self, partitions: int = 4):
        from shared.kafka import create_topics
        from shared.settings import TopicSettings, TopicSpec

        tag = uuid.uuid4().hex[:6]
        topics = TopicSettings(**{name: TopicSpec(name=f"bench-{name}-{tag}", partitions=partitions,
                                                  retention_ms=3600_000)
                                  for name in TopicSettings.model_fields})
        create_topics(self.kafka, topics.all())
        return topics

    def publish(self, topics, frames: list[bytes], fps: float = 0.0, cameras: int = 4,
                line: str = "bench-line"):
        """Publish frames round-robin over `cameras` (so over partitions), capture time = now."""
        from producer.publisher import FramePublisher
        from producer.settings import ProducerSettings
        from producer.sources import SourceFrame
        from shared.kafka import make_producer

        settings = ProducerSettings(kafka=self.kafka, topics=topics, line_id=line, fps=fps,
                                    max_in_flight=256)
        producer = make_producer(self.kafka, batch_size=1_048_576)

        def stream():
            for index, data in enumerate(frames):
                yield SourceFrame(data, "image/jpeg", camera_id=f"cam-{index % cameras}")

        try:
            return FramePublisher(settings, producer).publish(stream())
        finally:
            producer.close()

    @contextmanager
    def services(self, topics, workers: int = 1, alerting: bool = False, threads: int | None = None):
        """Detector worker processes (and the alerting service), stopped with SIGTERM."""
        import yaml

        config = self.workdir / f"config-{uuid.uuid4().hex[:6]}.yaml"
        config.write_text(yaml.safe_dump({
            "kafka": self.kafka.model_dump(mode="json", exclude_none=True),
            "topics": topics.model_dump(mode="json"), "redis": self.redis.model_dump(mode="json"),
            "model": str(self.model), "group_id": f"bench-{uuid.uuid4().hex[:6]}",
            "max_batch": self.size.pipeline_batch, "max_wait_ms": 20, "http": {"enabled": False}}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
        env["LINEGUARD_LOG_LEVEL"] = "warning"
        if threads:
            env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        commands = [["detector", "--config", str(config)] for _ in range(workers)]
        if alerting:
            alert_config = config.with_name(config.stem + "-alerting.yaml")
            alert_config.write_text(yaml.safe_dump({
                "kafka": self.kafka.model_dump(mode="json", exclude_none=True),
                "topics": topics.model_dump(mode="json"), "redis": self.redis.model_dump(mode="json"),
                "group_id": f"bench-alerting-{uuid.uuid4().hex[:6]}", "http": {"enabled": False}}))
            commands.append(["alerting", "--config", str(alert_config)])
        processes = [subprocess.Popen([sys.executable, "-m", "lineguard.cli", *command], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for command in commands]
        try:
            yield processes
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()

    def collect(self, topic: str, count: int, timeout_s: float, parse) -> list:
        from shared.kafka import topic_reader

        consumer = topic_reader(self.kafka, topic)
        found = []
        deadline = time.monotonic() + timeout_s
        try:
            while len(found) < count and time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=200).values():
                    found.extend(parse(record.value) for record in batch)
        finally:
            consumer.close()
        return found


def saturation(rig: Rig, frames: list[bytes], workers: int = 1, threads: int | None = None) -> dict:
    """Frames/s of `workers` detector processes, from the first to the last inspection of a burst
    published once every worker has joined the group and inspected a warm-up frame."""
    from shared.schemas import InspectionRecord

    topics = rig.topics()
    cameras = 8
    with rig.services(topics, workers=workers, threads=threads):
        seen, rounds = set(), 0
        while len(seen) < workers and rounds < 20:  # warm-up until every worker has inspected
            rounds += 1
            rig.publish(topics, frames[:cameras], cameras=cameras, line="warm-up")
            warm = rig.collect(topics.inspections.name, rounds * cameras, 120, InspectionRecord.from_bytes)
            seen = {r.worker_id for r in warm[-cameras:]}
        rig.publish(topics, frames, cameras=cameras)
        records = [r for r in rig.collect(topics.inspections.name, rounds * cameras + len(frames), 600,
                                          InspectionRecord.from_bytes) if r.line_id == "bench-line"]
    times = sorted(r.inspected_time.timestamp() for r in records)
    span = times[-1] - times[0] if len(times) > 1 else float("nan")
    batches = [r.timings.batch_size for r in records]
    return {"frames": len(frames), "inspected": len(records), "workers": workers,
            "frames_per_s": round((len(times) - 1) / span, 1) if span > 0 else None,
            "mean_batch": round(float(np.mean(batches)), 1) if batches else None,
            "decode_ms_median": round(float(np.median([r.timings.decode_ms for r in records])), 2),
            "scores": [r.score for r in records]}


def model_alone_fps(rig: Rig, frames: list[bytes]) -> float:
    """The worker's own model on the same frames, in a fresh process like the worker's (so both
    start from the same state), with the frames decoded and prepared outside the timing."""
    from detector.decoding import FrameLimits, decode_frame
    from detector.inference import Inspector
    from shared.schemas import FrameHeaders, utc_now

    inspector = Inspector.from_directory(rig.model)
    headers = FrameHeaders(frame_id="f", line_id="l", camera_id="c", capture_time=utc_now(),
                           sequence=0, content_type="image/jpeg").to_kafka()
    prepared = inspector.prepare([decode_frame(f, headers, FrameLimits())[1] for f in frames])
    path = rig.workdir / f"prepared-{uuid.uuid4().hex[:6]}.npy"
    np.save(path, prepared)
    code = ("import sys; from lineguard.bench import _time_model_alone; "
            "print(_time_model_alone(sys.argv[1], sys.argv[2], int(sys.argv[3])))")
    done = subprocess.run([sys.executable, "-c", code, str(rig.model), str(path),
                           str(rig.size.pipeline_batch)], capture_output=True, text=True, check=True)
    path.unlink()
    return float(done.stdout.strip().splitlines()[-1])


def _time_model_alone(model: str, prepared_path: str, batch: int) -> float:
    from detector.inference import Inspector

    inspector = Inspector.from_directory(Path(model))
    prepared = np.load(prepared_path)
    inspector.inspect_prepared(prepared[:batch])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(prepared) - batch + 1, batch):
        inspector.inspect_prepared(prepared[start:start + batch])
    return (len(prepared) // batch) * batch / (time.perf_counter() - started)


def half_load_latency(rig: Rig, frames: list[bytes], rate: float, scores: list[float]) -> dict:
    """Frames at `rate` frames/s with alerting running; the line's threshold puts about one
    frame in ten over it, so there are defect events to time."""
    from lineguard.validation import percentiles
    from shared.schemas import DefectEvent, InspectionRecord
    from shared.thresholds import ThresholdKeys, connect, set_threshold

    threshold = float(np.clip(np.quantile(scores, 0.9), 0.001, 0.999))
    client, keys = connect(rig.redis), ThresholdKeys(rig.redis.prefix)
    set_threshold(client, keys, "bench-line", threshold, who="lineguard bench")
    set_threshold(client, keys, "warm-up", 0.001, who="lineguard bench")  # every warm-up frame alerts
    topics = rig.topics()
    count = max(4, int(rate * rig.size.latency_seconds))
    chosen = [frames[i % len(frames)] for i in range(count)]
    with rig.services(topics, alerting=True):
        # until detector and alerting have both joined their groups and handled a frame
        rig.publish(topics, chosen[:2], line="warm-up")
        rig.collect(topics.defects.name, 2, 120, DefectEvent.from_bytes)
        rig.publish(topics, chosen, fps=rate)
        measured = [r for r in rig.collect(topics.inspections.name, count + 2, 120,
                                           InspectionRecord.from_bytes) if r.line_id == "bench-line"]
        defective = sum(r.verdict == "defective" for r in measured)
        events = [e for e in rig.collect(topics.defects.name, defective + 2, 60, DefectEvent.from_bytes)
                  if e.line_id == "bench-line"]
    timed = measured

    def median(values):
        return round(float(np.median(values)), 1) if values else None

    return {"rate_frames_per_s": round(rate, 1), "threshold": round(threshold, 4),
            "median_queue_wait_ms": median([r.timings.queue_wait_ms for r in timed]),
            "median_inference_ms": median([r.timings.inference_ms for r in timed]),
            "mean_batch": round(float(np.mean([r.timings.batch_size for r in timed])), 2) if timed else None,
            "capture_to_inspection": percentiles(
                [(r.inspected_time - r.capture_time).total_seconds() for r in timed]),
            "capture_to_defect_event": percentiles(
                [(e.published_time - e.capture_time).total_seconds() for e in events])}


def bench_pipeline(rig: Rig) -> dict:
    """Saturation between two model-alone measurements (each in a fresh process), so the ratio
    compares like with like on a machine whose speed drifts."""
    size = rig.size
    frames = source_frames(size.pipeline_frames, 300)
    before = model_alone_fps(rig, frames)
    saturated = saturation(rig, frames)
    after = model_alone_fps(rig, frames)
    alone = (before + after) / 2
    scores = saturated.pop("scores")
    latency = half_load_latency(rig, frames, max(1.0, (saturated["frames_per_s"] or 2) / 2), scores)
    return {"saturation": saturated, "model_alone_frames_per_s": round(alone, 1),
            "model_alone_before_after": [round(before, 1), round(after, 1)],
            "pipeline_over_model": round((saturated["frames_per_s"] or 0) / alone, 3),
            "half_load": latency}


def bench_sizes(rig: Rig) -> list[dict]:
    rows = []
    for side in rig.size.source_sizes:
        result = saturation(rig, source_frames(rig.size.pipeline_frames, side))
        result.pop("scores")
        rows.append({"source_pixels": f"{side}x{side}", **result})
    return rows


def bench_workers(rig: Rig) -> list[dict]:
    frames = source_frames(rig.size.pipeline_frames, 300)
    rows = []
    for workers, threads in ((1, None), (2, max(1, (os.cpu_count() or 2) // 2))):
        result = saturation(rig, frames, workers=workers, threads=threads)
        result.pop("scores")
        rows.append({"torch_threads_per_worker": threads or torch.get_num_threads(), **result})
    return rows


def bench_memory_worker(size: BenchSize, device: str, precision: str = "float32") -> dict:
    """The worker's own decode-batch-infer path fed from memory (no Kafka): frames decoded and
    resized in a thread pool while the previous batch runs, as the worker does."""
    from concurrent.futures import ThreadPoolExecutor

    from detector.decoding import FrameLimits, decode_frame
    from detector.frames import fit_to_square
    from detector.inference import Inspector
    from shared.schemas import FrameHeaders, utc_now

    with tempfile.TemporaryDirectory() as workdir:
        inspector = Inspector.from_directory(write_bench_model(Path(workdir) / "m", size.image_size),
                                             device=device, precision=precision)
    frames = source_frames(size.pipeline_frames, 1024 if size is not QUICK else 128)
    headers = FrameHeaders(frame_id="f", line_id="l", camera_id="c", capture_time=utc_now(),
                           sequence=0, content_type="image/jpeg").to_kafka()

    def decode(data: bytes) -> np.ndarray:
        rgb = decode_frame(data, headers, FrameLimits())[1]
        return fit_to_square(rgb, inspector.image_size, inspector.resize)

    batch = size.pipeline_batch
    rows = {}
    for threads in (1, 2, 4):
        with ThreadPoolExecutor(threads) as pool:
            inspector.inspect_prepared(np.stack([decode(f) for f in frames[:batch]]))  # warm-up
            started = time.perf_counter()
            futures = [pool.submit(decode, f) for f in frames]
            for start in range(0, len(frames), batch):
                inspector.inspect_prepared(np.stack([f.result() for f in futures[start:start + batch]]))
            rows[threads] = len(frames) / (time.perf_counter() - started)
    started = time.perf_counter()
    for data in frames:
        decode(data)
    decode_only = len(frames) / (time.perf_counter() - started)
    return {"source_pixels": "1024x1024" if size is not QUICK else "128x128", "batch": batch,
            "precision": precision,
            "frames_per_s_by_decode_threads": {str(k): round(v, 1) for k, v in rows.items()},
            "decode_and_resize_only_frames_per_s_one_thread": round(decode_only, 1)}


def bench_decode(size: BenchSize, device: str) -> dict:
    """JPEG decoding: OpenCV on the CPU against torchvision.io.decode_jpeg on `device`."""
    from torchvision.io import decode_jpeg

    frames = source_frames(min(64, size.pipeline_frames), 1024 if size is not QUICK else 128)
    started = time.perf_counter()
    for data in frames:
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    opencv = len(frames) / (time.perf_counter() - started)
    tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in frames]
    decode_jpeg(tensors[:2], device=device)  # warm-up (CUDA context, nvjpeg handles)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    decode_jpeg(tensors, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    torchvision = len(frames) / (time.perf_counter() - started)
    return {"frames": len(frames), "source_pixels": "1024x1024" if size is not QUICK else "128x128",
            "opencv_cpu_frames_per_s": round(opencv, 1),
            f"torchvision_{device.split(':')[0]}_frames_per_s": round(torchvision, 1),
            "ratio": round(torchvision / opencv, 2)}


# -- running and printing --------------------------------------------------------------------
def table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, dict):
        return " / ".join(f"{v}" for k, v in value.items() if k != "count")
    return "–" if value is None else str(value)


def run_bench(out: Path, parts: list[str], quick: bool = False, device: str = "cpu",
              size: BenchSize | None = None) -> dict:
    size = size or (QUICK if quick else FULL)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    precisions = ["float32", "bfloat16"] if device == "cpu" else ["float32", "bfloat16", "float16"]
    result: dict = {"machine": machine(device), "quick": quick, "image_size": size.image_size,
                    "date": time.strftime("%Y-%m-%d")}
    if "model" in parts:
        result["model"] = bench_model(size, device, precisions)
        print("\n## Model alone\n\n" + table(result["model"], ["precision", "batch", "frames_per_s",
                                                             "batch_latency_ms", "peak_memory_mib"]))
    if "compare" in parts:
        result["compare"] = bench_compare(size, device)
        print("\n## Students and backbones\n\n" + table(result["compare"], ["model", "batch",
                                                                          "frames_per_s", "cost_vs_default"]))
    if "memory" in parts:
        result["memory"] = bench_memory_worker(size, device, precisions[-1] if device != "cpu" else "float32")
        print("\n## Worker path fed from memory (no Kafka)\n\n" + json.dumps(result["memory"]))
    if "decode" in parts:
        result["decode"] = bench_decode(size, device)
        print("\n## JPEG decoding\n\n" + json.dumps(result["decode"]))
    if {"pipeline", "sizes", "workers"} & set(parts):
        with tempfile.TemporaryDirectory() as workdir, Rig(Path(workdir), size).up() as rig:
            if "pipeline" in parts:
                result["pipeline"] = bench_pipeline(rig)
                p = result["pipeline"]
                print(f"\n## Pipeline\n\none worker at saturation: {p['saturation']['frames_per_s']} "
                      f"frames/s; model alone: {p['model_alone_frames_per_s']} frames/s (before, "
                      f"after: {p['model_alone_before_after']}); "
                      f"ratio {p['pipeline_over_model']}\n\nat half load "
                      f"({p['half_load']['rate_frames_per_s']} frames/s), p50/p95/p99 ms: capture to "
                      f"inspection {_cell(p['half_load']['capture_to_inspection'])}; capture to defect "
                      f"event {_cell(p['half_load']['capture_to_defect_event'])}; median queue wait "
                      f"{p['half_load']['median_queue_wait_ms']} ms, batch inference "
                      f"{p['half_load']['median_inference_ms']} ms, "
                      f"mean batch {p['half_load']['mean_batch']}")
            if "sizes" in parts:
                result["sizes"] = bench_sizes(rig)
                print("\n## Source frame size\n\n" + table(result["sizes"], [
                    "source_pixels", "frames_per_s", "decode_ms_median", "mean_batch"]))
            if "workers" in parts:
                result["workers"] = bench_workers(rig)
                print("\n## Workers in one group\n\n" + table(result["workers"], [
                    "workers", "torch_threads_per_worker", "frames_per_s", "mean_batch"]))
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out / 'bench.json'}")
    return result


def machine(device: str) -> dict:
    info = {"device": device, "cpus": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        with open("/proc/cpuinfo") as handle:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in handle
                               if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return info


PARTS = ["model", "compare", "memory", "decode", "pipeline", "sizes", "workers"]
