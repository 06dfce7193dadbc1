"""ONNX export: one graph from uint8 frames to scores and maps, matching PyTorch."""

import json

import numpy as np
import onnxruntime as ort
import pytest

from detector.export import export_onnx
from detector.store import load_model, save_model
from tests.conftest import small_model


@pytest.mark.parametrize("student", ["cot", "symmetric"])
def test_onnx_matches_pytorch_with_a_dynamic_batch(tmp_path, some_calibration, student):
    model = small_model(student=student)
    save_model(tmp_path / "m", model, some_calibration, {})
    meta = export_onnx(tmp_path / "m")
    assert meta["max_score_relative_error"] < 1e-3
    load_model(tmp_path / "m")  # the export must not touch the model's own files
    assert json.loads((tmp_path / "m" / "model.onnx.json").read_text())["image_size"] == 64
    session = ort.InferenceSession(meta["onnx"], providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        frames = np.random.default_rng(batch).integers(0, 256, (batch, 64, 64, 3), np.uint8)
        scores, maps = session.run(None, {"frames": frames})
        assert scores.shape == (batch,) and maps.shape == (batch, 64, 64)
        import torch

        with torch.no_grad():
            expected, _ = model.forward_frames(torch.from_numpy(frames))
        assert np.allclose(scores, expected.numpy(), rtol=1e-3)


def test_verification_fails_when_the_graph_differs(tmp_path, some_calibration):
    from detector.export import FramesToScores, verify_onnx

    save_model(tmp_path / "m", small_model(), some_calibration, {})
    meta = export_onnx(tmp_path / "m")
    other = FramesToScores(small_model(student="residual")).eval()
    with pytest.raises(RuntimeError, match="differ from PyTorch"):
        verify_onnx(meta["onnx"], other, 64, batch=2)
