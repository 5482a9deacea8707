"""What litvision costs on top of plain PyTorch, on CIFAR-10 with LeNet (the real data in --data-dir):

python benchmarks/overhead.py [--repeats 3] [--data-dir ../shared/datasets]

1. a training epoch at batch size 256 through litvision's Trainer, against a plain PyTorch loop over the same
   in-memory batches (same data module, network, optimizer and normalization), side by side;
2. seconds from `python train.py` starting to its first training step, against importing torch and lightning;
3. the peak memory (max RSS) of a whole `python train.py experiment=cifar10_lenet_fast` run.
Medians of the repeats; the plain loop and litvision alternate so that noise hits both.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from litvision import hardware  # noqa: E402
from litvision.classifier import Normalize  # noqa: E402
from litvision.datamodule import ImageDataModule  # noqa: E402
from litvision.nets import LeNet  # noqa: E402

BATCH = 256


def plain_epoch_seconds(data_dir: Path) -> float:
    """The plain loop, in a fresh process as litvision's run is."""
    done = subprocess.run([sys.executable, __file__, f"--data-dir={data_dir}", "--plain"], env=_env(), check=True,
                          capture_output=True, text=True)
    return float(done.stdout.split()[-1])


def plain_loop(data_dir: Path, epochs: int = 2) -> float:
    """The loop the tutorial writes, over litvision's in-memory batches (its data module, decoded-data cache and
    normalization); the last epoch's seconds."""
    datamodule = ImageDataModule("cifar10", str(data_dir), batch_size=BATCH, mean=[0.5], std=[0.5],
                                 cache_dir=str(ROOT / "data" / "cache"))
    datamodule.setup()
    torch.manual_seed(0)
    net = LeNet(datamodule.input_shape, 10)
    normalize = Normalize(datamodule.mean, datamodule.std)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    for _ in range(epochs):
        start = time.perf_counter()
        for images, labels in datamodule.train_dataloader():
            optimizer.zero_grad()
            loss = F.cross_entropy(net(normalize(images)), labels)
            loss.backward()
            optimizer.step()
        seconds = time.perf_counter() - start
    return seconds


def litvision_epoch_seconds(data_dir: Path, epochs: int = 2) -> float:
    """The same epoch through `python train.py`: the Classifier and its metrics, the Trainer, the default callbacks
    but the progress bar, no validation; the last epoch's seconds."""
    with tempfile.TemporaryDirectory() as out:
        _train_py(data_dir, out, "data=cifar10", "model=lenet", "data.mean=[0.5]", "data.std=[0.5]",
                  f"data.batch_size={BATCH}", f"trainer.max_epochs={epochs}", "+trainer.limit_val_batches=0",
                  "test=false", "logger=none", "callbacks.progress_bar=null",
                  "+callbacks.timer._target_=probes.EpochSeconds", f"+callbacks.timer.path={out}/epoch")
        return float(Path(out, "epoch").read_text())


def _train_py(data_dir: Path, out: str, *overrides: str) -> None:
    subprocess.run([sys.executable, "train.py", f"paths.data_dir={data_dir}", f"hydra.run.dir={out}/run", *overrides],
                   cwd=ROOT, env=_env(), check=True, capture_output=True)


def _env() -> dict[str, str]:
    """benchmarks/ for the probes, and this checkout's src/ whatever litvision is installed."""
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'benchmarks'}{os.pathsep}{ROOT / 'src'}"}


def seconds_to_first_step(data_dir: Path) -> float:
    """Wall time from launching `python train.py` to its first training batch (the decoded-data cache is warm)."""
    with tempfile.TemporaryDirectory() as out:
        start = time.time()
        _train_py(data_dir, out, "experiment=cifar10_lenet_fast", "trainer.max_steps=1", "test=false", "logger=none",
                  "+callbacks.first_step._target_=probes.FirstStep", f"+callbacks.first_step.path={out}/first_step")
        return float(Path(out, "first_step").read_text()) - start


def import_seconds() -> float:
    """`import torch, lightning` alone, timed inside a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", "import time; t = time.time(); import torch, lightning; "
                           "print(time.time() - t)"], check=True, capture_output=True, text=True)
    return float(done.stdout)


def peak_memory_gb(data_dir: Path) -> float:
    """Max RSS of a whole run, as a fresh child process reports its largest child (getrusage)."""
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([sys.executable, "-c", (
            "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"),
            sys.executable, "train.py", "experiment=cifar10_lenet_fast", f"paths.data_dir={data_dir}",
            f"hydra.run.dir={out}/run"], cwd=ROOT, env=_env(), check=True, capture_output=True, text=True)
    return int(done.stdout.split()[-1]) / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("LITVISION_DATA_DIR",
                                                                             ROOT.parent / "shared" / "datasets")))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "overhead.json")
    parser.add_argument("--plain", action="store_true", help="only run the plain loop and print its epoch seconds")
    args = parser.parse_args()
    data_dir = args.data_dir.resolve()
    if args.plain:
        print(plain_loop(data_dir))
        return
    machine = hardware.record()
    print(hardware.summary(machine), flush=True)
    plain, lit, first, imports, memory = [], [], [], [], []
    for repeat in range(args.repeats):
        plain.append(plain_epoch_seconds(data_dir))
        lit.append(litvision_epoch_seconds(data_dir))
        first.append(seconds_to_first_step(data_dir))
        imports.append(import_seconds())
        memory.append(peak_memory_gb(data_dir))
        print(f"[{repeat + 1}/{args.repeats}] epoch: plain {plain[-1]:.2f} s, litvision {lit[-1]:.2f} s; first step "
              f"{first[-1]:.2f} s (imports {imports[-1]:.2f} s); peak memory {memory[-1]:.2f} GB", flush=True)
    result = {"epoch_seconds_plain": statistics.median(plain), "epoch_seconds_litvision": statistics.median(lit),
              "seconds_to_first_step": statistics.median(first), "import_seconds": statistics.median(imports),
              "peak_memory_gb": statistics.median(memory), "repeats": args.repeats, "batch_size": BATCH,
              "machine": machine}
    result["epoch_ratio"] = result["epoch_seconds_litvision"] / result["epoch_seconds_plain"]
    print(f"\nMedians of {args.repeats}: a training epoch (45,000 images, batch {BATCH}) takes "
          f"{result['epoch_seconds_plain']:.2f} s in a plain loop and {result['epoch_seconds_litvision']:.2f} s in "
          f"litvision ({result['epoch_ratio']:.3f}x); python train.py reaches its first step in "
          f"{result['seconds_to_first_step']:.2f} s (import torch, lightning: {result['import_seconds']:.2f} s); "
          f"peak memory of a run {result['peak_memory_gb']:.2f} GB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
