"""Metrics against scikit-learn and hand-computed cases."""

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve, roc_auc_score

from detector.calibration import best_f1_threshold, calibrate
from detector.evaluation.metrics import aupro, auroc, f1_max


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_scikit_learn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 500)
    scores = np.round(rng.normal(size=500) + labels, 1)  # rounding makes ties
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auroc_perfect_and_inverted():
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auroc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    with pytest.raises(ValueError):
        auroc([1, 1], [0.1, 0.2])


@pytest.mark.parametrize("seed", [0, 3])
def test_f1_max_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(size=300) + labels, 1)
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best, threshold = f1_max(labels, scores)
    assert best == pytest.approx(f1.max())
    assert threshold == pytest.approx(thresholds[np.argmax(f1[:-1])])
    assert best_f1_threshold(scores[labels == 0], scores[labels == 1]) == pytest.approx(threshold)


def test_aupro_hand_computed():
    # one 2x2 defect region in a 4x4 image; half of it scores high
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    scores = np.zeros((4, 4))
    scores[0, 0] = scores[0, 1] = 1.0  # half the region found at no false positive
    scores[3, 3] = 0.5  # one false positive (FPR 1/12) before the rest
    # curve: (0,0) -> (0, 0.5) -> (1/12, 0.5) -> then everything at 0: (1, 1)
    # up to FPR 0.3: 0.5 * 1/12 + trapezoid from (1/12, 0.5) to (0.3, 0.5 + 0.5 * (0.3-1/12)/(11/12))
    pro_at_limit = 0.5 + 0.5 * (0.3 - 1 / 12) / (1 - 1 / 12)
    expected = (0.5 / 12 + (0.3 - 1 / 12) * (0.5 + pro_at_limit) / 2) / 0.3
    assert aupro([mask], [scores]) == pytest.approx(expected)


def test_aupro_weighs_regions_equally():
    # a large region fully found and a small one missed: PRO is 0.5 at low FPR, whatever the areas
    mask = np.zeros((10, 10), bool)
    mask[:5, :5] = True  # 25 pixels
    mask[9, 9] = True  # 1 pixel
    scores = np.where(mask, 0.0, 0.1)
    scores[:5, :5] = 1.0
    assert aupro([mask], [scores], fpr_limit=0.3) == pytest.approx(0.5)
    perfect = mask.astype(float)
    assert aupro([mask], [perfect]) == pytest.approx(1.0)


def test_calibration_normalises_around_the_threshold():
    rng = np.random.default_rng(0)
    good = np.exp(rng.normal(0.0, 0.2, 200))
    calibration = calibrate(good)
    assert calibration.threshold_source == "good-log-mean+3sd"
    assert float(calibration.normalise(calibration.threshold_raw)) == pytest.approx(0.5)
    normalised = calibration.normalise(np.sort(good))
    assert np.all(np.diff(normalised) >= 0) and normalised.min() >= 0 and normalised.max() <= 1
    assert (calibration.normalise(good) < 0.5).mean() > 0.98
    assert calibration.raw_for(0.8) > calibration.threshold_raw
    assert float(calibration.normalise(calibration.raw_for(0.8))) == pytest.approx(0.8)
    with pytest.raises(ValueError):
        calibration.raw_for(1.0)


def test_calibration_with_defects_uses_f1():
    good = np.linspace(1.0, 2.0, 50)
    defects = np.linspace(1.9, 3.0, 20)
    calibration = calibrate(good, defects)
    assert calibration.threshold_source == "f1-max-labelled"
    assert calibration.threshold_raw == pytest.approx(best_f1_threshold(good, defects))
    assert 1.9 <= calibration.threshold_raw <= 2.1
