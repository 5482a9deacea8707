"""A user's own folders: every layout, hidden and empty folders, all bad files named at once (or skipped),
multi-frame and EXIF-rotated images, the stored shape decided and said, decoding in parallel equal to serial
decoding, k-fold cross-validation and its summary over folds."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import FIXTURES, ROOT
from litvision import UserError
from litvision.datamodule import ImageDataModule
from litvision.decoding import decode, decode_all, load

CIFAR = FIXTURES / "cifar10-jpeg"
CLASSES = sorted(p.name for p in (CIFAR / "train").iterdir())


def flat_copy(root: Path) -> Path:
    """The fixtures' train and test images together in one folder per class (ROOT/CLASS/*.jpg)."""
    for split in ("train", "test"):
        for folder in (CIFAR / split).iterdir():
            (root / folder.name).mkdir(parents=True, exist_ok=True)
            for file in folder.iterdir():
                shutil.copyfile(file, root / folder.name / f"{split}_{file.name}")
    return root


def test_flat_folder_is_split_stratified_and_reproducibly(tmp_path, caplog):
    caplog.set_level("INFO")
    root = flat_copy(tmp_path / "flat")
    data = load("image_folder", root, split_fractions=(0.6, 0.2, 0.2), split_seed=3)
    assert data.classes == CLASSES and data.val is not None
    for split, share in ((data.train, 0.6), (data.val, 0.2), (data.test, 0.2)):  # 40 images a class
        assert torch.equal(split.labels.bincount(minlength=10), torch.full((10,), round(40 * share)))
    assert "one folder per class, split 0.6/0.2/0.2 by seed 3" in caplog.text
    assert "train 240, val 80, test 80 images" in caplog.text and "airplane 24/8/8" in caplog.text
    again = load("image_folder", root, split_fractions=(0.6, 0.2, 0.2), split_seed=3)
    assert torch.equal(again.test.images, data.test.images)
    other = load("image_folder", root, split_fractions=(0.6, 0.2, 0.2), split_seed=4)
    assert not torch.equal(other.test.images, data.test.images)
    everything = torch.cat([data.train.images, data.val.images, data.test.images]).flatten(1)
    assert len(torch.unique(everything, dim=0)) == 400  # every image in exactly one split
    with pytest.raises(UserError, match=r"data.split_fractions=\[0.5, 0.2\] is invalid"):
        load("image_folder", root, split_fractions=(0.5, 0.2))


def test_train_val_test_folders_use_their_val(tmp_path, caplog):
    caplog.set_level("INFO")
    root = tmp_path / "three"
    shutil.copytree(CIFAR / "train", root / "train")
    shutil.copytree(CIFAR / "test", root / "val")
    shutil.copytree(CIFAR / "test", root / "test")
    dm = ImageDataModule("image_folder", str(root), val_size=0.5, mean=[0.5], std=[0.5])
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (300, 100, 100)  # val_size is not used
    assert torch.equal(dm.val_set[:][0], dm.test_set[:][0])
    assert "train+val+test folders" in caplog.text


@pytest.mark.parametrize("kind", ["csv", "tsv", "csv_with_splits"])
def test_a_list_of_paths_and_labels(tmp_path, kind):
    """Labels that are not folder names: a list beside the images, paths relative to it."""
    images = tmp_path / "photos"
    images.mkdir()
    rows = []
    for split in ("train", "test"):
        for i, file in enumerate(sorted((CIFAR / split).rglob("*.jpg"))):
            shutil.copyfile(file, images / f"{split}{i}.jpg")
            label = "animal" if file.parent.name in ("bird", "cat", "deer", "dog", "frog", "horse") else "machine"
            rows.append([f"photos/{split}{i}.jpg", label, *([split] if kind == "csv_with_splits" else [])])
    sep = "\t" if kind == "tsv" else ","
    listing = tmp_path / f"labels.{'tsv' if kind == 'tsv' else 'csv'}"
    listing.write_text(sep.join(["path", "label"]) + "\n" + "\n".join(sep.join(r) for r in rows) + "\n")
    data = load("image_folder", listing)
    assert data.classes == ["animal", "machine"]
    if kind == "csv_with_splits":
        assert (len(data.train), len(data.test), data.val) == (300, 100, None)
    else:
        assert len(data.train) + len(data.val) + len(data.test) == 400
    assert set(data.train.labels.tolist()) == {0, 1}
    (images / "train0.jpg").unlink()
    with pytest.raises(UserError, match=r"lists 1 files that do not exist .* photos/train0.jpg"):
        load("image_folder", listing)


