"""Files on disk -> a dataset in memory: uint8 images (N, C, H, W), int64 labels (N,) and class names.

Decoding happens once, not once per image per epoch: every later step indexes tensors. The decoded tensors are
kept on disk (`cached`), so that only the first run pays for decoding. A cache file is named by a hash of what was
asked (dataset, size, channels) and of every source file's path, size and modification time: a changed source
gets a new file. Files are written to a temporary name and renamed into place, so that runs building the same
cache at once (a parallel sweep) never read or leave a half-written one."""

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from litvision import UserError, atomic_write, remove_orphans

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Decoded:
    """A dataset's decoded splits and class names."""

    train: Split
    test: Split
    classes: list[str]


def download(name: str, root: Path) -> None:
    """Fetch a torchvision dataset into `root` unless it is already there. Image folders need nothing."""
    if name == "image_folder" or (name == "cifar10" and _cifar10_folder(root)):
        return
    cls = _torchvision_class(name)
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as e:  # urllib, ssl, socket and torchvision each raise their own
        raise UserError(
            f"could not download {name} into {root} ({type(e).__name__}: {e}). Download it by hand into that "
            f"folder, or set paths.data_dir=DIR to a folder that already holds it ({_expected_files(name)})"
        ) from e


def load(name: str, root: Path, image_size: Sequence[int] | None = None, channels: int | None = None,
         cache_dir: Path | None = None) -> Decoded:
    """Decode dataset `name` (cifar10, mnist or image_folder) found under `root`. With `cache_dir`, the decoded
    tensors are kept there and later runs load them instead, until a source file changes."""
    folder = root if name == "image_folder" else _cifar10_folder(root) if name == "cifar10" else None
    if folder is None:
        sources, options = _torchvision_files(name, root), ()

        def build() -> dict:
            return asdict(_load_torchvision(name, root))
    else:
        classes, files = _list_image_folder(folder.resolve())
        sources = [path for split in files.values() for path, _ in split]
        options = (list(image_size) if image_size else None, channels)

        def build() -> dict:
            return asdict(_decode_image_folder(classes, files, image_size, channels))
    return _from_dict(cached(build, name, sources, options, cache_dir))


def _from_dict(data: dict) -> Decoded:
    return Decoded(Split(**data["train"]), Split(**data["test"]), data["classes"])


def _torchvision_files(name: str, root: Path) -> list[Path]:
    folder = root.resolve() / {"cifar10": "cifar-10-batches-py", "mnist": "MNIST/raw"}[name]
    files = sorted(path for path in folder.glob("*") if path.is_file())
    if not files:
        raise UserError(f"{name} is not in {root}: expected {_expected_files(name)}. Set paths.data_dir to the "
                        "folder that holds it, or let litvision download it there")
    return files


def _load_torchvision(name: str, root: Path) -> Decoded:
    cls = _torchvision_class(name)
    try:
        splits = [cls(str(root), train=train, download=False) for train in (True, False)]
    except RuntimeError as e:  # missing or corrupt files
        raise UserError(f"{name} in {root} is incomplete or corrupt ({e}): expected {_expected_files(name)}. "
                        "Delete it to download it again") from e
    train, test = (_from_torchvision(ds) for ds in splits)
    return Decoded(train, test, list(splits[0].classes))


def _torchvision_class(name: str) -> Callable:
    from torchvision import datasets

    return {"cifar10": datasets.CIFAR10, "mnist": datasets.MNIST}[name]


def _expected_files(name: str) -> str:
    return {
        "cifar10": "cifar-10-batches-py/ from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, "
        "or an image-folder copy cifar10-jpeg/{train,test}/CLASS/*.jpg",
        "mnist": "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
    }[name]


def _cifar10_folder(root: Path) -> Path | None:
    """An image-folder copy of CIFAR-10 (class folders in label order) stands in for the official archive."""
    folder = root / "cifar10-jpeg"
    official = root / "cifar-10-batches-py"
    return folder if (folder / "train").is_dir() and not official.is_dir() else None


def _from_torchvision(ds) -> Split:
    images = torch.as_tensor(np.asarray(ds.data))
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)  # MNIST NHW, CIFAR NHWC
    return Split(images.contiguous(), torch.as_tensor(ds.targets, dtype=torch.int64))


def _list_image_folder(root: Path) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
    """`root/train/CLASS/*` and `root/test/CLASS/*`; class names are the train folder names, sorted."""
    if not root.is_dir():
        raise UserError(f"data.root={root} does not exist: point it at a folder holding train/CLASS/*.jpg "
                        "and test/CLASS/*.jpg")
    classes = sorted(p.name for p in (root / "train").glob("*") if p.is_dir())
    if not classes:
        raise UserError(f"no class folders in {root / 'train'}: image_folder expects {root}/train/CLASS/*.jpg "
                        "(one folder per class) and the same under test/")
    if len(classes) == 1:
        raise UserError(f"{root / 'train'} has one class folder ({classes[0]}): a classifier needs at least two "
                        "classes, one folder each")
    return classes, {split: _list_images(root / split, classes) for split in ("train", "test")}


