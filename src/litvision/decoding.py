"""Files on disk -> a dataset in memory: uint8 images (N, C, H, W), int64 labels (N,) and class names.

Decoding happens once, not once per image per epoch: every later step indexes tensors. The decoded tensors are
kept on disk (`cached`), so that only the first run pays for decoding. A cache file is named by a hash of what was
asked (dataset, size, channels) and of every source file's path, size and modification time: a changed source
gets a new file. Files are written to a temporary name and renamed into place, so that runs building the same
cache at once (a parallel sweep) never read or leave a half-written one."""

import hashlib
import logging
import math
import mmap
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from litvision import UserError, atomic_write, remove_orphans

log = logging.getLogger(__name__)

Files = list[tuple[str, int]]  # (path, label) of each image of a split
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W); channels last in memory for rows of CHANNELS_LAST_BYTES and more
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Decoded:
    """A dataset's decoded splits and class names; val when the data comes with its own validation split."""

    train: Split
    test: Split
    classes: list[str]
    val: Split | None = None


@dataclass(frozen=True)
class Source:
    """A dataset torchvision reads and downloads: its class, the files it keeps under the data folder (a glob),
    whether a split is asked as train=True/False or split="train"/"test", and what to fetch by hand offline."""

    cls: str
    files: str
    split_arg: str
    expected: str


