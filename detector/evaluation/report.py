"""`lineguard evaluate`: metrics per defect type, report.json, report.md, ROC curves, heatmaps."""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from detector.datasets import TestImage, test_images
from detector.evaluation.metrics import aupro, auroc, f1_max, roc_curve
from detector.frames import read_image, valid_region
from detector.inference import Inspector
from shared.logging import get_logger

log = get_logger(__name__)


@dataclass
class ScoredSet:
    """Scores of every test image, and valid-region maps and masks of those with pixel labels."""

    items: list[TestImage]
    scores: np.ndarray
    maps: dict[int, np.ndarray] = field(default_factory=dict)
    masks: dict[int, np.ndarray] = field(default_factory=dict)


def score_test_set(inspector: Inspector, items: list[TestImage], batch_size: int) -> ScoredSet:
    scored = ScoredSet(items, np.zeros(len(items), np.float64))
    with_masks = any(item.mask is not None for item in items)
    size, mode = inspector.image_size, inspector.resize
    for start in tqdm(range(0, len(items), batch_size), desc="evaluate", unit="batch",
                      disable=None):
        batch = items[start:start + batch_size]
        frames = [read_image(item.path) for item in batch]
        result = inspector.inspect(frames)
        scored.scores[start:start + len(batch)] = result.scores
        if not with_masks:
            continue
        for offset, (item, frame) in enumerate(zip(batch, frames, strict=True)):
            if item.label and item.mask is None:
                continue  # a defect without a mask has no pixel labels
            top, left, height, width = valid_region(frame.shape[:2], size, mode)
            index = start + offset
            scored.maps[index] = result.maps[offset, top:top + height, left:left + width]
            scored.masks[index] = _read_mask(item, frame.shape[:2], (width, height))
    return scored


def _read_mask(item: TestImage, frame_shape: tuple[int, int], size: tuple[int, int]
               ) -> np.ndarray:
    if item.mask is None:
        return np.zeros((size[1], size[0]), bool)
    mask = cv2.imread(str(item.mask), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise ValueError(f"cannot read mask {item.mask}")
    if mask.shape != frame_shape:
        mask = cv2.resize(mask, (frame_shape[1], frame_shape[0]), interpolation=cv2.INTER_NEAREST)
    return cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST) > 127


def compute_metrics(scored: ScoredSet, subset: np.ndarray, threshold: float | None
                    ) -> dict[str, Any]:
    """Image metrics on `subset` (a boolean index), pixel metrics where masks exist."""
    labels = np.array([item.label for item in scored.items])[subset]
    scores = scored.scores[subset]
    metrics: dict[str, Any] = {
        "images": int(subset.sum()), "defective": int(labels.sum()),
        "image_auroc": auroc(labels, scores),
        "image_f1_max": f1_max(labels, scores)[0],
    }
    if threshold is not None:
        predicted = scores >= threshold
        true_pos = int((predicted & (labels == 1)).sum())
        metrics["precision_at_default"] = true_pos / max(int(predicted.sum()), 1)
        metrics["recall_at_default"] = true_pos / max(int(labels.sum()), 1)
    pixel_indices = [i for i in np.flatnonzero(subset) if i in scored.maps]
    if pixel_indices and any(scored.masks[i].any() for i in pixel_indices):
        maps = [scored.maps[i] for i in pixel_indices]
        masks = [scored.masks[i] for i in pixel_indices]
        metrics["pixel_auroc"] = auroc(np.concatenate([m.ravel() for m in masks]),
                                       np.concatenate([m.ravel() for m in maps]))
        metrics["aupro_0.3"] = aupro(masks, maps, 0.3)
    return metrics