def _decode_image_folder(classes: list[str], files: dict[str, list[tuple[str, int]]],
                         image_size: Sequence[int] | None, channels: int | None) -> Decoded:
    first = files["train"][0][0]
    if channels is None:
        channels = 1 if decode(first, None).shape[0] == 1 else 3
    if image_size is None:
        image_size = decode(first, channels).shape[1:]
    train, test = (_decode_all(files[split], channels, tuple(image_size)) for split in ("train", "test"))
    return Decoded(train, test, classes)


def _list_images(folder: Path, classes: list[str]) -> list[tuple[str, int]]:
    if not folder.is_dir():
        raise UserError(f"{folder} does not exist: image_folder expects {folder.parent}/train/CLASS/*.jpg and "
                        f"{folder.parent}/test/CLASS/*.jpg")
    unknown = sorted({p.name for p in folder.glob("*") if p.is_dir()} - set(classes))
    if unknown:
        raise UserError(f"{folder} has class folders {unknown} that train/ lacks: every test class needs "
                        "training images")
    # strings, not Paths: 60,000 Path objects cost a second to sort and stat
    files = [(os.path.join(folder, name, file), label) for label, name in enumerate(classes)
             if (folder / name).is_dir() for file in sorted(os.listdir(folder / name))
             if os.path.splitext(file)[1].lower() in IMAGE_EXTENSIONS]
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}/CLASS/: add images or fix "
                        "data.root")
    return files


def _decode_all(files: list[tuple[str, int]], channels: int, size: tuple[int, int]) -> Split:
    images = [read_image(path, channels, size) for path, _ in files]  # serial: a thread pool was 5x slower (GIL)
    return Split(torch.stack(images), torch.tensor([label for _, label in files], dtype=torch.int64))


def read_image(path: str, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """One image file as uint8 (channels, *size): decoded, converted, and resized if its size differs."""
    image = decode(path, channels)
    return image if tuple(image.shape[1:]) == size else resize(image, size)


def decode(path: str, channels: int | None) -> torch.Tensor:
    """Decode one file to uint8 (C, H, W); torchvision's decoders first, Pillow for the other formats."""
    from torchvision.io import ImageReadMode, decode_image

    mode = {None: ImageReadMode.UNCHANGED, 1: ImageReadMode.GRAY, 3: ImageReadMode.RGB}[channels]
    try:
        return decode_image(path, mode=mode)
    except (RuntimeError, ValueError):
        pass
    from PIL import Image

    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert({None: image.mode, 1: "L", 3: "RGB"}[channels]))
    except Exception as e:
        raise UserError(f"cannot decode image {path} ({e}): delete or replace that file") from e
    return torch.from_numpy(array.copy()).reshape(*array.shape[:2], -1).permute(2, 0, 1)


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    resized = F.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return resized[0].round().clamp(0, 255).to(torch.uint8)


def cached(build: Callable[[], dict[str, Any]], name: str, sources: Sequence[str | Path], options: Any,
           cache_dir: Path | None) -> dict:
    """build(), or its result saved by an earlier run with the same name, options and sources. Plain data only
    (tensors, lists, strings): the file loads with torch.load(weights_only=True)."""
    if cache_dir is None:
        return build()
    path = Path(cache_dir) / f"{name}-{signature(sources, options)}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=True, mmap=True)
        except Exception as e:  # truncated or corrupt: the cache is optional, so it costs a decode, not the run
            log.warning(f"the decoded-data cache {path} is unreadable ({type(e).__name__}): deleted, decoding again")
            path.unlink(missing_ok=True)
    data = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(path.parent)  # what killed writers left
        with atomic_write(path) as tmp:
            torch.save(data, tmp)
        log.info(f"decoded {name} cached in {path}")
    except (OSError, RuntimeError) as e:  # read-only or full disk (torch.save's zip writer raises RuntimeError)
        log.warning(f"could not cache decoded {name} in {cache_dir} ({str(e).splitlines()[0]}): the next run decodes "
                    "again; set data.cache_dir to a writable folder with space")
    return data


def signature(sources: Sequence[str | Path], options: Any) -> str:
    """Hash of the options and of each source's (absolute) path, size and modification time."""
    digest = hashlib.sha256(repr(options).encode())
    for path in sources:
        stat = os.stat(path)
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]
