"""The training recipes users expect from timm and torchvision's references: augmentation presets on whole batches
(torchvision.transforms.v2, each image its own draw; mixup and cutmix), EMA of the weights (Lightning's
EMAWeightAveraging), Lightning's learning-rate and batch-size finders and the epochs fitted to trainer.max_time
(tune=), gradient clipping and accumulation, and the precision and memory layout chosen for the hardware
(trainer.precision=auto)."""

import json
import logging
import math
import os
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from conftest import FIXTURES, ROOT
from litvision import UserError, hardware, tuning
from litvision.augment import BatchAugmentation, _cut_masked, _cut_sliced, recipe
from litvision.datamodule import ImageDataModule
from litvision.decoding import load
from litvision.training import train

FOLDER = ["data=image_folder", f"data.root={FIXTURES / 'cifar10-jpeg'}", "model=lenet"]


@pytest.fixture(scope="module")
def cifar():
    test = load("image_folder", FIXTURES / "cifar10-jpeg").test
    return test.images[:64], test.labels[:64]


def _folder(cfg_factory, out: str) -> dict:
    return json.loads((ROOT / cfg_factory(out=out).paths.output_dir / "metrics.json").read_text())


def test_the_cpu_and_gpu_crops_cut_the_same_images(cifar):
    images, _ = cifar
    padded = F.pad(images, (4,) * 4)
    dy, dx = torch.randint(0, 9, (2, len(images)))
    assert torch.equal(_cut_sliced(padded, dy, dx, images.shape[-2:]), _cut_masked(padded, dy, dx, images.shape[-2:]))


def test_a_preset_with_options_over_it_and_bad_names_are_one_line():
    chosen = recipe("timm", {"mixup": {"alpha": 0.4}, "erasing": None, "color_jitter": {"hue": 0.1}})
    assert list(chosen) == ["resized_crop", "color_jitter", "randaugment", "mixup", "cutmix"]  # in pipeline order
    assert chosen["mixup"] == {"alpha": 0.4} and chosen["cutmix"] == {"alpha": 1.0}
    assert recipe("none", None) == {}
    with pytest.raises(UserError, match=r"data.augment='strongest' is not a preset: use one of none, color, "):
        recipe("strongest", None)
    with pytest.raises(UserError, match=r"data.augment_options has 'blur', not a transform: use some of resized_crop"):
        recipe("none", {"blur": {}})
    with pytest.raises(UserError, match=r"data.augment: erasing \{'strength': 2\} is invalid: .*augment_options"):
        BatchAugmentation(recipe("none", {"erasing": {"strength": 2}}), (32, 32), 10)
    with pytest.raises(UserError, match=r"data.augment: erasing"):  # when the data module is made, before any data
        ImageDataModule("mnist", str(FIXTURES), augment="none", augment_options={"erasing": {"strength": 2}})


def test_mixup_mixes_each_image_with_its_neighbour_and_its_targets_sum_to_one(cifar):
    images, labels = cifar
    torch.manual_seed(0)
    x, y = BatchAugmentation({"mixup": {"alpha": 0.4}}, (32, 32), 10)(images, labels)
    assert x.dtype == torch.float32 and y.shape == (64, 10)
    assert torch.allclose(y.sum(1), torch.ones(64))
    one_hot = F.one_hot(labels, 10).float()
    # torchvision mixes each image with the one before it (the batch rolled by 1): y = lam a + (1 - lam) b
    lam = float((y - one_hot.roll(1, 0)).flatten() @ (one_hot - one_hot.roll(1, 0)).flatten()
                / (one_hot - one_hot.roll(1, 0)).pow(2).sum())
    assert 0 < lam < 1 and torch.allclose(y, lam * one_hot + (1 - lam) * one_hot.roll(1, 0), atol=1e-6)
    plain = images.float() / 255
    assert torch.allclose(x, lam * plain + (1 - lam) * plain.roll(1, 0), atol=1e-5)