def test_hidden_entries_and_empty_class_folders_are_no_classes(tmp_path, caplog):
    root = flat_copy(tmp_path / "flat")
    (root / ".ipynb_checkpoints").mkdir()
    shutil.copyfile(CIFAR / "test" / "cat" / "0000.jpg", root / ".ipynb_checkpoints" / "x.jpg")
    (root / "cat" / "._0000.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata, not an image
    (root / "unicorn").mkdir()
    data = load("image_folder", root)
    assert data.classes == CLASSES and len(data.train) + len(data.val) + len(data.test) == 400
    assert "class folder unicorn hold no images" in caplog.text
    with pytest.raises(UserError, match=r"has class folders \['zebra'\] that train/ lacks"):
        split = tmp_path / "split"
        shutil.copytree(CIFAR, split)
        (split / "test" / "zebra").mkdir()
        shutil.copyfile(CIFAR / "test" / "cat" / "0000.jpg", split / "test" / "zebra" / "z.jpg")
        load("image_folder", split)


def test_every_bad_file_is_named_at_once_or_skipped(tmp_path, caplog):
    root = tmp_path / "data"
    shutil.copytree(CIFAR, root)
    bad = [root / "train" / "cat" / f"bad{i:02d}.jpg" for i in range(23)]
    for path in bad:
        path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    listing = tmp_path / "run" / "bad_images.txt"
    with pytest.raises(UserError) as error:
        load("image_folder", root, bad_images_file=listing)
    message = str(error.value)
    assert message.startswith("23 of 423 image files cannot be decoded: bad00.jpg (")
    assert "bad19.jpg" in message and "bad20.jpg" not in message and "and 3 more" in message
    assert f"all 23 listed in {listing}" in message
    assert sorted(line.split(":")[0] for line in listing.read_text().splitlines()) == [str(p) for p in bad]
    skipped = load("image_folder", root, skip_bad_images=True)
    assert len(skipped.train) == 300 and "skipped 23 of 423 image files" in caplog.text
    assert torch.equal(skipped.train.images, load("image_folder", CIFAR).train.images)


def test_multi_frame_and_exif_rotated_images(tmp_path):
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)) for _ in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "pages.tiff", save_all=True, append_images=frames[1:])
    gif, tiff = decode(str(tmp_path / "anim.gif"), 3), decode(str(tmp_path / "pages.tiff"), 3)
    assert gif.shape == tiff.shape == (3, 12, 16)
    assert torch.equal(tiff, torch.from_numpy(np.asarray(frames[0])).permute(2, 0, 1))  # the first page
    first_gif = Image.open(tmp_path / "anim.gif").convert("RGB")
    assert torch.equal(gif, torch.from_numpy(np.asarray(first_gif)).permute(2, 0, 1))
    upright = rng.integers(0, 255, (10, 20, 3), dtype=np.uint8)  # 10 high, 20 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned; shown rotated 90 degrees clockwise
    Image.fromarray(upright).save(tmp_path / "phone.png", exif=exif)
    Image.fromarray(upright).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    for name in ("phone.png", "phone.jpg"):
        assert decode(str(tmp_path / name), 3).shape == (3, 20, 10), name  # stored as seen: 20 high, 10 wide


def test_the_stored_shape_is_the_most_common_size_and_colour_if_any(tmp_path, caplog):
    caplog.set_level("INFO")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (30, 40), dtype=np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    # sorts first, but is the odd one: 8x8 and the only colour image
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "train" / "a" / "0_odd.png")
    data = load("image_folder", tmp_path)
    assert data.train.images.shape[1:] == (3, 30, 40)  # colour kept, most common size
    assert "stored at 3x30x40 (the most common size, RGB if any image has colour), resized 1 and converted 16 of " \
           "17 images" in caplog.text
    gray = load("image_folder", tmp_path, image_size=(16, 16), channels=1)
    assert gray.train.images.shape[1:] == (1, 16, 16)


def test_parallel_decoding_equals_serial_decoding_bit_for_bit():
    paths = sorted(str(p) for p in CIFAR.rglob("*.jpg"))
    serial, serial_shapes, _ = decode_all(paths, (3, 32, 32), workers=1)
    parallel, shapes, errors = decode_all(paths, (3, 32, 32), workers=2)
    assert not errors and shapes == serial_shapes == [(3, 32, 32)] * 400
    assert torch.equal(serial, parallel)
    assert torch.equal(parallel, torch.stack([decode(path, 3) for path in paths]))  # as one file at a time
    from torchvision.io import ImageReadMode, decode_image  # decode() reads the bytes itself: the same pixels

    assert torch.equal(parallel, torch.stack([decode_image(path, mode=ImageReadMode.RGB) for path in paths]))


