"""A real browser sees the run in TensorBoard: headless Chromium loads it and finds the run and its accuracies."""

import subprocess
import sys

import pytest

from conftest import ROOT
from browser_check import find_chromium
from litvision.training import train

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")


def test_tensorboard_page_shows_the_run_and_accuracies(cfg_factory, tmp_path):
    cfg = cfg_factory("data=mnist", "model=mlp", "trainer.max_epochs=2", out="sweep/0_model-mlp")
    train(cfg)
    screenshot = tmp_path / "tensorboard.png"
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "browser_check.py"), str(tmp_path / "sweep"),
                           f"--screenshot={screenshot}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "TensorBoard shows every run and train/acc, val/acc, test/acc" in done.stdout
    assert screenshot.read_bytes()[:4] == b"\x89PNG" and screenshot.stat().st_size > 20_000


def test_a_missing_tag_fails_the_check(cfg_factory, tmp_path):
    train(cfg_factory("data=mnist", "model=mlp", "trainer.max_epochs=1", "test=false", out="run"))
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "browser_check.py"), str(tmp_path / "run"),
                           f"--screenshot={tmp_path / 's.png'}", "--expect", "val/acc", "nonexistent/tag"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and "nonexistent/tag" in done.stdout + done.stderr
