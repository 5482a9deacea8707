"""The networks beyond LeNet: torchvision backbones (ResNet-18 for CIFAR, any model by name, pretrained weights,
a frozen backbone), the hand-written MLP of the MNIST notebook, and the Cogitare recipe's options."""

import urllib.error

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import torchvision


from conftest import ROOT
from litvision import UserError, instantiate
from litvision.backbones import Backbone
from litvision.module import Classifier
from litvision.scratch import SGD, ScratchMLP, cross_entropy
from litvision.training import build_model, train


def fit_steps(cfg, steps: int) -> tuple[Classifier, dict[str, torch.Tensor]]:
    """The model cfg builds, its state before training, after `steps` training steps through Lightning."""
    datamodule = instantiate(cfg.data, _convert_="all")
    model = build_model(cfg, datamodule)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    L.Trainer(max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False).fit(model, datamodule=datamodule)
    return model, before


def test_resnet18_is_the_cifar_variant(cfg_factory):
    cfg = cfg_factory("model=resnet18")
    net = instantiate(cfg.model, input_shape=[3, 32, 32], num_classes=10).net
    assert (net.conv1.kernel_size, net.conv1.stride) == ((3, 3), (1, 1)) and isinstance(net.maxpool, torch.nn.Identity)
    assert net.fc.out_features == 10 and net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_frozen_backbone_keeps_its_weights_and_trains_the_new_head(cfg_factory):
    model, before = fit_steps(cfg_factory("model=resnet18", "model.freeze_backbone=true", "data.batch_size=16",
                                          "optimizer.lr=0.1"), steps=3)
    after = model.state_dict()
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed == {"net.net.fc.weight", "net.net.fc.bias"}  # BatchNorm statistics included: all unchanged
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trained == {"net.net.fc.weight", "net.net.fc.bias"}
    assert [p for group in model.optimizers().param_groups for p in group["params"]] == [model.net.head.weight,
                                                                                     model.net.head.bias]


def test_unfrozen_backbone_trains_everywhere(cfg_factory):
    model, before = fit_steps(cfg_factory("model=torchvision", "model.name=mobilenet_v3_small", "data=mnist",
                                          "data.batch_size=16"), steps=2)
    after = model.state_dict()
    assert not torch.equal(before["net.net.features.0.0.weight"], after["net.net.features.0.0.weight"])
    assert after["net.net.classifier.3.weight"].shape == (10, 1024)  # gray MNIST into a 3-channel model


def test_pretrained_weights_from_a_file_and_a_checkpoint_that_needs_them_no_more(cfg_factory, tmp_path):
    pretrained = torchvision.models.resnet18()  # stands for downloaded ImageNet weights
    torch.save(pretrained.state_dict(), tmp_path / "resnet18.pth")
    net = Backbone([3, 32, 32], 10, name="resnet18", weights=str(tmp_path / "resnet18.pth")).net
    for key, value in pretrained.state_dict().items():
        assert torch.equal(net.state_dict()[key], value) != key.startswith("fc.")  # all but the new head
    cifar = Backbone([3, 32, 32], 10, name="resnet18", weights=str(tmp_path / "resnet18.pth"), cifar_stem=True).net
    assert torch.equal(cifar.layer4[1].conv2.weight, pretrained.layer4[1].conv2.weight)
    assert not torch.equal(cifar.conv1.weight[:, :, :3, :3], pretrained.conv1.weight[:, :, :3, :3])  # fresh 3x3 stem

    cfg = cfg_factory("model=resnet18", f"model.weights={tmp_path / 'resnet18.pth'}", "trainer.max_steps=1",
                      "data.batch_size=8")
    train(cfg)
    (tmp_path / "resnet18.pth").unlink()  # a checkpoint holds its weights: the file is not needed to reload it
    checkpoint = ROOT / cfg.paths.output_dir / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["hyper_parameters"]["net"]["weights"] is None
    reloaded = Classifier.load_from_checkpoint(checkpoint)
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(reloaded.state_dict()[key], value) for key, value in saved.items())


def test_pretrained_weights_offline_say_what_to_do(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(UserError, match=r"model.weights=DEFAULT: could not download https://download.pytorch.org/"
                                        r".*resnet18-f37072fd.pth.*model.weights=/path/to/resnet18-f37072fd.pth"):
        Backbone([3, 32, 32], 10, name="resnet18", weights="DEFAULT")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": "resnet1000"}, r"model.name=resnet1000 is not a torchvision classification model: .*resnet18"),
    ({"name": "resnet18", "weights": "IMAGENET9K"}, r"model.weights=IMAGENET9K: resnet18 has weights DEFAULT, "
                                                    r"IMAGENET1K_V1"),
    ({"name": "resnet18", "weights": "/no/such.pth"}, r"model.weights=/no/such.pth is not a file"),
    ({"name": "vit_b_16"}, r"model.name=vit_b_16 cannot take 3x32x32 images"),
])
def test_backbone_mistakes_are_named(kwargs, message):
    with pytest.raises(UserError, match=message):
        Backbone([3, 32, 32], 10, **kwargs)