def test_cutmix_pastes_a_box_and_weights_the_labels_by_its_area(cifar):
    images, labels = cifar
    torch.manual_seed(1)
    x, y = BatchAugmentation({"cutmix": {"alpha": 1.0}}, (32, 32), 10)(images, labels)
    plain = images.float() / 255
    from_neighbour = (x == plain.roll(1, 0)).all(1) & (x != plain).any(1)  # pixels taken from the other image
    share = from_neighbour.float().mean((1, 2))  # per image (ties where both are equal left out: a lower bound)
    own = y[torch.arange(64), labels]
    differs = labels != labels.roll(1, 0)
    assert torch.allclose(y.sum(1), torch.ones(64)) and from_neighbour.any()
    assert torch.all(own[differs] <= 1 - share[differs] + 1e-6)


def test_each_image_gets_its_own_draw_and_gray_images_stay_gray(cifar):
    images, labels = cifar
    same = images[:1].expand(16, -1, -1, -1)  # one image 16 times: per-image draws make different results
    torch.manual_seed(0)
    for transform, options in (("resized_crop", {"scale": [0.08, 1.0]}), ("color_jitter", {"brightness": 0.4}),
                               ("randaugment", {"num_ops": 2, "magnitude": 9}), ("trivialaugment", {}),
                               ("erasing", {"p": 1.0})):
        x, y = BatchAugmentation({transform: options}, (32, 32), 10)(same, labels[:16])
        assert x.shape == (16, 3, 32, 32) and x.dtype == torch.uint8 and torch.equal(y, labels[:16])
        assert len({tuple(image.flatten().tolist()) for image in x}) > 8, transform
    gray = images[:16].float().mean(1, keepdim=True).byte()
    x, _ = BatchAugmentation(recipe("timm", {"color_jitter": {"saturation": 0.5}}), (32, 32), 10)(gray, labels[:16])
    assert x.shape == (16, 1, 32, 32)


def test_a_recipe_trains_end_to_end_the_same_twice(cfg_factory):
    def run(out):
        return train(cfg_factory(*FOLDER, "data.augment=timm", "data.flip=true", "trainer.max_epochs=2",
                                 "logger=none", "callbacks=none", out=out))

    a, b = run("a"), run("b")
    assert a == b and torch.isfinite(torch.tensor(a["train/loss"]))
    assert 0 <= a["train/acc"] <= 1  # measured against each mixed image's larger share
    assert _folder(cfg_factory, "a")["hyperparameters"]["data.augment"] == "timm"


def test_ema_weights_are_the_ones_checkpointed_and_tested(cfg_factory):
    mnist = ["data=mnist", "model=mlp", "data.batch_size=16", "trainer.max_epochs=3", "logger=none"]
    metrics = train(cfg_factory(*mnist, "callbacks=ema", "callbacks.ema.decay=0.9", out="ema"))
    result = _folder(cfg_factory, "ema")
    checkpoint = torch.load(result["checkpoint"], weights_only=True)
    averaged, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    key = next(name for name in raw if name.endswith("weight"))
    assert not torch.equal(averaged[key], raw[key])  # not the last step's weights
    # evaluated alone, the checkpoint's state_dict (the average) gives what the run reported
    again = train(cfg_factory(*mnist, "train=false", f"ckpt_path={result['checkpoint']}", out="eval"))
    assert again["test/loss"] == pytest.approx(metrics["test/loss"], rel=1e-6)
    plain = train(cfg_factory(*mnist, out="plain"))
    assert plain["train/loss"] == pytest.approx(metrics["train/loss"], rel=1e-6)  # the same training ...
    assert plain["test/loss"] != pytest.approx(metrics["test/loss"], rel=1e-3)  # ... but the average tested


