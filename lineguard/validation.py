"""`lineguard validate`: replay a labelled recording through the running pipeline (or run the
model on it offline) and report losses, detection quality at the line's threshold, better
thresholds, and latency."""

import json
import math
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from detector.evaluation.metrics import auroc, f1_max, roc_curve
from lineguard.tool_settings import ToolSettings
from producer.recording import RecordedFrame, read_recording, replay_frames
from shared.kafka import make_producer, topic_reader
from shared.logging import get_logger
from shared.schemas import DefectEvent, InspectionRecord

log = get_logger("lineguard.validate")


@dataclass
class FrameResult:
    frame_id: str
    label: str | None
    score: float
    verdict: str
    threshold: float


def detection_metrics(results: list[FrameResult], target_recall: float) -> dict:
    """Quality of the verdicts against the labels, and the thresholds worth considering."""
    labelled = [r for r in results if r.label in ("good", "defective")]
    labels = np.array([r.label == "defective" for r in labelled], dtype=bool)
    scores = np.array([r.score for r in labelled], dtype=np.float64)
    predicted = np.array([r.verdict == "defective" for r in labelled], dtype=bool)
    true_pos = int((labels & predicted).sum())
    metrics: dict = {
        "labelled": len(labelled), "defective": int(labels.sum()), "good": int((~labels).sum()),
        "true_positives": true_pos, "false_positives": int((~labels & predicted).sum()),
        "false_negatives": int((labels & ~predicted).sum()),
        "true_negatives": int((~labels & ~predicted).sum()),
        "precision": true_pos / predicted.sum() if predicted.any() else None,
        "recall": true_pos / labels.sum() if labels.any() else None,
    }
    p, r = metrics["precision"], metrics["recall"]
    metrics["f1"] = None if p is None or r is None else (2 * p * r / (p + r) if p + r else 0.0)
    if labels.any() and (~labels).any():
        metrics["image_auroc"] = auroc(labels, scores)
        best_f1, best_threshold = f1_max(labels, scores)
        metrics["best_f1"] = best_f1
        metrics["best_f1_threshold"] = best_threshold
        defect_scores = np.sort(scores[labels])[::-1]
        needed = max(1, math.ceil(target_recall * len(defect_scores)))
        recall_threshold = float(defect_scores[needed - 1])
        metrics["target_recall"] = target_recall
        metrics["target_recall_threshold"] = recall_threshold
        metrics["target_recall_false_positive_rate"] = float((scores[~labels] >= recall_threshold).mean())
    return metrics


def percentiles(values: list[float]) -> dict | None:
    if not values:
        return None
    p50, p95, p99 = np.percentile(np.array(values) * 1000.0, [50, 95, 99])
    return {"p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1),
            "p99_ms": round(float(p99), 1), "count": len(values)}


def validate_online(recording: Path, settings: ToolSettings, out: Path, line_id: str | None = None,
                    target_recall: float = 0.95, speed: float | None = None,
                    timeout_s: float = 120.0) -> dict:
    from producer.publisher import FramePublisher
    from producer.settings import ProducerSettings

    entries = read_recording(recording)
    run = uuid.uuid4().hex[:8]
    producer_settings = ProducerSettings(kafka=settings.kafka, topics=settings.topics)
    producer = make_producer(settings.kafka)
    started_ms = int(time.time() * 1000)
    try:
        publisher = FramePublisher(producer_settings, producer)
        summary = publisher.publish(replay_frames(recording, entries, speed, line_id=line_id,
                                                  fresh_ids=run, restamp=True))
    finally:
        producer.close(timeout=10)
    sent = {h.frame_id: h for h in publisher.sent_headers}
    labels = {f"{run}-{e.headers.frame_id}"[:128]: e.headers.label for e in entries}
    log.info("recording replayed; collecting inspections", run=run, sent=summary.sent)
    inspections = _collect(settings, settings.topics.inspections.name, started_ms, set(sent),
                           InspectionRecord.from_bytes, timeout_s)
    by_frame: dict[str, list[InspectionRecord]] = {}
    for record in inspections:
        by_frame.setdefault(record.frame_id, []).append(record)
    defective = {fid for fid, records in by_frame.items() if records[0].verdict == "defective"}
    events = _collect(settings, settings.topics.defects.name, started_ms, defective,
                      DefectEvent.from_bytes, min(timeout_s, 30.0))
    results = [FrameResult(fid, labels.get(fid), records[0].score, records[0].verdict,
                           records[0].threshold) for fid, records in by_frame.items()]
    thresholds = sorted({r.threshold for r in results})
    first_event: dict[str, DefectEvent] = {}
    for event in events:
        first_event.setdefault(event.frame_id, event)
    report = {
        "mode": "pipeline", "recording": str(recording), "run": run,
        "line_id": line_id or entries[0].headers.line_id,
        "frames": {"sent": summary.sent, "failed_to_send": summary.failed,
                   "inspected": len(by_frame), "lost": len(set(sent) - set(by_frame)),
                   "duplicated": sum(len(r) - 1 for r in by_frame.values()),
                   "defect_events": len(first_event),
                   "defective_without_event": len(defective - set(first_event))},
        "thresholds_used": thresholds,
        "threshold_source": sorted({records[0].threshold_source for records in by_frame.values()}),
        "model_ids": sorted({records[0].model_id for records in by_frame.values()}),
        "metrics": detection_metrics(results, target_recall),
        "latency": {
            "capture_to_inspection": percentiles(
                [(r[0].inspected_time - r[0].capture_time).total_seconds() for r in by_frame.values()]),
            "capture_to_defect_event": percentiles(
                [(e.published_time - e.capture_time).total_seconds() for e in first_event.values()]),
        },
    }
    write_report(report, results, Path(out))
    return report


