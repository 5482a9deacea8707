"""Callbacks that benchmarks add to `python train.py` runs (+callbacks.NAME._target_=probes.CLASS, with
benchmarks/ on PYTHONPATH); each writes what it measured to `path`."""

import json
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Timer
import torch
from torch.utils.flop_counter import FlopCounterMode


class TestAccuracyCurve(L.Callback):
    """Test accuracy after every training epoch, against training seconds so far (the evaluation's own time left
    out, of trainer.max_time's clock too). JSON: {"points": [[seconds, accuracy], ...], "eval_seconds": time spent evaluating}."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.start, self.eval_seconds, self.points = time.perf_counter(), 0.0, []

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        paused = time.perf_counter()
        datamodule, correct, total = trainer.datamodule, 0, 0
        module.eval()
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            for images, labels in datamodule.test_dataloader():
                images, labels = images.to(module.device), labels.to(module.device)
                correct += (module(images).argmax(1) == labels).sum().item()  # the model normalizes
                total += len(labels)
        module.train()
        self.points.append([paused - self.start - self.eval_seconds, correct / total])
        spent = time.perf_counter() - paused
        self.eval_seconds += spent
        for timer in (c for c in trainer.callbacks if isinstance(c, Timer)):  # trainer.max_time: training time only
            timer._offset -= spent

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.path.write_text(json.dumps({"points": self.points, "eval_seconds": self.eval_seconds}))


class EpochSeconds(L.Callback):
    """Seconds of the last training epoch (validation included, if any)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.global_rank == 0:  # under DDP the processes step together: rank 0's time is the epoch's
            self.path.write_text(str(time.perf_counter() - self.start))


class FirstStep(L.Callback):
    """Wall-clock time (time.time()) when the first training batch starts."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch, batch_idx: int) -> None:
        if not self.path.exists():
            self.path.write_text(str(time.time()))


class StepFlops(L.Callback):
    """FLOPs per image of a training step (forward and backward; the optimizer's elementwise work is not counted),
    counted by torch.utils.flop_counter.FlopCounterMode on the second batch of the first epoch.
    JSON: {"flops_per_image": F, "images": batch size counted}."""

    def __init__(self, path: str) -> None:
        self.path, self.counter = Path(path), None

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.current_epoch == 0 and batch_idx == 1:
            self.counter, self.images = FlopCounterMode(display=False), len(batch[0])
            self.counter.__enter__()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if self.counter is not None:
            self.counter.__exit__(None, None, None)
            flops, self.counter = self.counter.get_total_flops(), None
            self.path.write_text(json.dumps({"flops_per_image": flops / self.images, "images": self.images}))