def test_tune_lr_finds_uses_and_records_the_learning_rate(cfg_factory, caplog):
    caplog.set_level(logging.INFO)
    train(cfg_factory("data=mnist", "model=mlp", "tune=lr", "scheduler=onecycle", "trainer.max_epochs=1",
                      "logger=none", out="lr"))
    result = _folder(cfg_factory, "lr")
    lr = result["config"]["optimizer"]["lr"]
    assert f"tune: optimizer.lr={lr:.3g}" in caplog.text and lr != 0.01  # conf/optimizer/sgd.yaml
    checkpoint = torch.load(result["checkpoint"], weights_only=True)
    assert checkpoint["hyper_parameters"]["optimizer"]["lr"] == lr
    assert checkpoint["hyper_parameters"]["scheduler"]["scheduler"]["max_lr"] == lr  # the schedule follows it
    folder = ROOT / cfg_factory(out="lr").paths.output_dir
    assert (folder / "lr_find.png").stat().st_size > 10_000
    curve = [line.split(",") for line in (folder / "lr_find.csv").read_text().splitlines()[1:]]
    first_lr, first_loss = map(float, curve[0])
    assert first_lr < 1e-6 and abs(first_loss - math.log(10)) < 0.25  # at lr 1e-8: the untrained loss, not half
    lowest = min(curve, key=lambda point: float(point[1]))
    assert 1e-3 < lr < float(lowest[0])  # on the fall to the lowest loss, not a wobble of the flat start
    with pytest.raises(UserError, match=r"tune=lr: the loss fell by [01]\.\d% at most .* Set optimizer.lr yourself"):
        train(cfg_factory("data=mnist", "model=lenet", "tune=lr", "logger=none", out="flat"))  # slow to start
    assert (ROOT / cfg_factory(out="flat").paths.output_dir / "lr_find.png").exists()  # the curve, to see why
    with pytest.raises(UserError, match=r"tune=fast is invalid: use tune=lr, tune=batch_size"):
        train(cfg_factory("data=mnist", "tune=fast", out="bad"))


def test_tune_batch_size_takes_the_largest_that_trains(cfg_factory, caplog):
    caplog.set_level(logging.INFO)
    train(cfg_factory("data=mnist", "model=mlp", "tune=batch_size", "data.batch_size=16", "trainer.max_epochs=1",
                      "logger=none", out="bs"))
    result = _folder(cfg_factory, "bs")
    assert result["config"]["data"]["batch_size"] == result["images"]["train"]  # all fit: capped at the train set
    assert f"tune: data.batch_size={result['images']['train']}" in caplog.text


def test_tune_epochs_fits_the_epochs_to_max_time_and_the_plain_config_repeats_the_run(cfg_factory, caplog):
    caplog.set_level(logging.INFO)
    mnist = ["data=mnist", "model=mlp", "scheduler=onecycle", "logger=none"]
    metrics = train(cfg_factory(*mnist, "tune=epochs", "trainer.max_time=00:00:10:00", "trainer.max_epochs=3",
                                out="capped"))
    assert "tune: trainer.max_epochs=3 (the epochs that fit trainer.max_time=00:00:10:00, at most 3" in caplog.text
    assert _folder(cfg_factory, "capped")["config"]["trainer"]["max_epochs"] == 3
    plain = train(cfg_factory(*mnist, "trainer.max_epochs=3", out="plain"))  # the timing trained a copy
    assert plain["train/loss"] == pytest.approx(metrics["train/loss"], rel=1e-6)
    assert plain["test/acc"] == metrics["test/acc"]

    caplog.clear()
    train(cfg_factory(*mnist, "tune=epochs", "trainer.max_time=00:00:00:06", "trainer.max_epochs=100000",
                      "data.batch_size=4", out="timed"))  # epochs of steps, not of checkpoint writes the timing skips
    fitted = _folder(cfg_factory, "timed")["config"]["trainer"]["max_epochs"]
    assert 1 <= fitted < 100000 and f"tune: trainer.max_epochs={fitted} (the epochs that fit" in caplog.text
    cut = [r.message for r in caplog.records if "stopped training after" in r.message]
    if cut:  # Lightning's max_time stops what the timing misjudged: most of the epochs ran
        assert int(cut[0].split("after ")[1].split(" of")[0]) >= 0.6 * fitted


