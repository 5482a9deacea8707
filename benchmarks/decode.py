"""Decoding an image folder: litvision's parallel decode (worker processes on every core, then the shape decided
and the images stored) against the serial decode it replaced (one file after another, then torch.stack), on the
shared CIFAR-10 folder (60,000 JPEGs of 32x32) and on CIFAR-10 upscaled to 224x224 (3,000 JPEGs, made once).

python benchmarks/decode.py [--repeats 3] [--out benchmarks/results/decode.json]
Prints seconds and images/s (medians of the repeats, the two sides alternating) and the machine."""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.io import ImageReadMode, decode_image  # noqa: E402

from litvision import hardware  # noqa: E402
from litvision.decoding import _decode_image_folder, _list_image_folder  # noqa: E402

SHARED = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg"


def serial(files: dict) -> torch.Tensor:
    """The decode litvision had before: each file in turn, in the first image's mode, then one torch.stack."""
    return torch.stack([decode_image(path, mode=ImageReadMode.RGB) for split in files.values() for path, _ in split])


def parallel(classes: list[str], files: dict):
    """litvision's decode: the splits are views of the one tensor the workers wrote (no copy to join them)."""
    return _decode_image_folder(classes, files, None, None, False, None)


def upscaled(folder: Path, count: int = 3000) -> Path:
    """CIFAR-10 images resized to 224x224 (bicubic), saved as JPEG quality 90: photo-sized files."""
    if folder.is_dir():
        return folder
    sources = sorted((SHARED / "train").rglob("*.jpg"))[:: 50000 // count][:count]
    for path in sources:
        target = folder / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(path).resize((224, 224), Image.BICUBIC).save(target, quality=90)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--photos", type=Path, default=Path("/tmp/litvision-cifar10-224"))
    args = parser.parse_args()
    results = {"machine": hardware.record(), "datasets": {}}
    print(hardware.summary(results["machine"]))
    for name, root in (("CIFAR-10 (60,000 x 32x32 JPEG)", SHARED), ("CIFAR-10 at 224x224 (3,000 JPEG)",
                                                                    upscaled(args.photos))):
        classes, files = _list_image_folder(root, (0.8, 0.1, 0.1), 0)
        count = sum(len(f) for f in files.values())
        times = {"serial (before)": [], "parallel": []}
        for _ in range(args.repeats):
            for side, fn in (("serial (before)", lambda: serial(files)), ("parallel", lambda: parallel(classes, files))):
                start = time.perf_counter()
                images = fn()
                times[side].append(time.perf_counter() - start)
                del images
        row = {side: {"seconds": statistics.median(t), "images_per_s": count / statistics.median(t), "runs": t}
               for side, t in times.items()}
        row["speedup"] = row["serial (before)"]["seconds"] / row["parallel"]["seconds"]
        results["datasets"][name] = row
        print(f"{name}: serial {row['serial (before)']['seconds']:.2f} s ({row['serial (before)']['images_per_s']:,.0f}"
              f" images/s), parallel {row['parallel']['seconds']:.2f} s ({row['parallel']['images_per_s']:,.0f} "
              f"images/s): {row['speedup']:.2f}x")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