_IDX = "{train,t10k}-{images-idx3,labels-idx1}-ubyte from the dataset's site"
TORCHVISION = {
    "cifar10": Source("CIFAR10", "cifar-10-batches-py/*", "train", "cifar-10-batches-py/ from https://www.cs.toronto"
                      ".edu/~kriz/cifar-10-python.tar.gz, or an image-folder copy cifar10-jpeg/{train,test}/CLASS/*.jpg"),
    "cifar100": Source("CIFAR100", "cifar-100-python/*", "train",
                       "cifar-100-python/ from https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
    "mnist": Source("MNIST", "MNIST/raw/*", "train", "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"),
    "fashion_mnist": Source("FashionMNIST", "FashionMNIST/raw/*", "train", f"FashionMNIST/raw/{_IDX}"),
    "kmnist": Source("KMNIST", "KMNIST/raw/*", "train", f"KMNIST/raw/{_IDX}"),
    "emnist": Source("EMNIST", "EMNIST/raw/*", "train",
                     "EMNIST/raw/emnist-SUBSET-{train,test}-{images-idx3,labels-idx1}-ubyte (from gzip.zip)"),
    "svhn": Source("SVHN", "*_32x32.mat", "split", "{train,test}_32x32.mat from http://ufldl.stanford.edu/housenumbers/"),
    "stl10": Source("STL10", "stl10_binary/*", "split",
                    "stl10_binary/ from http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"),
}


def download(name: str, root: Path, subset: str | None = None) -> None:
    """Fetch a torchvision dataset into `root` unless it is already there. Image folders need nothing."""
    if name == "image_folder" or (name == "cifar10" and _cifar10_folder(root)):
        return
    try:
        _torchvision_splits(name, root, subset, download=True)
    except Exception as e:  # urllib, ssl, socket and torchvision each raise their own
        raise UserError(
            f"could not download {name} into {root} ({type(e).__name__}: {e}). Download it by hand into that "
            f"folder, or set paths.data_dir=DIR to a folder that already holds it ({TORCHVISION[name].expected})"
        ) from e


def _torchvision_splits(name: str, root: Path, subset: str | None, download: bool = False) -> list:
    """torchvision's train and test datasets of `name` (EMNIST: of its `subset`, e.g. balanced)."""
    from torchvision import datasets

    source = TORCHVISION[name]
    cls = getattr(datasets, source.cls)
    extra = {"split": subset or "balanced"} if name == "emnist" else {}
    return [cls(str(root), download=download, **extra,
                **({"train": train} if source.split_arg == "train" else {"split": "train" if train else "test"}))
            for train in (True, False)]


def load(name: str, root: Path, image_size: Sequence[int] | None = None, channels: int | None = None,
         cache_dir: Path | None = None, split_fractions: Sequence[float] = (0.8, 0.1, 0.1), split_seed: int = 0,
         skip_bad_images: bool = False, bad_images_file: Path | None = None, subset: str | None = None) -> Decoded:
    """Decode dataset `name` (image_folder, or one of TORCHVISION; subset: EMNIST's) found under `root`. With `cache_dir`, the decoded
    tensors are kept there and later runs load them instead, until a source file changes. An image folder in
    one folder per class (or a list without splits) is split by split_fractions and split_seed; files that cannot
    be decoded are named all at once in an error (skip_bad_images: skipped), listed in bad_images_file."""
    folder = root if name == "image_folder" else _cifar10_folder(root) if name == "cifar10" else None
    if folder is None:
        sources, options = _torchvision_files(name, root), (subset,) if subset else ()

        def build() -> dict:
            return _as_dict(_load_torchvision(name, root, subset))
    else:
        classes, files = _list_image_folder(folder.resolve(), split_fractions, split_seed)
        sources = [path for split in files.values() for path, _ in split]
        options = (list(image_size) if image_size else None, channels, skip_bad_images,
                   {split: len(f) for split, f in files.items()})

        def build() -> dict:
            return _as_dict(_decode_image_folder(classes, files, image_size, channels, skip_bad_images, bad_images_file,
                                               cache_dir))
    return _from_dict(cached(build, name, sources, options, cache_dir))


def _as_dict(data: Decoded) -> dict:
    """Plain data for the cache file, sharing the tensors (dataclasses.asdict would deep-copy every image)."""
    return {field.name: (value if not isinstance(value := getattr(data, field.name), Split)
                         else {"images": value.images, "labels": value.labels}) for field in fields(data)}


def _from_dict(data: dict) -> Decoded:
    return Decoded(Split(**data["train"]), Split(**data["test"]), data["classes"],
                   Split(**data["val"]) if data.get("val") else None)


def _torchvision_files(name: str, root: Path) -> list[Path]:
    files = sorted(path for path in root.resolve().glob(TORCHVISION[name].files) if path.is_file())
    if not files:
        raise UserError(f"{name} is not in {root}: expected {TORCHVISION[name].expected}. Set paths.data_dir to the "
                        "folder that holds it, or let litvision download it there")
    return files


def _load_torchvision(name: str, root: Path, subset: str | None) -> Decoded:
    try:
        splits = _torchvision_splits(name, root, subset)
    except RuntimeError as e:  # missing or corrupt files
        raise UserError(f"{name} in {root} is incomplete or corrupt ({e}): expected {TORCHVISION[name].expected}. "
                        "Delete it to download it again") from e
    train, test = (_from_torchvision(ds, transpose=name == "emnist") for ds in splits)
    classes = getattr(splits[0], "classes", None) or [str(label) for label in range(int(train.labels.max()) + 1)]
    return Decoded(train, test, list(classes))


def _cifar10_folder(root: Path) -> Path | None:
    """An image-folder copy of CIFAR-10 (class folders in label order) stands in for the official archive."""
    folder = root / "cifar10-jpeg"
    official = root / "cifar-10-batches-py"
    return folder if (folder / "train").is_dir() and not official.is_dir() else None


def _from_torchvision(ds, transpose: bool = False) -> Split:
    """A torchvision dataset's arrays as a Split: MNIST-like NHW, CIFAR NHWC, SVHN and STL-10 NCHW. EMNIST's files
    hold each image transposed: turned upright here."""
    images = torch.as_tensor(np.asarray(ds.data))
    if images.ndim == 3:
        images = images.unsqueeze(1)
    elif images.shape[-1] in (1, 3):
        images = images.permute(0, 3, 1, 2)
    if transpose:
        images = images.transpose(-1, -2)
    labels = ds.targets if hasattr(ds, "targets") else ds.labels
    return Split(images.contiguous(), torch.as_tensor(np.asarray(labels), dtype=torch.int64))


def _list_image_folder(root: Path, fractions: Sequence[float], seed: int) -> tuple[list[str], dict[str, Files]]:
    """The files of each split and the class names, from any of the layouts: ROOT/train/CLASS + ROOT/test/CLASS
    (+ ROOT/val/CLASS), flat ROOT/CLASS/* (split train/val/test by `fractions`, stratified, by `seed`), or a CSV/TSV
    list of path,label[,split] (paths relative to the file). Hidden entries (.*) are ignored; a class folder with
    no images is left out with a warning. Logs the layout and the count of images per split and class."""
    if root.is_file() and root.suffix.lower() in (".csv", ".tsv"):
        layout, classes, files = _list_csv(root, fractions, seed)
    elif not root.is_dir():
        raise UserError(f"data.root={root} does not exist: point it at a folder of class folders (ROOT/CLASS/*.jpg, "
                        "or ROOT/train/CLASS and ROOT/test/CLASS) or at a CSV list of path,label")
    elif (root / "train").is_dir():
        classes = _at_least_two(_class_folders(root / "train"), root / "train")
        splits = ["train", *(["val"] if (root / "val").is_dir() else []), "test"]
        files = {split: _list_images(root / split, classes) for split in splits}
        layout = "+".join(splits) + " folders"
    else:
        classes = _at_least_two(_class_folders(root), root)
        layout = f"one folder per class, split {'/'.join(f'{f:g}' for f in fractions)} by seed {seed}"
        files = _stratified_split(_list_images(root, classes), fractions, seed)
    _at_least_two(classes, root)
    counts = {split: torch.bincount(torch.tensor([label for _, label in f], dtype=torch.int64), minlength=len(classes))
              for split, f in files.items()}
    per_class = ", ".join(f"{name} {'/'.join(str(int(c[i])) for c in counts.values())}" for i, name in enumerate(classes))
    log.info(f"image folder {root}: {layout}; {len(classes)} classes; "
             + ", ".join(f"{split} {sum(map(int, c))}" for split, c in counts.items())
             + f" images; per class ({'/'.join(files)}): {per_class}")
    return classes, files


def _at_least_two(classes: list[str], where: Path) -> list[str]:
    if len(classes) < 2:
        raise UserError(f"{where} has {len(classes)} class{'es' if len(classes) != 1 else ''} "
                        f"({', '.join(classes) or 'none'}): a classifier needs at least two classes, one folder each")
    return classes


def _visible(name: str) -> bool:
    return not name.startswith(".")  # .ipynb_checkpoints, .DS_Store, AppleDouble ._*


def _class_folders(folder: Path) -> list[str]:
    """The class folders under `folder` that hold images, sorted; empty ones are left out with a warning."""
    names = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and _visible(entry.name))
    empty = [name for name in names if not _image_names(folder / name)]
    if empty:
        log.warning(f"{folder}: class folder{'s' if len(empty) > 1 else ''} {', '.join(empty)} hold no images "
                    f"({', '.join(IMAGE_EXTENSIONS)}) and {'are' if len(empty) > 1 else 'is'} left out")
    classes = [name for name in names if name not in empty]
    if not classes:
        raise UserError(f"no class folders with images in {folder}: image_folder expects {folder}/CLASS/*.jpg (one "
                        "folder per class), or train/CLASS and test/CLASS under it")
    return classes


