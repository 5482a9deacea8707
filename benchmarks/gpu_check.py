"""On a machine with a CUDA GPU, in under 8 minutes: the GPU tests (`pytest -m gpu`), then the ladder's experiments
and cifar10_airbench on the GPU. Prints the GPU, its measured bf16 and float32 matmul and conv rates, the tests' outcome and
each run's test accuracy and training seconds.

python benchmarks/gpu_check.py [--data-dir ../shared/datasets] [--out benchmarks/results/gpu.json] [--budget 470]"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "src"))
from litvision import hardware  # noqa: E402

EXPERIMENTS = ("cifar10_ladder_5min", "cifar10_ladder_15min", "cifar10_airbench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("LITVISION_DATA_DIR",
                                                                             ROOT.parent / "shared" / "datasets")))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--budget", type=float, default=470, help="seconds for everything")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run this on a machine with one (torch.cuda.is_available() is False)")
    deadline = time.monotonic() + args.budget
    gpu = hardware.record()  # the GPU, its capability, and its matmul and conv peak measured now
    print(hardware.summary(gpu), flush=True)
    start = time.perf_counter()
    tests = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"], cwd=ROOT,
                           capture_output=True, text=True, timeout=max(60, deadline - time.monotonic()))
    summary = (tests.stdout.strip().splitlines() or [""])[-1]
    print(f"pytest -m gpu: exit {tests.returncode}, {summary} ({time.perf_counter() - start:.0f} s)", flush=True)
    runs = []
    with tempfile.TemporaryDirectory() as work:
        for experiment in EXPERIMENTS:
            left = deadline - time.monotonic()
            if left < 60:
                runs.append({"experiment": experiment, "skipped": "out of time"})
                print(f"{experiment}: skipped, {left:.0f} s left", flush=True)
                continue
            folder = Path(work) / experiment
            command = [sys.executable, "train.py", f"experiment={experiment}", "trainer=gpu",
                       f"paths.data_dir={args.data_dir.resolve()}", f"paths.cache_dir={Path(work) / 'cache'}",
                       "logger=none", "callbacks.progress_bar=null", f"hydra.run.dir={folder}"]
            try:
                done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=left)
            except subprocess.TimeoutExpired:
                runs.append({"experiment": experiment, "error": f"over the budget ({left:.0f} s)"})
                continue
            if done.returncode or not (folder / "metrics.json").is_file():
                runs.append({"experiment": experiment, "error": (done.stdout + done.stderr)[-500:]})
            else:
                result = json.loads((folder / "metrics.json").read_text())
                runs.append({"experiment": experiment, "test_acc": result["accuracy"],
                             "train_seconds": result["seconds"]["fit"], "precision": result["precision"],
                             "accelerator": result["accelerator"]})
            print(runs[-1], flush=True)
    if args.out:
        args.out.write_text(json.dumps({"gpu": gpu, "tests": {"exit": tests.returncode, "summary": summary},
                                        "runs": runs}, indent=2))
    failed = tests.returncode != 0 or any("error" in run for run in runs)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
