"""What a person looks for in TensorBoard, drawn to be read at its card size (TensorBoard fits an image into a card
about 330 px wide: figures 4.6 in wide, so that 10-pt text stays about 10 px high there): the confusion matrix, per-class precision/recall/F1, test images across the classes with their ground truth
and prediction (the tutorial's GroundTruth/Predicted step), the most confidently wrong, one precision-recall curve
per class and, behind a switch, the test set's features in the embedding projector."""

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchmetrics import CatMetric
from torchmetrics.classification import MulticlassConfusionMatrix

TITLE = 11  # points: figure titles
LABEL = 10  # points: axis labels, image titles, legends
CARD = 4.6  # inches: a figure this wide is shown near its size in a TensorBoard card


class Figures(L.Callback):
    """At the test's end: `test/confusion_matrix`, `test/per_class` (precision, recall, F1), `test/samples`
    (`samples` test images drawn across the classes by `seed`), `test/confidently_wrong` (the `wrong` misclassified
    images the network was surest of), `test/pr_curve/CLASS` (pr_curves), and with `embedding` > 0 that many test
    images' penultimate features with thumbnails in the projector. Every `val_every` epochs (0: never) the
    validation's confusion matrix and per-class bars, so the confusion can be watched changing. Into every
    TensorBoard logger; images are shown as they are on disk (the model normalizes them itself)."""

    def __init__(self, samples: int = 16, wrong: int = 16, val_every: int = 5, pr_curves: bool = True,
                 embedding: int = 0, seed: int = 0) -> None:
        for key, value in (("samples", samples), ("wrong", wrong), ("val_every", val_every), ("embedding", embedding)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                from litvision import UserError

                raise UserError(f"callbacks.figures.{key}={value!r} is invalid: give 0 or a positive integer")
        self.n_samples, self.n_wrong, self.val_every = samples, wrong, val_every
        self.pr_curves, self.n_embedding, self.seed = pr_curves, embedding, seed

    # validation: the confusion matrix every val_every epochs
    def _val_due(self, trainer: L.Trainer) -> bool:
        return bool(self.val_every) and not trainer.sanity_checking and (trainer.current_epoch + 1) % self.val_every == 0

    def on_validation_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._val_due(trainer):
            self.val_confusion = MulticlassConfusionMatrix(len(module.hparams.class_names),
                                                           validate_args=False).to(module.device)

    def on_validation_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._val_due(trainer) and outputs is not None:
            self.val_confusion.update(outputs.argmax(1), batch[1])

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not self._val_due(trainer):
            return
        confusion = self.val_confusion.compute().cpu()  # on every process: it gathers across them
        loggers = _tensorboards(trainer)
        if loggers:
            names, title = module.hparams.class_names, f"{_run_name(trainer)}, epoch {trainer.current_epoch}"
            _add(loggers, trainer.global_step, {
                "val/confusion_matrix": confusion_figure(confusion, names, f"validation: {title}"),
                "val/per_class": class_bars(confusion, names, f"validation: {title}")})

    # test: everything
    def on_test_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        classes = len(module.hparams.class_names)
        self.confusion = MulticlassConfusionMatrix(classes, validate_args=False).to(module.device)
        self.probabilities, self.labels = CatMetric().to(module.device), CatMetric().to(module.device)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.picked = _Reservoir(classes, max(1, -(-self.n_samples // classes)) if self.n_samples else 0)
        self.projected = _Reservoir(1, self.n_embedding)
        no_labels = torch.empty(0, dtype=torch.long)
        no_images = torch.empty(0, dtype=torch.uint8)  # uint8 as the batches: a float start would make them float
        self.wrong = (torch.empty(0), no_images, no_labels, no_labels)  # confidence, images, labels, predictions
        self.features: list[torch.Tensor] = []
        self.hook = None
        if self.n_embedding:  # the input of the network's last linear layer: its penultimate features
            last = [m for m in module.net.modules() if isinstance(m, nn.Linear)]
            if last:
                self.hook = last[-1].register_forward_hook(lambda _, inputs, __: self.features.append(inputs[0]))

    def on_test_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch, batch_idx: int,
                            dataloader_idx: int = 0) -> None:
        self.features.clear()

    def on_test_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: torch.Tensor,
                          batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        images, labels = batch
        probabilities = outputs.float().softmax(1)
        confidence, predicted = probabilities.max(1)
        self.confusion.update(predicted, labels)
        if self.pr_curves:
            self.probabilities.update(probabilities)
            self.labels.update(labels)
        keys = torch.rand(len(labels), generator=self.generator)  # the seeded draw of samples across classes
        self.picked.offer(keys, labels.cpu(), images.cpu(), labels.cpu(), predicted.cpu())
        if self.n_embedding and self.features:  # the first forward of the batch (test-time copies come after)
            self.projected.offer(keys, torch.zeros_like(labels.cpu()), images.cpu(), labels.cpu(),
                                 self.features[0][: len(labels)].detach().float().flatten(1).cpu())
        miss = predicted != labels
        if miss.any() and self.n_wrong:  # keep the most confident misses seen so far
            pool = [torch.cat([kept, new]) for kept, new in zip(self.wrong, (
                confidence[miss].cpu(), images[miss].cpu(), labels[miss].cpu(), predicted[miss].cpu()))]
            top = pool[0].argsort(descending=True)[: self.n_wrong]
            self.wrong = tuple(part[top] for part in pool)

    def on_test_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.hook is not None:
            self.hook.remove()
        confusion = self.confusion.compute().cpu()  # on every process: they gather across them
        probabilities = self.probabilities.compute().cpu() if self.pr_curves and self.probabilities.update_called \
            else None
        labels = self.labels.compute().cpu().long() if probabilities is not None else None
        loggers = _tensorboards(trainer)
        if not loggers:
            return
        names, step = module.hparams.class_names, trainer.global_step
        accuracy = 100 * confusion.diag().sum() / confusion.sum().clamp_min(1)
        title = f"test: {_run_name(trainer)}, accuracy {accuracy:.1f}%"
        figures = {"test/confusion_matrix": confusion_figure(confusion, names, title),
                   "test/per_class": class_bars(confusion, names, title)}
        if self.n_samples:
            images, true, predicted = self.picked.taken()
            figures["test/samples"] = image_grid(images[: self.n_samples], true, predicted, names,
                                                 "test samples: true class, ✓ or ✗ predicted")
        if self.n_wrong and len(self.wrong[1]):
            figures["test/confidently_wrong"] = image_grid(*self.wrong[1:], names, "the most confident mistakes",
                                                           confidence=self.wrong[0])
        _add(loggers, step, figures)
        for logger in loggers:
            if probabilities is not None:
                for c, name in enumerate(names):
                    logger.experiment.add_pr_curve(f"test/pr_curve/{name}", labels == c, probabilities[:, c], step)
            if self.n_embedding and self.projected.count():
                images, true, features = self.projected.taken()
                logger.experiment.add_embedding(features, metadata=[names[i] for i in true],
                                                label_img=images.float() / 255, global_step=step, tag="test/features")


class _Reservoir:
    """Per group, the `size` items with the smallest random keys seen: a seeded sample of a stream, whatever its
    order (an image folder's test set comes in class order)."""

    def __init__(self, groups: int, size: int) -> None:
        self.groups, self.size = groups, size
        self.kept: list[tuple[torch.Tensor, ...] | None] = [None] * groups

    def offer(self, keys: torch.Tensor, groups: torch.Tensor, *parts: torch.Tensor) -> None:
        if not self.size:
            return
        for g in groups.unique().tolist():
            rows = (groups == g).nonzero().flatten()
            new = (keys[rows], *(part[rows] for part in parts))
            kept = self.kept[g]
            pool = new if kept is None else tuple(torch.cat([a, b]) for a, b in zip(kept, new))
            order = pool[0].argsort()[: self.size]
            self.kept[g] = tuple(part[order] for part in pool)

    def count(self) -> int:
        return sum(len(k[0]) for k in self.kept if k is not None)

    def taken(self) -> tuple[torch.Tensor, ...]:
        """The parts, the groups interleaved (one of each group, then the next of each): a grid shows every class."""
        kept = [k for k in self.kept if k is not None]
        rounds = max(len(k[0]) for k in kept)
        rows = [(g, i) for i in range(rounds) for g, k in enumerate(kept) if i < len(k[0])]
        return tuple(torch.stack([kept[g][p][i] for g, i in rows]) for p in range(1, len(kept[0])))


def _tensorboards(trainer: L.Trainer) -> list[TensorBoardLogger]:
    if trainer.global_rank != 0:
        return []
    return [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


def _run_name(trainer: L.Trainer) -> str:
    from pathlib import Path

    return Path(trainer.default_root_dir).name


def _add(loggers: list[TensorBoardLogger], step: int, figures: dict) -> None:
    import matplotlib.pyplot as plt

    for logger in loggers:
        for tag, figure in figures.items():
            logger.experiment.add_figure(tag, figure, global_step=step, close=False)
    for figure in figures.values():
        plt.close(figure)


def pyplot():
    """matplotlib.pyplot drawing off-screen (Agg): figures are saved or logged, never shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(confusion: torch.Tensor, names: list[str], title: str):
    """Rows: the true class, normalized to percent of it (the diagonal is each class's recall); the count under
    the percent where cells are large enough; a colour bar. Sized by the class count."""
    plt = pyplot()
    n = len(names)
    counts = confusion.long()
    percent = 100 * counts / counts.sum(1, keepdim=True).clamp_min(1)
    side = CARD if n <= 10 else min(0.4 * n + 1.2, 24.0)  # more classes: larger (open it at its actual size)
    figure, ax = plt.subplots(figsize=(side, side * 0.9))
    shown = ax.imshow(percent.numpy(), cmap="Blues", vmin=0, vmax=100)
    bar = figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label("% of the true class (cells: %)", fontsize=LABEL)
    bar.ax.tick_params(labelsize=LABEL)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                text = f"{percent[i, j]:.0f}" + (f"%\n{counts[i, j]}" if n <= 5 else "")  # counts where they fit
                ax.text(j, i, text, ha="center", va="center", fontsize=7 if n <= 10 else 6,
                        color="white" if percent[i, j] > 55 else "black")
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=LABEL)
    ax.set_yticks(range(n), names, fontsize=LABEL)
    ax.set_xlabel("predicted", fontsize=LABEL)
    ax.set_ylabel("true", fontsize=LABEL)
    ax.set_title(title, fontsize=TITLE)
    figure.tight_layout()
    return figure


def class_bars(confusion: torch.Tensor, names: list[str], title: str):
    """Precision, recall and F1 of each class in percent (from the confusion matrix), with their macro averages
    in the legend: horizontal bars, a row per class."""
    plt = pyplot()
    counts = confusion.double()
    hits = counts.diag()
    precision = 100 * hits / counts.sum(0).clamp_min(1)
    recall = 100 * hits / counts.sum(1).clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    n = len(names)
    figure, ax = plt.subplots(figsize=(CARD, min(max(3.4, 0.34 * n + 2.2), 40.0)))
    rows = torch.arange(n).double()
    for k, (label, values, colour) in enumerate((("precision", precision, "#4c72b0"), ("recall", recall, "#dd8452"),
                                                 ("F1", f1, "#55a868"))):
        ax.barh(rows + (k - 1) * 0.27, values.numpy(), height=0.27, color=colour,
                label=f"{label}: {values.mean():.1f} macro average")
    ax.set_yticks(range(n), names, fontsize=LABEL)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("%", fontsize=LABEL)
    ax.tick_params(axis="x", labelsize=LABEL)
    ax.grid(axis="x", alpha=0.3)
    height = figure.get_figheight()
    figure.legend(fontsize=LABEL - 1, loc="lower center", ncol=1, frameon=False)
    ax.set_title(title, fontsize=TITLE)
    figure.tight_layout(rect=(0, 0.75 / height, 1, 1))  # 0.75 in at the bottom for the legend
    return figure


def image_grid(images: torch.Tensor, labels: torch.Tensor, predicted: torch.Tensor, names: list[str], title: str,
               confidence: torch.Tensor | None = None):
    """uint8 images, each titled with its true class and, below, "✓" or "✗ PREDICTED" (and the probability): a
    mistake is red, framed and marked, not told by colour alone."""
    plt = pyplot()
    columns = min(4, max(1, len(images)))
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(CARD / 4 * columns, 1.55 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= len(images):
            ax.axis("off")
            continue
        image = images[i].permute(1, 2, 0).squeeze(-1)  # the batch as the data module hands it: uint8
        ax.imshow(image.numpy(), cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
        right = bool(labels[i] == predicted[i])
        verdict = "✓" if right else f"✗ {names[predicted[i]]}"
        if confidence is not None:
            verdict += f" {100 * confidence[i]:.0f}%"
        ax.set_title(f"{names[labels[i]]}\n{verdict}", fontsize=LABEL, color="#1a7f37" if right else "#c62828")
        for spine in ax.spines.values():
            spine.set_visible(not right)
            spine.set_color("#c62828")
            spine.set_linewidth(3)
    figure.suptitle(title, fontsize=TITLE)
    figure.tight_layout()
    return figure
