"""Per-level anomaly maps, their multi-scale fusion, smoothing and the image score."""

import torch
import torch.nn.functional as F

from detector.model.loss import level_distance

FUSIONS = ("product", "mean", "weighted")


def level_maps(teacher_levels: list[torch.Tensor], student_levels: list[torch.Tensor],
               size: tuple[int, int]) -> torch.Tensor:
    """Each level's distance map, upsampled bilinearly to `size`: (B, L, H, W)."""
    maps = [
        F.interpolate(level_distance(t, s)[:, None], size=size, mode="bilinear",
                      align_corners=False)
        for t, s in zip(teacher_levels, student_levels, strict=True)
    ]
    return torch.cat(maps, dim=1)


def fuse_maps(maps: torch.Tensor, fusion: str, weights: tuple[float, ...] | None = None
              ) -> torch.Tensor:
    """Fuse (B, L, H, W) level maps into (B, H, W): product (STPM), mean, or weighted sum.

    Weights of the weighted sum are normalised to sum to one.
    """
    if fusion == "product":
        return maps.prod(dim=1)
    if fusion == "mean":
        return maps.mean(dim=1)
    if fusion == "weighted":
        if weights is None or len(weights) != maps.shape[1]:
            raise ValueError(f"weighted fusion needs {maps.shape[1]} weights, got {weights}")
        w = torch.tensor(weights, dtype=maps.dtype, device=maps.device)
        if (w < 0).any() or float(w.sum()) <= 0:
            raise ValueError(f"fusion weights must be non-negative with a positive sum: {weights}")
        return (maps * (w / w.sum())[None, :, None, None]).sum(dim=1)
    raise ValueError(f"unknown fusion {fusion!r}; choose one of {FUSIONS}")


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian with radius 4 sigma (rounded)."""
    radius = max(1, int(4 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of (B, H, W) maps with reflected borders; sigma 0 is a no-op."""
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel(sigma).to(device=maps.device, dtype=maps.dtype)
    radius = kernel.numel() // 2
    x = maps[:, None]
    x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x[:, 0]


def image_score(fused: torch.Tensor) -> torch.Tensor:
    """An image's score is the maximum of its fused (smoothed) map: (B, H, W) -> (B,)."""
    return fused.flatten(1).amax(dim=1)

