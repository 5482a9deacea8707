"""Runs you can trust, under real faults: a kill or a full disk while a checkpoint is saved, a full disk and a
corrupt file in the decoded-data cache, resumes, two runs on one folder, a diverged run, bad checkpoint files.
The faults are real: a tmpfs of a chosen size for the run folder (another filesystem than $TMPDIR, so a save
cannot simply rename from there), and kill -9 of a subprocess. They need root to mount; otherwise they skip."""

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException

from conftest import FIXTURES, ROOT
from hydra_plugins.litvision_sweepers.summary import error_text
from litvision import UserError
from litvision.decoding import load
from litvision.export import export_onnx
from litvision.predict import predict
from litvision.training import train

MNIST = [f"paths.data_dir={FIXTURES}", "data=mnist", "model=mlp", "data.val_size=0.2"]


def train_py(*overrides: str, timeout: int = 300, **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *overrides], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **popen)


@contextmanager
def tmpfs(path: Path, size: str):
    """A tmpfs of `size` mounted at `path` for the block: a real filesystem that fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs (a small disk that fills up) needs root")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def loads(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


def one_line_error(done: subprocess.CompletedProcess, *expected: str) -> str:
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "Traceback" not in output and "weights_only=False" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if "error: " in line]
    assert len(errors) == 1, output[-3000:]
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def test_kill_during_a_checkpoint_save_leaves_the_last_checkpoint_whole(tmp_path):
    """A 160 MB last.ckpt (an MLP of 20M parameters and its momentum) rewritten every epoch on a tmpfs run folder;
    kill -9 lands while it is being rewritten. The last.ckpt on disk must be a whole checkpoint, and the run
    resumes from it."""
    with tmpfs(tmp_path / "disk", "2g") as disk:
        run = disk / "run"
        big = [*MNIST, "model.hidden=[4096,4096]", "data.batch_size=120", "trainer.max_epochs=100", "logger=none",
               "callbacks.model_checkpoint=null", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}"]
        process = subprocess.Popen([sys.executable, "train.py", *big], cwd=ROOT, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        last, whole, caught = run / "checkpoints" / "last.ckpt", None, False
        deadline = time.time() + 240
        try:
            while time.time() < deadline and process.poll() is None:
                if whole is None and last.is_file() and not list(last.parent.glob("last.ckpt.*.tmp")):
                    time.sleep(0.5)  # let the first save finish, then note its size
                    whole = last.stat().st_size
                temporary = list(last.parent.glob("last.ckpt.*.tmp"))
                if whole is not None and (temporary or last.stat().st_size != whole):
                    process.send_signal(signal.SIGKILL)  # mid-save: a temp file beside it, or the file changing
                    caught = True
                    break
                time.sleep(0.0005)
        finally:
            process.kill()
            process.wait()
        assert caught, "the run ended before a second save of last.ckpt began"
        checkpoint = loads(last)  # whole: the previous epoch's or the new one
        assert checkpoint["epoch"] >= 0 and checkpoint["state_dict"]["net.layers.1.weight"].shape == (4096, 784)
        resumed = train_py(*big[:-3], "trainer.max_epochs=" + str(checkpoint["epoch"] + 2), "logger=none",
                           "callbacks.model_checkpoint=null", f"paths.cache_dir={tmp_path / 'cache'}",
                           f"ckpt_path={last}", "test=false")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert loads(last)["epoch"] == checkpoint["epoch"] + 1
        assert not list(last.parent.glob("*.tmp"))  # the killed save's temp file was removed by the next save


def test_full_disk_while_checkpointing_stops_with_one_line_and_keeps_earlier_checkpoints(tmp_path):
    """Checkpoints of about 15 MB on a 40 MB disk: epoch 0's two fit, epoch 1's third file does not."""
    with tmpfs(tmp_path / "disk", "40m") as disk:
        run = disk / "run"
        done = train_py(*MNIST, "model.hidden=[1024,1024]", "trainer.max_epochs=5", "logger=none",
                        f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}")
        line = one_line_error(done, "no space left to save", str(run / "checkpoints"), "MiB free")
        assert "checkpoints already there are whole" in line
        saved = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert saved == ["epoch_000.ckpt", "last.ckpt"]  # no temporary file left, no half file
        assert loads(run / "checkpoints" / "last.ckpt")["epoch"] == 0
        assert loads(run / "checkpoints" / "epoch_000.ckpt")["epoch"] == 0


def test_full_disk_while_caching_costs_a_warning_not_the_run(tmp_path, cfg_factory, caplog):
    folder = ["data=image_folder", f"data.root={FIXTURES / 'cifar10-jpeg'}", "trainer.max_epochs=1", "logger=none"]
    with tmpfs(tmp_path / "cache", "256k") as cache:  # the decoded images are 1.6 MB
        metrics = train(cfg_factory(*folder, f"paths.cache_dir={cache}"))
        assert 0 <= metrics["test/acc"] <= 1
        assert "could not cache decoded image_folder" in caplog.text
        assert not list(cache.iterdir())  # no half-written cache or temporary file


def test_corrupt_cache_file_is_decoded_again_and_an_orphan_temp_file_removed(tmp_path, caplog):
    cache = tmp_path / "cache"
    first = load("mnist", FIXTURES, cache_dir=cache)
    expected = first.train.images.clone()  # `first` reads the cache file, which is damaged below
    [file] = cache.glob("mnist-*.pt")
    damaged = file.read_bytes()[:1000]
    file.unlink()  # a new file: `first` keeps the old one's pages
    file.write_bytes(damaged)  # truncated, as by a disk error
    orphan = cache / f"{file.name}.999999999.tmp"  # a killed writer's (no such process)
    orphan.write_bytes(b"half")
    again = load("mnist", FIXTURES, cache_dir=cache)
    assert torch.equal(again.train.images, expected)
    assert "unreadable" in caplog.text and str(file) in caplog.text
    assert loads(file)["classes"] == again.classes and not orphan.exists()


def _best_unbeatable(checkpoint_path: Path) -> str:
    """Make the run's recorded best val accuracy 1.0, so that every later epoch is worse than the best so far: the
    best checkpoint is then the earlier one, whatever the resumed epochs reach. Returns the best file's path."""
    checkpoint = loads(checkpoint_path)
    [key] = [k for k in checkpoint["callbacks"] if k.startswith("BestCheckpoint")]
    state = checkpoint["callbacks"][key]
    state["best_model_score"] = torch.tensor(1.0)
    state["best_k_models"] = {state["best_model_path"]: torch.tensor(1.0)}
    state["kth_value"] = torch.tensor(1.0)
    checkpoint["litvision"]["val_acc_best"] = 1.0
    torch.save(checkpoint, checkpoint_path)
    return state["best_model_path"]