def test_hand_written_backward_matches_autograd_in_float64():
    torch.manual_seed(0)
    net = ScratchMLP([1, 28, 28], 10).double()
    images, labels = torch.rand(16, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (16,))
    loss, grad = cross_entropy(net(images), labels)
    net.backward(grad)

    params = [p.detach().clone().requires_grad_() for p in net.parameters()]  # the same weights, with autograd
    x = images.flatten(1)
    for i in range(0, len(params), 2):
        x = F.linear(x, params[i], params[i + 1])
        x = F.relu(x) if i + 2 < len(params) else x
    reference = F.cross_entropy(x, labels)
    reference.backward()
    assert torch.allclose(loss, reference, rtol=0, atol=1e-12)
    assert len(params) == 6
    for p, ref in zip(net.parameters(), params):
        assert torch.allclose(p.grad, ref.grad, rtol=0, atol=1e-6)
        assert not p.requires_grad  # no autograd on the scratch network's side


def test_hand_written_sgd_is_sgd():
    weights = torch.randn(5, 3)
    mine, theirs = torch.nn.Parameter(weights.clone()), torch.nn.Parameter(weights.clone())
    mine.grad = theirs.grad = torch.randn(5, 3)
    SGD([mine], lr=0.1).step()
    torch.optim.SGD([theirs], lr=0.1).step()
    assert torch.allclose(mine, theirs, rtol=0, atol=1e-7) and not torch.equal(mine, weights)


def test_scratch_mlp_learns_through_lightning_without_autograd(cfg_factory):
    cfg = cfg_factory("data=mnist", "model=scratch_mlp", "optimizer=scratch_sgd", "trainer.max_epochs=4",
                      "data.batch_size=16")
    metrics = train(cfg)
    assert metrics["test/acc"] > 0.6  # 400 training digits; chance is 0.1
    assert metrics["train/loss"] < 1.2


def test_dropout_on_the_input_trains_only(cfg_factory):
    for option in ("lenet", "mlp"):
        net = instantiate(cfg_factory(f"model={option}", "model.dropout=0.3").model, input_shape=[3, 32, 32],
                          num_classes=10)
        x = torch.rand(8, 3, 32, 32)
        assert net.dropout.p == 0.3 and not torch.equal(net(x), net(x))  # a new mask each call
        net.eval()
        assert torch.equal(net(x), net(x))
    with pytest.raises(UserError, match=r"model.dropout=1.5 is invalid"):
        instantiate(cfg_factory("model.dropout=1.5").model, input_shape=[3, 32, 32], num_classes=10)


def test_cogitare_recipe(cfg_factory):
    cfg = cfg_factory("experiment=cogitare_cifar10")
    assert (cfg.data.batch_size, cfg.model.dropout, cfg.optimizer._target_, cfg.optimizer.lr) == (
        64, 0.3, "torch.optim.Adam", 0.001)
    assert cfg.trainer.max_epochs == 10 and list(cfg.data.mean) == [0.5] * 3
    stop = cfg.callbacks.early_stopping
    assert (stop.monitor, stop.mode, stop.patience) == ("val/loss", "min", 5)
    assert cfg.callbacks.model_checkpoint.monitor == "val/loss"


def test_early_stopping_stops_after_patience_epochs_without_progress(cfg_factory):
    cfg = cfg_factory("experiment=cogitare_cifar10", "optimizer.lr=1e-9", "callbacks.early_stopping.patience=2",
                      "callbacks.early_stopping.min_delta=0.01")
    train(cfg)
    last = torch.load(ROOT / cfg.paths.output_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2  # epochs 0, 1, 2: no epoch improved by 0.01 over the first, so 2 more and stop


def test_airnet_shapes_and_size(cfg_factory):
    net = instantiate(cfg_factory("model=airnet").model, input_shape=[3, 32, 32], num_classes=10)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert 1.9e6 < sum(p.numel() for p in net.parameters()) < 2.0e6  # widths 64-256-256: airbench's size
    small = instantiate(cfg_factory("model=airnet", "model.widths=[32,128,128]").model, input_shape=[3, 32, 32],
                        num_classes=10)
    assert sum(p.numel() for p in small.parameters()) < 0.6e6


def test_label_smoothing_trains_and_mirrored_logits_evaluate(cfg_factory):
    cfg = cfg_factory("model=airnet", "model.widths=[8,16,16]", "model.logit_scale=1000", "label_smoothing=0.2",
                      "test_time_flip=true")  # logits far from uniform at initialization
    datamodule = instantiate(cfg.data, _convert_="all")
    model = build_model(cfg, datamodule).eval()
    images, labels = datamodule.on_after_batch_transfer(datamodule.test_set[:16], 0)
    logits = model.net(images)
    loss, _ = model._step((images, labels), "train")
    assert torch.isclose(loss, F.cross_entropy(logits, labels, label_smoothing=0.2))
    assert not torch.isclose(loss, F.cross_entropy(logits, labels))
    _, tested = model._step((images, labels), "test")
    assert torch.allclose(tested, (logits + model.net(images.flip(-1))) / 2)
    assert not torch.allclose(tested, logits)
