"""The ONNX export gives the checkpoint's outputs, run by onnxruntime without litvision."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import FIXTURES, make_cfg
from litvision.decoding import load
from litvision.classifier import Classifier
from litvision.training import train

onnxruntime = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("model", ["lenet", "convnet"])
def test_onnx_matches_the_checkpoint(tmp_path, model):
    out = tmp_path / "run"
    train(make_cfg(out, "data=mnist", f"model={model}", "trainer.max_epochs=1", "logger=none", "test=false"))
    ckpt = str(out / "checkpoints" / "last.ckpt")
    export = [sys.executable, "-m", "litvision.export", f"ckpt_path={ckpt}", f"output={tmp_path / 'm.onnx'}"]
    done = subprocess.run(export, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    meta = json.loads(session.get_modelmeta().custom_metadata_map["litvision"])
    assert meta["class_names"] == [str(d) for d in range(10)] and meta["input_shape"] == [1, 28, 28]
    images = load("mnist", FIXTURES).test.images[:37]  # an odd batch size: the batch dimension is dynamic
    (logits,) = session.run(None, {"images": (images.float() / 255).numpy()})
    model = Classifier.load_from_checkpoint(ckpt).eval()
    with torch.no_grad():
        expected = model(images).numpy()  # uint8, as the data module hands them
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)
    assert (logits.argmax(1) == expected.argmax(1)).all()
