"""Fusion maths, smoothing, image score and loss on hand-made features."""

import math

import pytest
import torch

from detector.model.anomaly_map import (
    fuse_maps,
    gaussian_blur,
    gaussian_kernel,
    image_score,
    level_maps,
)
from detector.model.loss import level_distance, stpm_loss


def test_fusions_on_known_values():
    maps = torch.tensor([1.0, 2.0, 4.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(fuse_maps(maps, "product"), torch.full((1, 2, 2), 8.0))
    assert torch.allclose(fuse_maps(maps, "mean"), torch.full((1, 2, 2), 7 / 3))
    weighted = fuse_maps(maps, "weighted", (2.0, 1.0, 1.0))
    assert torch.allclose(weighted, torch.full((1, 2, 2), (2 * 1 + 2 + 4) / 4))


def test_weighted_fusion_refuses_bad_weights():
    maps = torch.ones(1, 3, 2, 2)
    with pytest.raises(ValueError):
        fuse_maps(maps, "weighted", (1.0, 1.0))
    with pytest.raises(ValueError):
        fuse_maps(maps, "weighted", (-1.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        fuse_maps(maps, "max")


def test_distance_of_identical_and_opposite_features():
    t = torch.randn(2, 8, 4, 4)
    assert torch.allclose(level_distance(t, t * 3), torch.zeros(2, 4, 4), atol=1e-6)
    assert torch.allclose(level_distance(t, -t), torch.full((2, 4, 4), 4.0), atol=1e-5)
    loss = stpm_loss([t, t], [t, -t])
    assert math.isclose(float(loss), 4.0, rel_tol=1e-5)


def test_level_maps_upsample_to_input_size():
    t = [torch.randn(1, 4, 8, 8), torch.randn(1, 4, 4, 4)]
    s = [torch.randn(1, 4, 8, 8), torch.randn(1, 4, 4, 4)]
    maps = level_maps(t, s, (32, 32))
    assert maps.shape == (1, 2, 32, 32)
    # bilinear upsampling keeps the mean value of a level roughly
    assert torch.allclose(maps[0, 1].mean(), level_distance(t[1], s[1]).mean(), rtol=0.1)


def test_gaussian_blur_keeps_constants_and_spreads_a_peak():
    flat = torch.full((1, 40, 40), 3.0)
    assert torch.allclose(gaussian_blur(flat, 4.0), flat, atol=1e-5)
    peak = torch.zeros(1, 41, 41)
    peak[0, 20, 20] = 1.0
    blurred = gaussian_blur(peak, 2.0)
    kernel = gaussian_kernel(2.0)
    assert math.isclose(float(blurred.sum()), 1.0, rel_tol=1e-4)
    assert math.isclose(float(blurred[0, 20, 20]), float(kernel.max() ** 2), rel_tol=1e-4)
    assert torch.equal(gaussian_blur(peak, 0.0), peak)


def test_image_score_is_the_map_maximum():
    maps = torch.zeros(2, 5, 5)
    maps[0, 1, 2] = 7
    maps[1, 4, 4] = 2
    assert image_score(maps).tolist() == [7.0, 2.0]