def test_tune_epochs_takes_the_first_time_choice_that_fits_its_least_epochs(cfg_factory, caplog):
    caplog.set_level(logging.INFO)
    mnist = ["data=mnist", "model=mlp", "logger=none"]
    choices = ("time_choices=[{least_epochs: 1000000}, {set: {model.hidden: [16], data.batch_size: 32, "
               "trainer.max_epochs: 3}}]")
    metrics = train(cfg_factory(*mnist, "tune=epochs", "trainer.max_time=00:00:10:00", choices, out="chosen"))
    assert "fewer than its least_epochs=1000000: the next of time_choices" in caplog.text
    assert "tune: model.hidden=[16], data.batch_size=32, trainer.max_epochs=3 (the epochs that fit" in caplog.text
    result = _folder(cfg_factory, "chosen")
    assert result["config"]["model"]["hidden"] == [16] and result["config"]["data"]["batch_size"] == 32
    assert torch.load(result["checkpoint"], weights_only=True)["hyper_parameters"]["net"]["hidden"] == [16]
    plain = train(cfg_factory(*mnist, "model.hidden=[16]", "data.batch_size=32", "trainer.max_epochs=3", out="plain"))
    assert plain["train/loss"] == pytest.approx(metrics["train/loss"], rel=1e-6)
    with pytest.raises(UserError, match=r"time_choices\[0\] sets model.depth, which this config does not have"):
        train(cfg_factory(*mnist, "tune=epochs", "trainer.max_time=00:00:10:00",
                          "time_choices=[{set: {model.depth: 3}}]", out="bad"))


def test_max_time_that_ends_training_early_says_so_and_tune_epochs_needs_a_max_time(cfg_factory, caplog):
    train(cfg_factory("data=mnist", "model=mlp", "trainer.max_time=00:00:00:02", "trainer.max_epochs=100000",
                      "logger=none", out="cut"))
    assert "trainer.max_time=00:00:00:02 stopped training after" in caplog.text
    assert "of 100000 epochs, before its schedule ended" in caplog.text
    with pytest.raises(UserError, match=r"tune=epochs fits the epochs to trainer.max_time, which is None: set it"):
        train(cfg_factory("data=mnist", "tune=epochs", out="none"))
    with pytest.raises(UserError, match=r"trainer.max_time=5min is invalid: give DD:HH:MM:SS"):
        train(cfg_factory("data=mnist", "tune=[lr,epochs]", "trainer.max_time=5min", out="bad"))
    assert tuning.budget_seconds("00:00:05:00") == tuning.budget_seconds({"minutes": 5}) == 300
    with pytest.raises(UserError, match=r"tune=epochs times one process, not the 2 processes of this run's trainer"):
        train(cfg_factory("data=mnist", "trainer=ddp_cpu", "tune=epochs", "trainer.max_time=00:00:01:00", out="ddp"))


def test_gradient_clipping_and_accumulation_are_trainer_options(cfg_factory):
    metrics = train(cfg_factory(*FOLDER, "trainer.gradient_clip_val=0.5", "trainer.accumulate_grad_batches=2",
                                "data.batch_size=30", "trainer.max_epochs=1", "logger=none", out="acc"))
    checkpoint = torch.load(_folder(cfg_factory, "acc")["checkpoint"], weights_only=True)
    assert checkpoint["global_step"] == 4  # 8 batches of 30 (240 training images), one step every 2
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))


