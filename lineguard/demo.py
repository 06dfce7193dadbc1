"""`lineguard demo`: train, evaluate and export a model on real images that install with the
package, then stream the labelled test images through the whole pipeline.

It trains on the ELPV solar cells (or an MVTec AD layout given with --data), reuses the model
from an earlier run with the same settings, runs broker, detector and alerting (lineguard/
demo_stream.py), and prints where everything went.
"""

import json
import time
from pathlib import Path

from shared.logging import get_logger

log = get_logger(__name__)

FULL = {"limit": 200, "image_size": 256, "epochs": 20}
SMALL = {"limit": 40, "image_size": 128, "epochs": 6}


def run_demo(out: Path, small: bool = False, data: Path | None = None, stream: bool = True) -> dict:
    from detector.datasets import export_elpv
    from detector.evaluation.report import evaluate
    from detector.export import export_onnx
    from detector.model import ModelConfig
    from detector.store import ModelLoadError, read_manifest
    from detector.training import TrainOptions, train

    size = SMALL if small else FULL
    started = time.monotonic()
    out = Path(out)
    if data is None:
        data = out / f"elpv-{size['limit']}"
        if not (data / "SOURCE.csv").is_file():
            log.info("writing ELPV images", out=str(data), per_folder=size["limit"])
            export_elpv(data, limit=size["limit"])
    config = ModelConfig(image_size=size["image_size"])
    model_dir = out / f"model-{data.name}-{size['image_size']}px-{size['epochs']}ep"
    try:
        manifest = read_manifest(model_dir)
        reuse = manifest.architecture == config
    except ModelLoadError:
        reuse = False
    if reuse:
        log.info("reusing the model trained before", model=str(model_dir))
    else:
        train(data, model_dir, config, TrainOptions(epochs=size["epochs"]))
    report = evaluate(model_dir, data, model_dir / "evaluation", heatmaps=8)
    onnx = export_onnx(model_dir)
    summary = {
        "model": str(model_dir), "report": str(model_dir / "evaluation" / "report.md"),
        "heatmaps": str(model_dir / "evaluation" / "heatmaps"), "onnx": onnx["onnx"],
        "image_auroc": round(report["overall"]["image_auroc"], 3),
    }
    if stream:
        from lineguard.demo_stream import stream_demo

        summary |= stream_demo(model_dir, data, out, small)
    summary["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(summary, indent=2))
    return summary
