"""Ablation runner for docs/results.md: trains each configuration the same way and evaluates it.

Every row uses the same seed, epochs, image size and data. Map settings (fusion, smoothing)
are inference-only, so they are evaluated on each trained model without retraining.

    python benchmarks/ablation.py --data DATA --out runs/ablation [--device cuda] [--parallel 4]
"""

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.datasets import training_images
from detector.evaluation.report import evaluate
from detector.frames import fit_to_square, read_image
from detector.model import ModelConfig
from detector.model.anomaly_map import level_maps
from detector.store import load_model
from detector.training import TrainOptions, train
from shared.logging import configure_logging

TRAINED = {
    "cot+ema": dict(student="cot", teacher_norm="moving_average"),
    "cot+frozen": dict(student="cot", teacher_norm="frozen"),
    "residual+ema": dict(student="residual", teacher_norm="moving_average"),
    "residual+frozen": dict(student="residual", teacher_norm="frozen"),
    "symmetric+ema": dict(student="symmetric", teacher_norm="moving_average"),
    "symmetric+frozen": dict(student="symmetric", teacher_norm="frozen"),
    "cot+ema+pad": dict(student="cot", teacher_norm="moving_average", resize="pad"),
    "cot+ema+adam": dict(student="cot", teacher_norm="moving_average", optimizer="adam"),
}
MAP_SETTINGS = {
    "mean,s4": dict(fusion="mean", smoothing_sigma=4.0),
    "mean,s0": dict(fusion="mean", smoothing_sigma=0.0),
    "product,s4": dict(fusion="product", smoothing_sigma=4.0),
    # weights that equalise the levels' mean response on good images
    "weighted,s4": dict(fusion="weighted", smoothing_sigma=4.0),
    # the stride-16 level alone
    "level3,s4": dict(fusion="weighted", fusion_weights=(0.0, 0.0, 1.0), smoothing_sigma=4.0),
}


@torch.no_grad()
def level_balance_weights(model_dir: Path, data: Path, device: str, count: int = 64
                          ) -> tuple[float, float, float]:
    """Weights that give each level the same mean response on good training images."""
    model, manifest = load_model(model_dir)
    model.to(device)
    config = manifest.architecture
    paths = training_images(data)[:count]
    frames = torch.from_numpy(np.stack([fit_to_square(read_image(p), config.image_size,
                                                      config.resize) for p in paths]))
    means = []
    for start in range(0, len(frames), 16):
        x = model.normaliser(frames[start:start + 16].to(device))
        t, s = model.features(x)
        means.append(level_maps(t, s, tuple(x.shape[-2:])).mean(dim=(0, 2, 3)).cpu())
    inverse = 1.0 / torch.stack(means).mean(0)
    return tuple(float(w) for w in inverse / inverse.sum())


def run_one(name: str, args: argparse.Namespace) -> dict:
    configure_logging(json_output=True, level="info")
    if args.device.startswith("cuda"):
        torch.set_num_threads(2)  # several runs share the host's cores
    spec = dict(TRAINED[name])
    optimizer = spec.pop("optimizer", args.optimizer)
    config = ModelConfig(image_size=args.image_size, **spec)
    options = TrainOptions(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                           device=args.device, optimizer=optimizer,
                           teacher_weights=args.teacher_weights, limit=args.limit)
    model_dir = args.out / name
    started = time.monotonic()
    train(args.data, model_dir, config, options)
    train_seconds = time.monotonic() - started
    manifest = json.loads((model_dir / "model.json").read_text())
    row = {"name": name, "train_seconds": round(train_seconds, 1),
           "best_epoch": manifest["training"]["best_epoch"],
           "validation_loss": manifest["training"]["validation_loss"], "maps": {}}
    weights = level_balance_weights(model_dir, args.data, args.device)
    settings = MAP_SETTINGS if name == "cot+ema" or args.all_maps else {
        k: v for k, v in MAP_SETTINGS.items() if k in ("mean,s4", "product,s4")}
    for label, overrides in settings.items():
        overrides = dict(overrides)
        if overrides["fusion"] == "weighted" and "fusion_weights" not in overrides:
            overrides["fusion_weights"] = weights
        report = evaluate(model_dir, args.data, args.out / name / f"eval-{label}",
                          device=args.device, batch_size=32, heatmaps=0,
                          map_overrides=overrides, per_type=args.per_type)
        overall = report["overall"]
        row["maps"][label] = {k: overall.get(k) for k in
                              ("image_auroc", "pixel_auroc", "aupro_0.3", "image_f1_max")}
    row["level_weights"] = weights
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    parser.add_argument("--teacher-weights", type=Path, default=None)
    parser.add_argument("--all-maps", action="store_true")
    parser.add_argument("--summary", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--per-type", action="store_true", help="metrics per defect type too")
    parser.add_argument("--configs", nargs="*", default=list(TRAINED))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with ProcessPoolExecutor(args.parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_one, name, args): name for name in args.configs}
        for future in as_completed(futures):
            name = futures[future]
            try:
                rows.append(future.result())
            except Exception as error:  # one failed row must not lose the others
                rows.append({"name": name, "error": repr(error)})
                print(f"{name} failed: {error!r}", file=sys.stderr, flush=True)
            for path in {args.out / "ablation.json", args.summary or args.out / "ablation.json"}:
                path.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
