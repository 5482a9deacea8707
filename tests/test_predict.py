"""Prediction from a checkpoint alone: any size and format, corrupt files reported and skipped."""

import csv
import json
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image

from conftest import FIXTURES
from litvision import UserError
from litvision.decoding import load
from litvision.classifier import Classifier
from litvision.predict import predict
from litvision.training import train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    from conftest import make_cfg

    out = tmp_path_factory.mktemp("train") / "run"
    train(make_cfg(out, "data=image_folder", f"data.root={FIXTURES / 'cifar10-jpeg'}", "trainer.max_epochs=3",
                   "data.batch_size=32", "logger=none", "optimizer.lr=0.05"))
    return json.loads((out / "metrics.json").read_text())["checkpoint"]


def test_predictions_match_the_model_on_the_training_pipeline(checkpoint, tmp_path):
    test = sorted((FIXTURES / "cifar10-jpeg" / "test").rglob("*.jpg"))
    model = Classifier.load_from_checkpoint(checkpoint).eval()
    data = load("image_folder", FIXTURES / "cifar10-jpeg")
    with torch.no_grad():
        expected = model(data.test.images).softmax(1)  # the uint8 images of the training pipeline
    rows = predict(checkpoint, [str(FIXTURES / "cifar10-jpeg" / "test")], top_k=3)
    assert [row["path"] for row in rows] == [str(p) for p in test]  # class folders sorted, files sorted: same order
    for row, probabilities in zip(rows, expected):
        values, indices = probabilities.topk(3)
        assert row["classes"] == [model.hparams.class_names[i] for i in indices]
        assert row["probabilities"] == pytest.approx(values.tolist(), abs=1e-5)
        assert row["probabilities"] == sorted(row["probabilities"], reverse=True)


def test_any_size_and_format_and_bad_files_skipped(checkpoint, tmp_path):
    source = FIXTURES / "cifar10-jpeg/test/ship/0000.jpg"
    Image.open(source).resize((96, 80)).save(tmp_path / "big_ship.png")
    Image.open(source).convert("L").save(tmp_path / "gray_ship.bmp")
    shutil.copyfile(source, tmp_path / "ship.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (tmp_path / "notes.txt").write_text("not an image")
    rows = predict(checkpoint, [str(tmp_path), str(tmp_path / "notes.txt")])
    rows = {row["path"].rsplit("/", 1)[-1]: row for row in rows}
    assert set(rows) == {"big_ship.png", "gray_ship.bmp", "ship.jpg", "broken.jpg", "notes.txt"}
    assert "cannot decode image" in rows["broken.jpg"]["error"] and "cannot decode" in rows["notes.txt"]["error"]
    for name in ("big_ship.png", "gray_ship.bmp", "ship.jpg"):
        assert len(rows[name]["classes"]) == 3 and 0 < sum(rows[name]["probabilities"]) <= 1 + 1e-6
    with pytest.raises(UserError, match="does not exist"):
        predict(checkpoint, [str(tmp_path / "missing")])


def test_command_prints_and_writes_csv(checkpoint, tmp_path):
    (tmp_path / "images").mkdir()
    shutil.copyfile(FIXTURES / "cifar10-jpeg/test/cat/0000.jpg", tmp_path / "images/cat.jpg")
    (tmp_path / "images/bad.png").write_bytes(b"garbage")
    done = subprocess.run([sys.executable, "-m", "litvision.predict", f"ckpt_path={checkpoint}",
                           f"inputs={tmp_path / 'images'}", "top_k=2", f"output={tmp_path / 'p.csv'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 images classified, 1 skipped" in done.stdout and f"{tmp_path / 'images/cat.jpg'}: " in done.stdout
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert list(rows[0]) == ["path", "class_1", "probability_1", "class_2", "probability_2", "error"]
    good = next(r for r in rows if r["path"].endswith("cat.jpg"))
    assert good["class_1"] in ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert float(good["probability_1"]) >= float(good["probability_2"]) and not good["error"]
    assert next(r for r in rows if r["path"].endswith("bad.png"))["error"]
    assert not list(tmp_path.glob("*.log")) and not (tmp_path / "outputs").exists()
