"""Side by side on the real datasets: the tutorial loop as published, and litvision's runs.

python benchmarks/run.py [--repeats 3] [--data-dir ../shared/datasets] [--out benchmarks/results] [--only NAME ...]
                         [--first-seed 0]

Repeats are interleaved (every run once, then again) so that a noisy neighbour hurts all runs alike. Prints a table
of medians (images/s, training seconds, test accuracy, ratios to the tutorial loop on the same data) and writes
results.json and time_to_accuracy.png (test accuracy after each epoch against training seconds) into --out.
Training seconds leave out start-up, the test run and the per-epoch test evaluations drawn in the plot; for
litvision they include validation and tune=epochs' timing. The machine (CPU model, cores, AMX, the GPU) and its
peak measured in the same run (litvision.hardware.record) head the output and results.json; litvision's training
throughput is also given in FLOP/s (a training step's FLOPs counted with FlopCounterMode, times images/s) and as a
fraction of the measured convolution peak in the precision the run used.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from litvision import hardware  # noqa: E402


@dataclass
class Entry:
    name: str
    dataset: str  # the tutorial loop on the same dataset is the reference
    overrides: list[str] = field(default_factory=list)  # train.py overrides; empty: the tutorial loop itself
    target: tuple[float, float] | None = None  # (training seconds, test accuracy): what the run must reach, plotted

    @property
    def reference(self) -> bool:
        return not self.overrides


ENTRIES = [
    Entry("tutorial loop (CIFAR-10)", "cifar10"),
    Entry("tutorial_cifar10", "cifar10", ["experiment=tutorial_cifar10"]),
    Entry("cifar10_lenet_fast", "cifar10", ["experiment=cifar10_lenet_fast"]),
    Entry("cifar10_lenet_fast, 15 epochs, crop+flip", "cifar10",
          ["experiment=cifar10_lenet_fast", "trainer.max_epochs=15", "data.crop_padding=4", "data.flip=true"]),
    Entry("tutorial loop (MNIST)", "mnist"),
    Entry("tutorial_mnist", "mnist", ["experiment=tutorial_mnist"]),
    Entry("mnist_mlp_fast", "mnist", ["experiment=mnist_mlp_fast"]),
    Entry("mnist_cnn_fast", "mnist", ["experiment=mnist_cnn_fast"]),
]
LADDER = [  # CIFAR-10 accuracy ladder (README, Models): not in the default run, name them with --only
    Entry("cifar10_ladder_5min", "cifar10", ["experiment=cifar10_ladder_5min"], target=(300, 0.85)),
    Entry("cifar10_ladder_15min", "cifar10", ["experiment=cifar10_ladder_15min"], target=(900, 0.90)),
    Entry("cifar10_airbench", "cifar10", ["experiment=cifar10_airbench"]),
]


def run_tutorial_loop(entry: Entry, data_dir: Path, seed: int) -> dict:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tutorial_loop.py"), entry.dataset, str(data_dir),
                           f"--seed={seed}"], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"train_seconds": result["train_seconds"], "images": result["images"], "test_acc": result["test_acc"],
            "curve": result["curve"]}


def run_litvision(entry: Entry, data_dir: Path, seed: int, run_dir: Path, extra: list[str]) -> dict:
    command = [sys.executable, "train.py", *entry.overrides, f"seed={seed}", f"paths.data_dir={data_dir}",
               f"hydra.run.dir={run_dir}", "logger=none", "callbacks.progress_bar=null",
               "+callbacks.curve._target_=probes.TestAccuracyCurve", f"+callbacks.curve.path={run_dir / 'curve.json'}",
               "+callbacks.flops._target_=probes.StepFlops", f"+callbacks.flops.path={run_dir / 'flops.json'}", *extra]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'benchmarks'}{os.pathsep}{ROOT / 'src'}"}  # this checkout's code
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    curve = json.loads((run_dir / "curve.json").read_text())
    epochs = len(curve["points"])
    flops = json.loads((run_dir / "flops.json").read_text())["flops_per_image"]
    seconds = metrics["seconds"]  # tune=epochs' timing counts as training
    return {"train_seconds": seconds["fit"] + seconds.get("tune", 0) - curve["eval_seconds"],
            "images": epochs * metrics["images"]["train"], "test_acc": metrics["accuracy"], "curve": curve["points"],
            "flops_per_image": flops, "precision": metrics["precision"], "channels_last": metrics["channels_last"]}


def summarize(entries: list[Entry], runs: list[dict], peak: dict[str, float]) -> list[dict]:
    rows = []
    for entry in entries:
        mine = [r for r in runs if r["name"] == entry.name]
        row = {"name": entry.name, "dataset": entry.dataset, "overrides": entry.overrides, "repeats": len(mine)}
        for key in ("train_seconds", "images_per_second", "test_acc"):
            row[key] = statistics.median(r[key] for r in mine)
        if "flops_per_image" in mine[0]:
            row["precision"], row["channels_last"] = mine[0]["precision"], mine[0]["channels_last"]
            row["tflops"] = statistics.median(r["flops_per_image"] * r["images_per_second"] for r in mine) / 1e12
            dtype = "bf16" if "bf16" in row["precision"] else "float32"
            row["peak_fraction"] = 1000 * row["tflops"] / peak[f"conv_{dtype}"]
        rows.append(row)
    for row in rows:
        ref = next((r for r in rows if r["dataset"] == row["dataset"] and not r["overrides"]), None)
        if ref:
            row["time_vs_tutorial"] = row["train_seconds"] / ref["train_seconds"]
            row["speed_vs_tutorial"] = row["images_per_second"] / ref["images_per_second"]
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| run | data | precision | images/s | TFLOP/s | of conv peak | train s | test acc | time / tutorial's "
             "| images/s / tutorial's |", "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        ratios = (f"{r['time_vs_tutorial']:.3f} | {r['speed_vs_tutorial']:.2f}x" if "time_vs_tutorial" in r
                  else "- | -")
        flops = (f"{r['precision']}{' + NHWC' if r['channels_last'] else ''} | {r['images_per_second']:,.0f} | "
                 f"{r['tflops']:.3f} | {100 * r['peak_fraction']:.0f}%" if "tflops" in r
                 else f"float32 | {r['images_per_second']:,.0f} | - | -")
        lines.append(f"| {r['name']} | {r['dataset']} | {flops} | {r['train_seconds']:.1f} | "
                     f"{100 * r['test_acc']:.2f}% | {ratios} |")
    return "\n".join(lines)


def plot(entries: list[Entry], runs: list[dict], path: Path) -> None:
    """Test accuracy after each epoch against training seconds: every run thin, the median of the runs (epoch by
    epoch: the median seconds and accuracy) bold, the entries' targets as dotted lines; plain tick labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    datasets = sorted({e.dataset for e in entries})
    fig, axes = plt.subplots(1, len(datasets), figsize=(7.0 * len(datasets), 4.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        repeats = 0
        for k, entry in enumerate(e for e in entries if e.dataset == dataset):
            mine = [r for r in runs if r["name"] == entry.name and r.get("curve")]
            if not mine:
                continue
            repeats = max(repeats, len(mine))
            colour = f"C{k}"
            for run in mine:
                seconds, accuracy = zip(*run["curve"])
                ax.plot(seconds, [100 * a for a in accuracy], "-", color=colour, alpha=0.3, linewidth=1)
            epochs = min(len(run["curve"]) for run in mine)
            median = [(statistics.median(run["curve"][i][0] for run in mine),
                       100 * statistics.median(run["curve"][i][1] for run in mine)) for i in range(epochs)]
            ax.plot(*zip(*median), "o-" if entry.overrides else "s--", color=colour, label=entry.name)
            if entry.target:
                seconds, accuracy = entry.target
                ax.axhline(100 * accuracy, color=colour, linestyle=":", linewidth=1.2)
                ax.axvline(seconds, color=colour, linestyle=":", linewidth=1.2)
                ax.annotate(f"target: {100 * accuracy:g}% within {seconds / 60:g} min", (0, 100 * accuracy),
                            textcoords="offset points", xytext=(4, 3), ha="left", fontsize=9, color=colour)
        targets = [100 * e.target[1] for e in entries if e.dataset == dataset and e.target]
        if targets:  # room above the highest target line for its label
            ax.set_ylim(top=max(ax.get_ylim()[1], max(targets) + 2.5))
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.yaxis.set_major_formatter(plain)
        ax.set_xlim(left=0)
        ax.set_xlabel("training seconds")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{'CIFAR-10' if dataset == 'cifar10' else 'MNIST'}: test accuracy after each epoch (median of "
                     f"{repeats} run{'s' if repeats > 1 else ''} bold)", fontsize=11)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=9, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("LITVISION_DATA_DIR",
                                                                             ROOT.parent / "shared" / "datasets")))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--only", nargs="*", help="run names to keep (default: all but the CIFAR-10 ladder)")
    parser.add_argument("--override", nargs="*", default=[], help="extra train.py overrides for every litvision run")
    parser.add_argument("--first-seed", type=int, default=0, help="repeat r runs with seed first_seed + r")
    parser.add_argument("--plot", action="store_true", help="only draw --out's time_to_accuracy.png again from its "
                        "results.json")
    args = parser.parse_args()
    entries = [e for e in ENTRIES + LADDER if e.name in args.only] if args.only else ENTRIES
    if args.plot:  # a run named "ENTRY, a note" (results put together by hand) is drawn with ENTRY's target
        runs = json.loads((args.out / "results.json").read_text())["runs"]
        known = {e.name: e for e in ENTRIES + LADDER}
        names = list(dict.fromkeys(run["name"] for run in runs))
        plot([known.get(name) or Entry(name, known[name.split(",")[0]].dataset, ["(by hand)"],
                                       known[name.split(",")[0]].target) for name in names],
             runs, args.out / "time_to_accuracy.png")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    machine = hardware.record(seconds=1.0)
    print(hardware.summary(machine), flush=True)
    runs = []
    for repeat in range(args.repeats):
        for entry in entries:
            run_dir = args.out / "runs" / f"{entry.name.split(',')[0].replace(' ', '_')}-{len(runs)}"
            seed = args.first_seed + repeat
            result = (run_tutorial_loop(entry, args.data_dir, seed) if entry.reference else
                      run_litvision(entry, args.data_dir.resolve(), seed, run_dir.resolve(), args.override))
            result |= {"name": entry.name, "repeat": repeat, "seed": seed,
                       "images_per_second": result["images"] / result["train_seconds"]}
            runs.append(result)
            print(f"[{repeat + 1}/{args.repeats}] {entry.name}: {result['train_seconds']:.1f} s, "
                  f"{result['images_per_second']:,.0f} images/s, test acc {100 * result['test_acc']:.2f}%", flush=True)
    rows = summarize(entries, runs, machine["peak_gflops"])
    print(f"\n{hardware.summary(machine)}\nMedians of {args.repeats} runs each:\n\n{table(rows)}")
    (args.out / "results.json").write_text(json.dumps(
        {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine,
         "summary": rows, "runs": runs}, indent=2))
    plot(entries, runs, args.out / "time_to_accuracy.png")
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'time_to_accuracy.png'}")


if __name__ == "__main__":
    main()