def evaluate(model_dir: Path, data: Path, out: Path, device: str = "cpu",
             precision: str = "float32", batch_size: int = 16, heatmaps: int = 12,
             seed: int = 0, map_overrides: dict | None = None,
             per_type: bool = True) -> dict[str, Any]:
    started = time.monotonic()
    inspector = Inspector.from_directory(model_dir, device, precision, map_overrides)
    items = test_images(data)
    scored = score_test_set(inspector, items, batch_size)
    # with overridden map settings the stored threshold is on another scale
    threshold = None if map_overrides else inspector.calibration.threshold_raw
    labels = np.array([item.label for item in items])
    if labels.min() == labels.max():
        raise ValueError(f"{data}/test needs good and defective images to evaluate")
    types = sorted({item.defect_type for item in items if item.label})
    is_good = labels == 0
    report: dict[str, Any] = {
        "model": str(Path(model_dir).resolve()), "model_id": inspector.manifest.model_id,
        "architecture": inspector.model.config.model_dump(),
        "data": str(Path(data).resolve()), "device": device, "precision": precision,
        "default_threshold_raw": threshold,
        "overall": compute_metrics(scored, np.ones(len(items), bool), threshold),
        "per_type": {t: compute_metrics(scored, is_good | np.array(
            [item.defect_type == t for item in items]), threshold) for t in types if per_type},
    }
    report["seconds"] = round(time.monotonic() - started, 1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(render_markdown(report))
    plot_roc(scored, types, out / "roc.png")
    write_heatmaps(inspector, scored, out / "heatmaps", heatmaps, seed)
    log.info("evaluated", out=str(out), **{k: v for k, v in report["overall"].items()
                                           if isinstance(v, float)})
    return report


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else ("–" if value is None else str(value))


def render_markdown(report: dict[str, Any]) -> str:
    columns = ["images", "defective", "image_auroc", "pixel_auroc", "aupro_0.3", "image_f1_max",
               "precision_at_default", "recall_at_default"]
    lines = [
        f"# Evaluation of {report['model_id']}", "",
        f"- data: `{report['data']}`",
        f"- architecture: {', '.join(f'{k}={v}' for k, v in report['architecture'].items())}",
        f"- default threshold (raw score): {_fmt(report['default_threshold_raw'])}",
        f"- device: {report['device']}, precision: {report['precision']}, "
        f"{report['seconds']} s", "",
        "AUPRO is integrated up to FPR 0.3 and normalised; F1-max is image-level; "
        "precision and recall are at the model's default threshold.", "",
        "| subset | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    rows = [("all", report["overall"]), *report["per_type"].items()]
    for name, metrics in rows:
        lines.append(f"| {name} | " + " | ".join(_fmt(metrics.get(c)) for c in columns) + " |")
    lines += ["", "![ROC curves](roc.png)", ""]
    return "\n".join(lines)


def plot_roc(scored: ScoredSet, types: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.array([item.label for item in scored.items])
    kinds = np.array([item.defect_type for item in scored.items])
    figure, axes = plt.subplots(figsize=(5.5, 5))
    for name in ["all", *types]:
        subset = np.ones(len(labels), bool) if name == "all" else (labels == 0) | (kinds == name)
        fpr, tpr = roc_curve(labels[subset], scored.scores[subset])
        axes.plot(fpr, tpr, lw=2.2 if name == "all" else 1.2,
                  label=f"{name} (AUROC {auroc(labels[subset], scored.scores[subset]):.3f})")
    axes.plot([0, 1], [0, 1], ":", color="grey")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title="Image-level ROC")
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_heatmaps(inspector: Inspector, scored: ScoredSet, folder: Path, count: int,
                   seed: int) -> None:
    """Side-by-side panels (frame, overlay, ground truth) for a sample of test images."""
    if count <= 0:
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    by_type: dict[str, list[int]] = {}
    for index, item in enumerate(scored.items):
        by_type.setdefault(item.defect_type, []).append(index)
    chosen: list[int] = []
    while len(chosen) < count and any(by_type.values()):
        for indices in by_type.values():
            if indices and len(chosen) < count:
                chosen.append(indices.pop(int(rng.integers(len(indices)))))
    calibration = inspector.calibration
    for index in chosen:
        item = scored.items[index]
        frame = read_image(item.path)
        result = inspector.inspect([frame])
        panel = render_panel(inspector.prepare([frame])[0],
                             calibration.normalise(result.maps[0]).astype(np.float32),
                             float(result.normalised[0]), item)
        name = f"{item.defect_type}_{item.path.stem}.png"
        cv2.imwrite(str(folder / name), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))


def render_panel(frame: np.ndarray, normalised_map: np.ndarray, score: float,
                 item: TestImage) -> np.ndarray:
    """Frame | heatmap overlay (normalised units, 0.5 = threshold) | ground-truth outline."""
    heat = cv2.applyColorMap((np.clip(normalised_map, 0, 1) * 255).astype(np.uint8),
                             cv2.COLORMAP_JET)
    overlay = cv2.addWeighted(frame, 0.55, cv2.cvtColor(heat, cv2.COLOR_BGR2RGB), 0.45, 0)
    truth = frame.copy()
    if item.mask is not None:
        mask = cv2.imread(str(item.mask), cv2.IMREAD_GRAYSCALE)
        mask = cv2.resize(mask, frame.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 127
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(truth, contours, -1, (255, 0, 0), 2)
    panel = np.concatenate([frame, overlay, truth], axis=1)
    verdict = "DEFECT" if score >= 0.5 else "good"
    text = f"{item.defect_type}  score {score:.2f} -> {verdict}"
    (width, height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
    cv2.rectangle(panel, (0, 0), (width + 10, height + 10), (0, 0, 0), thickness=-1)
    cv2.putText(panel, text, (5, height + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                cv2.LINE_AA)
    return panel
