"""CPU inference in float32 vs bfloat16 autocast (channels-last): speed ratio and score drift.

    python benchmarks/precision.py MODEL_DIR DATA [--batch 16] [--repeats 5]

Both precisions run in the same process on the same frames, alternating, so the ratio holds
on a noisy machine even when the absolute figures do not.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.datasets import test_images
from detector.frames import read_image
from detector.inference import Inspector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frames", type=int, default=64)
    args = parser.parse_args()

    items = test_images(args.data)
    step = max(1, len(items) // args.frames)
    frames = [read_image(item.path) for item in items[::step][: args.frames]]
    inspectors = {p: Inspector.from_directory(args.model, "cpu", p) for p in ("float32", "bfloat16")}
    prepared = inspectors["float32"].prepare(frames)
    scores = {p: np.concatenate([inspectors[p].inspect_prepared(prepared[i:i + args.batch]).scores
                                 for i in range(0, len(prepared), args.batch)])
              for p in inspectors}
    times: dict[str, list[float]] = {p: [] for p in inspectors}
    for _ in range(args.repeats):
        for precision, inspector in inspectors.items():
            started = time.perf_counter()
            inspector.inspect_prepared(prepared[: args.batch])
            times[precision].append(time.perf_counter() - started)
    best = {p: min(t) for p, t in times.items()}
    drift = np.abs(scores["bfloat16"] - scores["float32"]) / np.abs(scores["float32"])
    rank_agreement = float(np.corrcoef(np.argsort(np.argsort(scores["float32"])),
                                       np.argsort(np.argsort(scores["bfloat16"])))[0, 1])
    result = {
        "threads": torch.get_num_threads(), "batch": args.batch, "frames": len(frames),
        "float32_frames_per_s": args.batch / best["float32"],
        "bfloat16_frames_per_s": args.batch / best["bfloat16"],
        "speedup": best["float32"] / best["bfloat16"],
        "score_relative_drift_median": float(np.median(drift)),
        "score_relative_drift_max": float(drift.max()),
        "score_rank_correlation": rank_agreement,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