def test_photo_sized_images_are_stored_channels_last_and_decode_in_parallel_as_serially(tmp_path):
    """Rows of CHANNELS_LAST_BYTES and more are written as the decoder returns them (channels last): the same pixels
    as one file at a time, in parallel as serially; a file that fails and one of another size leave zero rows
    between written ones for the caller."""
    from litvision.decoding import CHANNELS_LAST_BYTES

    sources = sorted(CIFAR.rglob("*.jpg"))[:60]
    paths = []
    for i, source in enumerate(sources):  # real photos, upscaled to 96x96 (27 KB a row)
        paths.append(str(tmp_path / f"{i:02d}.jpg"))
        Image.open(source).resize((96, 96) if i != 7 else (64, 64), Image.BICUBIC).save(paths[-1], quality=90)
    Path(paths[3]).write_bytes(b"not a jpeg")
    assert 3 * 96 * 96 >= CHANNELS_LAST_BYTES > 3 * 32 * 32
    serial, serial_shapes, serial_errors = decode_all(paths, (3, 96, 96), workers=1)
    parallel, shapes, errors = decode_all(paths, (3, 96, 96), workers=2)
    assert shapes == serial_shapes and [path for path, _ in errors] == [path for path, _ in serial_errors] == [paths[3]]
    assert shapes[3] is None and shapes[7] == (3, 64, 64)
    assert parallel.shape == (60, 3, 96, 96) and parallel.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(serial, parallel)
    good = [i for i in range(60) if i not in (3, 7)]
    assert torch.equal(parallel[good], torch.stack([decode(paths[i], 3) for i in good]))
    assert not parallel[[3, 7]].any()
    small, _, _ = decode_all(paths[:2], (3, 32, 32), workers=1)  # below the threshold: (C, H, W), as cached before
    assert small.is_contiguous()


def test_k_fold_validation_folds_are_stratified_and_cover_the_training_images():
    held = []
    for fold in range(4):
        dm = ImageDataModule("image_folder", str(CIFAR), folds=4, fold=fold, mean=[0.5], std=[0.5])
        dm.setup()
        assert len(dm.val_set) + len(dm.train_set) == 300
        assert not set(dm.val_set.index.tolist()) & set(dm.train_set.index.tolist())
        counts = dm.val_set.labels[dm.val_set.index].bincount(minlength=10)
        assert set(counts.tolist()) <= {7, 8}  # 30 images a class: 7 or 8 of each in every fold
        held.append(set(dm.val_set.index.tolist()))
    assert set.union(*held) == set(range(300)) and sum(map(len, held)) == 300
    with pytest.raises(UserError, match=r"data.fold=4 is invalid: it must be a fold number from 0 to 3"):
        ImageDataModule("image_folder", str(CIFAR), folds=4, fold=4)


def test_a_cross_validation_sweep_reports_mean_and_std_over_folds(tmp_path):
    done = subprocess.run([sys.executable, "train.py", "-m", "data=image_folder", f"data.root={CIFAR}", "data.folds=3",
                           "data.fold=0,1,2", "trainer.max_epochs=1", "logger=none", "data.batch_size=64",
                           f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    values = [json.loads((folder / "metrics.json").read_text())["metrics"]["val/acc_best"]
              for folder in sorted((tmp_path / "sweep").glob("*data.fold=*"))]
    assert len(values) == 3
    summary = (tmp_path / "sweep" / "summary.md").read_text()
    assert "Over data.fold (ok jobs; standard deviation of the sample):" in summary
    mean, std = np.mean(values), np.std(values, ddof=1)
    assert f"| 3 | {mean:.4f} | {std:.4f} |" in summary


def test_the_memory_mapped_path_trains_as_the_in_memory_path(tmp_path):
    """With a cache folder the images are decoded into a memory-mapped file there and training reads the map;
    without, they are decoded into memory. Same seed: same metrics, first run and cached run alike."""
    from conftest import make_cfg
    from litvision.training import train

    def run(cache: str, out: str) -> dict:
        return train(make_cfg(tmp_path / out, "data=image_folder", f"data.root={CIFAR}", "trainer.max_epochs=2",
                              "logger=none", "callbacks=none", f"paths.cache_dir={cache}"))

    in_memory = run("null", "memory")
    first, cached = run(str(tmp_path / "cache"), "first"), run(str(tmp_path / "cache"), "cached")
    assert in_memory == first == cached
    data = load("image_folder", CIFAR, cache_dir=tmp_path / "cache")
    assert not data.train.images.untyped_storage().resizable()  # a map of the cache file, not allocated memory


def test_a_folder_where_nothing_decodes_is_one_line_even_when_skipping(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(2):
            (tmp_path / name / f"{i}.jpg").write_bytes(b"not an image")
    with pytest.raises(UserError, match="none of the 4 image files could be decoded"):
        load("image_folder", tmp_path, skip_bad_images=True, split_fractions=(0.5, 0, 0.5))
