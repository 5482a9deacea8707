"""A smoke run of the benchmark script on the fixtures: it runs both sides, and writes its table, JSON and plot."""

import json
import subprocess
import sys

from conftest import FIXTURES, ROOT


def test_benchmark_runs_both_sides_and_reports(tmp_path):
    done = subprocess.run(
        [sys.executable, "benchmarks/run.py", f"--data-dir={FIXTURES}", "--repeats=1", f"--out={tmp_path}",
         "--only", "tutorial loop (MNIST)", "mnist_mlp_fast", "--override", "data.val_size=0.2"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| tutorial loop (MNIST) | mnist |" in done.stdout and "| mnist_mlp_fast | mnist |" in done.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    fast = next(row for row in results["summary"] if row["name"] == "mnist_mlp_fast")
    assert fast["repeats"] == 1 and fast["images_per_second"] > 0 and 0 < fast["test_acc"] <= 1
    assert fast["speed_vs_tutorial"] > 0
    # the machine and its peak measured in the same run; throughput in FLOP/s and as a fraction of that peak
    machine = results["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and isinstance(machine["amx"], bool)
    assert set(machine["peak_gflops"]) == {f"{op}_{dtype}" for op in ("matmul", "conv") for dtype in ("float32", "bf16")}
    assert fast["tflops"] > 0 and 0 < fast["peak_fraction"] < 1.5 and fast["precision"] in ("32-true", "bf16-mixed")
    assert "measured peak GFLOP/s" in done.stdout and "| TFLOP/s | of conv peak |" in done.stdout
    run = next(r for r in results["runs"] if r["name"] == "mnist_mlp_fast")
    assert len(run["curve"]) == 12  # one test accuracy per epoch of the recipe
    assert (tmp_path / "time_to_accuracy.png").stat().st_size > 10_000
