"""`lineguard export`: one ONNX graph from uint8 frames to image scores and fused maps."""

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from detector.store import load_model

# Largest differences allowed between onnxruntime and PyTorch (float32, CPU): scores are
# compared relative to their size, maps absolutely after scaling by the largest map value.
SCORE_RTOL = 1e-3
MAP_ATOL = 1e-3


class FramesToScores(nn.Module):
    """frames uint8 (B, S, S, 3) RGB -> (scores (B,), maps (B, S, S))."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_frames(frames)


def export_onnx(model_dir: Path, out: Path | None = None, opset: int = 17,
                check_batch: int = 2) -> dict[str, float | str]:
    """Export and verify against PyTorch under onnxruntime on random frames."""
    model, manifest = load_model(model_dir)
    size = manifest.architecture.image_size
    out = Path(out) if out else Path(model_dir) / "model.onnx"
    wrapper = FramesToScores(model).eval()
    example = torch.randint(0, 256, (check_batch, size, size, 3), dtype=torch.uint8)
    with warnings.catch_warnings():
        # the exporter's notes on slices it cannot constant-fold are harmless
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        _export(wrapper, example, out, opset)
    check = verify_onnx(out, wrapper, size, batch=check_batch + 1)
    meta = {"onnx": str(out), "opset": opset, "image_size": size,
            "input": "frames uint8 [batch, S, S, 3] RGB, resized as the model's `resize` says",
            **check}
    out.with_name(out.name + ".json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _export(wrapper: nn.Module, example: torch.Tensor, out: Path, opset: int) -> None:
    torch.onnx.export(
        wrapper, (example,), str(out), input_names=["frames"], output_names=["scores", "maps"],
        dynamic_axes={"frames": {0: "batch"}, "scores": {0: "batch"}, "maps": {0: "batch"}},
        opset_version=opset, dynamo=False,
    )


@torch.no_grad()
def verify_onnx(path: Path, wrapper: nn.Module, size: int, batch: int) -> dict[str, float]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    frames = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    onnx_scores, onnx_maps = session.run(None, {"frames": frames})
    torch_scores, torch_maps = (t.numpy() for t in wrapper(torch.from_numpy(frames)))
    score_error = float(np.max(np.abs(onnx_scores - torch_scores) / np.abs(torch_scores)))
    map_error = float(np.max(np.abs(onnx_maps - torch_maps)) / max(np.abs(torch_maps).max(),
                                                                    1e-12))
    if score_error > SCORE_RTOL or map_error > MAP_ATOL:
        raise RuntimeError(f"ONNX outputs differ from PyTorch: scores rel {score_error:.2e} "
                           f"(allowed {SCORE_RTOL}), maps {map_error:.2e} (allowed {MAP_ATOL})")
    return {"max_score_relative_error": score_error, "max_map_scaled_error": map_error}
