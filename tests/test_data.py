"""Data: every dataset kind loads into uint8 tensors, splits reproducibly, and batches come out as uint8 that the
model normalizes."""

import multiprocessing
import pickle
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from conftest import FIXTURES
from litvision import UserError
from litvision.classifier import Normalize
from litvision.datamodule import ImageDataModule
from litvision.decoding import load

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def datamodule(**kwargs) -> ImageDataModule:
    kwargs = {"dataset": "image_folder", "root": str(FIXTURES / "cifar10-jpeg"), "val_size": 0.2, **kwargs}
    dm = ImageDataModule(**kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


def test_image_folder_classes_from_folders_and_labels_from_files():
    data = load("image_folder", FIXTURES / "cifar10-jpeg")
    assert data.classes == CIFAR_CLASSES
    assert data.train.images.shape == (300, 3, 32, 32) and data.train.images.dtype == torch.uint8
    assert data.test.images.shape == (100, 3, 32, 32)
    assert data.train.labels.bincount().tolist() == [30] * 10
    first_ship = sorted((FIXTURES / "cifar10-jpeg/train/ship").glob("*.jpg"))[0]
    pixels = torch.from_numpy(np.array(Image.open(first_ship).convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(data.train.images[8 * 30], pixels)  # ship is label 8; files sorted within a class


def test_mnist_loads_through_torchvision():
    data = load("mnist", FIXTURES)
    assert data.train.images.shape == (500, 1, 28, 28) and data.test.images.shape == (100, 1, 28, 28)
    reference = torchvision.datasets.MNIST(str(FIXTURES), train=False)
    assert torch.equal(data.test.images[:, 0], reference.data) and torch.equal(data.test.labels, reference.targets)


@pytest.fixture
def cifar10_archive(tmp_path, monkeypatch) -> Path:
    """A tiny CIFAR-10 in the official python format (pickled batches), made of the fixture's real images,
    with torchvision's md5 table pointed at it."""
    data = load("image_folder", FIXTURES / "cifar10-jpeg")
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {f"data_batch_{i + 1}": (data.train.images[i::5], data.train.labels[i::5]) for i in range(5)}
    batches["test_batch"] = (data.test.images, data.test.labels)
    for name, (images, labels) in batches.items():
        entry = {"data": images.reshape(len(images), -1).numpy(), "labels": labels.tolist()}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CIFAR_CLASSES}))
    md5 = torchvision.datasets.utils.calculate_md5
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[f"data_batch_{i}", md5(folder / f"data_batch_{i}")] for i in range(1, 6)])
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5(folder / "test_batch")]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(folder / "batches.meta")})
    return tmp_path


def test_cifar10_official_format_loads_through_torchvision(cifar10_archive):
    dm = datamodule(dataset="cifar10", root=str(cifar10_archive), class_names=None)
    official = torchvision.datasets.CIFAR10(str(cifar10_archive), train=False)
    assert dm.class_names == CIFAR_CLASSES
    assert torch.equal(dm.test_set.images.permute(0, 2, 3, 1), torch.from_numpy(official.data))
    assert dm.test_set.labels.tolist() == official.targets
    assert len(dm.train_set) + len(dm.val_set) == 300


def test_cifar10_image_folder_copy_stands_in_for_the_archive(tmp_path):
    (tmp_path / "cifar10-jpeg").symlink_to(FIXTURES / "cifar10-jpeg")
    dm = datamodule(dataset="cifar10", root=str(tmp_path), class_names=["plane", "car", "bird", "cat", "deer",
                                                                          "dog", "frog", "horse", "ship", "truck"])
    assert dm.class_names[0] == "plane" and dm.input_shape == [3, 32, 32] and len(dm.test_set) == 100


def test_failed_download_says_where_the_files_go(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets.utils, "urlopen", offline, raising=False)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    with pytest.raises(UserError, match=rf"could not download cifar10 into {tmp_path}.*paths.data_dir"):
        ImageDataModule(dataset="cifar10", root=str(tmp_path)).prepare_data()
    assert list(tmp_path.iterdir()) == []


def test_validation_split_is_fixed_by_split_seed():
    a, b, c = datamodule(), datamodule(), datamodule(split_seed=1)
    assert len(a.val_set) == 60 and len(a.train_set) == 240
    assert torch.equal(torch.cat([a.val_set.index, a.train_set.index]).sort().values, torch.arange(300))
    assert torch.equal(a.val_set[:][0], b.val_set[:][0])
    assert not torch.equal(a.val_set[:][0], c.val_set[:][0])
    assert len(datamodule(val_size=10).val_set) == 10


