"""Datasets beyond one machine's disk, in litdata's chunked format. `python -m litvision.streaming SOURCE OUTPUT`
writes the chunks from any image-folder layout (checked, decoded and stored at one shape as data=image_folder does);
`data=streaming data.input_dir=OUTPUT` streams them while training, from a folder, a shared filesystem or object
storage (s3://, gs://), each DDP process and node reading its own share of every epoch. OUTPUT holds train/, val/
and test/ (one litdata dataset each) and litvision.json (classes, shape, normalization), written last: a folder
without it is an unfinished write."""

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from litvision import UserError, atomic_write
from litvision.datamodule import ImageBatches
from litvision.decoding import Files, _list_image_folder, _report_bad, _stratified_split, decide_shape, decode_all, \
    read_image

log = logging.getLogger(__name__)

INDEX = "litvision.json"
SPLITS = ("train", "val", "test")
STATS_SAMPLE = 10_000  # training images the mean and std are measured on (all of them in a smaller set)


def write_chunks(source: str | Path, output_dir: str, image_size: Sequence[int] | None = None,
                 channels: int | None = None, val_fraction: float = 0.1,
                 split_fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0, skip_bad_images: bool = False,
                 chunk_bytes: str = "64MB", workers: int | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Chunks of uint8 (C, H, W) images and int labels for each split of the image folder (or CSV list) `source`,
    written to `output_dir` (a folder or an s3:// / gs:// URL). A layout without a val split gets one carved from
    train (val_fraction of each class, by `seed`). Returns what litvision.json says."""
    import litdata

    remote = "://" in output_dir
    if not remote:
        output_dir = str(Path(output_dir).expanduser().resolve())
        if (Path(output_dir) / INDEX).is_file() and not overwrite:
            raise UserError(f"{output_dir} already holds a streaming dataset ({INDEX}): give another output folder, "
                            "or --overwrite to replace it")
    classes, files = _list_image_folder(Path(source).expanduser().resolve(), split_fractions, seed)
    if "val" not in files:
        if not 0 < val_fraction < 1:
            raise UserError(f"--val-fraction={val_fraction} is invalid: give a fraction of train between 0 and 1")
        carved = _stratified_split(files["train"], (1 - val_fraction, val_fraction, 0.0), seed)
        files = {"train": carved["train"], "val": carved.get("val", []), "test": files["test"]}
    paths = [path for split in files.values() for path, _ in split]
    _, shapes, errors = decode_all(paths, None, channels)  # every file checked before any chunk is written
    if errors:
        _report_bad(errors, len(paths), skip_bad_images, None if remote else Path(output_dir) / "bad_images.txt")
    shape = decide_shape(shapes, image_size, channels)
    bad = {path for path, _ in errors}
    kept = {split: [(path, label) for path, label in split_files if path not in bad]
            for split, split_files in files.items()}
    cores = len(os.sched_getaffinity(0))
    for split, split_files in kept.items():
        if not split_files:
            raise UserError(f"{source}: the {split} split has no images; give more images or other split fractions")
        litdata.optimize(fn=partial(_item, shape), inputs=split_files, output_dir=f"{output_dir}/{split}",
                         chunk_bytes=chunk_bytes, num_workers=workers or min(cores, max(1, len(split_files) // 500)),
                         mode="overwrite", start_method="fork", verbose=False)
    mean, std = _sample_stats(kept["train"], shape, seed)
    index = {"classes": classes, "input_shape": list(shape), "mean": mean, "std": std,
             "images": {split: len(split_files) for split, split_files in kept.items()}, "source": str(source)}
    _write_index(output_dir, index)
    log.info(f"wrote {', '.join(f'{split} {n}' for split, n in index['images'].items())} images of "
             f"{'x'.join(map(str, shape))} to {output_dir}: train with data=streaming data.input_dir={output_dir}")
    return index


def _item(shape: Sequence[int], entry: tuple[str, int]) -> dict[str, Any]:
    path, label = entry
    return {"image": read_image(path, shape[0], tuple(shape[1:])), "label": label}


def _sample_stats(files: Files, shape: Sequence[int], seed: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units of up to STATS_SAMPLE training images drawn by `seed`."""
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:STATS_SAMPLE]
    total = torch.zeros(shape[0], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for i in order.tolist():
        image = read_image(files[i][0], shape[0], tuple(shape[1:])).to(torch.float64) / 255
        total += image.sum(dim=(1, 2))
        squares += image.square().sum(dim=(1, 2))
    count = len(order) * shape[1] * shape[2]
    mean = total / count
    return mean.tolist(), (squares / count - mean.square()).clamp_min(0).sqrt().tolist()


def _write_index(output_dir: str, index: dict) -> None:
    if "://" not in output_dir:
        with atomic_write(Path(output_dir) / INDEX) as tmp:
            tmp.write_text(json.dumps(index, indent=2))
        return
    from litdata.streaming.fs_provider import _get_fs_provider  # the client litdata itself uploads chunks with

    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / INDEX
        local.write_text(json.dumps(index, indent=2))
        _get_fs_provider(output_dir).upload_file(str(local), f"{output_dir}/{INDEX}")


def read_index(input_dir: str) -> dict[str, Any]:
    """litvision.json of a dataset write_chunks wrote, local or remote; a UserError when it is not one."""
    hint = (f"data.input_dir={input_dir} is not a litvision streaming dataset (no {INDEX}, or an unfinished write): "
            "write one with python -m litvision.streaming IMAGE_FOLDER OUTPUT")
    if "://" not in input_dir:
        path = Path(input_dir).expanduser() / INDEX
        if not path.is_file():
            raise UserError(hint)
        return json.loads(path.read_text())
    from litdata.streaming.fs_provider import _get_fs_provider

    with tempfile.TemporaryDirectory() as folder:
        try:
            _get_fs_provider(input_dir).download_file(f"{input_dir}/{INDEX}", str(Path(folder) / INDEX))
        except Exception as e:  # boto3, google-cloud-storage and obstore each raise their own
            raise UserError(f"{hint} ({type(e).__name__}: {e})") from e
        return json.loads((Path(folder) / INDEX).read_text())


def _stack(items: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """collate_fn: a batch as the other data modules hand it, (uint8 images, int64 labels)."""
    return torch.stack([item["image"] for item in items]), torch.tensor([item["label"] for item in items])


class StreamingDataModule(ImageBatches):
    """Training data streamed in chunks (litdata) from `input_dir`, a folder or URL that write_chunks wrote: only
    the chunks in use are on local disk (in cache_dir, up to max_cache_size), so the dataset may be larger than
    this machine's disk. Each DDP process reads its own share; shuffled by `seed`, a new order every epoch.
    mean/std/class_names: None takes the dataset's own (litvision.json)."""

    def __init__(self, input_dir: str, batch_size: int = 64, num_workers: int = 2, seed: int = 0,
                 cache_dir: str | None = None, max_cache_size: str = "50GB", crop_padding: int = 0,
                 flip: bool | str = False, augment: str = "none", augment_options: dict[str, Any] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 class_names: Sequence[str] | None = None) -> None:
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"data.batch_size={batch_size!r} is invalid: it must be a positive integer, e.g. 64")
        try:
            import litdata  # noqa: F401
        except ImportError as e:
            raise UserError("data=streaming needs litdata: pip install 'litvision[streaming]' (or pip install "
                            "litdata)") from e
        self.input_dir = input_dir if "://" in input_dir else str(Path(input_dir).expanduser().resolve())
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.cache_dir, self.max_cache_size = cache_dir, max_cache_size
        self.set_augmentation(crop_padding, flip, augment, augment_options)
        if flip == "alternate":
            raise UserError("data.flip=alternate follows each image from epoch to epoch by its row, which streamed "
                            "chunks do not give: use data.flip=true with data=streaming")
        self.mean, self.std = mean, std
        self.class_names = list(class_names) if class_names is not None else None
        self.index: dict[str, Any] | None = None

    @property
    def input_shape(self) -> list[int]:
        return list(self.index["input_shape"])

    def match(self, input_shape: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> None:
        """Normalize as a trained model expects (its shape is the dataset's: checked by the caller)."""
        self.mean, self.std = list(mean), list(std)

    def setup(self, stage: str | None = None) -> None:
        if self.index is not None:
            return
        self.index = read_index(self.input_dir)
        names = self.index["classes"]
        if self.class_names is None:
            self.class_names = list(names)
        elif len(self.class_names) != len(names):
            raise UserError(f"data.class_names has {len(self.class_names)} names but {self.input_dir} has "
                            f"{len(names)} classes ({names}): fix the list or set it to null")
        self.mean = list(self.mean) if self.mean is not None else self.index["mean"]
        self.std = list(self.std) if self.std is not None else self.index["std"]

        self.train_set, self.val_set, self.test_set = (self._split(name) for name in SPLITS)

    def _split(self, name: str):
        """A split as this process sees it: litdata takes the process's share from the DDP process group it finds
        when the dataset is made. Training drops a last uneven batch under DDP (litdata's default), so that every
        process runs as many steps; evaluation keeps every image."""
        from litdata import StreamingDataset

        cache = str(Path(self.cache_dir) / name) if self.cache_dir and "://" in self.input_dir else None
        return StreamingDataset(f"{self.input_dir}/{name}", shuffle=name == "train", seed=self.seed, cache_dir=cache,
                                max_cache_size=self.max_cache_size, drop_last=None if name == "train" else False)

    def train_images(self, count: int) -> torch.Tensor:
        return torch.stack([self.train_set[i]["image"] for i in range(min(count, len(self.train_set)))])

    def train_dataloader(self):
        return self._loader("train")

    def val_dataloader(self):
        return self._loader("val")

    def test_dataloader(self):
        return self._loader("test")

    def _loader(self, name: str):
        """Made when Lightning asks, after DDP has started: setup() runs before, for the model's shape and the
        report's image counts, and its datasets see the whole split."""
        from litdata import StreamingDataLoader

        batch_size = self.batch_size
        if name != "train" and self.trainer is not None:  # litdata deals whole batches to each process, the rest to
            # the last: a split smaller than a batch per process would leave one with none, which Lightning refuses
            batch_size = min(batch_size, max(1, self.index["images"][name] // self.trainer.world_size))
        return StreamingDataLoader(self._split(name), batch_size=batch_size, num_workers=self.num_workers,
                                   collate_fn=_stack, pin_memory=torch.cuda.is_available())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m litvision.streaming",
        description="Write an image folder (any layout data=image_folder takes: ROOT/CLASS/*, ROOT/{train,val,test}"
                    "/CLASS/*, or a CSV/TSV list of path,label) as litdata chunks, for data=streaming "
                    "data.input_dir=OUTPUT.",
        epilog="examples:\n  python -m litvision.streaming ~/photos /data/photos-chunks --image-size 224\n"
               "  python -m litvision.streaming ~/photos s3://my-bucket/photos-chunks   (needs AWS credentials)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="the image folder, or a .csv/.tsv list")
    parser.add_argument("output", help="a folder, or an s3:// or gs:// URL")
    parser.add_argument("--image-size", type=int, nargs="+", metavar="PX",
                        help="store at this size (one value, or height width); default: the most common size")
    parser.add_argument("--channels", type=int, choices=(1, 3), help="default: 3 if any image has colour, else 1")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="of train, when the layout has no val split")
    parser.add_argument("--split-fractions", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VAL",
                        "TEST"), help="for a folder (or list) without split folders")
    parser.add_argument("--seed", type=int, default=0, help="of the splits and of the normalization sample")
    parser.add_argument("--skip-bad-images", action="store_true", help="write without the files that cannot be "
                        "decoded (else they are all named and nothing is written)")
    parser.add_argument("--chunk-bytes", default="64MB")
    parser.add_argument("--workers", type=int, help="default: every core")
    parser.add_argument("--overwrite", action="store_true", help="replace a streaming dataset already in OUTPUT")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("litdata").setLevel(logging.WARNING)  # its cache-size notes, per split and worker
    size = args.image_size
    if size is not None and (len(size) not in (1, 2) or min(size) < 1):
        parser.error(f"--image-size {' '.join(map(str, size))}: give one size or height and width, in pixels")
    try:
        write_chunks(args.source, args.output, None if size is None else size * (3 - len(size)), args.channels,
                     args.val_fraction, args.split_fractions, args.seed, args.skip_bad_images, args.chunk_bytes,
                     args.workers, args.overwrite)
    except UserError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
