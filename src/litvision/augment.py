"""Augmentation on whole batches on their device: training crops and flips of uint8 batches (one op per batch
instead of PIL work per image), the recipes of timm and torchvision's references (data.augment), and the test-time
averaging over mirrored and shifted copies.

The recipes' transforms are torchvision.transforms.v2's, the classes torchvision's references use, with each
image's own random draw: v2 draws once per call, so they are called per image of the batch (uint8, on its device).
kornia.augmentation draws per image on whole batches, but its RandAugment and TrivialAugment pick their operations
once per batch. Measured (benchmarks/augment.py, README: Performance): at 160 px, the photo sizes these recipes are
for, torchvision was the faster for 4 of the 6 transforms (ColorJitter 23 against 37 ms for 64 images,
RandAugment 36 against 70); at 32 px kornia's batched ops were faster (ColorJitter 5 against 60 ms for 512
images, beside an AirNet training step of about 500 ms). Mixup and cutmix are batch transforms: torchvision's.
Crop and flip stay hand-written: 3.4 ms for 512 images at 32 px, against kornia's 7.5 and torchvision's 25.
"""

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from litvision import UserError


def random_crop(images: torch.Tensor, padding: int) -> torch.Tensor:
    """torchvision's RandomCrop(size, padding) for a batch: zero-pad each side by `padding`, then cut every
    image at its own random offset. On a CPU one slice per image is copied into the batch (6.3 against 9.6 ms
    for 512 CIFAR-10 images with the masked copies, measured side by side); on a GPU, where each copy is a kernel
    launch, the masked copies (2 x (2 * padding + 1) per batch)."""
    dy, dx = torch.randint(0, 2 * padding + 1, (2, len(images)), device=images.device)
    cut = _cut_sliced if images.device.type == "cpu" else _cut_masked
    return cut(F.pad(images, (padding,) * 4), dy, dx, images.shape[-2:])


def _cut_sliced(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, size: torch.Size) -> torch.Tensor:
    h, w = size
    return torch.stack([image[:, y:y + h, x:x + w] for image, y, x in zip(padded, dy.tolist(), dx.tolist())])