def _image_names(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder)
                  if _visible(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS)


def _list_images(folder: Path, classes: list[str]) -> Files:
    if not folder.is_dir():
        raise UserError(f"{folder} does not exist: image_folder expects {folder.parent}/train/CLASS/*.jpg and "
                        f"{folder.parent}/test/CLASS/*.jpg")
    present = {entry.name for entry in os.scandir(folder) if entry.is_dir() and _visible(entry.name)}
    unknown = sorted(name for name in present - set(classes) if _image_names(folder / name))
    if unknown:
        raise UserError(f"{folder} has class folders {unknown} that train/ lacks: every test class needs "
                        "training images")
    # strings, not Paths: 60,000 Path objects cost a second to sort and stat
    files = [(os.path.join(folder, name, file), label) for label, name in enumerate(classes)
             if name in present for file in _image_names(folder / name)]
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}/CLASS/: add images or fix "
                        "data.root")
    return files


def _list_csv(path: Path, fractions: Sequence[float], seed: int) -> tuple[str, list[str], dict[str, Files]]:
    """path,label[,split] rows (a header row is allowed); labels are class names, sorted."""
    import csv

    with open(path, newline="") as file:
        rows = [row for row in csv.reader(file, delimiter="\t" if path.suffix.lower() == ".tsv" else ",") if row]
    if rows and rows[0][:2] == ["path", "label"]:
        rows = rows[1:]
    if not rows or any(len(row) < 2 for row in rows):
        raise UserError(f"data.root={path}: a list needs a path and a label on every row (path,label[,split])")
    missing = [row[0] for row in rows if not (path.parent / row[0]).is_file()]
    if missing:
        raise UserError(f"data.root={path} lists {len(missing)} files that do not exist (paths are relative to the "
                        f"list's folder), e.g. {', '.join(missing[:3])}")
    classes = sorted({row[1] for row in rows})
    index = {name: i for i, name in enumerate(classes)}
    entries = [(str((path.parent / row[0]).resolve()), index[row[1]], row[2] if len(row) > 2 else "") for row in rows]
    if all(split for *_, split in entries):
        files: dict[str, Files] = {}
        for file, label, split in entries:
            if split not in ("train", "val", "test"):
                raise UserError(f"data.root={path}: split {split!r} for {file}; use train, val or test")
            files.setdefault(split, []).append((file, label))
        if "train" not in files or "test" not in files:
            raise UserError(f"data.root={path}: the split column needs train and test rows")
        order = [s for s in ("train", "val", "test") if s in files]
        return "list with a split column", classes, {split: files[split] for split in order}
    layout = f"list, split {'/'.join(f'{f:g}' for f in fractions)} by seed {seed}"
    return layout, classes, _stratified_split([(file, label) for file, label, _ in entries], fractions, seed)