def test_batches_stay_uint8_and_the_model_normalizes_them_with_the_data_stats():
    dm = datamodule(mean=None, std=None, batch_size=240)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (240, 3, 32, 32) and labels.shape == (240,)
    x, y = dm.on_after_batch_transfer((images, labels), 0)
    assert torch.equal(x, images) and torch.equal(y, labels)
    # computed stats normalize the training split to mean 0, std 1 per channel
    normalized = Normalize(dm.spec["mean"], dm.spec["std"])(images)
    assert normalized.dtype == torch.float32
    assert torch.allclose(normalized.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(normalized.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-2)
    tutorial = datamodule(mean=[0.5], std=[0.5])
    normalize = Normalize(tutorial.spec["mean"], tutorial.spec["std"])
    assert torch.allclose(normalize(images), images.float() / 255 * 2 - 1, atol=1e-6)
    # float images in [0, 1] (export's input) give the same as their uint8 originals
    assert torch.allclose(normalize(images.float() / 255), normalize(images), atol=1e-6)


def test_image_folder_converts_and_resizes_mixed_images(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for cls in ("cats", "dogs"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                size = (40, 30) if i % 2 else (20, 20)
                pixels = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / cls / f"{i}.png")
    (tmp_path / "train/cats/notes.txt").write_text("not an image: ignored by extension")
    Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8)).convert("L").save(tmp_path / "train/dogs/g.bmp")
    data = load("image_folder", tmp_path, image_size=[16, 16], channels=None)
    assert data.classes == ["cats", "dogs"]
    assert data.train.images.shape == (13, 3, 16, 16) and data.test.images.shape == (4, 3, 16, 16)
    gray = load("image_folder", tmp_path, image_size=None, channels=1)
    assert gray.train.images.shape == (13, 1, 20, 20)  # the first image's size


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"batch_size": -4}, r"data.batch_size=-4 is invalid: it must be a positive integer"),
    ({"batch_size": 0}, r"data.batch_size=0"),
    ({"val_size": -1}, r"data.val_size=-1"),
    ({"std": [0.5, 0.0, 0.5]}, r"data.std=\[0.5, 0.0, 0.5\]"),
    ({"dataset": "imagenet"}, r"data.dataset='imagenet' is unknown: use one of cifar10, cifar100, mnist, fashion_mnist, "
                              r"kmnist, emnist, svhn, stl10, image_folder"),
])
def test_bad_arguments_name_the_value(kwargs, message):
    with pytest.raises(UserError, match=message):
        datamodule(**kwargs)


