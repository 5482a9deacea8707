"""End to end on the committed real-data fixtures: train, checkpoint, log, report, reload, resume, repeat."""

import json
import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import FIXTURES, ROOT
from litvision import UserError
from litvision.classifier import Classifier
from litvision.training import train

DIGITS = [str(d) for d in range(10)]
RUNS = {  # each dataset kind, with the network the tutorials pair it with
    "cifar10": ["data=cifar10", "model=lenet"],
    "mnist": ["data=mnist", "model=mlp"],
    "image_folder": ["data=image_folder", f"data.root={FIXTURES / 'cifar10-jpeg'}", "model=lenet"],
}


def scalars(run_dir) -> dict[str, list[float]]:
    events = EventAccumulator(str(run_dir)).Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.parametrize("kind", RUNS)
def test_short_run_writes_checkpoint_events_and_metrics(cfg_factory, kind):
    cfg = cfg_factory(*RUNS[kind], "trainer.max_epochs=2", "data.batch_size=32", "trainer.log_every_n_steps=2")
    metrics = train(cfg)
    out = ROOT / cfg.paths.output_dir
    assert (out / "checkpoints" / "last.ckpt").is_file()
    best = [p for p in (out / "checkpoints").glob("epoch_*.ckpt")]
    assert len(best) == 1
    report = json.loads((out / "metrics.json").read_text())
    names = report["accuracy_per_class"].keys()
    assert list(names) == (DIGITS if kind == "mnist" else
                           ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
                           if kind == "image_folder" else
                           ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"])
    assert report["accuracy"] == metrics["test/acc"] and 0 <= report["accuracy"] <= 1
    assert report["checkpoint"] == str(best[0]) and report["evaluated_on"] == "test"
    assert report["config"]["data"]["dataset"] == cfg.data.dataset and report["seconds"]["fit"] > 0
    logged = scalars(out)
    for tag in ["train/loss_step", "train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/acc"]:
        assert tag in logged, tag
    assert len(logged["val/acc"]) == 2 and len(logged["train/acc"]) == 2
    for name in names:  # one scalar per class, named by the class
        assert logged[f"test/acc_class/{name}"] == [pytest.approx(report["accuracy_per_class"][name])]
        assert len(logged[f"val/acc_class/{name}"]) == 2
    # per-class accuracies, weighted by each class's share of the test set, give the overall one
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup()
    share = datamodule.test_set.labels.bincount(minlength=10) / len(datamodule.test_set)
    weighted = sum(float(w) * acc for w, acc in zip(share, report["accuracy_per_class"].values()))
    assert weighted == pytest.approx(report["accuracy"], abs=1e-6)


def test_mlp_learns_mnist(cfg_factory):
    metrics = train(cfg_factory(*RUNS["mnist"], "trainer.max_epochs=8", "data.batch_size=16", "logger=none"))
    assert metrics["test/acc"] >= 0.75  # 400 training digits; chance is 0.10


def test_checkpoint_reloads_and_tests_to_the_same_accuracy(cfg_factory):
    """Evaluation takes the normalization the checkpoint was trained with, whatever the data config says."""
    first = train(cfg_factory(*RUNS["mnist"], "trainer.max_epochs=2", "data.mean=[0.5]", "data.std=[0.5]", out="first"))
    out = ROOT / cfg_factory(out="first").paths.output_dir
    ckpt = json.loads((out / "metrics.json").read_text())["checkpoint"]
    # plain data only: loads with torch's safe unpickler, and rebuilds the model with no config at all
    checkpoint = torch.load(ckpt, weights_only=True)
    assert checkpoint["hyper_parameters"]["class_names"] == DIGITS
    hparams = checkpoint["hyper_parameters"]
    assert hparams["mean"] == [0.5] and hparams["input_shape"] == [1, 28, 28]
    model = Classifier.load_from_checkpoint(ckpt)
    assert isinstance(model.net, torch.nn.Module)
    again = train(cfg_factory(*RUNS["mnist"], "train=false", f"ckpt_path={ckpt}", out="eval"))
    assert again["test/acc"] == first["test/acc"]
    assert again["test/loss"] == pytest.approx(first["test/loss"], rel=1e-6)
    report = json.loads((ROOT / cfg_factory(out="eval").paths.output_dir / "metrics.json").read_text())
    assert report["checkpoint"] == ckpt and "fit" not in report["seconds"]


def test_image_folder_checkpoint_evaluates_at_its_trained_size(cfg_factory):
    folder = ["data=image_folder", f"data.root={FIXTURES / 'cifar10-jpeg'}"]
    first = train(cfg_factory(*folder, "data.image_size=24", "data.channels=1", "trainer.max_epochs=1", out="first"))
    ckpt = json.loads((ROOT / cfg_factory(out="first").paths.output_dir / "metrics.json").read_text())["checkpoint"]
    again = train(cfg_factory(*folder, "train=false", f"ckpt_path={ckpt}", out="eval"))  # image_size=null here
    assert again["test/acc"] == first["test/acc"]
    with pytest.raises(UserError, match=r"trained on classes \['airplane', .*, 'truck'\] of 1x24x24 images, but "
                                        r"data=mnist has classes \['0', .*, '9'\] of 1x28x28"):
        train(cfg_factory("data=mnist", "train=false", f"ckpt_path={ckpt}", out="wrong"))


def test_resume_from_last_continues_at_the_next_epoch(cfg_factory):
    train(cfg_factory(*RUNS["mnist"], "trainer.max_epochs=1", out="first"))
    last = ROOT / cfg_factory(out="first").paths.output_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0
    cfg = cfg_factory(*RUNS["mnist"], "trainer.max_epochs=3", f"ckpt_path={last}", out="resumed")
    train(cfg)
    resumed = ROOT / cfg.paths.output_dir
    assert torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
    assert len(scalars(resumed)["train/acc"]) == 2  # epochs 1 and 2 only: epoch 0 was not trained again


def test_same_seed_same_metrics_and_seed_zero_counts(cfg_factory):
    def run(seed, out):
        return train(cfg_factory(*RUNS["image_folder"], f"seed={seed}", "trainer.max_epochs=2", "logger=none",
                                 "callbacks=none", out=out))

    a, b, c = run(0, "a"), run(0, "b"), run(1, "c")
    assert a == b
    assert a["train/loss"] != c["train/loss"]


def test_scheduler_and_adam_train(cfg_factory):
    cfg = cfg_factory(*RUNS["mnist"], "optimizer=adam", "scheduler=cosine", "trainer.max_epochs=2", "logger=csv")
    metrics = train(cfg)
    assert metrics["test/acc"] > 0.3
    assert (ROOT / cfg.paths.output_dir / "csv" / "metrics.csv").is_file()


def test_train_py_runs_and_returns_the_optimized_metric(tmp_path):
    """The real entry point, as a user runs it: Hydra makes the run folder, and an early stop exits cleanly."""
    common = [sys.executable, "train.py", f"paths.data_dir={FIXTURES}", "data=mnist", "model=mlp",
              "data.val_size=100", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run'}"]
    done = subprocess.run(common, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "Accuracy of the network on the 100 test images" in done.stdout
    out = done.stdout + done.stderr
    # one end-of-run report: per class precision, recall and F1, where the run is and how to open it
    assert "class      precision  recall      F1" in out and "macro avg" in out
    [row] = [line for line in out.splitlines() if line.startswith("7 ")]
    assert [float(v) / 100 for v in row.split()[1:]] == pytest.approx(
        [report["per_class"]["7"][k] for k in ("precision", "recall", "f1")], abs=5e-4)
    assert f"run folder: {tmp_path / 'run'}" in out and f"open it: tensorboard --logdir {tmp_path / 'run'}" in out
    assert "DataLoader 0" not in out and "Test metric" not in out  # not Lightning's table as well
    # a quiet console: no tips, no third-party deprecations, no model-summary table; through a pipe, the progress is
    # lines of at most 80 columns, a few per epoch
    assert "Tip" not in out and "LeafSpec" not in out and "Non-trainable params" not in out
    progress = [line for line in done.stdout.splitlines() if line.startswith("epoch 0 step")]
    assert 2 <= len(progress) <= 4 and all(len(line) <= 80 and "loss=" in line for line in progress)
    assert "\r" not in done.stdout
    assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file() and report["config"]["seed"] == 0


def test_checkpoint_written_before_the_model_owned_its_normalization_still_evaluates_the_same(cfg_factory):
    """tests/fixtures/checkpoints/lenet_mnist_v0.1.ckpt: LeNet trained 3 epochs on the MNIST fixtures by litvision
    0.1 (data module normalized, commit ff979a2), optimizer state stripped. That code tested it at 54% accuracy,
    loss 2.2211015 on the fixtures' 100 test digits: the same checkpoint must give the same today."""
    ckpt = FIXTURES / "checkpoints" / "lenet_mnist_v0.1.ckpt"
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["mean"] == [0.1307]
    metrics = train(cfg_factory("data=mnist", "train=false", f"ckpt_path={ckpt}", "logger=none",
                                "trainer.precision=32-true"))  # as that code evaluated it
    assert metrics["test/acc"] == pytest.approx(0.54)
    assert metrics["test/loss"] == pytest.approx(2.2211015, rel=1e-6)


def test_in_a_terminal_the_progress_bar_fits_80_columns(tmp_path):
    """A real terminal (a pseudo-terminal 120 columns wide): every bar Lightning draws stays within 80 columns."""
    import fcntl
    import os
    import pty
    import re
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # the child: train.py on the terminal
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "train.py", "data=mnist", "model=mlp", f"paths.data_dir={FIXTURES}",
                                  "data.val_size=100", "trainer.max_epochs=2", f"hydra.run.dir={tmp_path / 'run'}",
                                  f"paths.cache_dir={tmp_path / 'cache'}", "logger=none"])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    output = b""
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        output += data
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output.decode(errors="replace")[-2000:]
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode(errors="replace"))
    bars = [part for line in text.splitlines() for part in line.split("\r") if "it/s" in part or "?it" in part]
    assert any(bar.startswith("Epoch 1:") and "val/acc=" in bar and "loss=" in bar for bar in bars)
    assert bars and max(len(bar.rstrip()) for bar in bars) <= 80