def _stratified_split(files: Files, fractions: Sequence[float], seed: int) -> dict[str, Files]:
    """train/val/test by `fractions` within each class (at least one training image per class), the same for
    every run with the same seed."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6 or fractions[0] <= 0:
        raise UserError(f"data.split_fractions={list(fractions)} is invalid: give [train, val, test] fractions that "
                        "sum to 1, e.g. [0.8, 0.1, 0.1]")
    generator = torch.Generator().manual_seed(seed)
    splits: dict[str, Files] = {"train": [], "val": [], "test": []}
    labels = torch.tensor([label for _, label in files])
    for label in labels.unique().tolist():
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)].tolist()
        n_test = round(fractions[2] * len(members))
        n_val = min(round(fractions[1] * len(members)), len(members) - n_test - 1)
        n_test = min(n_test, len(members) - 1)
        for split, part in (("test", members[:n_test]), ("val", members[n_test:n_test + n_val]),
                            ("train", members[n_test + n_val:])):
            splits[split] += [files[i] for i in sorted(part)]
    return {split: part for split, part in splits.items() if part or split != "val"}


def _decode_image_folder(classes: list[str], files: dict[str, Files], image_size: Sequence[int] | None,
                         channels: int | None, skip_bad: bool, bad_list: Path | None,
                         spill_dir: Path | None = None) -> Decoded:
    """Every file decoded once, in parallel, straight into the one tensor that keeps the images; the stored shape
    decided (data.image_size/channels, or the most common size and RGB if any image has colour) and said. Files
    that cannot be decoded are all named at once (or skipped with data.skip_bad_images=true)."""
    paths = [path for split in files.values() for path, _ in split]
    target = _first_shape(paths, channels)  # a first guess: the shape of the first image
    if image_size is not None:
        target = (target[0], *image_size)
    images, shapes, errors = decode_all(paths, target, channels, spill_dir=spill_dir)
    if errors:
        _report_bad(errors, len(paths), skip_bad, bad_list)
    decided = decide_shape(shapes, image_size, channels)
    decided_channels, decided_size = decided[0], decided[1:]
    if decided != target:  # the first guess was wrong (a rare mixed folder): decode again, knowing the shape
        images, shapes, errors = decode_all(paths, decided, decided_channels, spill_dir=spill_dir)
    odd = [i for i, shape in enumerate(shapes) if shape is not None and shape != decided]
    for i in odd:  # another size or mode: converted and resized one by one
        images[i] = read_image(paths[i], decided_channels, decided_size)
    keep = torch.tensor([shape is not None for shape in shapes])
    splits, start = [], 0
    for split_files in files.values():
        rows = keep[start:start + len(split_files)]
        labels = torch.tensor([label for _, label in split_files], dtype=torch.int64)[rows]
        part = images[start:start + len(split_files)]
        splits.append(Split(part if rows.all() else part[rows], labels))  # views of one tensor when none failed
        start += len(split_files)
    return Decoded(splits[0], splits[-1], classes, splits[1] if len(splits) == 3 else None)


def decide_shape(shapes: Sequence[tuple[int, ...] | None], image_size: Sequence[int] | None,
                 channels: int | None) -> tuple[int, int, int]:
    """The (C, H, W) every image is stored at, from each file's decoded shape (None: it failed), and said: the given
    data.image_size/channels, else the most common size and RGB if any image has colour."""
    good = [shape for shape in shapes if shape is not None]
    if not good:
        raise UserError(f"none of the {len(shapes)} image files could be decoded: check data.root")
    decided_channels = channels or (3 if any(shape[0] >= 3 for shape in good) else 1)
    decided_size = tuple(image_size) if image_size is not None else Counter(s[1:] for s in good).most_common(1)[0][0]
    how = "given" if image_size is not None and channels is not None else \
        "the most common size, RGB if any image has colour"
    log.info(f"stored at {decided_channels}x{decided_size[0]}x{decided_size[1]} ({how}), resized "
             f"{sum(s[1:] != decided_size for s in good)} and converted {sum(s[0] != decided_channels for s in good)} "
             f"of {len(good)} images")
    return (decided_channels, *decided_size)


def _first_shape(paths: list[str], channels: int | None) -> tuple[int, ...]:
    for path in paths:
        try:
            return tuple(decode(path, channels).shape)
        except UserError:
            continue  # named with the others after the decode
    return (channels or 3, 1, 1)


def _report_bad(errors: list[tuple[str, str]], total: int, skip: bool, listing: Path | None) -> None:
    where = ""
    if listing is not None:
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text("".join(f"{path}: {error}\n" for path, error in errors))
        where = f"; all {len(errors)} listed in {listing}"
    if not skip:
        shown = "; ".join(f"{Path(path).name} ({error})" for path, error in errors[:20])
        more = f" and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise UserError(f"{len(errors)} of {total} image files cannot be decoded: {shown}{more}{where}. Delete or "
                        "replace them, or set data.skip_bad_images=true to train without them")
    log.warning(f"skipped {len(errors)} of {total} image files that cannot be decoded (data.skip_bad_images=true)"
                f"{where}")


def decode_all(paths: list[str], shape: Sequence[int] | None, channels: int | None = None, workers: int | None = None,
               spill_dir: Path | None = None) -> tuple[torch.Tensor, list[tuple[int, ...] | None], list[tuple[str, str]]]:
    """Decode every file (to `channels`, or as it is stored: None) into one uint8 tensor of (len(paths), *shape), in
    worker processes on every core (threads were slower: the GIL), with a progress bar in a terminal. A file of that
    shape fills its row; the others are left for the caller. Returns the tensor, each file's decoded (C, H, W)
    (None: it failed) and the failures. shape None: every file is decoded and checked, nothing is kept.
    The workers write their rows with pwrite into a file that the tensor then maps: a nameless file in memory, or in
    spill_dir, so that a dataset larger than memory decodes (the system writes pages out as it needs). Written, not
    stored through a shared map, and rows of CHANNELS_LAST_BYTES and more stored channels last, as the decoder
    returns them: of 1.07 s for 3,000 224 px JPEGs in one process, the map's page faults took 0.25 s and the
    transposing copy 0.14 (benchmarks/decode.py: 1.54x serial decoding in two processes before, 1.80-1.84x after).
    workers: None is every core this process may use, one per 500 files at most."""
    if workers is None:
        workers = min(len(os.sched_getaffinity(0)), max(1, len(paths) // 500))
    shape = tuple(shape or (0,))
    order = (1, 2, 0) if len(shape) == 3 and math.prod(shape) >= CHANNELS_LAST_BYTES else tuple(range(len(shape)))
    size = len(paths) * math.prod(shape)
    file = _spill_file(spill_dir, size) if spill_dir is not None else None
    spilled = file is not None
    if file is None:
        file = _memory_file(size)
    rows = max(1, min(256, 2**22 // max(1, math.prod(shape))))  # tasks of 4 MB at most: the workers end together
    chunks = [range(i, min(i + rows, len(paths))) for i in range(0, len(paths), rows)]
    shapes: list[tuple[int, ...] | None] = [None] * len(paths)
    errors: list[tuple[str, str]] = []
    state = (paths, file, shape, order, channels)
    try:
        with tqdm(total=len(paths), unit="img", desc="decoding", disable=None, leave=False) as bar:
            if workers > 1:
                import multiprocessing

                try:  # forked workers decode 3x slower (224 px JPEG) if this process has never run torchvision's decoder
                    decode(paths[0], channels)
                except UserError:
                    pass

                pool = multiprocessing.get_context("fork").Pool(workers, initializer=_worker_start, initargs=(state,))
                results = pool.imap(_decode_rows, chunks)
            else:
                pool, results = None, map(_decode_rows, chunks)
                _worker_start(state, threads=False)
            try:
                written = 0
                for done in results:
                    for i, native, error in done:
                        shapes[i] = native
                        if error:
                            errors.append((paths[i], error))
                    bar.update(len(done))
                    written += len(done) * math.prod(shape)
                    if spilled and written >= SYNC_BYTES:  # written-out pages can be dropped when memory is short;
                        os.fdatasync(file)  # dirty ones cannot (a memory cgroup would kill the run instead)
                        written = 0
            finally:
                if pool is not None:
                    pool.close()
                    pool.join()
        flat = torch.frombuffer(mmap.mmap(file, size, flags=mmap.MAP_SHARED), dtype=torch.uint8) if size else \
            torch.empty(0, dtype=torch.uint8)
    finally:
        os.close(file)
    images = flat.view(len(paths), *(shape[d] for d in order))
    return images.permute(0, *(1 + order.index(d) for d in range(len(shape)))), shapes, errors


CHANNELS_LAST_BYTES = 2**14  # from about 74x74 RGB; CIFAR-10 and MNIST stay (C, H, W), as their caches always were


def _memory_file(size: int) -> int:
    """A nameless file of `size` bytes in memory (Linux); elsewhere in the temporary folder."""
    if hasattr(os, "memfd_create"):
        file = os.memfd_create("litvision-decoded")
    else:
        file = os.dup((handle := tempfile.TemporaryFile()).fileno())
        handle.close()
    os.ftruncate(file, size)
    return file


def _spill_file(folder: Path, size: int) -> int | None:
    """A nameless file of `size` bytes in `folder` (gone with the last map, even after a kill), its blocks allocated
    now: the disk must hold it before decoding starts. None, with a warning, when the folder cannot hold it: the
    images are then decoded into memory."""
    file = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as handle:
            file = os.dup(handle.fileno())
        if size:
            os.posix_fallocate(file, 0, size)
        return file
    except OSError as e:
        if file is not None:
            os.close(file)
        log.warning(f"cannot decode into a file in {folder} ({e.strerror or e}): decoding into memory")
        return None


_WORK: tuple = ()  # what a decode worker reads: the paths, the file it writes, the row shape and memory order, channels
WRITE_BYTES = 2**20  # a worker writes rows in runs of about this much: one call for hundreds of CIFAR-10 images


def _worker_start(state: tuple, threads: bool = True) -> None:
    global _WORK
    _WORK = state
    if threads:
        torch.set_num_threads(1)  # one process per core


def _decode_rows(rows: range) -> list[tuple[int, tuple[int, ...] | None, str]]:
    paths, file, row_shape, order, channels = _WORK
    row_bytes = math.prod(row_shape)
    blank = np.zeros(row_bytes, dtype=np.uint8)  # the row of a file that failed or has another shape
    out, pending, start = [], [], rows.start  # rows decoded and not yet written, from row `start`
    for i in rows:
        memory = blank
        try:
            image = decode(paths[i], channels).numpy()  # numpy from here: less per row than torch, for small images
        except UserError as e:
            out.append((i, None, str(e.__cause__ or e)))
        else:
            if image.shape == row_shape:  # no copy when the file stores it as the decoder returns it
                memory = np.ascontiguousarray(image.transpose(order))
            out.append((i, image.shape, ""))
        pending.append(memory)
        if len(pending) * row_bytes >= WRITE_BYTES or i == rows[-1]:
            if os.pwritev(file, pending, start * row_bytes) != len(pending) * row_bytes:
                raise OSError(f"a short write decoding {paths[start]}: the disk or memory is full")
            pending, start = [], i + 1
    return out


def read_image(path: str, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """One image file as uint8 (channels, *size): decoded, converted, and resized if its size differs."""
    image = decode(path, channels)
    return image if tuple(image.shape[1:]) == size else resize(image, size)


def decode(path: str, channels: int | None) -> torch.Tensor:
    """Decode one file to uint8 (C, H, W); torchvision's decoders first, Pillow for the other formats."""
    from torchvision.io import ImageReadMode, decode_image

    mode = {None: ImageReadMode.UNCHANGED, 1: ImageReadMode.GRAY, 3: ImageReadMode.RGB}[channels]
    try:
        with open(path, "rb") as file:  # read here, not by decode_image(path): 35 instead of 49 us per small JPEG
            data = torch.frombuffer(bytearray(file.read()), dtype=torch.uint8)
        image = decode_image(data, mode=mode, apply_exif_orientation=True)
        return image[0] if image.ndim == 4 else image  # an animated GIF: its first frame
    except (OSError, RuntimeError, ValueError):  # unreadable, or a format for Pillow
        pass
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:  # a multi-frame file (TIFF pages) opens at its first frame
            image = ImageOps.exif_transpose(image)
            if channels is None and image.mode not in ("L", "RGB"):
                image = image.convert("RGB" if image.mode not in ("1", "I", "I;16", "F", "LA") else "L")
            array = np.asarray(image if channels is None else image.convert({1: "L", 3: "RGB"}[channels]))
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
        with atomic_write(path) as tmp, open(tmp, "wb") as file:
            torch.save(data, _Synced(file))
        log.info(f"decoded {name} cached in {path}")
        return torch.load(path, weights_only=True, mmap=True)  # read from the file: no copy held in memory
    except (OSError, RuntimeError) as e:  # read-only or full disk (torch.save's zip writer raises RuntimeError)
        log.warning(f"could not cache decoded {name} in {cache_dir} ({str(e).splitlines()[0]}): the next run decodes "
                    "again; set data.cache_dir to a writable folder with space")
    return data


SYNC_BYTES = 128 * 2**20  # how much decoding or saving writes before it is flushed to disk


class _Synced:
    """A file that torch.save writes through, flushed to disk every SYNC_BYTES: a dataset larger than memory is
    saved without filling memory with pages not yet written."""

    def __init__(self, file) -> None:
        self.file, self.pending = file, 0

    def write(self, data) -> int:
        written = self.file.write(data)
        self.pending += written
        if self.pending >= SYNC_BYTES:
            self.flush()
        return written

    def flush(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.pending = 0


def signature(sources: Sequence[str | Path], options: Any) -> str:
    """Hash of the options and of each source's (absolute) path, size and modification time."""
    digest = hashlib.sha256(repr(options).encode())
    for path in sources:
        stat = os.stat(path)
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]
