"""Fine-tuning at photo size, measured: experiment=finetune_photos (a torchvision ResNet-18 at 128 px, the head
alone first, then the whole network with a lower lr for the backbone) against the same network trained from
scratch for as long, on CIFAR-10 upscaled to 128 px.

python benchmarks/finetune.py [--per-class 1000] [--pretrain-epochs 8] [--epochs 6] [--data-dir ../shared/datasets]

No pretrained weights can be downloaded here, so the weights come from a file this script makes the way a user's
would be made: ResNet-18 trained on five CIFAR-10 classes (plane, car, bird, cat, deer), its state dict saved with
torch.save. Both runs then learn the other five (dog, frog, horse, ship, truck), PER_CLASS training images each,
tested on 1,000 test images of each. Prints seconds and test accuracy per run and the machine.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from litvision import hardware  # noqa: E402

SOURCE = ["airplane", "automobile", "bird", "cat", "deer"]
TARGET = ["dog", "frog", "horse", "ship", "truck"]


def subset(data_dir: Path, work: Path, classes: list[str], per_class: int) -> Path:
    """An image folder of links to the first per_class training and all test images of `classes`."""
    root = work / "-".join(c[:3] for c in classes)
    for split, count in (("train", per_class), ("test", 1000)):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for path in sorted((data_dir / "cifar10-jpeg" / split / name).glob("*.jpg"))[:count]:
                if not (folder / path.name).exists():
                    (folder / path.name).symlink_to(path)
    return root


def train(name: str, work: Path, *overrides: str) -> dict:
    run = work / "runs" / re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    command = [sys.executable, "train.py", f"hydra.run.dir={run}", f"paths.cache_dir={work / 'cache'}",
               "data.val_size=0", "callbacks.model_checkpoint.monitor=null", "logger=none",
               "callbacks.progress_bar=null", "callbacks.figures=null", *overrides]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    metrics = json.loads((run / "metrics.json").read_text())
    result = {"run": name, "seconds_fit": metrics["seconds"]["fit"], "test_acc": metrics["accuracy"],
              "precision": metrics["precision"], "wall_seconds": time.perf_counter() - start,
              "checkpoint": metrics["checkpoint"]}
    print(f"{name}: fit {result['seconds_fit']:.0f} s, test accuracy {100 * result['test_acc']:.2f}% "
          f"({metrics['precision']})", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--pretrain-epochs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("LITVISION_DATA_DIR",
                                                                             ROOT.parent / "shared" / "datasets")))
    parser.add_argument("--work", type=Path, default=Path("/tmp/litvision-finetune"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "finetune.json")
    args = parser.parse_args()
    machine = hardware.record()
    print(hardware.summary(machine), flush=True)
    source, target = (subset(args.data_dir.resolve(), args.work, classes, args.per_class) for classes in (SOURCE, TARGET))
    photos = ["data=image_folder", "data.image_size=128", "model=torchvision", "model.name=resnet18"]
    pretrained = train("pretrain (5 source classes)", args.work, *photos, f"data.root={source}", "model.weights=null",
                       "data.flip=true", "data.augment=photo", "optimizer=adam", f"trainer.max_epochs={args.pretrain_epochs}")
    state = torch.load(pretrained["checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    weights = args.work / "resnet18_source.pth"  # the torchvision model's own keys, as torchvision's files have
    torch.save({key.removeprefix("net.net."): value for key, value in state.items() if key.startswith("net.net.")},
               weights)
    runs = [pretrained,
            train("experiment=finetune_photos, weights from the file", args.work, "experiment=finetune_photos",
                  f"data.root={target}", f"model.weights={weights}", f"trainer.max_epochs={args.epochs}"),
            train("same network and recipe from scratch", args.work, "experiment=finetune_photos", f"data.root={target}",
                  "model.weights=null", "callbacks.finetuning=null", f"trainer.max_epochs={args.epochs}")]
    print(f"\n{hardware.summary(machine)}\n\n| run | epochs | fit seconds | test accuracy |\n| --- | ---: | ---: | ---: |")
    for run, epochs in zip(runs, (args.pretrain_epochs, args.epochs, args.epochs)):
        print(f"| {run['run']} | {epochs} | {run['seconds_fit']:.0f} | {100 * run['test_acc']:.2f}% |")
    args.out.write_text(json.dumps({"machine": machine, "per_class": args.per_class, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
