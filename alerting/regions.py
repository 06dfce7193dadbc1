"""Defect regions from a normalised anomaly map, and the JPEG crops and overlay that show them."""

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Region:
    x: int
    y: int
    width: int
    height: int
    area: int
    peak_score: float


def find_regions(normalised: np.ndarray, threshold: float, min_area: int,
                 max_regions: int) -> list[Region]:
    """8-connected components of `normalised >= threshold`, largest peak first. Components
    smaller than min_area are dropped unless that would leave none: the peak's one stays."""
    mask = (normalised >= threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    regions = []
    for label in range(1, count):
        x, y, width, height, area = (int(v) for v in stats[label])
        window = normalised[y:y + height, x:x + width]
        peak = float(window[labels[y:y + height, x:x + width] == label].max())
        regions.append(Region(x, y, width, height, area, peak))
    regions.sort(key=lambda r: r.peak_score, reverse=True)
    large = [r for r in regions if r.area >= min_area]
    return (large or regions[:1])[:max_regions]


def heat_overlay(rgb: np.ndarray, normalised: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The frame (RGB) with the map drawn over it as a JET heatmap, stretched from the frame's
    lowest to its highest score so the anomaly stands out whatever the score scale."""
    low, high = float(normalised.min()), float(normalised.max())
    scaled = (normalised - low) / (high - low) if high > low else np.zeros_like(normalised)
    heat = cv2.applyColorMap(np.clip(scaled * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(rgb, 1 - alpha, heat, alpha, 0)


def crop_box(region: Region, margin: float, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x, y, width, height) of the region grown by `margin` of its size (at least 16 px) on
    each side, clipped to the frame."""
    pad_x = max(16, int(region.width * margin))
    pad_y = max(16, int(region.height * margin))
    x0, y0 = max(0, region.x - pad_x), max(0, region.y - pad_y)
    x1 = min(shape[1], region.x + region.width + pad_x)
    y1 = min(shape[0], region.y + region.height + pad_y)
    return x0, y0, x1 - x0, y1 - y0


def encode_jpeg(rgb: np.ndarray, max_side: int, quality: int) -> bytes:
    scale = max_side / max(rgb.shape[:2])
    if scale < 1:
        rgb = cv2.resize(rgb, (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()


def draw_boxes(rgb: np.ndarray, regions: list[Region]) -> np.ndarray:
    out = rgb.copy()
    thickness = max(1, round(max(rgb.shape[:2]) / 300))
    for region in regions:
        cv2.rectangle(out, (region.x, region.y),
                      (region.x + region.width - 1, region.y + region.height - 1),
                      (255, 255, 255), thickness)
    return out
