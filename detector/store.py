"""The model directory: weights in safetensors plus model.json; loading never unpickles."""

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from detector.calibration import Calibration
from detector.model import ModelConfig, TeacherStudent
from lineguard import __version__

WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "model.json"
FORMAT = "lineguard-model"
FORMAT_VERSION = 1


class ModelLoadError(RuntimeError):
    """A model directory that is missing, damaged, or written for another architecture/version."""


class ModelManifest(BaseModel):
    """model.json: what the weights are, how to feed them, and how to read their scores."""

    model_config = ConfigDict(extra="forbid")

    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    lineguard_version: str = __version__
    model_id: str
    architecture: ModelConfig
    calibration: Calibration
    training: dict[str, Any]
    weights_sha256: str


def save_model(directory: Path, model: TeacherStudent, calibration: Calibration,
               training: dict[str, Any], model_id: str | None = None) -> ModelManifest:
    """Write weights and manifest atomically (temporary files renamed into place)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights_tmp = directory / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(weights_tmp), metadata={"format": FORMAT})
    digest = _sha256(weights_tmp)
    manifest = ModelManifest(
        model_id=model_id or f"{directory.name}-{digest[:12]}",
        architecture=model.config, calibration=calibration, training=training,
        weights_sha256=digest,
    )
    manifest_tmp = directory / (MANIFEST_FILE + ".tmp")
    manifest_tmp.write_text(manifest.model_dump_json(indent=2) + "\n")
    os.replace(weights_tmp, directory / WEIGHTS_FILE)
    os.replace(manifest_tmp, directory / MANIFEST_FILE)
    return manifest


def read_manifest(directory: Path) -> ModelManifest:
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise ModelLoadError(f"no model at {directory}: {path} not found")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"cannot read {path}: {error}") from error
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ModelLoadError(f"{path} is not a lineguard model manifest")
    if raw.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(
            f"{path} has model format version {raw.get('format_version')}, this lineguard "
            f"({__version__}) reads version {FORMAT_VERSION}: retrain or convert the model")
    written_by = str(raw.get("lineguard_version", "?"))
    if written_by.split(".")[:2] != __version__.split(".")[:2]:
        raise ModelLoadError(f"{path} was written by lineguard {written_by}; this is {__version__}"
                             " and reads models of the same minor version only")
    try:
        return ModelManifest.model_validate(raw)
    except ValueError as error:
        raise ModelLoadError(f"{path} does not describe a model this lineguard can build: "
                             f"{error}") from error


def load_model(directory: Path) -> tuple[TeacherStudent, ModelManifest]:
    """Rebuild the network from model.json and load its weights strictly, in eval mode."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelLoadError(f"model weights not found: {weights}")
    if _sha256(weights) != manifest.weights_sha256:
        raise ModelLoadError(f"{weights} does not match {directory / MANIFEST_FILE} "
                             "(checksum differs): the files come from different models")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelLoadError(f"{weights} is not a safetensors file: {error}") from error
    model = TeacherStudent(manifest.architecture)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise ModelLoadError(
            f"{weights} does not fit the architecture in {MANIFEST_FILE} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]})")
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, manifest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
