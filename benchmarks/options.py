"""Memory format, precision and compilation, measured: the seconds of a training epoch at batch size 256.

python benchmarks/options.py [--repeats 3] [--data-dir ../shared/datasets] [--models "AirNet, CIFAR-10" ...] [--variants ...]

LeNet on CIFAR-10, the small ConvNet on MNIST and the ladder's AirNet on CIFAR-10, each in float32 (NCHW), channels_last, bf16 mixed precision,
both, and torch.compile. Each run trains 2 epochs of 80 batches without validation; the second epoch is timed, so
compilation and warm-up are left out. Prints the median epoch seconds and the speed-up over float32.
"""

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from overhead import ROOT, _train_py

BATCHES = 80  # batches per timed epoch (20,480 images)
MODELS = {"LeNet, CIFAR-10": ["data=cifar10", "model=lenet"], "ConvNet, MNIST": ["data=mnist", "model=convnet"],
          "AirNet, CIFAR-10": ["data=cifar10", "model=airnet"]}
F32, NCHW = "trainer.precision=32-true", "classifier.channels_last=false"
VARIANTS = {
    "float32": [F32, NCHW],
    "channels_last": [F32, "classifier.channels_last=true"],
    "bf16-mixed": ["trainer.precision=bf16-mixed", NCHW],
    "bf16-mixed + channels_last": ["trainer.precision=bf16-mixed", "classifier.channels_last=true"],
    "torch.compile": [F32, NCHW, "classifier.compile=true"],
    "auto": [],  # what trainer.precision=auto and classifier.channels_last=auto choose here
}


def epoch_seconds(data_dir: Path, overrides: list[str]) -> float:
    with tempfile.TemporaryDirectory() as out:
        _train_py(data_dir, out, *overrides, "data.batch_size=256", "trainer.max_epochs=2",
                  f"+trainer.limit_train_batches={BATCHES}", "+trainer.limit_val_batches=0", "test=false", "logger=none", "callbacks.progress_bar=null",
                  "callbacks.model_checkpoint=null", "callbacks.last_checkpoint=null",
                  "+callbacks.timer._target_=probes.EpochSeconds", f"+callbacks.timer.path={out}/epoch")
        return float(Path(out, "epoch").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("LITVISION_DATA_DIR",
                                                                             ROOT.parent / "shared" / "datasets")))
    parser.add_argument("--models", nargs="*", default=list(MODELS), help=f"some of {list(MODELS)}")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), help=f"some of {list(VARIANTS)}")
    args = parser.parse_args()
    seconds = {(m, v): [] for m in args.models for v in args.variants}
    for repeat in range(args.repeats):
        for (model, variant), runs in seconds.items():
            runs.append(epoch_seconds(args.data_dir.resolve(), MODELS[model] + VARIANTS[variant]))
            print(f"[{repeat + 1}/{args.repeats}] {model}, {variant}: {runs[-1]:.2f} s", flush=True)
    print(f"\n| network, data | setting | epoch seconds (median of {args.repeats}) | speed-up over float32 |")
    print("| --- | --- | ---: | ---: |")
    for (model, variant), runs in seconds.items():
        base = seconds.get((model, "float32"))  # the speed-up needs float32 among the variants
        speedup = f"{statistics.median(base) / statistics.median(runs):.2f}x" if base else "-"
        print(f"| {model} | {variant} | {statistics.median(runs):.2f} | {speedup} |")


if __name__ == "__main__":
    main()
