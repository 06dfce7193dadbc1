"""Score calibration: statistics of good scores, a normalised score in [0, 1], a default threshold.

The normalised score is a logistic function of the log raw score, centred on the default
threshold: normalised = 1 / (1 + exp(-(ln s - ln t) / w)), with t the raw default threshold and
w the standard deviation of ln(score) over held-out good images. So 0.5 is the decision point
(raw score == default threshold), a frame one good-score spread above it scores 0.73, and the
mapping is monotonic, so any threshold in normalised units is a raw-score threshold too.
"""

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from detector.evaluation.metrics import f1_max

DECISION_POINT = 0.5
_EPS = 1e-12


class Calibration(BaseModel):
    """Stored with a model; maps raw scores to [0, 1] and holds the default threshold."""

    model_config = ConfigDict(extra="forbid")

    good_count: int
    good_mean: float
    good_std: float
    good_quantiles: dict[str, float]
    log_scale: float
    threshold_raw: float
    threshold_source: Literal["good-log-mean+3sd", "f1-max-labelled"]
    # defaults are in normalised units; DECISION_POINT corresponds to threshold_raw
    default_threshold: float = DECISION_POINT
    defect_count: int = 0

    def normalise(self, raw: np.ndarray | float) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float64)
        z = (np.log(np.maximum(raw, _EPS)) - math.log(max(self.threshold_raw, _EPS))) / self.log_scale
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))

    def raw_for(self, normalised: float) -> float:
        """The raw score at which the normalised score equals `normalised` (0 < n < 1)."""
        if not 0.0 < normalised < 1.0:
            raise ValueError(f"normalised threshold must lie strictly between 0 and 1: {normalised}")
        z = math.log(normalised / (1.0 - normalised))
        return math.exp(math.log(max(self.threshold_raw, _EPS)) + z * self.log_scale)


def calibrate(good_scores: np.ndarray, defect_scores: np.ndarray | None = None) -> Calibration:
    """Calibrate on held-out good scores, and on labelled defect scores when there are some.

    Good only: the threshold is exp(mean + 3 sd) of ln(score), about the 99.9th percentile of a
    log-normal good population. With defects: the threshold that maximises F1 on both sets.
    """
    good = np.asarray(good_scores, dtype=np.float64)
    if good.size < 2:
        raise ValueError("calibration needs at least two good images")
    logs = np.log(np.maximum(good, _EPS))
    log_scale = float(max(logs.std(ddof=1), 1e-3))
    threshold = math.exp(float(logs.mean()) + 3.0 * log_scale)
    source = "good-log-mean+3sd"
    defects = np.asarray(defect_scores if defect_scores is not None else [], dtype=np.float64)
    if defects.size:
        threshold = best_f1_threshold(good, defects)
        source = "f1-max-labelled"
    quantiles = {f"p{q}": float(np.percentile(good, q)) for q in (50, 90, 95, 99)}
    quantiles["max"] = float(good.max())
    return Calibration(
        good_count=int(good.size), good_mean=float(good.mean()), good_std=float(good.std(ddof=1)),
        good_quantiles=quantiles, log_scale=log_scale, threshold_raw=float(threshold),
        threshold_source=source, defect_count=int(defects.size),
    )


def best_f1_threshold(good: np.ndarray, defects: np.ndarray) -> float:
    """Raw threshold (score >= t is a defect) with the highest F1; ties go to the higher one."""
    scores = np.concatenate([good, defects])
    labels = np.concatenate([np.zeros(len(good)), np.ones(len(defects))])
    return f1_max(labels, scores)[1]
