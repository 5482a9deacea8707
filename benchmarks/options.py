"""Memory format, precision and compilation, measured: the seconds of a training epoch at batch size 256.

python benchmarks/options.py [--repeats 3] [--data-dir ../shared/datasets] [--models "AirNet, CIFAR-10" ...] [--variants ...]

LeNet on CIFAR-10, the small ConvNet on MNIST and the ladder's AirNet on CIFAR-10, each in float32 (NCHW), channels_last, bf16 mixed precision,
both, torch.compile, and what `auto` picks here. Each run trains 2 epochs of 80 batches without validation; the
second epoch is timed, so compilation and warm-up are left out. Prints the machine and its measured peak, the
median epoch seconds, the speed-up over float32, and the training FLOP/s (FlopCounterMode) and their fraction of
the convolution peak in the precision that ran.
"""

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from overhead import ROOT, _train_py

from litvision import hardware

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


def epoch_seconds(data_dir: Path, overrides: list[str]) -> tuple[float, float, str]:
    """The timed epoch's seconds, FLOPs per training image (probes.StepFlops) and the precision that ran."""
    with tempfile.TemporaryDirectory() as out:
        _train_py(data_dir, out, *overrides, "data.batch_size=256", "trainer.max_epochs=2",
                  f"+trainer.limit_train_batches={BATCHES}", "+trainer.limit_val_batches=0", "test=false",
                  "logger=none", "callbacks.progress_bar=null", "callbacks.model_checkpoint=null",
                  "callbacks.last_checkpoint=null", "callbacks.figures=null",
                  "+callbacks.timer._target_=probes.EpochSeconds", f"+callbacks.timer.path={out}/epoch",
                  "+callbacks.flops._target_=probes.StepFlops", f"+callbacks.flops.path={out}/flops.json")
        flops = json.loads(Path(out, "flops.json").read_text())["flops_per_image"]
        precision = json.loads(Path(out, "run", "metrics.json").read_text())["precision"]  # what ran
        return float(Path(out, "epoch").read_text()), flops, precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("LITVISION_DATA_DIR",
                                                                             ROOT.parent / "shared" / "datasets")))
    parser.add_argument("--models", nargs="*", default=list(MODELS), help=f"some of {list(MODELS)}")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), help=f"some of {list(VARIANTS)}")
    args = parser.parse_args()
    machine = hardware.record()
    print(hardware.summary(machine), flush=True)
    runs = {(m, v): [] for m in args.models for v in args.variants}
    for repeat in range(args.repeats):
        for (model, variant), done in runs.items():
            done.append(epoch_seconds(args.data_dir.resolve(), MODELS[model] + VARIANTS[variant]))
            print(f"[{repeat + 1}/{args.repeats}] {model}, {variant}: {done[-1][0]:.2f} s ({done[-1][2]})", flush=True)
    print(f"\n{hardware.summary(machine)}\n\n| network, data | setting | precision that ran | epoch seconds (median of "
          f"{args.repeats}) | speed-up over float32 | TFLOP/s | of conv peak |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for (model, variant), done in runs.items():
        seconds = statistics.median(r[0] for r in done)
        base = runs.get((model, "float32"))  # the speed-up needs float32 among the variants
        speedup = f"{statistics.median(r[0] for r in base) / seconds:.2f}x" if base else "-"
        tflops = done[0][1] * BATCHES * 256 / seconds / 1e12
        peak = machine["peak_gflops"]["conv_bf16" if "bf16" in done[0][2] else "conv_float32"] / 1000
        print(f"| {model} | {variant} | {done[0][2]} | {seconds:.2f} | {speedup} | {tflops:.3f} | {tflops / peak:.0%} |")

if __name__ == "__main__":
    main()
