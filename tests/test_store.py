"""Model directories: round trip, and refusal of pickles, mismatched files and other versions."""
import json
import pickle
import re

import pytest
import torch

from detector.store import ModelLoadError, load_model, read_manifest, save_model
from tests.conftest import small_model


def test_round_trip_gives_identical_outputs(tmp_path, model, some_calibration):
    save_model(tmp_path / "m", model, some_calibration, {"epochs": 1})
    loaded, manifest = load_model(tmp_path / "m")
    assert manifest.architecture == model.config
    assert manifest.calibration == some_calibration
    assert manifest.training == {"epochs": 1}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), loaded(x), strict=True):
            assert torch.equal(a, b)


def test_refuses_a_pickle_in_place_of_weights(tmp_path, model, some_calibration):
    directory = tmp_path / "m"
    save_model(directory, model, some_calibration, {})
    payload = pickle.dumps({"state": torch.zeros(1)})
    (directory / "model.safetensors").write_bytes(payload)
    manifest = json.loads((directory / "model.json").read_text())
    import hashlib

    manifest["weights_sha256"] = hashlib.sha256(payload).hexdigest()
    (directory / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="not a safetensors file"):
        load_model(directory)


def test_refuses_weights_of_another_model(tmp_path, some_calibration):
    save_model(tmp_path / "a", small_model(student="cot"), some_calibration, {})
    save_model(tmp_path / "b", small_model(student="residual"), some_calibration, {})
    (tmp_path / "a" / "model.safetensors").write_bytes(
        (tmp_path / "b" / "model.safetensors").read_bytes())
    with pytest.raises(ModelLoadError, match="checksum differs"):
        load_model(tmp_path / "a")


def test_refuses_weights_that_do_not_fit_the_architecture(tmp_path, some_calibration):
    save_model(tmp_path / "a", small_model(student="residual"), some_calibration, {})
    manifest = json.loads((tmp_path / "a" / "model.json").read_text())
    manifest["architecture"]["student"] = "cot"
    (tmp_path / "a" / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="does not fit the architecture"):
        load_model(tmp_path / "a")


@pytest.mark.parametrize("field,value,message", [
    ("format_version", 99, "format version 99"),
    ("lineguard_version", "7.0.0", "written by lineguard 7.0.0"),
    ("format", "something-else", "not a lineguard model"),
])
def test_refuses_other_versions_and_formats(tmp_path, model, some_calibration, field, value,
                                             message):
    save_model(tmp_path / "m", model, some_calibration, {})
    manifest = json.loads((tmp_path / "m" / "model.json").read_text())
    manifest[field] = value
    (tmp_path / "m" / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match=message):
        read_manifest(tmp_path / "m")


def test_missing_model_names_its_path(tmp_path):
    with pytest.raises(ModelLoadError, match=re.escape(str(tmp_path / "nowhere" / "model.json"))):
        load_model(tmp_path / "nowhere")


def test_unknown_architecture_is_refused(tmp_path, model, some_calibration):
    save_model(tmp_path / "m", model, some_calibration, {})
    manifest = json.loads((tmp_path / "m" / "model.json").read_text())
    manifest["architecture"]["backbone"] = "vgg16"
    (tmp_path / "m" / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="does not describe a model"):
        load_model(tmp_path / "m")
