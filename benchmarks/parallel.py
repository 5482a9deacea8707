"""Sweeps and DDP on this machine's cores, on the real MNIST in --data-dir:

python benchmarks/parallel.py [--repeats 3] [--data-dir ../shared/datasets]

1. a 2-job grid sweep (LeNet at two learning rates, 2 epochs each) with hydra/launcher=joblib (2 processes)
   against the same sweep one job at a time (Hydra's basic launcher): wall seconds of the whole `train.py -m`;
2. an epoch of experiment=mnist_cnn_fast with trainer=ddp_cpu (2 processes over gloo, each half the data and
   half the cores) against trainer=cpu (1 process): seconds of the second epoch (the first pays start-up).
Medians of the repeats; the two sides alternate so that the machine's noise hits both.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from overhead import _env  # noqa: E402

from litvision import hardware  # noqa: E402


def sweep_seconds(data_dir: Path, launcher: str) -> float:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, "train.py", "-m", f"hydra/launcher={launcher}", "data=mnist", "model=lenet",
                        "optimizer.lr=0.05,0.01", "trainer.max_epochs=2", f"paths.data_dir={data_dir}",
                        f"hydra.sweep.dir={out}/sweep", "callbacks.progress_bar=null"],
                       cwd=ROOT, env=_env(), check=True, capture_output=True)
        return time.perf_counter() - start


def epoch_seconds(data_dir: Path, trainer: str) -> tuple[float, float]:
    """(seconds of the second epoch, test accuracy)."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "train.py", "experiment=mnist_cnn_fast", f"trainer={trainer}",
                        "trainer.max_epochs=2", f"paths.data_dir={data_dir}", f"hydra.run.dir={out}/run",
                        "callbacks.progress_bar=null", "+callbacks.timer._target_=probes.EpochSeconds",
                        f"+callbacks.timer.path={out}/epoch"], cwd=ROOT, env=_env(), check=True, capture_output=True)
        accuracy = json.loads(Path(out, "run", "metrics.json").read_text())["accuracy"]
        return float(Path(out, "epoch").read_text()), accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "parallel.json")
    args = parser.parse_args()
    data_dir = args.data_dir.resolve()
    machine = hardware.record()
    print(hardware.summary(machine), flush=True)
    times: dict[str, list] = {"sweep, one job at a time (basic)": [], "sweep, 2 processes (joblib)": [],
                              "epoch, 1 process (cpu)": [], "epoch, 2 processes (ddp_cpu)": []}
    for _ in range(args.repeats):
        times["sweep, one job at a time (basic)"].append(sweep_seconds(data_dir, "basic"))
        times["sweep, 2 processes (joblib)"].append(sweep_seconds(data_dir, "joblib"))
        times["epoch, 1 process (cpu)"].append(epoch_seconds(data_dir, "cpu"))
        times["epoch, 2 processes (ddp_cpu)"].append(epoch_seconds(data_dir, "ddp_cpu"))
    results: dict = {"machine": machine}
    for name, runs in times.items():
        seconds = [r[0] if isinstance(r, tuple) else r for r in runs]
        results[name] = {"median_seconds": statistics.median(seconds), "seconds": seconds}
        if isinstance(runs[0], tuple):
            results[name]["test_accuracy"] = [r[1] for r in runs]
        print(f"{name:34s} {statistics.median(seconds):7.2f} s   (runs: {', '.join(f'{s:.2f}' for s in seconds)})"
              + (f"   test acc {', '.join(f'{100 * r[1]:.2f}%' for r in runs)}" if isinstance(runs[0], tuple) else ""))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
