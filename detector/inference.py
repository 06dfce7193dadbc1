"""The inference API the detector service calls: decoded frames in, scores and fused maps out."""

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from detector.calibration import Calibration
from detector.frames import fit_to_square, to_rgb8
from detector.model import ModelConfig, TeacherStudent
from detector.store import ModelManifest, load_model

PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Inspection:
    """Per-frame results of one batch: raw and normalised scores, fused maps at model size."""

    scores: np.ndarray  # (B,) raw
    normalised: np.ndarray  # (B,) in [0, 1], 0.5 = the model's default threshold
    maps: np.ndarray  # (B, S, S) float32 fused anomaly maps, S = the model's image size


class Inspector:
    """Holds a loaded model on a device and inspects batches of frames without gradients."""

    def __init__(self, model: TeacherStudent, calibration: Calibration, device: str = "cpu",
                 precision: str = "float32", manifest: ModelManifest | None = None) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.device = torch.device(device)
        if precision == "float16" and self.device.type == "cpu":
            raise ValueError("float16 autocast is for CUDA; use bfloat16 on the CPU")
        self.precision = precision
        self.model = model.eval().to(self.device)
        if self.device.type == "cpu" and precision != "float32":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.calibration = calibration
        self.manifest = manifest
        self.image_size = model.config.image_size
        self.resize = model.config.resize

    @classmethod
    def from_directory(cls, directory: Path, device: str = "cpu", precision: str = "float32",
                       map_overrides: dict | None = None) -> "Inspector":
        """Load a model directory. `map_overrides` changes inference-only settings (fusion,
        fusion_weights, smoothing_sigma) for experiments; the calibration then no longer fits."""
        model, manifest = load_model(directory)
        if map_overrides:
            allowed = {"fusion", "fusion_weights", "smoothing_sigma"}
            if set(map_overrides) - allowed:
                raise ValueError(f"only {sorted(allowed)} can be overridden at inference")
            model.config = ModelConfig.model_validate(
                {**model.config.model_dump(), **map_overrides})
        return cls(model, manifest.calibration, device, precision, manifest)

    def prepare(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Decoded frames of any size, gray or colour -> (B, S, S, 3) uint8 RGB."""
        return np.stack([fit_to_square(to_rgb8(f), self.image_size, self.resize) for f in frames])

    @torch.inference_mode()
    def inspect(self, frames: Sequence[np.ndarray]) -> Inspection:
        """Score a batch of decoded frames (uint8 RGB or gray arrays of any size)."""
        if len(frames) == 0:
            empty = np.zeros((0,), np.float32)
            return Inspection(empty, empty, np.zeros((0, self.image_size, self.image_size),
                                                      np.float32))
        return self.inspect_prepared(self.prepare(frames))

    @torch.inference_mode()
    def inspect_prepared(self, batch: np.ndarray) -> Inspection:
        """Score frames already prepared to (B, S, S, 3) uint8 RGB."""
        tensor = torch.from_numpy(batch).to(self.device, non_blocking=True)
        x = self.model.normaliser(tensor)
        if self.device.type == "cpu" and self.precision != "float32":
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = PRECISIONS[self.precision]
        context = torch.autocast(self.device.type, dtype=dtype) if dtype else nullcontext()
        with context:
            scores, maps = self.model(x)
        scores_np = scores.float().cpu().numpy()
        return Inspection(scores=scores_np,
                          normalised=self.calibration.normalise(scores_np).astype(np.float32),
                          maps=maps.float().cpu().numpy())
