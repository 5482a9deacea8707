"""A real browser sees what litvision writes: headless Chromium loads TensorBoard (its chart lines drawn, and the
custom-scalars, images and HPARAMS pages), the MLflow UI on a run's local store, and optuna-dashboard on a
search's study."""

import subprocess
import sys

import pytest

from conftest import FIXTURES, ROOT
from browser_check import find_chromium, _undrawn
from litvision.training import train

needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")


def browser_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tests" / "browser_check.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@needs_chromium
def test_tensorboard_pages_show_the_run_with_its_lines(cfg_factory, tmp_path):
    train(cfg_factory("data=mnist", "model=mlp", "trainer.max_epochs=2", out="sweep/0_model-mlp"))
    screenshot = tmp_path / "tensorboard.png"
    done = browser_check(str(tmp_path / "sweep"), f"--screenshot={screenshot}")
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "TensorBoard shows every run and train/acc, val/acc, test/acc" in done.stdout  # each chart drawn
    assert screenshot.read_bytes()[:4] == b"\x89PNG" and screenshot.stat().st_size > 20_000
    done = browser_check(str(tmp_path / "sweep"), f"--pages={tmp_path / 'pages'}")
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    for page in ("custom_scalars", "scalars", "images", "hparams"):
        assert (tmp_path / "pages" / f"tensorboard_{page}.png").stat().st_size > 20_000


@needs_chromium
@pytest.mark.slow  # 26 s: a check of the checker
def test_a_missing_tag_fails_the_check(cfg_factory, tmp_path):
    train(cfg_factory("data=mnist", "model=mlp", "trainer.max_epochs=1", "test=false", out="run"))
    done = browser_check(str(tmp_path / "run"), f"--screenshot={tmp_path / 's.png'}", "--expect", "val/acc",
                         "nonexistent/tag")
    assert done.returncode == 1 and "nonexistent/tag" in done.stdout + done.stderr


@needs_chromium
def test_the_mlflow_ui_shows_the_run(cfg_factory, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    train(cfg_factory("data=mnist", "model=mlp", "trainer.max_epochs=1", "logger=mlflow", out="mlflow_run"))
    done = browser_check("--mlflow", str(tmp_path / "mlflow_run" / "mlflow.db"), "--expect", "litvision",
                         "mlflow_run", f"--screenshot={tmp_path / 'mlflow.png'}")
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert (tmp_path / "mlflow.png").stat().st_size > 10_000


@needs_chromium
def test_optuna_dashboard_shows_the_study(tmp_path):
    pytest.importorskip("optuna_dashboard")
    done = subprocess.run([sys.executable, "train.py", "-m", "hparams_search=mnist_optuna", "data=mnist",
                           f"paths.data_dir={FIXTURES}", f"paths.cache_dir={tmp_path / 'cache'}", "data.val_size=100",
                           "trainer.max_epochs=1", "hydra.sweeper.n_trials=2", "callbacks.progress_bar=null",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    done = browser_check("--optuna", str(tmp_path / "sweep" / "optuna.db"), "--expect", "mnist_optuna",
                         f"--screenshot={tmp_path / 'optuna.png'}")
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]


def test_the_checker_wants_a_series_drawn_in_every_card():
    """As TensorBoard's SVG draws them: two epochs are a line, a test metric's one point a dot; a card still
    empty (or one whose neighbour holds both lines) fails."""
    line = '<path d="M44.6,208.4L357.3,19.8" style="fill: none; stroke: rgb(66, 80, 102);"></path>'
    dot = '<circle cx="201" cy="112" r="4" style="fill: rgb(66, 80, 102); opacity: 1;"></circle>'
    card = '<div title="{}"><svg class="ticks"></svg>{}</div>'.format
    tags = ["train/acc", "val/acc", "test/acc"]
    assert _undrawn(card("test/acc", dot) + card("train/acc", line) + card("val/acc", line), tags) == []
    assert _undrawn(card("train/acc", line * 2) + card("val/acc", "") + card("test/acc", dot), tags) == ["val/acc"]
    assert _undrawn(card("train/acc", line * 2) + card("val/acc", line * 2) + card("test/acc", ""), tags) == [
        "test/acc"]  # four lines for three charts, one of them empty
    assert _undrawn(card("train/acc", line) + card("val/acc", line), tags) == ["test/acc"]  # no card at all