def _cut_masked(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """The images sharing a row (then column) offset cut with one slice."""
    (h, w), (n, c), pad = size, padded.shape[:2], (padded.shape[-1] - size[1]) // 2
    rows = torch.empty(n, c, h, w + 2 * pad, dtype=padded.dtype, device=padded.device)
    for shift in range(2 * pad + 1):
        rows[dy == shift] = padded[dy == shift, :, shift:shift + h]
    out = torch.empty(n, c, h, w, dtype=padded.dtype, device=padded.device)
    for shift in range(2 * pad + 1):
        out[dx == shift] = rows[dx == shift, :, :, shift:shift + w]
    return out


def random_flip(images: torch.Tensor) -> torch.Tensor:
    """RandomHorizontalFlip(0.5) for a batch: each image mirrored left-right with probability one half."""
    return mirrored(images, torch.rand(len(images), device=images.device) < 0.5)


def alternating_flip(images: torch.Tensor, first: torch.Tensor, epoch: int) -> torch.Tensor:
    """airbench's alternating flip: each image is mirrored where `first` (its draw for epoch 0, one per image, the
    same every epoch) is true in even epochs and false in odd ones, so every two epochs show each image both ways
    (random flips show half of them one way only). Measured here at 5 epochs of the 5-minute rung: 86.09%
    against 86.06% with random flips, within what seeds move (README: the accuracy ladder)."""
    return mirrored(images, first ^ bool(epoch % 2))


def mirrored(images: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """The batch with the images where `where` is true mirrored left-right."""
    return torch.where(where[:, None, None, None], images.flip(-1), images)


def test_time_logits(net: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, flip: bool,
                     shift: int) -> torch.Tensor:
    """Evaluation's augmentation: `net`'s logits for normalized `images`, averaged with those of each image's mirror
    (flip) and (shift > 0) of copies shifted by `shift` pixels up-left and down-right, reflect-padded (airbench's
    level 2)."""

    def mirrored(x: torch.Tensor) -> torch.Tensor:
        logits = net(x)
        return (logits + net(x.flip(-1))) / 2 if flip else logits

    logits = mirrored(images)
    if shift:
        padded = F.pad(images, (shift,) * 4, mode="reflect")
        h, w = images.shape[-2:]
        shifted = (mirrored(padded[..., :h, :w]) + mirrored(padded[..., -h:, -w:])) / 2
        logits = (logits + shifted) / 2
    return logits


# data.augment=NAME: transform -> its options (those of the torchvision.transforms.v2 class behind it, _make)
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "none": {},
    "color": {"color_jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4}},
    "randaugment": {"randaugment": {"num_ops": 2, "magnitude": 9}},
    "trivialaugment": {"trivialaugment": {}},
    "mix": {"mixup": {"alpha": 0.2}, "cutmix": {"alpha": 1.0}},
    "photo": {"resized_crop": {"scale": [0.25, 1.0]}, "color_jitter": {"brightness": 0.3, "contrast": 0.3,
                                                                        "saturation": 0.3}},
    # torchvision's classification reference recipe (its ResNet-50 v2 weights): TrivialAugment wide, erasing 0.1,
    # mixup 0.2 or cutmix 1.0
    "torchvision": {"resized_crop": {"scale": [0.08, 1.0]}, "trivialaugment": {}, "erasing": {"p": 0.1},
                    "mixup": {"alpha": 0.2}, "cutmix": {"alpha": 1.0}},
    # timm's train.py (ResNet strikes back A2): rand-m9, erasing 0.25, mixup 0.8 or cutmix 1.0
    "timm": {"resized_crop": {"scale": [0.08, 1.0]}, "randaugment": {"num_ops": 2, "magnitude": 9},
             "erasing": {"p": 0.25}, "mixup": {"alpha": 0.8}, "cutmix": {"alpha": 1.0}},
}
ORDER = ("resized_crop", "color_jitter", "randaugment", "trivialaugment", "erasing", "mixup", "cutmix")


def _make(name: str, options: dict[str, Any], size: tuple[int, int], num_classes: int) -> Callable:
    from torchvision.transforms import v2

    options = {key: tuple(value) if isinstance(value, list) else value for key, value in options.items()}
    makers: dict[str, Callable[..., Callable]] = {
        "resized_crop": lambda **o: v2.RandomResizedCrop(size, antialias=True, **o), "color_jitter": v2.ColorJitter,
        "randaugment": v2.RandAugment, "trivialaugment": v2.TrivialAugmentWide, "erasing": v2.RandomErasing,
        "mixup": lambda **o: v2.MixUp(num_classes=num_classes, **o),
        "cutmix": lambda **o: v2.CutMix(num_classes=num_classes, **o),
    }
    return makers[name](**options)


def recipe(augment: str, options: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The transforms of preset `augment` with `options` over them (transform -> its options; null drops one)."""
    if augment not in PRESETS:
        raise UserError(f"data.augment={augment!r} is not a preset: use one of {', '.join(PRESETS)}")
    chosen = {name: dict(opts) for name, opts in PRESETS[augment].items()}
    for name, opts in (options or {}).items():
        if name not in ORDER:
            raise UserError(f"data.augment_options has {name!r}, not a transform: use some of {', '.join(ORDER)}")
        if opts is None:
            chosen.pop(name, None)
        else:
            chosen[name] = chosen.get(name, {}) | dict(opts)
    return {name: chosen[name] for name in ORDER if name in chosen}


class BatchAugmentation(nn.Module):
    """A recipe (litvision.augment.recipe) for training batches on their device: its image transforms with each
    image's own draw (uint8 stays uint8), then mixup or cutmix (one of the two per batch when both are asked),
    which make the images float in [0, 1] and the labels class probabilities."""

    def __init__(self, transforms: dict[str, dict[str, Any]], size: tuple[int, int], num_classes: int) -> None:
        from torchvision.transforms import v2

        super().__init__()
        made = {}
        for name, options in transforms.items():
            try:
                made[name] = _make(name, options, size, num_classes)
            except (TypeError, ValueError) as e:
                raise UserError(f"data.augment: {name} {options} is invalid: {e}. Fix it with "
                                f"data.augment_options='{{{name}: {{...}}}}'") from e
        mixing = [made.pop(name) for name in ("mixup", "cutmix") if name in made]
        self.per_image = v2.Compose(list(made.values())) if made else None
        self.mixing = mixing[0] if len(mixing) == 1 else v2.RandomChoice(mixing) if mixing else None

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.per_image is not None:
            images = torch.stack([self.per_image(image) for image in images])
        if self.mixing is not None:
            images, labels = self.mixing(images.float() / 255 if images.dtype == torch.uint8 else images, labels)
        return images, labels
