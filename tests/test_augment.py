"""Batched augmentation does per image what torchvision's RandomCrop(padding) and RandomHorizontalFlip do."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from conftest import FIXTURES
from litvision import UserError
from litvision.augment import random_crop, random_flip
from litvision.datamodule import ImageDataModule
from litvision.decoding import load


def test_random_crop_cuts_each_image_from_its_padded_self_at_its_own_offset():
    images = load("image_folder", FIXTURES / "cifar10-jpeg").test.images
    torch.manual_seed(0)
    out = random_crop(images, 4)
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = F.pad(images, (4, 4, 4, 4))
    offsets = set()
    for i in range(len(images)):
        found = [(dy, dx) for dy in range(9) for dx in range(9)
                 if torch.equal(out[i], padded[i, :, dy:dy + 32, dx:dx + 32])]
        assert found, f"image {i} is not a crop of itself"
        offsets.add(found[0])
    assert len(offsets) > 30  # offsets differ between images


def test_random_flip_mirrors_about_half():
    images = load("image_folder", FIXTURES / "cifar10-jpeg").test.images
    torch.manual_seed(0)
    out = random_flip(images)
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images)]
    kept = [torch.equal(o, i) for o, i in zip(out, images)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 30 <= sum(flipped) <= 70


def test_datamodule_augments_training_batches_only():
    dm = ImageDataModule("image_folder", str(FIXTURES / "cifar10-jpeg"), val_size=0.2, crop_padding=4, flip=True,
                         mean=[0.5], std=[0.5])
    dm.setup()
    batch = (dm.test_set.images, dm.test_set.labels)
    dm.trainer = SimpleNamespace(training=False)
    plain, _ = dm.on_after_batch_transfer(batch, 0)
    assert torch.equal(plain, dm.test_set.images)
    dm.trainer = SimpleNamespace(training=True)
    augmented, labels = dm.on_after_batch_transfer(batch, 0)
    assert augmented.dtype == torch.uint8 and augmented.shape == plain.shape
    assert torch.equal(labels, dm.test_set.labels) and not torch.equal(augmented, plain)


def test_alternate_flip_mirrors_each_image_every_other_epoch_from_a_random_half():
    dm = ImageDataModule("image_folder", str(FIXTURES / "cifar10-jpeg"), batch_size=16, val_size=0, flip="alternate",
                         mean=[0.5], std=[0.5])
    dm.setup()
    torch.manual_seed(0)
    seen = []  # per epoch: row -> was the image mirrored
    for epoch in range(3):
        dm.trainer = SimpleNamespace(training=True, current_epoch=epoch)
        flipped = {}
        loader = dm.train_dataloader()
        for indices in loader.batch_sampler:  # the loader's own batches, shuffled, each with its images' rows
            batch = loader.collate_fn(loader.dataset.__getitems__(indices))
            images, _ = dm.on_after_batch_transfer(batch, 0)
            for image, row in zip(images, dm.train_set.index[indices].tolist()):
                original = dm.train_set.images[row]
                assert torch.equal(image, original) or torch.equal(image, original.flip(-1))
                flipped[row] = not torch.equal(image, original)
        seen.append(flipped)
    rows = sorted(seen[0])
    assert len(rows) == len(dm.train_set) and 0.3 < sum(seen[0].values()) / len(rows) < 0.7
    assert all(seen[1][r] != seen[0][r] and seen[2][r] == seen[0][r] for r in rows)


def test_flip_accepts_only_true_false_or_alternate():
    with pytest.raises(UserError, match="data.flip='sometimes'.*alternate"):
        ImageDataModule("image_folder", str(FIXTURES / "cifar10-jpeg"), flip="sometimes")
