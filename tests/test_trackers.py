"""The trackers users already have, as Lightning loggers that work offline and at once: MLflow in a local store in
the run folder, Weights & Biases offline; read back, they hold the run's metrics and settings."""

import json

import pytest

from conftest import FIXTURES
from litvision.training import train

mlflow = pytest.importorskip("mlflow")


def test_tensorboard_mlflow_and_wandb_at_once(cfg_factory, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in, so W&B runs offline
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = cfg_factory("data=image_folder", f"data.root={FIXTURES / 'cifar10-jpeg'}", "trainer.max_epochs=2",
                      "optimizer.lr=0.05", "logger=[tensorboard,mlflow,wandb]")
    metrics = train(cfg)
    run = tmp_path / "run"
    result = json.loads((run / "metrics.json").read_text())
    assert list(run.glob("events.out.tfevents.*"))  # TensorBoard as well
    # MLflow: the local store in the run folder, the run named by its folder, finished, with metrics and settings
    client = mlflow.MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    [found] = client.search_runs([client.get_experiment_by_name("litvision").experiment_id])
    assert found.info.run_name == "run" and found.info.status == "FINISHED"
    assert found.data.metrics["test/acc"] == pytest.approx(result["accuracy"])
    assert found.data.metrics["test/f1_macro"] == pytest.approx(metrics["test/f1_macro"])
    assert found.data.params["optimizer.lr"] == "0.05" and found.data.params["status"] == "ok"
    steps = [m.step for m in client.get_metric_history(found.info.run_id, "val/acc")]
    assert len(steps) == 2 and steps[0] < steps[1]  # once per epoch
    # W&B: an offline run in the run folder, holding the metrics, to `wandb sync` later
    [record] = run.glob("wandb/offline-run-*/run-*.wandb")
    data = record.read_bytes()
    assert b"test/acc" in data and b"optimizer.lr" in data
