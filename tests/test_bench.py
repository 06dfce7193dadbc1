"""`lineguard bench --quick` and the GPU script run end to end and write their figures (no
timing is asserted: figures live in docs/benchmarks.md)."""

import json
import subprocess
import sys
from pathlib import Path

from lineguard.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_quick_bench_runs_every_part(tmp_path, redis_url, capsys):
    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    assert {row["batch"] for row in result["model"]} == {1, 4}
    assert all(row["frames_per_s"] > 0 for row in result["model"] + result["compare"])
    names = {row["model"] for row in result["compare"]}
    assert {"cot / efficientnet-lite0", "symmetric / efficientnet-lite0", "cot / resnet18"} <= names
    pipeline = result["pipeline"]
    assert pipeline["saturation"]["inspected"] == pipeline["saturation"]["frames"]
    assert pipeline["pipeline_over_model"] > 0 and len(pipeline["model_alone_before_after"]) == 2
    assert pipeline["half_load"]["capture_to_inspection"]["count"] > 0
    assert [row["inspected"] for row in result["sizes"]] == [row["frames"] for row in result["sizes"]]
    assert [row["workers"] for row in result["workers"]] == [1, 2]
    assert result["decode"]["opencv_cpu_frames_per_s"] > 0
    assert "| precision | batch |" in capsys.readouterr().out
    import redis

    assert not list(redis.Redis.from_url(redis_url).scan_iter(match="lineguard-bench-*"))


def test_gpu_script_runs_on_the_cpu(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--quick",
                           "--device", "cpu", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "bench.json").read_text())
    assert set(result) >= {"model", "compare", "decode", "memory"}
