"""Anomaly-detection metrics with MVTec AD conventions: AUROC, AUPRO (FPR <= 0.3), F1-max."""

from collections.abc import Sequence

import cv2
import numpy as np


def _counts_by_threshold(labels: np.ndarray, scores: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """At every distinct score t, highest first: t, positives and all samples with score >= t."""
    labels = np.asarray(labels).ravel().astype(bool)
    scores = np.asarray(scores).ravel()
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    distinct = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_labels.size - 1]
    return sorted_scores[distinct], np.cumsum(sorted_labels)[distinct], distinct + 1, int(labels.sum())


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold, starting at (0, 0)."""
    _, true_pos, predicted, positives = _counts_by_threshold(labels, scores)
    negatives = np.size(labels) - positives
    if positives == 0 or negatives == 0:
        raise ValueError("ROC needs both positive and negative samples")
    return np.r_[0.0, (predicted - true_pos) / negatives], np.r_[0.0, true_pos / positives]


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count half, as in scikit-learn's roc_auc_score)."""
    fpr, tpr = roc_curve(labels, scores)
    return float(np.trapezoid(tpr, fpr))


def f1_max(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The best F1 over all thresholds (score >= t is positive) and that threshold.

    Of equally good thresholds, the highest is returned.
    """
    thresholds, true_pos, predicted, positives = _counts_by_threshold(labels, scores)
    if positives == 0:
        raise ValueError("F1 needs positive samples")
    f1 = 2 * true_pos / (predicted + positives)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def aupro(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], fpr_limit: float = 0.3) -> float:
    """Area under the per-region-overlap curve up to `fpr_limit`, divided by `fpr_limit`.

    masks and maps: one 2-D array per image (shapes may differ between images). Each connected
    defect region counts equally, whatever its size; the false-positive rate is over all
    defect-free pixels. Computed exactly at every distinct score by one sort of all pixels.
    """
    weights, normals, scores = [], [], []
    regions = 0
    for mask, anomaly_map in zip(masks, maps, strict=True):
        mask = np.asarray(mask).astype(bool)
        if mask.shape != np.shape(anomaly_map):
            raise ValueError(f"mask {mask.shape} and map {np.shape(anomaly_map)} differ in shape")
        weight = np.zeros(mask.shape, dtype=np.float64)
        if mask.any():
            count, labelled = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
            areas = np.bincount(labelled.ravel(), minlength=count)
            weight = np.where(mask, 1.0 / areas[labelled], 0.0)
            regions += count - 1
        weights.append(weight.ravel())
        normals.append(~mask.ravel())
        scores.append(np.asarray(anomaly_map, dtype=np.float32).ravel())
    normal = np.concatenate(normals)
    if regions == 0 or not normal.any():
        raise ValueError("AUPRO needs defect regions and defect-free pixels")
    flat_scores = np.concatenate(scores)
    order = np.argsort(-flat_scores, kind="stable")
    sorted_scores = flat_scores[order]
    pro = np.cumsum(np.concatenate(weights)[order]) / regions
    fpr = np.cumsum(normal[order]) / normal.sum()
    distinct = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    fpr, pro = np.r_[0.0, fpr[distinct]], np.r_[0.0, pro[distinct]]
    # clip the curve at fpr_limit, interpolating the PRO there
    last = int(np.flatnonzero(fpr <= fpr_limit)[-1])
    fpr_c, pro_c = fpr[: last + 1], pro[: last + 1]
    if last + 1 < fpr.size and fpr_c[-1] < fpr_limit:
        x0, x1, y0, y1 = fpr[last], fpr[last + 1], pro[last], pro[last + 1]
        fpr_c = np.r_[fpr_c, fpr_limit]
        pro_c = np.r_[pro_c, y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)]
    return float(np.trapezoid(pro_c, fpr_c) / fpr_limit)
