"""The one LightningModule: any network from config, cross-entropy, optimizer and scheduler from config,
overall and per-class accuracy for train/val/test.

Its hyperparameters are plain data (config dicts, class names, input shape), never modules or partials,
so a checkpoint rebuilds the model with `load_from_checkpoint` and loads with torch.load(weights_only=True).
"""

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from litvision import instantiate
from litvision.scratch import cross_entropy

STAGES = ("train", "val", "test")


class Classifier(L.LightningModule):
    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any],
        class_names: list[str],
        input_shape: list[int],
        mean: list[float] | None = None,
        std: list[float] | None = None,
        scheduler: dict[str, Any] | None = None,
        channels_last: bool = False,
        compile: bool = False,
        label_smoothing: float = 0.0,
        test_time_flip: bool = False,
    ) -> None:
        """net: a `_target_` config called with input_shape and num_classes. class_names, input_shape and the
        normalization (mean, std) the data module applied make a checkpoint usable alone (predict, export).
        optimizer: a `_partial_`
        config called with the parameters. scheduler: Lightning's lr_scheduler dict whose `scheduler` entry
        is a `_partial_` config called with the optimizer (plus interval, frequency, monitor). channels_last: NHWC
        memory layout for convolutions. compile: torch.compile the network (in place: checkpoint keys unchanged).
        label_smoothing: of the training loss. test_time_flip: validation and test average the logits of each image
        and its mirror image."""
        super().__init__()
        self.save_hyperparameters(logger=False)  # train() logs curated hparams with the final metrics
        self.net = instantiate(net, input_shape=input_shape, num_classes=len(class_names))
        if net.get("weights"):  # pretrained weights are loaded once, here; a checkpoint holds its own weights
            self.hparams.net = {**net, "weights": None}
        # a network with a hand-written backward (litvision.scratch) trains without autograd: manual optimization
        self.automatic_optimization = not hasattr(self.net, "backward")
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        if compile:
            self.net.compile()
        n = len(class_names)
        for stage in STAGES:  # "acc" and "acc_class" share one state: torchmetrics' compute groups
            metrics = {"acc": MulticlassAccuracy(n, average="micro", validate_args=False),  # labels come from
                       "acc_class": MulticlassAccuracy(n, average=None, validate_args=False)}  # the data module
            setattr(self, f"{stage}_metrics", MetricCollection(metrics))
            setattr(self, f"{stage}_loss", MeanMetric())
        self.val_acc_best = MaxMetric()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Metrics accumulate per step and are logged once per epoch: a self.log call per step would cost more
        than a LeNet step at batch 4."""
        images, labels = batch
        logits = self(images)
        if stage == "train":
            loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        else:
            if self.hparams.test_time_flip:
                logits = (logits + self(images.flip(-1))) / 2
            loss = F.cross_entropy(logits, labels)
        getattr(self, f"{stage}_metrics").update(logits.detach(), labels)
        getattr(self, f"{stage}_loss").update(loss.detach(), len(labels))
        return loss, logits

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.automatic_optimization:
            loss, _ = self._step(batch, "train")
        else:
            loss = self._hand_written_step(batch)
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:  # the steps the logger writes
            self.log("train/loss_step", loss, prog_bar=True)
            self.log("train/lr", self.optimizers().param_groups[0]["lr"])
        return loss

    def _hand_written_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The MNIST notebook's loop: forward, the loss and its gradient, backward and the optimizer's step, all
        written by hand (litvision.scratch); no autograd graph is built."""
        images, labels = batch
        optimizer = self.optimizers()
        optimizer.zero_grad()
        logits = self(images)
        loss, grad = cross_entropy(logits, labels)
        self.net.backward(grad)  # fills each parameter's .grad
        optimizer.step()
        if self._scheduler_interval() == "step":  # manual optimization steps its scheduler itself
            self.lr_schedulers().step()
        self.train_metrics.update(logits, labels)
        self.train_loss.update(loss, len(labels))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Returns the logits, for callbacks that show predictions (litvision.inspection)."""
        return self._step(batch, "test")[1]

    def _log_epoch(self, stage: str) -> torch.Tensor:
        """Loss, overall and per-class accuracy of the epoch, one scalar per class named by the class."""
        metrics, loss = getattr(self, f"{stage}_metrics"), getattr(self, f"{stage}_loss")
        values = metrics.compute()
        self.log(f"{stage}/loss", loss.compute(), prog_bar=True)
        self.log(f"{stage}/acc", values["acc"], prog_bar=True)
        per_class = values["acc_class"]
        self.log_dict({f"{stage}/acc_class/{name}": acc for name, acc in zip(self.hparams.class_names, per_class)})
        metrics.reset()
        loss.reset()
        return values["acc"]

    def on_train_start(self) -> None:
        self.val_acc_best.reset()  # forget the sanity-check validation

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")
        if self._scheduler_interval() == "epoch":
            self.lr_schedulers().step()

    def _scheduler_interval(self) -> str | None:
        """"step" or "epoch" when this module must step a scheduler itself (manual optimization), else None."""
        if self.automatic_optimization or not self.hparams.scheduler:
            return None
        return self.hparams.scheduler.get("interval", "epoch")

    def on_validation_epoch_end(self) -> None:
        acc = self._log_epoch("val")
        if not self.trainer.sanity_checking:
            self.val_acc_best.update(acc)
            self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.make_optimizer()
        if not self.hparams.scheduler:
            return {"optimizer": optimizer}
        scheduler = dict(self.hparams.scheduler)
        length = {}
        if "total_steps" in scheduler["scheduler"] and scheduler["scheduler"]["total_steps"] is None:
            length["total_steps"] = int(self.trainer.estimated_stepping_batches)  # OneCycleLR: the run's steps
        scheduler["scheduler"] = instantiate(scheduler["scheduler"])(optimizer, **length)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Over the parameters that train: a frozen backbone's are left out."""
        trainable = [p for p in self.parameters() if p.requires_grad or not self.automatic_optimization]
        return instantiate(self.hparams.optimizer)(trainable)