@pytest.mark.parametrize("amx, flags, speedup, expected, why", [
    (True, "avx512_bf16 amx_tile", 0.5, "bf16-mixed", "has AMX: bf16 matmuls ~7x float32"),  # nothing timed
    (False, "avx512f avx512_bf16", 1.97, "bf16-mixed",  # AMD EPYC's measured convolution (1.94-2.03x)
     "has no AMX; a bf16 convolution measured 2.0x float32 (at least 1.3x)"),
    (False, "avx512f avx512_bf16", 0.76, "32-true",  # a Xeon with AMX capped off
     "has no AMX; a bf16 convolution measured 0.8x float32 (under 1.3x)"),
    (False, "avx512f avx2", 5.0, "32-true",  # no bf16 instructions: nothing timed
     "has no AMX and no avx512_bf16: bf16 is emulated, slower than float32"),
])
def test_auto_precision_follows_the_cpus_flags_and_its_measured_bf16_speed(monkeypatch, amx, flags, speedup,
                                                                           expected, why):
    timed = []
    monkeypatch.setattr(hardware, "cpu_has_amx", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(hardware, "_cpuinfo", lambda field: {"flags": flags, "model name": "CPU X"}[field])
    monkeypatch.setattr(hardware, "cpu_bf16_speedup", lambda: timed.append(1) or speedup)
    assert hardware.auto_precision("cpu") == (expected, f"CPU X {why}")
    assert bool(timed) == (not amx and "avx512_bf16" in flags)


def test_timing_bf16_leaves_the_runs_random_draws_as_they_were():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    hardware.cpu_bf16_speedup.__wrapped__(rounds=1)
    assert torch.equal(torch.get_rng_state(), before)


def test_the_measured_bf16_speed_is_this_cpus():
    """The real measurement: oneDNN capped below bf16 instructions (ONEDNN_MAX_CPU_ISA=AVX512_CORE, as on a CPU
    without them) computes bf16 slower than float32, on any x86 CPU with AVX-512, and auto picks float32."""
    if "avx512f" not in hardware.cpu_flags():
        pytest.skip("the capped measurement needs an x86 CPU with AVX-512 (this one has none)")
    script = "from litvision import hardware; print(hardware.cpu_bf16_speedup(), hardware.auto_precision('cpu')[0])"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}
    speedup, precision = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                        check=True).stdout.split()
    assert float(speedup) < 1 and precision == "32-true"


def test_the_peak_is_the_fastest_call_which_a_busy_host_does_not_lower():
    # a shared machine slows most calls: 2 of 5 ran at full speed (10 ms), 3 were held up (40 ms)
    delays = iter([0.01, 0.04, 0.01, 0.04, 0.04, 0.04])  # the first is the warm-up
    rate = hardware._rate(lambda size: lambda: time.sleep(next(delays)), flop=lambda size: 1e9, sizes=(1,),
                          seconds=0, device="cpu")
    assert 1e9 / 0.02 < rate <= 1e9 / 0.01  # a median would say 1e9 / 0.04


def test_the_peak_is_measured_at_the_largest_size_whose_call_fits_the_time():
    # a CPU that emulates bf16 ran a 2048^2 matmul for 43 s a call: the size grows only while a call stays short
    built = []

    def build(size):
        built.append(size)
        return lambda: time.sleep(0.005 * size)  # the same rate at every size: 1e9 FLOP in 5 ms

    rate = hardware._rate(build, flop=lambda size: 1e9 * size, sizes=(1, 2, 4, 8), seconds=0.025, device="cpu")
    assert built == [1, 2, 4]  # size 4's 20 ms call says size 8 would take 40 ms, over the 25 allowed
    assert 1e11 < rate <= 2e11


@pytest.mark.parametrize("bf16", [True, False])
def test_auto_precision_on_a_gpu(monkeypatch, bf16):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "GPU X")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    assert hardware.auto_precision("cuda")[0] == ("bf16-mixed" if bf16 else "16-mixed")


