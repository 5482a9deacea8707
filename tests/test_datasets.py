"""Datasets by name through torchvision, each read offline from tiny files written in the dataset's official format
(IDX for the MNIST family, the pickled batches of CIFAR-100, SVHN's .mat, STL-10's binary). torchvision checks
the md5 of the real CIFAR-100, SVHN and STL-10 files: that check is switched off for these tiny stand-ins."""

import pickle
import struct

import numpy as np
import pytest
import torch
import torchvision

from conftest import make_cfg
from litvision.decoding import load
from litvision.training import train

RNG = np.random.default_rng(0)


def idx(path, array: np.ndarray) -> None:
    """An IDX file as MNIST ships it: magic (0x08 = uint8, number of dimensions), the sizes, the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.astype(np.uint8).tobytes())


def mnist_like(root, folder: str, prefix: dict[str, str], classes: int) -> dict[str, np.ndarray]:
    arrays = {}
    for split, n in (("train", 40), ("test", 10)):
        images, labels = RNG.integers(0, 255, (n, 28, 28)), np.arange(n) % classes
        idx(root / folder / "raw" / f"{prefix[split]}-images-idx3-ubyte", images)
        idx(root / folder / "raw" / f"{prefix[split]}-labels-idx1-ubyte", labels)
        arrays[split] = images
    return arrays


@pytest.mark.parametrize(("name", "folder", "classes"), [("fashion_mnist", "FashionMNIST", 10),
                                                         ("kmnist", "KMNIST", 10)])
def test_mnist_family(tmp_path, name, folder, classes):
    arrays = mnist_like(tmp_path, folder, {"train": "train", "test": "t10k"}, classes)
    data = load(name, tmp_path)
    assert data.train.images.shape == (40, 1, 28, 28) and data.test.images.shape == (10, 1, 28, 28)
    assert torch.equal(data.train.images[:, 0], torch.from_numpy(arrays["train"].astype(np.uint8)))
    assert data.classes == getattr(torchvision.datasets, folder).classes


def test_emnist_letters_are_turned_upright(tmp_path):
    arrays = mnist_like(tmp_path, "EMNIST", {"train": "emnist-letters-train", "test": "emnist-letters-test"}, 26)
    data = load("emnist", tmp_path, subset="letters")
    assert data.classes == torchvision.datasets.EMNIST.classes_split_dict["letters"]
    assert torch.equal(data.test.images[:, 0], torch.from_numpy(arrays["test"].astype(np.uint8)).transpose(1, 2))


def test_cifar100(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    names = [f"class{i:03d}" for i in range(100)]
    batches = {}
    for split, n in (("train", 200), ("test", 100)):
        batches[split] = {"data": RNG.integers(0, 255, (n, 3072)).astype(np.uint8),
                          "fine_labels": list(np.arange(n) % 100), "coarse_labels": [0] * n}
        (folder / split).write_bytes(pickle.dumps(batches[split]))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": names, "coarse_label_names": ["x"]}))
    data = load("cifar100", tmp_path)
    assert data.classes == names and data.train.images.shape == (200, 3, 32, 32)
    assert torch.equal(data.test.images[0], torch.from_numpy(batches["test"]["data"][0]).view(3, 32, 32))
    assert data.train.labels[:3].tolist() == [0, 1, 2]


def test_svhn(tmp_path, monkeypatch):
    from scipy.io import savemat

    monkeypatch.setattr(torchvision.datasets.SVHN, "_check_integrity", lambda self: True)
    arrays = {}
    for split, n in (("train", 30), ("test", 10)):
        images = RNG.integers(0, 255, (32, 32, 3, n)).astype(np.uint8)  # SVHN's own order: H, W, C, N
        labels = (np.arange(n) % 10 + 1).reshape(-1, 1)  # 1..10, 10 standing for the digit 0
        savemat(tmp_path / f"{split}_32x32.mat", {"X": images, "y": labels})
        arrays[split] = images
    data = load("svhn", tmp_path)
    assert data.classes == [str(d) for d in range(10)] and data.train.images.shape == (30, 3, 32, 32)
    assert data.train.labels[:3].tolist() == [1, 2, 3] and data.train.labels[9].item() == 0
    assert torch.equal(data.test.images[2], torch.from_numpy(arrays["test"][..., 2]).permute(2, 0, 1))


def test_stl10(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets.STL10, "_check_integrity", lambda self: True)
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    for split, n in (("train", 20), ("test", 10)):
        images = RNG.integers(0, 255, (n, 3, 96, 96)).astype(np.uint8)  # stored column-major per channel
        images.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")
        (np.arange(n) % 10 + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
        if split == "test":
            expected = images
    data = load("stl10", tmp_path)
    assert data.classes == names and data.train.images.shape == (20, 3, 96, 96)
    assert torch.equal(data.test.images, torch.from_numpy(expected)) and data.test.labels[:2].tolist() == [0, 1]


def test_a_named_dataset_trains_end_to_end(tmp_path):
    mnist_like(tmp_path / "data", "FashionMNIST", {"train": "train", "test": "t10k"}, 10)
    metrics = train(make_cfg(tmp_path / "run", "data=fashion_mnist", "data.val_size=10", "trainer.max_epochs=1",
                             "logger=none", data_dir=tmp_path / "data"))
    assert 0 <= metrics["test/acc"] <= 1 and "test/acc_class/Ankle boot" in metrics
