"""A callback for benchmarks: test accuracy after every training epoch, against training seconds so far.

The evaluation's own time is left out of the training seconds. Written to `path` as JSON when training ends:
{"points": [[seconds, accuracy], ...], "eval_seconds": total time spent evaluating}."""

import json
import time
from pathlib import Path

import lightning as L
import torch


class TestAccuracyCurve(L.Callback):
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
                correct += (module(datamodule.normalize(images)).argmax(1) == labels).sum().item()
                total += len(labels)
        module.train()
        self.points.append([paused - self.start - self.eval_seconds, correct / total])
        self.eval_seconds += time.perf_counter() - paused

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.path.write_text(json.dumps({"points": self.points, "eval_seconds": self.eval_seconds}))
