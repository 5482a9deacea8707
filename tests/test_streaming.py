"""data=streaming: chunks written from an image folder by `python -m litvision.streaming` hold the images the
in-memory path decodes, train.py trains and tests on them, DDP processes each read their own share, and bad input
is one line."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import FIXTURES, ROOT, make_cfg
from litvision import UserError
from litvision.decoding import load
from litvision.streaming import INDEX, write_chunks
from litvision.training import train

pytest.importorskip("litdata")
from litdata import StreamingDataset  # noqa: E402

CIFAR = FIXTURES / "cifar10-jpeg"


@pytest.fixture(scope="module")
def chunks(tmp_path_factory):
    out = tmp_path_factory.mktemp("streaming") / "cifar"
    write_chunks(CIFAR, str(out), val_fraction=0.1, seed=0)
    return out


def _rows(images: torch.Tensor) -> list[bytes]:
    return sorted(image.numpy().tobytes() for image in images)


def test_chunks_hold_the_images_the_in_memory_path_decodes(chunks):
    index = json.loads((chunks / INDEX).read_text())
    assert index["input_shape"] == [3, 32, 32] and index["images"] == {"train": 270, "val": 30, "test": 100}
    assert index["classes"] == sorted(p.name for p in (CIFAR / "train").iterdir())
    decoded = load("image_folder", CIFAR)
    streamed = {split: [StreamingDataset(str(chunks / split))[i] for i in range(index["images"][split])]
                for split in ("train", "val", "test")}
    assert _rows(torch.stack([item["image"] for item in streamed["test"]])) == _rows(decoded.test.images)
    train_and_val = torch.stack([item["image"] for split in ("train", "val") for item in streamed[split]])
    assert _rows(train_and_val) == _rows(decoded.train.images)  # val carved from train: together, all of train
    labels = torch.tensor([item["label"] for item in streamed["val"]])
    assert torch.equal(labels.bincount(minlength=10), torch.full((10,), 3))  # stratified: 10% of each class
    # the normalization written is the training split's own (fewer than 10,000 images: all of them)
    train = torch.stack([item["image"] for item in streamed["train"]]).double() / 255
    assert torch.allclose(torch.tensor(index["mean"], dtype=torch.float64), train.mean(dim=(0, 2, 3)))
    assert torch.allclose(torch.tensor(index["std"], dtype=torch.float64), train.std(dim=(0, 2, 3), correction=0))


def test_train_py_trains_tests_and_reevaluates_on_streamed_data(chunks, tmp_path):
    metrics = train(make_cfg(tmp_path / "run", "data=streaming", f"data.input_dir={chunks}", "data.num_workers=0",
                             "model=lenet", "trainer.max_epochs=2", "data.crop_padding=2", "data.flip=true",
                             data_dir=chunks))
    result = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert result["images"] == {"train": 270, "val": 30, "test": 100} and result["evaluated_images"] == 100
    assert result["config"]["data"]["input_dir"] == str(chunks) and 0 <= metrics["test/acc"] <= 1
    again = train(make_cfg(tmp_path / "again", "data=streaming", f"data.input_dir={chunks}", "data.num_workers=0",
                           "train=false", f"ckpt_path={result['checkpoint']}", data_dir=chunks))
    assert again["test/acc"] == metrics["test/acc"]


def test_bad_files_are_named_at_once_and_nothing_is_written(tmp_path):
    root = tmp_path / "flat"
    for folder in ("cat", "dog"):
        shutil.copytree(CIFAR / "train" / folder, root / folder)
    (root / "cat" / "broken.jpg").write_bytes(b"not an image")
    (root / "dog" / "empty.png").write_bytes(b"")
    with pytest.raises(UserError, match=r"2 of 62 image files cannot be decoded: broken.jpg .*empty.png"):
        write_chunks(root, str(tmp_path / "out"))
    assert not (tmp_path / "out" / INDEX).exists()
    index = write_chunks(root, str(tmp_path / "out"), skip_bad_images=True, split_fractions=(0.5, 0.25, 0.25))
    assert sum(index["images"].values()) == 60 and min(index["images"].values()) >= 14
    assert sorted(line.split(":")[0].rsplit("/", 1)[1] for line in
                  (tmp_path / "out" / "bad_images.txt").read_text().splitlines()) == ["broken.jpg", "empty.png"]
    with pytest.raises(UserError, match="already holds a streaming dataset"):
        write_chunks(root, str(tmp_path / "out"))


def test_a_folder_that_is_no_streaming_dataset_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"data.input_dir=.* is not a litvision streaming dataset .*python -m "
                                        r"litvision.streaming IMAGE_FOLDER OUTPUT"):
        train(make_cfg(tmp_path / "run", "data=streaming", f"data.input_dir={tmp_path}", data_dir=tmp_path))
    done = subprocess.run([sys.executable, "-m", "litvision.streaming", str(tmp_path / "missing"), str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"error: data.root={tmp_path / 'missing'} does not exist: point it at "
                                                "a folder of class folders (ROOT/CLASS/*.jpg, or ROOT/train/CLASS and "
                                                "ROOT/test/CLASS) or at a CSV list of path,label"]


def test_ddp_processes_each_stream_their_own_share(chunks, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    done = subprocess.run([sys.executable, "train.py", "trainer=ddp_cpu", "data=streaming", f"data.input_dir={chunks}",
                           "data.num_workers=0", "data.batch_size=27", "model=mlp", "trainer.max_epochs=1",
                           f"hydra.run.dir={tmp_path / 'run'}", "callbacks.progress_bar=null",
                           "+callbacks.seen._target_=seen_samples.SeenImages", f"+callbacks.seen.out={tmp_path / 'seen'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = [json.loads((tmp_path / "seen" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [s["world_size"] for s in seen] == [2, 2] and [len(s["digests"]) for s in seen] == [135, 135]
    shares = [set(s["digests"]) for s in seen]
    every = {hashlib.sha1(item["image"].numpy().tobytes()).hexdigest() for item in StreamingDataset(str(chunks / "train"))}
    assert not shares[0] & shares[1] and shares[0] | shares[1] == every
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["evaluated_images"] == 100
    noise = ("disabled the `drop_last` option", "`IterableDataset` has `__len__` defined")  # said, not applying
    assert not [text for text in noise if text in done.stdout + done.stderr]


def test_the_alternating_flip_asks_for_random_flips_on_streamed_data(chunks, tmp_path):
    with pytest.raises(UserError, match="data.flip=alternate .* use data.flip=true with data=streaming"):
        train(make_cfg(tmp_path / "run", "data=streaming", f"data.input_dir={chunks}", "data.flip=alternate",
                       data_dir=tmp_path))
