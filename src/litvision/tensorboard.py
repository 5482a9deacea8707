"""TensorBoard as a person opens it. A run's events sit in its own folder, so a sweep's runs are named by their
overrides; Lightning's `epoch` staircase is left out; the custom-scalars tab holds the charts that compare (train
vs val loss and accuracy, every class's val accuracy in one chart); the resolved config is a text card; HPARAMS
lists every hyperparameter with its type (bools as bools), the run's status (a pruned trial too) and its results
read from the scalars it logged (no extra `hp/` scalars). In a sweep the sweep's folder holds the one experiment
description, from all its jobs: what differs between them comes first, so TensorBoard ticks it."""

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger

METRICS = {"test/acc": "test accuracy", "val/acc_best": "best val accuracy", "test/loss": "test loss"}


class TensorBoard(TensorBoardLogger):
    """Lightning's TensorBoardLogger writing into save_dir itself (no name/version folders)."""

    def __init__(self, save_dir: str, **kwargs: Any) -> None:
        super().__init__(save_dir, name="", version="", default_hp_metric=False, **kwargs)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)

    def save(self) -> None:  # the hyperparameters go to HPARAMS (log_session), not to an hparams.yaml beside
        self.experiment.flush()

    def describe(self, config_yaml: str, class_names: list[str]) -> None:
        """The custom-scalars layout and the resolved config, written when the run starts."""
        self.experiment.add_custom_scalars({"litvision": {
            "loss: train vs val": ["Multiline", ["^train/loss$", "^val/loss$"]],
            "accuracy: train vs val": ["Multiline", ["^train/acc$", "^val/acc$"]],
            f"val accuracy of each of the {len(class_names)} classes": ["Multiline", ["^val/acc_class/"]],
            "learning rate": ["Multiline", ["^train/lr$"]]}})
        self.experiment.add_text("config", "    " + config_yaml.replace("\n", "\n    "))  # a Markdown code block

    def log_session(self, hparams: dict[str, Any], status: str, experiment: bool, chosen: Iterable[str] = ()) -> None:
        """HPARAMS: this run's hyperparameters and how it ended (ok, pruned, diverged). experiment: also describe the
        table's columns from this run alone (a single run; a sweep describes them once, from all its jobs), the
        `chosen` ones (what its command line set) first."""
        writer = self.experiment._get_file_writer()
        if experiment:
            writer.add_summary(experiment_summary([hparams], first=set(chosen)))
        writer.add_summary(_summary("session_start_info", session_start_info=_start_info(hparams)))
        from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

        end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS if status in ("ok", "pruned")
                                             else api_pb2.STATUS_FAILURE, end_time_secs=time.time())
        writer.add_summary(_summary("session_end_info", session_end_info=end))
        writer.flush()


def write_sweep_experiment(sweep_dir: Path, job_folders: list[Path]) -> None:
    """The HPARAMS columns of a sweep, from the hyperparameters each job wrote in its metrics.json: one event file
    in the sweep folder, read by `tensorboard --logdir SWEEP_DIR`."""
    runs = []
    for folder in job_folders:
        path = folder / "metrics.json"
        if path.is_file():
            result = json.loads(path.read_text())
            runs.append({**(result.get("hyperparameters") or {}), "status": result["status"].split(":")[0]})
    if not runs:
        return
    from torch.utils.tensorboard.writer import FileWriter

    for earlier in sweep_dir.glob("events.out.tfevents.*.sweep"):  # a resumed search describes all its trials anew
        earlier.unlink()
    writer = FileWriter(str(sweep_dir), filename_suffix=".sweep")
    writer.add_summary(experiment_summary(runs))
    writer.close()


def experiment_summary(runs: list[dict[str, Any]], first: set[str] = frozenset()):
    """The hparams plugin's experiment: a typed column per hyperparameter seen in `runs`, those that differ
    between them first (TensorBoard ticks the first five; it orders by `differs`, so for a single run the `first`
    ones are marked so), and the METRICS."""
    from tensorboard.plugins.hparams import api_pb2

    names = sorted({name for run in runs for name in run})
    infos = []
    for name in names:
        values = [run[name] for run in runs if name in run]
        kinds = {_kind(value) for value in values}
        kind = kinds.pop() if len(kinds) == 1 else api_pb2.DATA_TYPE_STRING
        differs = len({json.dumps(v, sort_keys=True) for v in values}) > 1 or len(values) < len(runs) or name in first
        infos.append(api_pb2.HParamInfo(name=name, type=kind, differs=differs))
    infos.sort(key=lambda info: (not info.differs, info.name))
    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=[
        api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=title) for tag, title in METRICS.items()],
        time_created_secs=time.time())
    return _summary("experiment", experiment=experiment)


def _kind(value: Any) -> int:
    from tensorboard.plugins.hparams import api_pb2

    if isinstance(value, bool):
        return api_pb2.DATA_TYPE_BOOL
    if isinstance(value, (int, float)):
        return api_pb2.DATA_TYPE_FLOAT64
    return api_pb2.DATA_TYPE_STRING


def _start_info(hparams: dict[str, Any]):
    from google.protobuf import struct_pb2
    from tensorboard.plugins.hparams import plugin_data_pb2

    info = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    for name, value in hparams.items():
        if isinstance(value, bool):
            info.hparams[name].CopyFrom(struct_pb2.Value(bool_value=value))
        elif isinstance(value, (int, float)):
            info.hparams[name].CopyFrom(struct_pb2.Value(number_value=value))
        else:
            info.hparams[name].CopyFrom(struct_pb2.Value(string_value=str(value)))
    return info


def _summary(kind: str, **content):
    """One hparams-plugin summary (`_hparams_/KIND`) as the event writer takes it."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    data = plugin_data_pb2.HParamsPluginData(version=0, **content)
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME,
                                                                  content=data.SerializeToString()))
    return Summary(value=[Summary.Value(tag=f"_hparams_/{kind}", metadata=meta)])
