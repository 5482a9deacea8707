"""TensorBoard holds what a person looks for: scalars, figures with class names, and the hparams of the run."""

import json
import subprocess
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import FIXTURES, ROOT
from litvision.training import train


def test_tensorboard_has_scalars_figures_and_hparams(cfg_factory):
    cfg = cfg_factory("data=image_folder", f"data.root={FIXTURES / 'cifar10-jpeg'}", "trainer.max_epochs=2",
                      "data.batch_size=32", "trainer.log_every_n_steps=2", "optimizer.lr=0.05")
    metrics = train(cfg)
    out = ROOT / cfg.paths.output_dir
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0}).Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/loss_step", "train/lr", "train/loss", "val/acc", "val/acc_best", "test/acc"} <= set(scalars)
    assert {round(e.value, 6) for e in events.Scalars("train/lr")} == {0.05}  # no scheduler: constant
    for tag in ("test/confusion_matrix", "test/samples", "test/confidently_wrong"):
        [image] = events.Images(tag)
        assert image.width > 300 and image.height > 100 and image.encoded_image_string[:4] == b"\x89PNG"
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["model"].string_value == "LeNet" and start.hparams["lr"].number_value == 0.05
    assert start.hparams["data"].string_value == "image_folder" and start.hparams["batch_size"].number_value == 32
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"hp/test_acc", "hp/test_loss", "hp/val_acc_best"}
    assert events.Scalars("hp/test_acc")[0].value == metrics["test/acc"]
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == metrics["test/acc"]


def test_sweep_runs_share_one_folder_named_by_their_overrides(tmp_path):
    done = subprocess.run([sys.executable, "train.py", "-m", "data=mnist", "model=mlp,lenet", "optimizer.lr=0.05",
                           f"paths.data_dir={FIXTURES}", f"paths.cache_dir={tmp_path / 'cache'}", "data.val_size=100",
                           "trainer.max_epochs=1", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted({p.parent.parent.name for p in (tmp_path / "sweep").glob("*/tensorboard/events.out.tfevents.*")})
    common = "optimizer.lr=0.05,trainer.max_epochs=1"  # overrides sorted; the paths left out
    assert runs == [f"0_data.val_size=100,data=mnist,model=mlp,{common}",
                    f"1_data.val_size=100,data=mnist,model=lenet,{common}"]
    for run in runs:  # each a separate process: what it wrote reached the disk before it exited
        assert json.loads((tmp_path / "sweep" / run / "metrics.json").read_text())["accuracy"] is not None
        events = EventAccumulator(str(tmp_path / "sweep" / run / "tensorboard")).Reload()
        assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
