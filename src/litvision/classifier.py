"""The one LightningModule: the network from config, its input normalization, cross-entropy, the optimizer and
schedule from config, and overall and per-class accuracy for train/val/test.

Its hyperparameters are plain data (config dicts, class names, input shape, normalization), never modules or
partials, so a checkpoint rebuilds the model with `load_from_checkpoint` and loads with torch.load(weights_only=True).
"""

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection, SumMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassPrecision
from torchvision.ops._utils import split_normalization_params

from litvision import UserError, instantiate
from litvision.augment import test_time_logits


class Diverged(UserError):
    """Training produced a non-finite loss: the run stops, says so, and exits non-zero."""


class Normalize(nn.Module):
    """uint8 images (0-255), or float images in [0, 1], -> (x - mean) / std per channel: one fused multiply-add.
    The model owns it, so training, evaluation, predict, export and a checkpoint all normalize the same way."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (mean, std))
        # derived from the hyperparameters: not in the state dict
        self.register_buffer("shift", -mean / std, persistent=False)
        self.register_buffer("scale_uint8", 1 / (255 * std), persistent=False)
        self.register_buffer("scale", 1 / std, persistent=False)
        self.memory_format = torch.contiguous_format  # the network's (Classifier.use_channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """In the network's memory layout: the conversion to float moves a channels-last batch (photo-sized images
        are stored so) into NCHW, or the reverse, in the same pass."""
        scale = self.scale_uint8 if images.dtype == torch.uint8 else self.scale
        return torch.addcmul(self.shift, images.to(torch.float32, memory_format=self.memory_format), scale)


class Classifier(L.LightningModule):
    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any],
        class_names: list[str],
        input_shape: list[int],
        mean: list[float],
        std: list[float],
        scheduler: dict[str, Any] | None = None,
        channels_last: bool | str = False,
        compile: bool = False,
        label_smoothing: float = 0.0,
        test_time_flip: bool = False,
        test_time_shift: int = 0,
        norm_lr_scale: float = 1.0,
    ) -> None:
        """net: a `_target_` config called with input_shape and num_classes. optimizer: a `_partial_` config called
        with the parameters. scheduler: Lightning's lr_scheduler dict whose `scheduler` entry is a `_partial_` config
        called with the optimizer. class_names, input_shape, mean and std come from the data module (its `spec`).
        channels_last: NHWC memory layout for convolutions ("auto": train() decides, use_channels_last).
        compile: torch.compile the network (in place: checkpoint keys unchanged). label_smoothing: of the training
        loss. test_time_flip/test_time_shift: evaluation averages the logits of mirrored and shifted copies
        (litvision.augment.test_time_logits). norm_lr_scale: the normalization layers' parameters train at lr x
        this, with weight decay / this (airbench: 64)."""
        super().__init__()
        self.save_hyperparameters(logger=False)  # train() logs curated hparams with the final metrics
        self.normalize = Normalize(mean, std)
        self.net = instantiate(net, input_shape=input_shape, num_classes=len(class_names))
        if net.get("weights"):  # pretrained weights are loaded once, here; a checkpoint holds its own weights
            self.hparams.net = {**net, "weights": None}
        # a network with a hand-written step (litvision.scratch) trains without autograd: manual optimization
        self.automatic_optimization = not hasattr(self.net, "hand_written_step")
        self.use_channels_last(channels_last is True)
        if compile:
            self.net.compile()
        self.train_metrics = EpochMetrics(len(class_names))
        self.val_metrics, self.test_metrics = (EpochMetrics(len(class_names), detailed=True) for _ in range(2))
        self.val_acc_best = MaxMetric()
        self.restored_val_acc_best: float | None = None  # the best of the epochs a resumed checkpoint had seen
        self.config_choices: dict[str, str] = {}  # the run's config-group choices (model=lenet ...), set by train()

    @property
    def backbone(self) -> nn.ModuleList:
        """A torchvision network's pretrained part (litvision.backbones), for Lightning's BackboneFinetuning: frozen
        first, then trained at a lower lr. A new container each time: its modules are registered under net."""
        if not hasattr(self.net, "body"):
            raise AttributeError(f"{type(self.net).__name__} has no pretrained backbone: use model=torchvision")
        return nn.ModuleList(self.net.body())

    def use_channels_last(self, on: bool) -> None:
        """The network's convolutions in NHWC (on) or NCHW; the checkpoint records which."""
        self.hparams.channels_last = on
        self.normalize.memory_format = torch.channels_last if on else torch.contiguous_format
        self.net = self.net.to(memory_format=self.normalize.memory_format)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images as the data module hands them (or float in [0, 1]) -> logits."""
        return self._net(self.normalize(images))

    def _net(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=self.normalize.memory_format))

    def setup(self, stage: str) -> None:
        """A network that starts from the data (AirNet's whitening stem) sees the first 5,000 normalized training
        images; when training resumes, the checkpoint's weights, restored after this, replace what it computed."""
        fit_to_data = getattr(self.net, "fit_to_data", None)
        if stage == "fit" and fit_to_data is not None:
            fit_to_data(self.normalize(self.trainer.datamodule.train_images(5000)))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        if self.automatic_optimization:
            logits = self(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        else:  # forward, backward and update written by hand: no autograd graph is built, and in float32 (autocast
            # off): its gradients are assigned to float32 parameters
            with torch.autocast(self.device.type, enabled=False):
                logits, loss = self.net.hand_written_step(self.normalize(images), labels, self.optimizers())
            if self._manual_scheduler_interval() == "step":
                self.lr_schedulers().step()
        if not torch.isfinite(loss):  # a diverged run must not end with a normal-looking accuracy
            lr = self.optimizers().param_groups[0]["lr"]
            raise Diverged(f"the training loss is {loss.item()} at step {self.global_step} (epoch "
                           f"{self.current_epoch}, lr {lr:.4g}): the run diverged. Lower optimizer.lr (now "
                           f"{self.hparams.optimizer.get('lr')}) or add gradient clipping "
                           "(trainer.gradient_clip_val=1.0)")
        hard = labels.argmax(1) if labels.is_floating_point() else labels  # mixup/cutmix: class probabilities
        self.train_metrics.update(logits.detach(), hard, loss.detach())
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:  # the steps the logger writes
            self.log("train/loss_step", loss, prog_bar=True)
            self.log("train/lr", self.optimizers().param_groups[0]["lr"])
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Returns the logits, as test_step does."""
        return self._evaluate(batch, self.val_metrics)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Returns the logits, for callbacks that show predictions (litvision.callbacks.figures)."""
        return self._evaluate(batch, self.test_metrics)

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], metrics: "EpochMetrics") -> torch.Tensor:
        images, labels = batch
        logits = test_time_logits(self._net, self.normalize(images), self.hparams.test_time_flip,
                                  self.hparams.test_time_shift)
        metrics.update(logits, labels, F.cross_entropy(logits, labels))
        return logits

    def on_train_start(self) -> None:
        self.val_acc_best.reset()  # forget the sanity-check validation
        if self.restored_val_acc_best is not None:  # resumed: the best covers the epochs before, too
            self.val_acc_best.update(torch.tensor(self.restored_val_acc_best))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Beside Lightning's state: the best val accuracy so far, and the config-group choices that name a
        mismatch when the checkpoint is resumed by another run."""
        best = float(self.val_acc_best.compute()) if self.val_acc_best.update_called else self.restored_val_acc_best
        checkpoint["litvision"] = {"val_acc_best": best, "choices": dict(self.config_choices)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.restored_val_acc_best = checkpoint.get("litvision", {}).get("val_acc_best")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train", self.train_metrics)
        if self._manual_scheduler_interval() == "epoch":
            self.lr_schedulers().step()

    def on_validation_epoch_end(self) -> None:
        acc = self._log_epoch("val", self.val_metrics)
        if not self.trainer.sanity_checking:
            self.val_acc_best.update(acc)
            self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test", self.test_metrics)

    def _log_epoch(self, stage: str, metrics: "EpochMetrics") -> torch.Tensor:
        """Loss and overall accuracy of the epoch, and per class (named by the class) its accuracy, which is its
        recall, and for val and test its precision and F1, with their macro averages."""
        values = metrics.compute_and_reset()
        self.log(f"{stage}/images", values.pop("images"), logger=False)  # how many were evaluated, for the report
        self.log(f"{stage}/loss", values.pop("loss"), prog_bar=stage != "train")
        acc = values.pop("acc")
        self.log(f"{stage}/acc", acc, prog_bar=stage == "val")
        for key, value in values.items():
            if value.ndim:  # one per class
                self.log_dict({f"{stage}/{key}/{name}": v for name, v in zip(self.hparams.class_names, value)})
            else:
                self.log(f"{stage}/{key}", value)
        return acc

    def _manual_scheduler_interval(self) -> str | None:
        """"step" or "epoch" when this module must step a scheduler itself (manual optimization), else None."""
        if self.automatic_optimization or not self.hparams.scheduler:
            return None
        return self.hparams.scheduler.get("interval", "epoch")

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
        """Over the parameters that train (a frozen backbone's are left out; a hand-written network's have no
        autograd but train). With norm_lr_scale, the normalization layers' parameters form a second group."""
        make = instantiate(self.hparams.optimizer)
        scale = self.hparams.norm_lr_scale
        if not self.automatic_optimization:
            return make(list(self.parameters()))
        if scale == 1:
            return make([p for p in self.parameters() if p.requires_grad])
        norms, others = split_normalization_params(self)
        lr, decay = make.keywords["lr"], make.keywords.get("weight_decay", 0.0)
        return make([{"params": others}, {"params": norms, "lr": lr * scale, "weight_decay": decay / scale}])


