"""Bad input stops early with one message that names the bad value and the fix."""

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from PIL import Image

from conftest import FIXTURES, ROOT
from litvision import UserError
from litvision.training import train


def test_misspelled_group_option_lists_the_options(cfg_factory):
    with pytest.raises(MissingConfigException, match=r"Could not find 'model/lenett'") as error:
        cfg_factory("model=lenett")
    assert "Available options in 'model'" in str(error.value) and "lenet" in str(error.value)


def test_misspelled_group_name(cfg_factory):
    with pytest.raises(ConfigCompositionException, match=r"optimiser"):
        cfg_factory("optimiser=adam")


def test_misspelled_key_says_it_is_not_in_the_config(cfg_factory):
    with pytest.raises(ConfigCompositionException, match=r"Could not override 'trainer.max_epoch'"):
        cfg_factory("trainer.max_epoch=3")


def test_unknown_network_class(cfg_factory):
    with pytest.raises(Exception, match=r"litvision.nets.ResNet"):
        train(cfg_factory("model._target_=litvision.nets.ResNet"))


@pytest.mark.parametrize(("override", "message"), [
    ("optimizer.lr=-0.1", r"optimizer .*'lr': -0.1.* is invalid: Invalid learning rate: -0.1. Fix that value"),
    ("data.batch_size=-4", r"data.batch_size=-4 is invalid: it must be a positive integer"),
    ("data.root=/no/such/folder", r"data.root=/no/such/folder does not exist"),
    ("train=false", r"ckpt_path=None: train=false evaluates a checkpoint"),
    ("ckpt_path=/no/such.ckpt", r"ckpt_path=/no/such.ckpt is not a file"),
])
def test_bad_values_stop_before_training(cfg_factory, override, message):
    overrides = ["data=image_folder", f"data.root={FIXTURES / 'cifar10-jpeg'}", override]
    cfg = cfg_factory(*overrides)
    with pytest.raises(UserError, match=message):
        train(cfg)
    assert not (ROOT / cfg.paths.output_dir / "checkpoints").exists()


def test_corrupt_image_is_named(cfg_factory, tmp_path):
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            Image.new("RGB", (32, 32)).save(tmp_path / "data" / split / name / "fine.png")
    (tmp_path / "data/train/a/cat.jpg").write_bytes(b"GIF89a not really")
    with pytest.raises(UserError, match=r"1 of 5 image files cannot be decoded: cat.jpg \(cannot identify image file"):
        train(cfg_factory("data=image_folder", f"data.root={tmp_path / 'data'}", "data.val_size=0"))


def test_entry_point_prints_one_clear_line(tmp_path):
    """No traceback for a user error, exit status 1, and a previous run's files untouched."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"earlier run")
    done = subprocess.run([sys.executable, "train.py", "data=mnist", f"paths.data_dir={FIXTURES}", "data.val_size=0",
                           "optimizer.lr=-1", f"hydra.run.dir={run}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "Invalid learning rate: -1" in output and "Traceback" not in output
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == b"earlier run"


def test_help_describes_each_tool_with_examples():
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)

    train_help = run("train.py", "--help")
    assert train_help.returncode == 0 and train_help.stdout.startswith("python train.py: train, test and report")
    lines = train_help.stdout.splitlines()
    for experiment in sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")):  # one line each
        assert any(line.split()[:1] == [experiment] for line in lines), experiment
    assert "Examples:" in train_help.stdout and "data: cifar10, cifar100" in train_help.stdout  # then the groups
    assert "_target_" not in train_help.stdout  # not the whole config
    for tool in ("predict", "export"):
        done = run("-m", f"litvision.{tool}", "--help")
        assert done.returncode == 0 and done.stdout.startswith(f"python -m litvision.{tool}: ")
        assert "ckpt_path" in done.stdout and "hparams_search" not in done.stdout  # its own settings only
        usage = run("-m", f"litvision.{tool}")  # nothing given: one line that says what to give
        assert usage.returncode == 1 and "Traceback" not in usage.stderr + usage.stdout
        [line] = [line for line in (usage.stdout + usage.stderr).splitlines() if line.strip()]
        assert "not given. Usage: python -m litvision." in line
