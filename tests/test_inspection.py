"""TensorBoard holds what a person looks for: the scalars with per-class precision, recall and F1, figures drawn
across the classes, PR curves, the projector, the custom-scalars layout, the resolved config and HPARAMS with
typed values; a sweep's runs named by their overrides, with what differs between them ticked first."""

import json
import subprocess
import sys

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

from conftest import FIXTURES, ROOT
from litvision.callbacks.figures import _Reservoir
from litvision.training import train


def _hparams(events: EventAccumulator, kind: str):
    content = events.PluginTagToContent("hparams")[f"_hparams_/{kind}"]
    return getattr(plugin_data_pb2.HParamsPluginData.FromString(content), kind)


def test_tensorboard_has_what_a_person_looks_for(cfg_factory):
    cfg = cfg_factory("data=image_folder", f"data.root={FIXTURES / 'cifar10-jpeg'}", "trainer.max_epochs=2",
                      "data.batch_size=32", "trainer.log_every_n_steps=2", "optimizer.lr=0.05",
                      "callbacks.figures.val_every=1", "callbacks.figures.embedding=40")
    metrics = train(cfg)
    out = ROOT / cfg.paths.output_dir
    events = EventAccumulator(str(out), size_guidance={"images": 0, "tensors": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss_step", "train/lr", "train/loss", "val/acc", "val/acc_best", "test/acc", "test/f1_macro",
            "test/precision_class/cat", "test/f1_class/cat", "val/recall_macro"} <= scalars
    assert "epoch" not in scalars and not any(tag.startswith("hp/") for tag in scalars)  # no noise first
    assert abs(metrics["test/recall_macro"] - sum(metrics[f"test/acc_class/{c}"] for c in CLASSES) / 10) < 1e-6
    for tag in ("test/confusion_matrix", "test/per_class", "test/samples", "test/confidently_wrong"):
        [image] = events.Images(tag)
        assert 400 <= image.width <= 500 and image.encoded_image_string[:4] == b"\x89PNG"  # a card's width
    assert len(events.Images("val/confusion_matrix")) == len(events.Images("val/per_class")) == 2  # each epoch
    pr_curves = events.PluginTagToContent("pr_curves")
    assert sorted(pr_curves) == [f"test/pr_curve/{c}" for c in CLASSES]
    # the projector: 40 test images' penultimate features (LeNet's 84), with their class names and thumbnails
    config = (out / "projector_config.pbtxt").read_text()
    assert "test/features" in config and "sprite" in config
    [tsv] = out.glob("*/*/metadata.tsv")
    assert len(tsv.read_text().split()) == 40 and set(tsv.read_text().split()) <= set(CLASSES)
    [features] = out.glob("*/*/tensors.tsv")
    assert {len(line.split("\t")) for line in features.read_text().splitlines()} == {84}
    # the custom-scalars charts and the resolved config
    charts = {chart.title: list(chart.multiline.tag) for category in
              layout_pb2.Layout.FromString(events.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
              .category for chart in category.chart}
    assert charts["loss: train vs val"] == ["^train/loss$", "^val/loss$"]
    assert charts["val accuracy of each of the 10 classes"] == ["^val/acc_class/"]
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "lr: 0.05" in text and "_target_: litvision.classifier.Classifier" in text
    # HPARAMS: typed values, the status, and the results read from the run's own scalars
    start = _hparams(events, "session_start_info")
    assert start.hparams["model"].string_value == "LeNet" and start.hparams["optimizer.lr"].number_value == 0.05
    assert start.hparams["data.flip"].HasField("bool_value") and start.hparams["data.flip"].bool_value is False
    assert start.hparams["data.batch_size"].number_value == 32 and start.hparams["status"].string_value == "ok"
    experiment = _hparams(events, "experiment")
    assert [m.name.tag for m in experiment.metric_infos] == ["test/acc", "val/acc_best", "test/loss"]
    types = {info.name: info.type for info in experiment.hparam_infos}
    assert types["data.flip"] == api_pb2.DATA_TYPE_BOOL and types["optimizer.lr"] == api_pb2.DATA_TYPE_FLOAT64
    result = json.loads((out / "metrics.json").read_text())
    assert result["accuracy"] == metrics["test/acc"] and result["hyperparameters"]["optimizer.lr"] == 0.05
    assert result["per_class"]["cat"]["f1"] == metrics["test/f1_class/cat"]
    assert result["macro"]["precision"] == metrics["test/precision_macro"]


CLASSES = sorted(p.name for p in (FIXTURES / "cifar10-jpeg" / "train").iterdir())


def test_samples_are_drawn_across_the_classes_by_the_seed():
    labels = torch.arange(10).repeat_interleave(10)  # a test set in class order, as an image folder's is

    def draw(seed: int) -> torch.Tensor:
        reservoir, generator = _Reservoir(10, 2), torch.Generator().manual_seed(seed)
        for batch in torch.arange(100).split(32):  # positions, in batches
            reservoir.offer(torch.rand(len(batch), generator=generator), labels[batch], batch)
        return reservoir.taken()[0]

    picked = draw(0)
    assert labels[picked[:10]].tolist() == list(range(10))  # one of each class first, then the next of each
    assert sorted(labels[picked].tolist()) == sorted(list(range(10)) * 2)
    assert torch.equal(draw(0), picked) and not torch.equal(draw(1), picked)


def test_a_sweep_names_its_runs_by_their_overrides_and_ticks_what_differs(tmp_path):
    done = subprocess.run([sys.executable, "train.py", "-m", "data=mnist", "model=mlp,lenet", "optimizer.lr=0.05",
                           f"paths.data_dir={FIXTURES}", f"paths.cache_dir={tmp_path / 'cache'}", "data.val_size=100",
                           "trainer.max_epochs=1", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted({p.parent.name for p in (tmp_path / "sweep").glob("*/events.out.tfevents.*")})
    common = "optimizer.lr=0.05,trainer.max_epochs=1"  # overrides sorted; the paths left out
    assert runs == [f"0_data.val_size=100,data=mnist,model=mlp,{common}",
                    f"1_data.val_size=100,data=mnist,model=lenet,{common}"]
    for run in runs:  # each a separate process: what it wrote reached the disk before it exited
        assert json.loads((tmp_path / "sweep" / run / "metrics.json").read_text())["accuracy"] is not None
        events = EventAccumulator(str(tmp_path / "sweep" / run)).Reload()
        assert _hparams(events, "session_start_info").hparams["model"].string_value in ("mlp", "lenet")
        assert "_hparams_/experiment" not in events.PluginTagToContent("hparams")  # the sweep's describes them
    [sweep_events] = (tmp_path / "sweep").glob("events.out.tfevents.*.sweep")
    experiment = _hparams(EventAccumulator(str(sweep_events)).Reload(), "experiment")
    first = experiment.hparam_infos[0]
    assert first.name == "model" and first.differs and first.type == api_pb2.DATA_TYPE_STRING
    differing = [info.name for info in experiment.hparam_infos if info.differs]
    assert differing == [info.name for info in experiment.hparam_infos[:len(differing)]]  # first, then the rest
    assert all(name.startswith("model") for name in differing)  # the network and its own settings (mlp's widths)