def test_onednn_capped_below_amx_counts_as_no_amx(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    monkeypatch.setattr(hardware, "_cpuinfo", lambda field: {"flags": "avx512_bf16", "model name": "CPU X"}[field])
    monkeypatch.setattr(hardware, "cpu_bf16_speedup", lambda: 0.76)  # as measured on a Xeon so capped
    assert not hardware.cpu_has_amx()
    assert hardware.auto_precision("cpu") == ("32-true", "CPU X has AMX, switched off (ONEDNN_MAX_CPU_ISA="
                                              "AVX512_CORE_BF16); a bf16 convolution measured 0.8x float32 (under 1.3x)")
    assert "no AMX" in hardware.describe(hardware.machine())
    assert "(AMX off: ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16)" in hardware.describe(hardware.machine())
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert hardware.cpu_has_amx()


def test_auto_channels_last_where_it_was_measured_faster():
    from litvision.nets import AirNet, LeNet, MLP

    airnet, lenet, mlp = AirNet([3, 32, 32], 10), LeNet([3, 32, 32], 10), MLP([1, 28, 28], 10)
    assert hardware.auto_channels_last("32-true", airnet)  # 64-256 channels: NHWC pays in float32 too
    assert not hardware.auto_channels_last("32-true", lenet) and hardware.auto_channels_last("bf16-mixed", lenet)
    assert not hardware.auto_channels_last("bf16-mixed", mlp)  # no convolutions


@pytest.mark.parametrize("channels_last", [True, False])
def test_the_network_sees_the_layout_it_was_set_up_for_whatever_the_batch(channels_last):
    """Photo-sized images are stored channels last (litvision.decoding.CHANNELS_LAST_BYTES): a network set up for
    NCHW gets them NCHW (LeNet in float32 ran 1.4x slower in NHWC), one set up for NHWC gets NHWC; normalization
    converts the layout as it converts to float, so both reach the network with the same values."""
    from litvision.classifier import Classifier

    model = Classifier({"_target_": "litvision.nets.LeNet"}, {"_target_": "torch.optim.SGD", "_partial_": True},
                       [str(i) for i in range(10)], [3, 32, 32], [0.5] * 3, [0.5] * 3, channels_last=channels_last)
    seen = []
    model.net.register_forward_pre_hook(lambda net, args: seen.append(args[0]))
    stored = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8).permute(0, 3, 1, 2)  # channels last
    for batch in (stored, stored.contiguous()):
        model(batch)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert all(x.is_contiguous(memory_format=layout) for x in seen) and torch.equal(seen[0], seen[1])


@pytest.mark.parametrize("amx", [True, False])
def test_a_run_records_the_precision_and_layout_it_chose(cfg_factory, caplog, monkeypatch, amx):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(hardware, "cpu_has_amx", lambda: amx)
    monkeypatch.setattr(hardware, "cpu_bf16_speedup", lambda: 0.76)  # without AMX, bf16 measured slower
    train(cfg_factory(*FOLDER, "trainer.max_epochs=1", "trainer.accelerator=cpu", "logger=none", out="auto"))
    result = _folder(cfg_factory, "auto")
    assert result["precision"] == ("bf16-mixed" if amx else "32-true")
    assert result["config"]["trainer"]["precision"] == result["precision"]  # the value used, not "auto"
    assert result["channels_last"] is amx  # LeNet's convolutions: NHWC in bf16, NCHW in float32
    assert f"precision {result['precision']}{', channels_last' if amx else ''} (auto: " in caplog.text
    pinned = train(cfg_factory("data=mnist", "model=mlp", "trainer.max_epochs=1", "trainer.precision=32-true",
                               "logger=none", out="pinned"))
    assert _folder(cfg_factory, "pinned")["precision"] == "32-true" and pinned
    assert _folder(cfg_factory, "pinned")["channels_last"] is False  # an MLP has no convolutions


@pytest.mark.parametrize("unfreeze_at", [1, 5])
def test_finetuning_trains_the_head_first_then_the_backbone_at_a_lower_lr(cfg_factory, tmp_path, unfreeze_at):
    import torchvision

    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"  # "pretrained" weights from a file, as a user's would be
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    train(cfg_factory("experiment=finetune_photos", f"data.root={FIXTURES / 'cifar10-jpeg'}", "data.image_size=32",
                      f"model.weights={weights}", "trainer.max_epochs=2", "data.augment=none", "logger=none",
                      f"callbacks.finetuning.unfreeze_backbone_at_epoch={unfreeze_at}", "callbacks.figures=null",
                      out="ft"))
    last = torch.load(ROOT / cfg_factory(out="ft").paths.output_dir / "checkpoints" / "last.ckpt", weights_only=True)
    start = torch.load(weights, weights_only=True)
    conv_moved = not torch.equal(last["state_dict"]["net.net.conv1.weight"], start["conv1.weight"])
    groups = last["optimizer_states"][0]["param_groups"]
    assert conv_moved is (unfreeze_at == 1)  # frozen until the epoch it is unfrozen at
    if unfreeze_at == 1:  # the backbone joined as a second group at a tenth of the head's lr
        assert len(groups) == 2 and groups[1]["lr"] == pytest.approx(groups[0]["lr"] * 0.1)
    else:
        assert len(groups) == 1
