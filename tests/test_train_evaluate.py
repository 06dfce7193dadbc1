"""Train on a small slice of real data (ELPV solar cells), evaluate, export: end to end."""

import json
from pathlib import Path

import pytest

from detector.training import TrainOptions, recalibrate_on_test
from lineguard.cli import main


@pytest.fixture(scope="module")
def elpv(tmp_path_factory):
    root = tmp_path_factory.mktemp("elpv")
    assert main(["data", "elpv", "--out", str(root), "--limit", "60"]) == 0
    return root


@pytest.mark.slow
def test_train_then_evaluate_separates_defects_from_good(elpv, tmp_path):
    model_dir = tmp_path / "model"
    code = main(["train", str(elpv), "--out", str(model_dir), "--epochs", "12",
                 "--image-size", "128", "--batch-size", "8", "--seed", "0"])
    assert code == 0
    manifest = json.loads((model_dir / "model.json").read_text())
    assert manifest["training"]["train_images"] == 48
    assert manifest["calibration"]["good_count"] == 12
    assert main(["evaluate", str(model_dir), str(elpv), "--out", str(tmp_path / "report"),
                 "--heatmaps", "4"]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    overall = report["overall"]
    assert overall["images"] == 120 and overall["defective"] == 60
    assert "pixel_auroc" not in overall  # ELPV has image labels only
    assert overall["image_auroc"] > 0.65, overall
    assert (tmp_path / "report" / "roc.png").stat().st_size > 1000
    assert len(list((tmp_path / "report" / "heatmaps").glob("*.png"))) == 4
    assert "| all |" in (tmp_path / "report" / "report.md").read_text()

    # with labelled defects at hand, the threshold moves to F1-max on them
    calibration = recalibrate_on_test(model_dir, elpv, TrainOptions())
    assert calibration.threshold_source == "f1-max-labelled"
    assert calibration.defect_count == 60 and calibration.good_count == 60
    assert json.loads((model_dir / "model.json").read_text())["calibration"] == \
        calibration.model_dump()


def test_cli_errors_name_the_missing_path(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "no-model"), str(tmp_path)]) == 2
    assert str(tmp_path / "no-model" / "model.json") in capsys.readouterr().err
    assert main(["train", str(tmp_path / "no-data"), "--out", str(tmp_path / "m")]) == 2
    assert str(tmp_path / "no-data") in capsys.readouterr().err


def test_resnet18_without_weights_is_an_error_not_random(elpv, tmp_path, capsys):
    code = main(["train", str(elpv), "--out", str(tmp_path / "m"), "--backbone", "resnet18",
                 "--epochs", "1", "--image-size", "64"])
    assert code == 2
    assert "--teacher-weights" in capsys.readouterr().err
    assert not (tmp_path / "m" / "model.json").exists()


def test_small_demo_trains_evaluates_exports_and_reuses(tmp_path, capsys):
    assert main(["demo", "--small", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    first = json.loads(out[out.rfind("\n{") + 1:])  # the summary follows the live view
    for key in ("model", "report", "heatmaps", "onnx"):
        assert Path(first[key]).exists(), key
    # the streaming half: every frame inspected, events for the defective verdicts, crops
    # written, and the broker (and any redis-server it started) stopped again
    assert first["stream_frames_sent"] == first["stream_inspected"] == 80
    assert first["stream_lost"] == 0 and first["stream_defect_events"] > 0
    assert len(list(Path(first["defect_crops"]).glob("*-overlay.jpg"))) == first["stream_defect_events"]
    for pid in (first["broker_pid"], first["redis_pid"]):
        if pid is not None:
            assert not _alive(pid), f"process {pid} left running"
    weights = Path(first["model"]) / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert main(["demo", "--small", "--no-stream", "--out", str(tmp_path)]) == 0
    assert weights.stat().st_mtime_ns == stamp  # the second run reuses the trained model


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:  # a zombie waiting for its parent counts as gone
        return handle.read().split(")")[-1].split()[0] != "Z"
