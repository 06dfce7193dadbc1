"""GPU figures in one prepared run (for a lent CUDA machine, a few minutes in all):

    python benchmarks/gpu.py --out runs/bench-gpu          # on the GPU machine
    python benchmarks/gpu.py --out /tmp/x --quick --device cpu   # checks that it runs

Model alone for batch sizes 1 to 256 in float32, bfloat16 and float16; the students and
backbones side by side; JPEG decoding with torchvision.io.decode_jpeg on the GPU against
OpenCV on the CPU; the worker's decode-batch-infer path fed from memory. Writes bench.json and
prints the tables (same code as `lineguard bench`).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lineguard.bench import GPU, QUICK, run_bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-gpu"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    run_bench(args.out, ["model", "compare", "decode", "memory"], device=args.device,
              size=QUICK if args.quick else GPU)


if __name__ == "__main__":
    main()
