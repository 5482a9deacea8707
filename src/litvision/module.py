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
NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm, torch.nn.GroupNorm,
         torch.nn.LayerNorm)


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
        test_time_shift: int = 0,
        norm_lr_scale: float = 1.0,
    ) -> None:
        """net: a `_target_` config called with input_shape and num_classes. class_names, input_shape and the
        normalization (mean, std) the data module applied make a checkpoint usable alone (predict, export).
        optimizer: a `_partial_`
        config called with the parameters. scheduler: Lightning's lr_scheduler dict whose `scheduler` entry
        is a `_partial_` config called with the optimizer (plus interval, frequency, monitor). channels_last: NHWC
        memory layout for convolutions. compile: torch.compile the network (in place: checkpoint keys unchanged).
        label_smoothing: of the training loss. test_time_flip: validation and test average the logits of each image
        and its mirror image; test_time_shift=S: and of copies shifted by S pixels up-left and down-right (airbench's
        level 2). norm_lr_scale: the normalization layers' parameters train at lr x this, with weight decay / this
        (the same decay per step); airbench trains its BatchNorm biases 64x faster."""
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

    def setup(self, stage: str) -> None:
        """A network that starts from the data (AirNet's whitening stem) sees the first 5,000 normalized training
        images; when training resumes, the checkpoint's weights, restored after this, replace what it computed."""
        fit_to_data = getattr(self.net, "fit_to_data", None)
        if stage == "fit" and fit_to_data is not None:
            data = self.trainer.datamodule
            fit_to_data(data.normalize(data.train_set[:5000][0]))

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Metrics accumulate per step and are logged once per epoch: a self.log call per step would cost more
        than a LeNet step at batch 4."""
        images, labels = batch
        if stage == "train":
            logits = self(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        else:
            logits = self._predict(images)
            loss = F.cross_entropy(logits, labels)
        getattr(self, f"{stage}_metrics").update(logits.detach(), labels)
        getattr(self, f"{stage}_loss").update(loss.detach(), len(labels))
        return loss, logits

    def _predict(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for evaluation, averaged over the test-time augmentations asked for."""
        logits = self._mirrored(images)
        shift = self.hparams.test_time_shift
        if shift:
            padded = F.pad(images, (shift,) * 4, mode="reflect")
            h, w = images.shape[-2:]
            shifted = (self._mirrored(padded[..., :h, :w]) + self._mirrored(padded[..., -h:, -w:])) / 2
            logits = (logits + shifted) / 2
        return logits

    def _mirrored(self, images: torch.Tensor) -> torch.Tensor:
        logits = self(images)
        return (logits + self(images.flip(-1))) / 2 if self.hparams.test_time_flip else logits

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
        filled = {}
        if scheduler["scheduler"].get("total_steps", 0) is None:
            filled["total_steps"] = int(self.trainer.estimated_stepping_batches)  # OneCycleLR: the run's steps
        if scheduler["scheduler"].get("max_lr", 0) is None:  # OneCycleLR: each parameter group peaks at its own lr
            filled["max_lr"] = [group["lr"] for group in optimizer.param_groups]
        scheduler["scheduler"] = instantiate(scheduler["scheduler"])(optimizer, **filled)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Over the parameters that train: a frozen backbone's are left out. With norm_lr_scale, the normalization
        layers' parameters form a second group."""
        make = instantiate(self.hparams.optimizer)
        scale = self.hparams.norm_lr_scale
        trainable = [p for p in self.parameters() if p.requires_grad or not self.automatic_optimization]
        if scale == 1:
            return make(trainable)
        norms = {id(p) for m in self.modules() if isinstance(m, NORMS) for p in m.parameters()}
        others = [p for p in trainable if id(p) not in norms]
        norm_params = [p for p in trainable if id(p) in norms]
        lr, decay = make.keywords["lr"], make.keywords.get("weight_decay", 0.0)
        return make([{"params": others},
                     {"params": norm_params, "lr": lr * scale, "weight_decay": decay / scale}])
