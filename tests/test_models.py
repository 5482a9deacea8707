"""The networks beyond LeNet: torchvision backbones (ResNet-18 for CIFAR, any model by name, pretrained weights,
a frozen backbone), the hand-written MLP of the MNIST notebook, and the Cogitare recipe's options."""

import urllib.error
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import torchvision

from conftest import ROOT
from litvision import UserError, instantiate
from litvision.backbones import Backbone
from litvision.callbacks.lookahead import Lookahead
from litvision.classifier import Classifier
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
    cfg = cfg_factory("model=airnet", "model.widths=[8,16,16]", "model.logit_scale=1000", "classifier.label_smoothing=0.2",
                      "classifier.test_time_flip=true")  # logits far from uniform at initialization
    datamodule = instantiate(cfg.data, _convert_="all")
    model = build_model(cfg, datamodule).eval()
    images, labels = datamodule.on_after_batch_transfer(datamodule.test_set[:16], 0)
    x = model.normalize(images)
    logits = model.net(x)
    model._trainer = SimpleNamespace(global_step=0, log_every_n_steps=10**6)  # what training_step reads of it
    loss = model.training_step((images, labels), 0)
    assert torch.isclose(loss, F.cross_entropy(logits, labels, label_smoothing=0.2))
    assert not torch.isclose(loss, F.cross_entropy(logits, labels))
    tested = model.test_step((images, labels), 0)
    assert torch.allclose(tested, (logits + model.net(x.flip(-1))) / 2)
    assert not torch.allclose(tested, logits)


