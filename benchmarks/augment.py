"""Training-batch augmentation, measured: milliseconds per batch of 512 real CIFAR-10 images (32 px) and of 64
images upscaled to 160 px, on the CPU, for litvision's hand-written crop and flip against kornia.augmentation and
torchvision.transforms.v2 (which draws one set of parameters per call, so per-image randomness is a loop over the
images), and for each transform of the recipes (litvision.augment.PRESETS), with torchvision and (where it is
installed: pip install kornia) kornia.

python benchmarks/augment.py [--repeats 5] [--data-dir ../shared/datasets]
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.io import decode_image
from torchvision.transforms import v2

from litvision import hardware
from litvision.augment import random_crop, random_flip

ROOT = Path(__file__).resolve().parents[1]


def images(data_dir: Path, count: int, size: int) -> torch.Tensor:
    """`count` CIFAR-10 training images (uint8), from the shared JPEG copy or the test fixture, at `size` px."""
    folder = data_dir / "cifar10-jpeg" / "train"
    if not folder.is_dir():
        folder = ROOT / "tests" / "fixtures" / "cifar10-jpeg" / "test"
    files = sorted(folder.glob("*/*.jpg"))
    files = [files[i * len(files) // count] for i in range(count)]
    batch = torch.stack([decode_image(str(f)) for f in files])
    return batch if size == 32 else F.interpolate(batch.float(), size=size, mode="bilinear").round().byte()


def per_image(transform):
    """torchvision v2 with a random draw for every image: the transform called on each image in turn."""
    return lambda x: torch.stack([transform(image) for image in x])


def ms(fn, x: torch.Tensor, repeats: int) -> float:
    fn(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("LITVISION_DATA_DIR",
                                                                             ROOT.parent / "shared" / "datasets")))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "augment.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    machine = hardware.record()
    print(f"{hardware.summary(machine)}; median of {args.repeats}")
    rows = []
    for count, size in ((512, 32), (64, 160)):
        u8 = images(args.data_dir, count, size)
        f32 = u8.float() / 255
        cases = {
            "crop (pad 4) + flip": {
                "litvision": (lambda x: random_flip(random_crop(x, 4)), u8),
                "torchvision v2": (per_image(v2.Compose([v2.RandomCrop(size, padding=4), v2.RandomHorizontalFlip()])),
                                   u8)},
            "resized_crop": {"torchvision v2": (per_image(v2.RandomResizedCrop(size, antialias=True)), u8)},
            "color_jitter": {"torchvision v2": (per_image(v2.ColorJitter(0.4, 0.4, 0.4)), u8)},
            "randaugment": {"torchvision v2": (per_image(v2.RandAugment(2, 9)), u8)},
            "trivialaugment": {"torchvision v2": (per_image(v2.TrivialAugmentWide()), u8)},
            "erasing": {"torchvision v2": (per_image(v2.RandomErasing(p=0.25)), u8)},
            "mixup or cutmix": {"torchvision v2": (lambda x: v2.RandomChoice([v2.MixUp(num_classes=10),
                                                                              v2.CutMix(num_classes=10)])(
                x, torch.randint(0, 10, (len(x),))), f32)},
        }
        try:  # kornia draws per image on whole batches (its RandAugment/TrivialAugment: one choice of ops per batch)
            import kornia.augmentation as K
            from kornia.augmentation.auto import RandAugment, TrivialAugment

            for name, transform in {
                    "crop (pad 4) + flip": K.AugmentationSequential(K.RandomCrop((size, size), padding=4),
                                                                    K.RandomHorizontalFlip()),
                    "resized_crop": K.RandomResizedCrop((size, size)), "color_jitter": K.ColorJitter(0.4, 0.4, 0.4),
                    "randaugment": RandAugment(2, 9), "trivialaugment": TrivialAugment(),
                    "erasing": K.RandomErasing(p=0.25)}.items():
                cases[name]["kornia (per batch of ops)" if "augment" in name else "kornia"] = (transform, f32)
        except ImportError:
            print("kornia is not installed: torchvision only")
        for transform, libraries in cases.items():
            for library, (fn, x) in libraries.items():
                value = ms(fn, x, args.repeats)
                rows.append({"images": f"{count} x {size} px", "transform": transform, "library": library,
                             "ms_per_batch": value, "images_per_second": count / value * 1000})
                print(f"{count} x {size} px  {transform:<20} {library:<26} {value:9.1f} ms  "
                      f"{rows[-1]['images_per_second']:10,.0f} images/s", flush=True)
    args.out.write_text(json.dumps({"machine": machine, "repeats": args.repeats, "rows": rows}, indent=2))
    print("\n| images | transform | library | ms per batch | images/s |\n| --- | --- | --- | ---: | ---: |")
    for r in rows:
        print(f"| {r['images']} | {r['transform']} | {r['library']} | {r['ms_per_batch']:.1f} | "
              f"{r['images_per_second']:,.0f} |")


if __name__ == "__main__":
    main()
