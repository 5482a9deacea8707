"""The GPU paths, for a machine with a CUDA GPU (`pytest -m gpu`; benchmarks/gpu_check.py runs them): training on
the GPU in bf16 with channels_last and with torch.compile, the augmentation of batches on the GPU, predict and
export from a GPU-trained checkpoint. Skipped without CUDA."""

import json

import numpy as np
import pytest
import torch

from conftest import FIXTURES
from litvision.classifier import Classifier
from litvision.datamodule import ImageDataModule
from litvision.decoding import load
from litvision.predict import predict
from litvision.training import train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]
CIFAR = FIXTURES / "cifar10-jpeg"


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory) -> dict:
    from conftest import make_cfg

    out = tmp_path_factory.mktemp("gpu") / "run"
    metrics = train(make_cfg(out, "data=image_folder", f"data.root={CIFAR}", "model=convnet", "trainer=gpu",
                             "trainer.precision=bf16-mixed", "classifier.channels_last=true", "trainer.max_epochs=3",
                             "data.batch_size=32", "data.crop_padding=4", "data.flip=true", "logger=none",
                             "optimizer.lr=0.05"))
    return {"metrics": metrics, "result": json.loads((out / "metrics.json").read_text())}


def test_training_on_the_gpu_in_bf16_with_channels_last(gpu_run):
    result = gpu_run["result"]
    assert result["accelerator"] == "cuda" and result["precision"] == "bf16-mixed"
    assert result["status"] == "ok" and result["evaluated_images"] == 100 and result["accuracy"] > 0.1


def test_compile_on_the_gpu(cfg_factory):
    metrics = train(cfg_factory("data=mnist", "model=convnet", "trainer=gpu", "classifier.compile=true",
                                "trainer.max_epochs=1", "logger=none"))
    assert metrics["test/acc"] > 0.3


def test_batches_are_augmented_on_the_gpu():
    dm = ImageDataModule("image_folder", str(CIFAR), crop_padding=4, flip=True, mean=[0.5], std=[0.5])
    dm.setup()

    class Training:  # what on_after_batch_transfer asks of the trainer
        training = True

    dm.trainer = Training()
    images, labels = dm.train_set[:64]
    out, out_labels = dm.on_after_batch_transfer((images.cuda(), labels.cuda()), 0)
    assert out.is_cuda and out.dtype == torch.uint8 and out.shape == images.shape
    assert not torch.equal(out.cpu(), images) and torch.equal(out_labels.cpu(), labels)


def test_predict_and_export_from_a_gpu_trained_checkpoint(gpu_run, tmp_path):
    checkpoint = gpu_run["result"]["checkpoint"]
    inputs = [str(CIFAR / "test")]
    on_gpu, on_cpu = predict(checkpoint, inputs, device="cuda"), predict(checkpoint, inputs, device="cpu")
    agree = sum(g["classes"][0] == c["classes"][0] for g, c in zip(on_gpu, on_cpu, strict=True))
    assert agree >= 0.95 * len(on_cpu)  # the GPU's convolutions may round differently (TF32): near-ties can flip
    onnxruntime = pytest.importorskip("onnxruntime")
    from litvision.export import export_onnx

    path = export_onnx(checkpoint, str(tmp_path / "model.onnx"))
    images = load("image_folder", CIFAR).test.images[:16]
    (logits,) = onnxruntime.InferenceSession(str(path)).run(None, {"images": (images.float() / 255).numpy()})
    model = Classifier.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    with torch.no_grad():
        expected = model(images).float().numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-3, rtol=1e-3)