def test_whitening_stem_decorrelates_the_patches_and_stays_frozen(cfg_factory):
    cfg = cfg_factory("experiment=cifar10_airbench", "model.widths=[8,16,16]", "data.val_size=0.2")
    datamodule = instantiate(cfg.data, _convert_="all")
    model = build_model(cfg, datamodule)
    images = model.normalize(datamodule.train_set[:5000][0])
    stem = model.net.layers[0]

    def covariance():  # of the 12 whitened directions over every 2x2 patch
        out = F.conv2d(images, stem.weight)[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
        return out.T @ out / len(out)

    model.net.fit_to_data(images, eps=0)
    assert torch.allclose(covariance(), torch.eye(12), atol=1e-2)  # decorrelated, unit variance
    model.net.fit_to_data(images)  # as Classifier.setup does: eps damps the faintest directions
    variances = covariance().diagonal()
    # as correlations: on an AMD EPYC the fit left a covariance of 1.2e-3 beside a variance of 0.2
    correlation = covariance() / (variances[:, None] * variances[None, :]).sqrt()
    assert torch.allclose(correlation, torch.eye(12), atol=1e-2)
    assert ((0.1 < variances) & (variances <= 1)).all()
    assert torch.equal(stem.weight[12:], -stem.weight[:12])
    optimized = {id(p) for group in model.make_optimizer().param_groups for p in group["params"]}
    assert id(stem.weight) not in optimized and id(stem.bias) in optimized


def test_airbench_initialization_switches(cfg_factory):
    net = instantiate(cfg_factory("model=airnet", "model.widths=[8,16,16]", "model.dirac=true", "model.bn_weight=false",
                                  "model.bn_momentum=0.4").model, input_shape=[3, 32, 32], num_classes=10)
    for conv in [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][1:]:  # the stem is left as it is
        x = torch.randn(1, conv.in_channels, 8, 8)
        k = min(conv.in_channels, conv.out_channels)
        assert torch.allclose(F.conv2d(x, conv.weight, padding=1)[:, :k], x[:, :k], atol=1e-6)  # identity on inputs
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(not m.weight.requires_grad and m.bias.requires_grad and m.momentum == 0.4 for m in norms)
    with pytest.raises(UserError, match=r"model.stem=16 .* use model.stem=24"):
        instantiate(cfg_factory("model=airnet", "model.whiten=true", "model.stem=16").model, input_shape=[3, 32, 32],
                    num_classes=10)


def test_norm_layers_train_at_their_own_learning_rate_through_the_schedule(cfg_factory):
    cfg = cfg_factory("experiment=cifar10_airbench", "model.widths=[8,16,16]", "data.val_size=0.2",
                      "data.batch_size=32", "trainer.max_epochs=1")
    model, _ = fit_steps(cfg, steps=2)
    others, norms = model.optimizers().optimizer.param_groups
    assert {id(p) for p in norms["params"]} == {id(m.bias) for m in model.net.modules()
                                                 if isinstance(m, torch.nn.BatchNorm2d)}
    assert norms["weight_decay"] == pytest.approx(others["weight_decay"] / 64)
    assert norms["lr"] == pytest.approx(64 * others["lr"])  # still, two steps into the one-cycle schedule
    assert others["lr"] != pytest.approx(cfg.optimizer.lr)


def test_test_time_shift_averages_mirrors_and_shifted_copies(cfg_factory):
    cfg = cfg_factory("model=airnet", "model.widths=[8,16,16]", "model.logit_scale=1000", "classifier.test_time_flip=true",
                      "classifier.test_time_shift=1")
    datamodule = instantiate(cfg.data, _convert_="all")
    model = build_model(cfg, datamodule).eval()
    images, labels = datamodule.on_after_batch_transfer(datamodule.test_set[:8], 0)
    x = model.normalize(images)

    def mirrored(x):
        return (model.net(x) + model.net(x.flip(-1))) / 2

    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    expected = mirrored(x) / 2 + (mirrored(padded[..., :32, :32]) + mirrored(padded[..., 2:, 2:])) / 4
    tested = model.test_step((images, labels), 0)
    assert torch.allclose(tested, expected, atol=1e-5)
    assert not torch.allclose(tested, mirrored(x), atol=1e-3)


def test_lookahead_pulls_the_slow_copy_and_restarts_from_it():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    module = L.LightningModule()
    module.net = net
    trainer = SimpleNamespace(global_step=0, estimated_stepping_batches=10)
    lookahead = Lookahead(every=5, base=0.95)
    lookahead.on_train_start(trainer, module)
    start = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    trainer.global_step = 4  # not a multiple of 5: nothing happens
    lookahead.on_train_batch_end(trainer, module, None, None, 3)
    assert torch.equal(net[0].weight, start + 1)
    trainer.global_step = 5
    lookahead.on_train_batch_end(trainer, module, None, None, 4)
    decay = 0.95 ** 5 * 0.5 ** 3
    assert torch.allclose(net[0].weight, start + (1 - decay))
    assert torch.allclose(lookahead.slow["net.0.weight"], net[0].weight)
    with torch.no_grad():
        net[0].weight.add_(1.0)
    trainer.global_step = 10  # the last step: the network becomes the slow copy
    lookahead.on_train_batch_end(trainer, module, None, None, 9)
    assert torch.allclose(net[0].weight, start + (1 - decay))
    assert "net.1.num_batches_tracked" not in lookahead.slow  # integers are not averaged


def test_airbench_recipe_trains_and_its_checkpoint_tests_the_same(cfg_factory):
    overrides = ["experiment=cifar10_airbench", "model.widths=[16,32,32]", "data.batch_size=64",
                 "trainer.max_epochs=2", "logger=none"]
    first = train(cfg_factory(*overrides, out="first"))
    ckpt = ROOT / cfg_factory(out="first").paths.output_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(ckpt, weights_only=True)  # the lookahead's slow copy is plain tensors too
    assert set(checkpoint["callbacks"]["Lookahead"]["slow"]) >= {"net.layers.0.weight"}
    assert torch.equal(checkpoint["callbacks"]["Lookahead"]["slow"]["net.layers.2.weight"],
                       checkpoint["state_dict"]["net.layers.2.weight"])  # trained weights are the averaged ones
    stem = checkpoint["state_dict"]["net.layers.0.weight"]
    assert torch.equal(stem[12:], -stem[:12])  # whitened from the data before training, then left frozen
    again = train(cfg_factory(*overrides, "train=false", f"ckpt_path={ckpt}", out="eval"))
    assert again["test/acc"] == first["test/acc"] and first["test/acc"] > 0.1


def test_muon_orthogonalizes_the_filters_step_and_is_sgd_for_the_rest():
    from litvision.muon import Muon, orthogonalized

    torch.manual_seed(0)
    conv, head = torch.nn.Conv2d(8, 16, 3, bias=False), torch.nn.Linear(16, 4)
    twin = torch.nn.Linear(16, 4)
    twin.load_state_dict(head.state_dict())
    muon = Muon([*conv.parameters(), *head.parameters()], lr=0.1, momentum=0.9, weight_decay=0.01, muon_lr=0.05)
    sgd = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    for _ in range(3):
        x = torch.randn(5, 8, 6, 6)
        muon.zero_grad()
        sgd.zero_grad()
        features = conv(x)
        (features.square().mean() + head(features.mean(dim=(2, 3))).square().sum()).backward()
        twin(features.mean(dim=(2, 3)).detach()).square().sum().backward()  # the head's gradient, no filters'
        before = conv.weight.detach().clone()
        muon.step()
        sgd.step()
        step = (before * 16 ** 0.5 / before.norm() - conv.weight).reshape(16, -1) / 0.05  # from the held norm
        singular = torch.linalg.svdvals(step)
        assert singular.min() > 0.3 and singular.max() < 1.5  # orthogonalized: no direction dominates
        assert abs(conv.weight.norm() - 4) < 0.3  # sqrt(out_channels), give or take one step (lr x 4 x 1.5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(head.parameters(), twin.parameters()))
    with torch.no_grad():
        conv.weight.mul_(10)  # weight decay would shrink it slowly; Muon puts it back at once
    muon.step()
    assert abs(conv.weight.norm() - 4) < 0.3
    g = torch.randn(16, 72) * torch.logspace(0, 2, 16)[:, None]  # singular values spread over 100x
    assert torch.linalg.svdvals(g).max() / torch.linalg.svdvals(g).min() > 30
    singular = torch.linalg.svdvals(orthogonalized(g, 5))
    assert singular.max() < 1.5 and singular.max() / singular.min() < 3


def test_muon_without_muon_lr_takes_torch_sgds_very_steps():
    from litvision.muon import Muon

    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.LazyLinear(4)) for _ in "ab"]
    x = torch.randn(6, 3, 8, 8)
    for net in nets:
        net(x)
    nets[1].load_state_dict(nets[0].state_dict())
    start = nets[0][0].weight.detach().clone()
    optimizers = [Muon(nets[0].parameters(), lr=0.1, momentum=0.85, weight_decay=5e-3, muon_lr=None),
                  torch.optim.SGD(nets[1].parameters(), lr=0.1, momentum=0.85, nesterov=True, weight_decay=5e-3)]
    for _ in range(4):
        for net, optimizer in zip(nets, optimizers):
            optimizer.zero_grad()
            net(x).square().mean().backward()
            optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(nets[0].parameters(), nets[1].parameters()))
    assert not torch.equal(nets[0][0].weight, start)  # the filters trained
