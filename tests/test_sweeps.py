"""Sweeps through train.py as users run them: grid sweeps and their summary, the joblib and submitit_local
launchers, and Optuna searches that resume, prune and record failures."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import FIXTURES, ROOT
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2


def sweep(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    """python train.py -m OVERRIDES on the MNIST fixtures (300 training images), 1 epoch unless overridden."""
    return subprocess.run([sys.executable, "train.py", "-m", "data=mnist", f"paths.data_dir={FIXTURES}",
                           f"paths.cache_dir={tmp_path / 'cache'}", "data.val_size=100", "trainer.max_epochs=1",
                           "callbacks.progress_bar=null", f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def summary(tmp_path) -> list[dict]:
    with open(tmp_path / "sweep" / "summary.csv") as file:
        return list(csv.DictReader(file))


def test_grid_sweep_runs_every_job_lists_the_failed_one_and_ranks_the_rest(tmp_path):
    done = sweep(tmp_path, "model=mlp", "optimizer.lr=0.05,-1,0.2")
    assert done.returncode == 1  # the sweep reports its failure, after running every job
    assert "1 of 3 jobs failed (1)" in done.stderr + done.stdout
    rows = summary(tmp_path)
    assert [row["optimizer.lr"] for row in rows][-1] == "-1"  # failed last, the others best first
    failed = rows[-1]
    assert failed["status"] == "failed" and "Invalid learning rate: -1" in failed["error"]
    ok = rows[:2]
    assert [row["status"] for row in ok] == ["ok", "ok"] and float(ok[0]["val/acc_best"]) >= float(ok[1]["val/acc_best"])
    for row in ok:
        result = json.loads((tmp_path / "sweep" / row["folder"] / "metrics.json").read_text())
        assert float(row["test/acc"]) == pytest.approx(result["accuracy"], abs=1e-4)
        assert float(row["val/acc_best"]) == pytest.approx(result["metrics"]["val/acc_best"], abs=1e-4)
    markdown = (tmp_path / "sweep" / "summary.md").read_text()
    assert "| job | status | optimizer.lr | val/acc_best | test/acc |" in markdown and "Invalid learning rate" in markdown
    assert "Invalid learning rate" in (tmp_path / "sweep" / failed["folder"] / "train.log").read_text()


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_launchers_run_jobs_in_other_processes_sharing_one_cache(tmp_path, launcher):
    done = sweep(tmp_path, f"hydra/launcher={launcher}", "model=mlp,lenet",
                 *(["hydra.launcher.n_jobs=2"] if launcher == "joblib" else []))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = summary(tmp_path)
    assert sorted(row["model"] for row in rows) == ["lenet", "mlp"] and {row["status"] for row in rows} == {"ok"}
    assert all(row["test/acc"] for row in rows)
    # both jobs decoded the same data into the same (fresh) cache at the same time: one whole file, no leftovers
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".pt"
    if launcher == "submitit_local":
        assert (tmp_path / "sweep" / ".submitit").is_dir()


def trials(tmp_path) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}"
    return optuna.load_study(study_name="mnist_optuna", storage=storage).get_trials()


def test_optuna_search_records_failures_writes_the_best_and_resumes(tmp_path):
    search = ("hparams_search=mnist_optuna", "optimizer.momentum=choice(0.9,-1)")
    done = sweep(tmp_path, *search, "hydra.sweeper.n_trials=4")
    assert done.returncode == 0, done.stderr[-3000:]
    first = trials(tmp_path)
    assert len(first) == 4
    for trial in first:  # momentum -1 is an invalid optimizer: failed, with the reason; the search went on
        failed = trial.params["optimizer.momentum"] == -1
        assert trial.state == (optuna.trial.TrialState.FAIL if failed else optuna.trial.TrialState.COMPLETE)
        assert ("Invalid momentum value: -1" in trial.user_attrs.get("error", "")) == failed
    assert any(t.state == optuna.trial.TrialState.FAIL for t in first)  # this seed draws it
    complete = [t for t in first if t.state == optuna.trial.TrialState.COMPLETE]
    best = OmegaConf.load(tmp_path / "sweep" / "best_params.yaml")
    top = max(complete, key=lambda t: t.value)
    assert best.best_value == top.value and best.best_params == top.params and best.trials.fail == 4 - len(complete)
    for trial in complete:  # the value told to Optuna is the job's val/acc_best
        result = json.loads((Path(trial.user_attrs["folder"]) / "metrics.json").read_text())
        assert trial.value == pytest.approx(result["metrics"]["val/acc_best"])
    assert (tmp_path / "sweep" / "optimization_history.png").stat().st_size > 10_000
    assert len(summary(tmp_path)) == 4

    done = sweep(tmp_path, *search, "hydra.sweeper.n_trials=6")  # the same search again, 2 trials more
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming after 4 finished trials" in done.stderr + done.stdout
    again = trials(tmp_path)
    assert len(again) == 6 and [t.params for t in again[:4]] == [t.params for t in first]
    assert all(t.params not in [f.params for f in first] for t in again[4:])  # new draws, not the first ones again
    assert len(summary(tmp_path)) == 6


def test_optuna_prunes_trials_running_in_parallel(tmp_path):
    # a pruner that stops every trial after its second epoch, two trials at a time in two processes
    done = sweep(tmp_path, "hparams_search=mnist_optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
                 "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "trainer.max_epochs=4", "data.batch_size=64",
                 "~hydra.sweeper.pruner",  # another pruner class: remove the default, then add it
                 "+hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:1.1,n_warmup_steps:1}")
    assert done.returncode == 0, done.stderr[-3000:]
    pruned = trials(tmp_path)
    assert [t.state for t in pruned] == [optuna.trial.TrialState.PRUNED] * 2
    for trial in pruned:  # val/acc reported after epochs 0 and 1, then stopped: no epoch 2, no test
        assert sorted(trial.intermediate_values) == [0, 1]
        folder = Path(trial.user_attrs["folder"])
        assert folder.name.startswith(f"trial_{trial.number}_") and "optimizer.lr=" in folder.name  # named by its values
        assert "pruned after epoch 1" in (folder / "train.log").read_text()
        result = json.loads((folder / "metrics.json").read_text())  # how it ended, and no test accuracy
        assert result["status"].startswith("pruned: ") and result["accuracy"] is None
        events = EventAccumulator(str(folder)).Reload()  # in HPARAMS, with the val accuracy it reached
        start = plugin_data_pb2.HParamsPluginData.FromString(
            events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
        assert start.hparams["status"].string_value == "pruned" and "val/acc_best" in events.Tags()["scalars"]
        assert "lr" not in start.hparams and start.hparams["optimizer.lr"].number_value == trial.params["optimizer.lr"]
    assert [row["status"] for row in summary(tmp_path)] == ["pruned", "pruned"]


def test_optuna_records_a_diverged_trial_as_failed_and_goes_on(tmp_path):
    # lr 1e30 drives the loss to NaN: training stops at that step, and the trial failed with that reason
    done = sweep(tmp_path, "hparams_search=mnist_optuna", "hydra.sweeper.n_trials=2", "optimized_metric=val/loss",
                 "hydra.sweeper.direction=minimize", "optimizer.lr=choice(1e30)", "data.batch_size=64")
    assert done.returncode == 1  # no trial completed: the search reports it
    assert "2 of 2 jobs failed" in done.stderr + done.stdout
    diverged = trials(tmp_path)
    assert [t.state for t in diverged] == [optuna.trial.TrialState.FAIL] * 2  # the second ran after the first failed
    assert all(t.user_attrs["error"].startswith("Diverged: the training loss is nan at step") for t in diverged)
    assert [row["status"] for row in summary(tmp_path)] == ["failed", "failed"]


def test_job_folders_are_named_by_their_overrides_within_the_name_limit():
    from litvision import run_folder

    searched = "data=mnist,optimizer.lr=0.12520653814999466,optimizer.weight_decay=2.6919058249260695e-05"
    assert run_folder(searched) == "data=mnist,optimizer.lr=0.1252,optimizer.weight_decay=2.692e-05"
    assert run_folder("model=lenet,optimizer.lr=0.05") == "model=lenet,optimizer.lr=0.05"  # short: as it is
    long = ",".join(f"model.widths.{i}=1024" for i in range(40))
    assert len(run_folder(long).encode()) == 150 and run_folder(long) != run_folder(long + ",seed=1")