def _collect(settings: ToolSettings, topic: str, since_ms: int, wanted: set[str], parse,
             timeout_s: float) -> list:
    """Records of `topic` whose frame_id is wanted, from about `since_ms` on, until all came
    (and one more second for duplicates) or nothing new came for timeout_s."""
    try:
        consumer = topic_reader(settings.kafka, topic, since_ms - 2000)
    except ValueError:
        return []
    found, seen = [], set()
    try:
        last_progress = time.monotonic()
        done_at = None
        while time.monotonic() - last_progress < timeout_s:
            for batch in consumer.poll(timeout_ms=200).values():
                for record in batch:
                    try:
                        item = parse(record.value)
                    except ValueError:
                        continue
                    if item.frame_id in wanted:
                        found.append(item)
                        seen.add(item.frame_id)
                        last_progress = time.monotonic()
            if seen >= wanted:
                done_at = done_at or time.monotonic()
                if time.monotonic() - done_at > 1.0:
                    break
    finally:
        consumer.close()
    return found


def validate_offline(recording: Path, model: Path, out: Path, threshold: float | None = None,
                     target_recall: float = 0.95, device: str = "cpu", precision: str = "float32",
                     batch_size: int = 16) -> dict:
    """The same report from the model run on the recording directly (no Kafka)."""
    from detector.decoding import FrameLimits, decode_frame
    from detector.inference import Inspector

    entries = read_recording(recording)
    inspector = Inspector.from_directory(Path(model), device=device, precision=precision)
    used = inspector.calibration.default_threshold if threshold is None else threshold
    results: list[FrameResult] = []
    for start in range(0, len(entries), batch_size):
        chunk: list[RecordedFrame] = entries[start:start + batch_size]
        frames = [decode_frame((Path(recording) / e.file).read_bytes(), e.headers.to_kafka(),
                               FrameLimits())[1] for e in chunk]
        scores = inspector.inspect(frames).normalised
        for entry, score in zip(chunk, scores, strict=True):
            results.append(FrameResult(entry.headers.frame_id, entry.headers.label, float(score),
                                       "defective" if score >= used else "good", used))
    report = {
        "mode": "offline", "recording": str(recording), "model": str(model),
        "frames": {"sent": len(entries), "inspected": len(results), "lost": 0, "duplicated": 0},
        "thresholds_used": [used], "threshold_source": ["model" if threshold is None else "given"],
        "model_ids": [inspector.manifest.model_id],
        "metrics": detection_metrics(results, target_recall),
        "latency": None,
    }
    write_report(report, results, Path(out))
    return report


def write_report(report: dict, results: list[FrameResult], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "frames.jsonl").write_text("".join(json.dumps(asdict(r)) + "\n" for r in results))
    _plots(results, report, out)
    (out / "report.md").write_text(_markdown(report))


def _plots(results: list[FrameResult], report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    good = [r.score for r in results if r.label == "good"]
    bad = [r.score for r in results if r.label == "defective"]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 1, 41)
    axis.hist(good, bins=bins, alpha=0.6, label=f"good ({len(good)})", color="tab:green")
    axis.hist(bad, bins=bins, alpha=0.6, label=f"defective ({len(bad)})", color="tab:red")
    for threshold in report["thresholds_used"]:
        axis.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    axis.set_xlabel("normalised score")
    axis.set_ylabel("frames")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "scores.png", dpi=120)
    plt.close(figure)
    if good and bad:
        labels = np.array([1] * len(bad) + [0] * len(good))
        fpr, tpr = roc_curve(labels, np.array(bad + good))
        figure, axis = plt.subplots(figsize=(4, 4))
        axis.plot(fpr, tpr, label=f"AUROC {report['metrics']['image_auroc']:.3f}")
        axis.plot([0, 1], [0, 1], color="grey", linestyle=":")
        axis.set_xlabel("false positive rate")
        axis.set_ylabel("true positive rate")
        axis.legend(loc="lower right")
        figure.tight_layout()
        figure.savefig(out / "roc.png", dpi=120)
        plt.close(figure)


def _fmt(value) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _markdown(report: dict) -> str:
    frames, metrics = report["frames"], report["metrics"]
    lines = [f"# Validation ({report['mode']})", "", f"Recording: `{report['recording']}`; "
             f"model: {', '.join(report['model_ids'])}; threshold used: "
             f"{', '.join(f'{t:.3f}' for t in report['thresholds_used'])} "
             f"({', '.join(report['threshold_source'])})", "", "| frames | count |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {v} |" for k, v in frames.items()]
    lines += ["", "| metric | value |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {_fmt(v)} |" for k, v in metrics.items()]
    if report.get("latency"):
        lines += ["", "| latency | p50 ms | p95 ms | p99 ms | frames |", "|---|---|---|---|---|"]
        for name, value in report["latency"].items():
            if value:
                lines.append(f"| {name.replace('_', ' ')} | {value['p50_ms']} | {value['p95_ms']} | "
                             f"{value['p99_ms']} | {value['count']} |")
    lines += ["", "![scores](scores.png)", ""]
    if "image_auroc" in metrics:
        lines += ["![ROC](roc.png)", ""]
    return "\n".join(lines)