def test_missing_empty_and_corrupt_folders(tmp_path, caplog):
    with pytest.raises(UserError, match=rf"data.root={tmp_path / 'nope'} does not exist"):
        load("image_folder", tmp_path / "nope")
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "test").mkdir()
    with pytest.raises(UserError, match="no class folders with images in .*train"):  # an empty folder is no class
        load("image_folder", tmp_path)
    assert "class folder a hold no images" in caplog.text
    Image.new("RGB", (8, 8)).save(tmp_path / "train/a/ok.png")
    with pytest.raises(UserError, match=r"has 1 class \(a\): a classifier needs at least two classes"):
        load("image_folder", tmp_path)
    (tmp_path / "train" / "b").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "train/b/ok.png")
    with pytest.raises(UserError, match=r"no images .* in .*test/CLASS/"):
        load("image_folder", tmp_path)
    for name in ("a", "b"):
        (tmp_path / "test" / name).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / "test" / name / "ok.png")
    (tmp_path / "train/a/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(UserError, match=r"1 of 5 image files cannot be decoded: broken.jpg .*Delete or replace"):
        load("image_folder", tmp_path)


def test_class_names_must_match_the_data():
    with pytest.raises(UserError, match="data.class_names has 2 names but .* has 10 classes"):
        datamodule(class_names=["a", "b"])


def test_decoded_data_is_cached_until_a_source_changes(tmp_path, monkeypatch):
    import litvision.decoding as decoding

    shutil.copytree(FIXTURES / "cifar10-jpeg", tmp_path / "images")
    first = load("image_folder", tmp_path / "images", cache_dir=tmp_path / "cache")
    [cache_file] = (tmp_path / "cache").glob("image_folder-*.pt")
    assert torch.load(cache_file, weights_only=True)["classes"] == CIFAR_CLASSES

    def no_decoding(*args):
        raise AssertionError("decoded again although the cache is valid")

    with monkeypatch.context() as patch:
        patch.setattr(decoding, "decode_all", no_decoding)
        again = load("image_folder", tmp_path / "images", cache_dir=tmp_path / "cache")
    assert torch.equal(again.train.images, first.train.images) and torch.equal(again.test.labels, first.test.labels)

    changed = tmp_path / "images/train/cat/0000.jpg"
    shutil.copyfile(tmp_path / "images/train/dog/0000.jpg", changed)
    rebuilt = load("image_folder", tmp_path / "images", cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2
    cat = CIFAR_CLASSES.index("cat") * 30
    assert torch.equal(rebuilt.train.images[cat], first.train.images[CIFAR_CLASSES.index("dog") * 30])


def _load_into(cache_dir: str) -> int:
    return len(load("mnist", FIXTURES, cache_dir=Path(cache_dir)).train)


def test_parallel_builders_leave_one_whole_cache(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        sizes = pool.map(_load_into, [str(tmp_path)] * 4)
    assert sizes == [500] * 4
    assert [p.suffix for p in tmp_path.iterdir()] == [".pt"]  # no temporary file left behind
    assert len(load("mnist", FIXTURES, cache_dir=tmp_path).test) == 100


def test_unwritable_cache_costs_a_warning_not_the_run(tmp_path, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    data = load("mnist", FIXTURES, cache_dir=blocked / "cache")
    assert len(data.train) == 500 and "could not cache decoded mnist" in caplog.text


def test_batches_cover_the_epoch_once_also_when_split_across_processes():
    dm = datamodule(batch_size=32)
    loader = dm.train_dataloader()
    labels = torch.cat([y for _, y in loader])
    assert len(labels) == 240 and [len(y) for _, y in loader][-1] == 240 - 7 * 32
    assert torch.equal(labels.sort().values, dm.train_set[:][1].sort().values)
    # what Lightning does under DDP: the same batch sampler class, rebuilt around a DistributedSampler per rank
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import DistributedSampler

    per_rank = [_update_dataloader(loader, DistributedSampler(loader.dataset, num_replicas=2, rank=rank, seed=0))
                for rank in (0, 1)]
    assert all(type(ranked.batch_sampler) is type(loader.batch_sampler) for ranked in per_rank)
    images = [torch.cat([x for x, _ in ranked]) for ranked in per_rank]
    assert len(images[0]) == len(images[1]) == 120
    assert len(torch.unique(torch.cat(images).flatten(1), dim=0)) == 240  # every image once across both ranks


def test_evaluation_split_across_processes_counts_each_image_once():
    """DistributedSampler pads 59 images to 30 + 30 by repeating one; the evaluation batches drop the repeat."""
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import DistributedSampler

    from litvision.datamodule import TensorImages

    dm = datamodule(batch_size=8)
    loader = dm._loader(TensorImages(dm.test_set.images, dm.test_set.labels, dm.test_set.index[:59]))
    per_rank = [_update_dataloader(loader, DistributedSampler(loader.dataset, num_replicas=2, rank=rank,
                                                              shuffle=False)) for rank in (0, 1)]
    images = [torch.cat([x for x, _ in ranked]) for ranked in per_rank]
    assert [len(x) for x in images] == [30, 29] and [len(ranked) for ranked in per_rank] == [4, 4]
    together, alone = torch.cat(images).flatten(1), torch.cat([x for x, _ in loader]).flatten(1)
    assert len(together) == 59 and torch.equal(torch.unique(together, dim=0), torch.unique(alone, dim=0))


def test_channel_statistics_from_histograms_equal_float64_sums_in_either_layout():
    from litvision.datamodule import TensorImages, _channel_stats

    images = load("image_folder", FIXTURES / "cifar10-jpeg").train.images
    as_float = images.double() / 255
    mean, std = as_float.mean(dim=(0, 2, 3)), as_float.std(dim=(0, 2, 3), unbiased=False)
    channels_last = images.contiguous(memory_format=torch.channels_last)
    for stored in (images, channels_last):
        got_mean, got_std = _channel_stats(TensorImages(stored, torch.zeros(len(stored), dtype=torch.int64)))
        assert torch.allclose(torch.tensor(got_mean, dtype=torch.float64), mean, rtol=0, atol=1e-12)
        assert torch.allclose(torch.tensor(got_std, dtype=torch.float64), std, rtol=0, atol=1e-12)
    assert not torch.allclose(mean, mean.flip(0), atol=1e-3)  # the channels differ: each is its own