def test_resume_in_the_run_folder_tests_the_best_of_all_epochs(tmp_path):
    """The README's resume: ckpt_path=RUN/checkpoints/last.ckpt continues in RUN (no new dated folder)."""
    logs = tmp_path / "logs"
    first = train_py(*MNIST, "trainer.max_epochs=2", f"paths.log_dir={logs}", f"paths.cache_dir={tmp_path / 'c'}")
    assert first.returncode == 0, first.stderr[-3000:]
    [run] = (logs / "train" / "runs").iterdir()
    best = _best_unbeatable(run / "checkpoints" / "last.ckpt")
    again = train_py(*MNIST, "trainer.max_epochs=4", f"paths.log_dir={logs}", f"paths.cache_dir={tmp_path / 'c'}",
                     f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert list((logs / "train" / "runs").iterdir()) == [run]  # continued in its folder
    report = json.loads((run / "metrics.json").read_text())
    assert report["checkpoint"] == best  # the earlier, better epoch is the one tested
    assert report["metrics"]["val/acc_best"] == 1.0  # covers the epochs before the resume
    assert loads(run / "checkpoints" / "last.ckpt")["epoch"] == 3
    assert len(list((run / ".hydra").glob("resumed_*/overrides.yaml"))) == 1  # the first run's config is kept
    assert "ckpt_path" not in (run / ".hydra" / "overrides.yaml").read_text()


def test_resume_into_another_folder_keeps_the_earlier_best_and_its_files(tmp_path, cfg_factory):
    train(cfg_factory(*MNIST[1:], "trainer.max_epochs=2", "logger=none", out="first"))
    first = tmp_path / "first" / "checkpoints"
    best = _best_unbeatable(first / "last.ckpt")
    metrics = train(cfg_factory(*MNIST[1:], "trainer.max_epochs=4", "logger=none", f"ckpt_path={first / 'last.ckpt'}",
                                out="second"))
    report = json.loads((tmp_path / "second" / "metrics.json").read_text())
    assert report["checkpoint"] == best and metrics["val/acc_best"] == 1.0
    assert Path(best).is_file()  # another run's files are never deleted
    last = tmp_path / "second" / "checkpoints" / "last.ckpt"
    again = train(cfg_factory(*MNIST[1:], "train=false", f"ckpt_path={last}", "logger=none", out="retest"))
    assert again["val/acc_best"] == 1.0  # a finished run re-tested still reports its best val accuracy


def test_a_second_run_on_the_same_folder_refuses_to_start(tmp_path):
    run = tmp_path / "run"
    common = [*MNIST, "logger=none", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}"]
    first = subprocess.Popen([sys.executable, "train.py", *common, "trainer.max_epochs=200", "seed=1"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not ((run / ".lock").is_file() and (run / ".lock").read_text()) and time.time() < deadline:
        time.sleep(0.05)
    second = train_py(*common, "trainer.max_epochs=1", "seed=2")
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output[-3000:]
    one_line_error(second, f"run folder {run} is in use by run {first.pid}", "seed=1")
    assert "seed=1" in (run / ".hydra" / "overrides.yaml").read_text()  # the first run's, untouched
    assert json.loads((run / "metrics.json").read_text())["config"]["seed"] == 1
    # a killed run does not keep the folder: the lock goes with its process
    killed = subprocess.Popen([sys.executable, "train.py", *common, "trainer.max_epochs=30"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while str(killed.pid) not in (run / ".lock").read_text() and time.time() < deadline + 120:
        time.sleep(0.05)
    killed.kill()
    killed.wait()
    assert train_py(*common, "trainer.max_epochs=1", "ckpt_path=null").returncode == 0


def test_a_diverged_run_stops_says_so_and_a_sweep_lists_it_failed(tmp_path):
    run = tmp_path / "run"
    done = train_py(f"paths.data_dir={FIXTURES}", "data=mnist", "data.val_size=0.2", "optimizer.lr=1e6",
                    "logger=none", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}")
    one_line_error(done, "the training loss is nan at step", "lr 1e+06", "diverged")
    assert "Accuracy of the network" not in done.stdout + done.stderr
    report = json.loads((run / "metrics.json").read_text())
    assert report["status"].startswith("diverged: the training loss is nan") and report["accuracy"] is None
    sweep = train_py("-m", f"paths.data_dir={FIXTURES}", "data=mnist", "data.val_size=0.2", "optimizer.lr=0.01,1e6",
                     "trainer.max_epochs=1", "logger=none", f"paths.cache_dir={tmp_path / 'cache'}",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert sweep.returncode == 1
    rows = (tmp_path / "sweep" / "summary.md").read_text()
    assert "| failed | 1000000.0 |" in rows and "Diverged: the training loss is nan at step" in rows
    assert "| ok | 0.01 |" in rows


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = (FIXTURES / "checkpoints" / "lenet_mnist_v0.1.ckpt").read_bytes()
    files = {"empty": b"", "truncated": good[: len(good) // 2], "random": os.urandom(4096)}
    paths = {}
    for name, content in files.items():
        paths[name] = tmp_path / f"{name}.ckpt"
        paths[name].write_bytes(content)

    class Code:
        def __reduce__(self):
            return (os.system, ("echo this would run",))

    paths["code"] = tmp_path / "code.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"net": Code()}}, paths["code"])
    paths["not_ours"] = tmp_path / "not_ours.ckpt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), paths["not_ours"])
    expected = {"empty": "is empty (0 bytes)", "truncated": "is truncated", "random": "is not a checkpoint",
                "code": "is refused: it holds pickled code", "not_ours": "is not a litvision checkpoint"}
    return {name: (paths[name], expected[name]) for name in paths}


@pytest.mark.parametrize("use", ["evaluate", "resume", "predict", "export"])
def test_bad_checkpoint_files_are_named_in_one_line(tmp_path, cfg_factory, use):
    for name, (path, expected) in _bad_files(tmp_path).items():
        with pytest.raises(UserError) as error:
            if use == "evaluate":
                train(cfg_factory("data=mnist", "train=false", f"ckpt_path={path}", out=f"run_{name}"))
            elif use == "resume":
                train(cfg_factory("data=mnist", f"ckpt_path={path}", out=f"run_{name}"))
            elif use == "predict":
                predict(str(path), [str(FIXTURES / "cifar10-jpeg" / "test")])
            else:
                export_onnx(str(path), str(tmp_path / "m.onnx"))
        assert str(path) in str(error.value) and expected in str(error.value), (name, str(error.value))
        assert "weights_only=False" not in str(error.value)


def test_the_entry_points_print_one_line_for_a_bad_checkpoint(tmp_path):
    bad = _bad_files(tmp_path)
    one_line_error(train_py(*MNIST, "train=false", f"ckpt_path={bad['code'][0]}", f"hydra.run.dir={tmp_path / 'r'}"),
                   "is refused")
    for module, args in (("predict", [f"inputs={FIXTURES}"]), ("export", [])):
        done = subprocess.run([sys.executable, "-m", f"litvision.{module}", f"ckpt_path={bad['random'][0]}", *args,
                               f"output={tmp_path / 'out'}"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
        one_line_error(done, "is not a checkpoint")


def test_resuming_with_another_network_or_data_names_the_mismatch(tmp_path):
    run = tmp_path / "run"
    first = train_py(*MNIST, "trainer.max_epochs=1", "logger=none", f"hydra.run.dir={run}",
                     f"paths.cache_dir={tmp_path / 'cache'}")
    assert first.returncode == 0, first.stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    common = [f"ckpt_path={last}", f"hydra.run.dir={tmp_path / 'other'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    one_line_error(train_py(*MNIST[:3], "model=lenet", "data.val_size=0.2", *common),
                   "trained with model=mlp (MLP), this run is model=lenet (LeNet)")
    one_line_error(train_py(*MNIST, "model.hidden=[64]", *common), "model.hidden=[120, 256] there, [64] here")
    one_line_error(train_py(*MNIST, "optimizer=adam", *common), "trained with optimizer=sgd (SGD), this run is "
                                                                "optimizer=adam (Adam)")
    one_line_error(train_py(f"paths.data_dir={FIXTURES}", "data=cifar10", "model=mlp", "data.val_size=0.2", *common),
                   "trained on data (data=mnist) with class_names")
    assert not (tmp_path / "other" / "checkpoints").exists()  # nothing trained


def test_an_evaluation_on_data_with_other_classes_is_refused(tmp_path, cfg_factory):
    train(cfg_factory("data=mnist", "model=lenet", "trainer.max_epochs=1", "logger=none", out="mnist"))
    ckpt = tmp_path / "mnist" / "checkpoints" / "last.ckpt"
    with pytest.raises(UserError, match=r"trained on classes \['0', .*'9'\] of 1x28x28 images, but "
                                        r"data=image_folder has classes \['airplane', .*\]"):
        train(cfg_factory("data=image_folder", f"data.root={FIXTURES / 'cifar10-jpeg'}", "train=false",
                          f"ckpt_path={ckpt}", out="eval"))


@pytest.mark.parametrize(("overrides", "expected"), [
    (["trainer.max_epochs=abc"], "trainer.max_epochs='abc' is invalid: it must be an integer"),
    (["seed=abc"], "seed='abc' is invalid: give an integer"),
    (["data.image_size=0", "data=image_folder", f"data.root={FIXTURES / 'cifar10-jpeg'}"],
     "data.image_size=0 is invalid"),
    (["data=image_folder"], "data.root is not set: give it, e.g. data.root=/path/to/images"),
    (["trainer.accelerator=gpu"], "trainer.accelerator=gpu: this machine has no CUDA GPU"),
])
def test_bad_values_are_one_line_at_the_entry_point(tmp_path, overrides, expected):
    if "gpu" in overrides[0] and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    line = one_line_error(train_py(f"paths.data_dir={FIXTURES}", *overrides, f"hydra.run.dir={tmp_path / 'run'}"),
                          expected)
    if "gpu" in overrides[0]:
        assert "trainer.accelerator=cpu" in line and "trainer.accelerator=auto" in line


def test_an_image_folder_of_one_class_is_one_line(tmp_path):
    for split in ("train", "test"):
        (tmp_path / "one" / split / "cats").mkdir(parents=True)
        (tmp_path / "one" / split / "cats" / "a.png").write_bytes((FIXTURES / "cifar10-jpeg" / "test" / "cat").glob(
            "*.jpg").__next__().read_bytes())
    one_line_error(train_py("data=image_folder", f"data.root={tmp_path / 'one'}", f"hydra.run.dir={tmp_path / 'r'}"),
                   "has 1 class (cats): a classifier needs at least two classes")


@pytest.mark.parametrize(("args", "expected"), [
    (["top_k=-1"], "top_k=-1 is invalid"),
    (["batch_size=0"], "batch_size=0 is invalid"),
    (["device=cuda"], "device=cuda: this machine has no CUDA GPU"),
    (["output=/no/such/folder/p.csv"], "output=/no/such/folder/p.csv: the folder /no/such/folder does not exist"),
    ([], "inputs not given. Usage: python -m litvision.predict"),
])
def test_predict_arguments_are_one_line(tmp_path, args, expected):
    if "device=cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    ckpt = FIXTURES / "checkpoints" / "lenet_mnist_v0.1.ckpt"
    inputs = [] if not args else [f"inputs={FIXTURES / 'cifar10-jpeg' / 'test' / 'cat'}"]
    done = subprocess.run([sys.executable, "-m", "litvision.predict", f"ckpt_path={ckpt}", *inputs, *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    one_line_error(done, expected)
    assert not list(tmp_path.glob("*.csv"))


def test_export_to_a_missing_folder_is_one_line_before_the_work(tmp_path):
    ckpt = FIXTURES / "checkpoints" / "lenet_mnist_v0.1.ckpt"
    done = subprocess.run([sys.executable, "-m", "litvision.export", f"ckpt_path={ckpt}",
                           f"output={tmp_path / 'missing' / 'm.onnx'}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    one_line_error(done, f"output={tmp_path / 'missing' / 'm.onnx'}: the folder {tmp_path / 'missing'} does not exist")


def test_a_failure_that_is_not_the_users_goes_to_train_log(tmp_path):
    run = tmp_path / "run"
    done = train_py(*MNIST, "model._target_=litvision.nets.NoSuchNet", f"hydra.run.dir={run}")
    assert done.returncode == 1
    log = (run / "train.log").read_text()
    assert "the run failed" in log and "Traceback" in log and "NoSuchNet" in log


def test_reports_say_what_was_tested_and_the_precision_that_ran(tmp_path, cfg_factory):
    cfg = cfg_factory(*MNIST[1:], "trainer.max_epochs=1", "logger=none", "+trainer.limit_test_batches=1",
                      "data.batch_size=32", "trainer.precision=16-mixed", "trainer.accelerator=cpu")
    train(cfg)
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["evaluated_images"] == 32 and report["images"]["test"] == 100
    assert report["precision"] == "bf16-mixed"  # Lightning runs 16-mixed as bf16 on a CPU
    assert report["config"]["trainer"]["precision"] == "16-mixed"


def test_sweep_errors_keep_their_real_reason():
    try:
        try:
            raise ValueError("Invalid momentum value: -1")
        except ValueError as inner:
            raise InstantiationException("Error in call to target 'torch.optim.sgd.SGD':") from inner
    except InstantiationException as e:
        assert error_text(e) == "ValueError: Invalid momentum value: -1"
    spawned = RuntimeError("\n\n-- Process 0 terminated with the following error:\nTraceback (most recent call "
                           "last):\n  File \"x.py\", line 1\nValueError: trainer went wrong\n")
    assert error_text(spawned) == "ValueError: trainer went wrong"


@pytest.mark.slow  # 36 s: a sweep of ddp_spawn jobs
def test_ddp_inside_a_sweep_is_refused_and_ddp_spawn_trials_run(tmp_path):
    common = ["-m", *MNIST, "trainer.max_epochs=1", "logger=none", f"paths.cache_dir={tmp_path / 'cache'}"]
    refused = train_py(*common, "trainer=ddp_cpu", "seed=0,1", f"hydra.sweep.dir={tmp_path / 'ddp'}")
    assert refused.returncode == 1
    summary = (tmp_path / "ddp" / "summary.md").read_text()
    assert summary.count("trainer.strategy=ddp inside a sweep") == 2  # each job failed at once, the sweep ran once
    search = train_py(*common, "hparams_search=mnist_optuna", "hydra.sweeper.n_trials=2", "trainer.devices=2",
                      "trainer.accelerator=cpu", "++trainer.strategy=ddp_spawn", "data.batch_size=16",
                      f"hydra.sweep.dir={tmp_path / 'search'}", timeout=600)
    assert search.returncode == 0, (search.stdout + search.stderr)[-3000:]
    import optuna

    trials = optuna.load_study(study_name="mnist_optuna",
                               storage=f"sqlite:///{tmp_path / 'search' / 'optuna.db'}").get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