class EpochMetrics(nn.Module):
    """A stage's loss, overall and per-class accuracy (detailed: and per-class precision and F1, and the macro
    averages of the three), accumulated per step and computed once per epoch: a self.log call per step would cost
    more than a LeNet step at batch 4. The per-class metrics share one state (torchmetrics' compute groups)."""

    def __init__(self, num_classes: int, detailed: bool = False) -> None:
        super().__init__()
        kinds = {"acc": MulticlassAccuracy, "precision": MulticlassPrecision, "f1": MulticlassF1Score}
        metrics = {"acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False),
                   "acc_class": MulticlassAccuracy(num_classes, average=None, validate_args=False)}
        if detailed:
            metrics |= {f"{name}_class": kind(num_classes, average=None, validate_args=False)
                        for name, kind in kinds.items() if name != "acc"}
            metrics |= {f"{'recall' if name == 'acc' else name}_macro": kind(num_classes, average="macro",
                                                                              validate_args=False)
                        for name, kind in kinds.items()}
        self.classification = MetricCollection(metrics)  # labels come from the data module: no checks per step
        self.loss = MeanMetric()
        self.images = SumMetric()

    def update(self, logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor) -> None:
        self.classification.update(logits, labels)
        self.loss.update(loss, len(labels))
        self.images.update(len(labels))

    def compute_and_reset(self) -> dict[str, torch.Tensor]:
        """loss, acc, acc_class (per-class accuracy: recall), the detailed metrics and the count of images, over
        every process."""
        values = {**self.classification.compute(), "loss": self.loss.compute(), "images": self.images.compute()}
        for metric in (self.classification, self.loss, self.images):
            metric.reset()
        return values
