"""Known architectures from torchvision, for the tutorial's fine-tuning section: any torchvision classification
model by name (model=torchvision model.name=...), or ResNet-18 in its CIFAR form (model=resnet18), with
pretrained weights (torchvision's weights enum, or a local file) and, optionally, a frozen backbone: everything
fixed, the last layer replaced by a new head for the data's classes, and only that head trained."""

import logging
import urllib.error
from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from torch import nn

from litvision import UserError

log = logging.getLogger(__name__)


class Backbone(nn.Module):
    """name: a torchvision classification model (torchvision.models.list_models()). cifar_stem: a 3x3 stride-1
    first convolution and no max-pool, the ResNet variant for 32x32 images. weights: None (random), a name of the
    model's weights enum (DEFAULT, IMAGENET1K_V1, ...; downloaded by torchvision) or a path to a state dict of the
    model; layers whose shape differs (the head; the CIFAR stem) keep their fresh initialization.
    freeze_backbone: train only the new head; the backbone's BatchNorm statistics stay fixed too."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, name: str = "resnet18",
                 weights: str | None = None, freeze_backbone: bool = False, cifar_stem: bool = False) -> None:
        super().__init__()
        known = torchvision.models.list_models(torchvision.models)  # the classification models
        if name not in known:
            raise UserError(f"model.name={name} is not a torchvision classification model: pick one of "
                            f"{', '.join(known)}")
        net = torchvision.models.get_model(name, **({"aux_logits": False, "init_weights": True}
                                                    if name in ("googlenet", "inception_v3") else {}))
        if cifar_stem:
            if not isinstance(getattr(net, "maxpool", None), nn.MaxPool2d):
                raise UserError(f"model.cifar_stem=true is for ResNets; {name} has no stem to replace")
            net.conv1 = nn.Conv2d(3, net.conv1.out_channels, 3, 1, 1, bias=False)
            net.maxpool = nn.Identity()
        if weights:
            _load(net, name, weights)
        self.head_path, last = _last_linear(net, name)  # a path, not a second reference: one state dict key each
        parent, _, attribute = self.head_path.rpartition(".")
        setattr(net.get_submodule(parent), attribute, nn.Linear(last.in_features, num_classes))
        self.net, self.freeze_backbone = net, freeze_backbone
        if freeze_backbone:
            net.requires_grad_(False)
            self.head.requires_grad_(True)
        self.gray = input_shape[0] == 1  # torchvision models take 3 channels: gray images are repeated
        _check_input(self, name, input_shape)

    @property
    def head(self) -> nn.Linear:
        return self.net.get_submodule(self.head_path)

    def body(self) -> list[nn.Module]:
        """Every part of the network but the head: the top-most modules that do not hold it."""
        parts, module = [], self.net
        for name in self.head_path.split("."):
            parts += [child for child_name, child in module.named_children() if child_name != name]
            module = module.get_submodule(name)
        return parts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.expand(-1, 3, -1, -1) if self.gray else x)

    def train(self, mode: bool = True) -> "Backbone":
        """A frozen backbone stays in eval mode (fixed BatchNorm statistics, no dropout); the head trains."""
        super().train(mode)
        if self.freeze_backbone:
            self.net.eval()
            self.head.train(mode)
        return self


def _load(net: nn.Module, name: str, weights: str) -> None:
    """Pretrained weights into net, except the layers whose shape differs (the head, a CIFAR stem)."""
    if Path(weights).suffix in (".pt", ".pth") or Path(weights).exists():
        if not Path(weights).is_file():
            raise UserError(f"model.weights={weights} is not a file: give a state dict saved with torch.save, or a "
                            f"name of {name}'s weights (DEFAULT, ...)")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    else:
        enum = torchvision.models.get_model_weights(name)
        if weights not in enum.__members__ and weights != "DEFAULT":
            raise UserError(f"model.weights={weights}: {name} has weights {', '.join(['DEFAULT', *enum.__members__])}, "
                            "or give the path of a state dict file")
        chosen = getattr(enum, weights)
        try:
            state = chosen.get_state_dict(progress=False, check_hash=True)
        except (urllib.error.URLError, OSError) as e:
            raise UserError(f"model.weights={weights}: could not download {chosen.url} ({e}). Without internet, "
                            f"download that file on a machine with it and give its path: model.weights=/path/to/"
                            f"{Path(chosen.url).name}") from e
    own = net.state_dict()
    usable = {key: value for key, value in state.items() if key in own and own[key].shape == value.shape}
    if not usable:
        raise UserError(f"model.weights={weights} has no tensor that fits {name}: is it a state dict of {name}?")
    net.load_state_dict(usable, strict=False)
    fresh = sorted({key.rsplit(".", 1)[0] for key in own if key not in usable})
    log.info(f"{name}: {len(usable)} pretrained tensors from {weights}; freshly initialized: {', '.join(fresh)}")


def _last_linear(net: nn.Module, name: str) -> tuple[str, nn.Linear]:
    """The classification layer to replace: the model's last nn.Linear, and its path in the model."""
    found = [(path, module) for path, module in net.named_modules() if isinstance(module, nn.Linear)]
    if not found:
        raise UserError(f"model.name={name} ends in no Linear layer to replace with a new head: pick another model")
    return found[-1]


def _check_input(backbone: Backbone, name: str, input_shape: Sequence[int]) -> None:
    """One image through the network now: a model too deep for the data's image size fails here, clearly."""
    backbone.eval()
    try:
        with torch.no_grad():
            backbone(torch.zeros(1, *input_shape))
    except (RuntimeError, AssertionError, ValueError) as e:  # shape errors; ViT asserts its image size
        raise UserError(f"model.name={name} cannot take {'x'.join(map(str, input_shape))} images ({e}); use larger "
                        "images (data.image_size for an image folder) or another model") from e
    finally:
        backbone.train()
