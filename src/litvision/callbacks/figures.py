"""What a person looks for in TensorBoard after the test: the confusion matrix with class names, sample test images
with their ground truth and prediction (the tutorial's GroundTruth/Predicted step), and the most confidently wrong."""

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics.classification import MulticlassConfusionMatrix


class TestFigures(L.Callback):
    """Draws, when a test ends, `test/confusion_matrix`, `test/samples` (the first `samples` test images) and
    `test/confidently_wrong` (the `wrong` misclassified images with the highest predicted probability) into every
    TensorBoard logger. Images are shown as they are on disk (the model normalizes them itself)."""

    def __init__(self, samples: int = 32, wrong: int = 32) -> None:
        self.n_samples, self.n_wrong = samples, wrong

    def on_test_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        classes = len(module.hparams.class_names)
        self.confusion = MulticlassConfusionMatrix(classes, validate_args=False).to(module.device)
        self.samples: list[tuple[torch.Tensor, ...]] = []  # (images, labels, predictions) of the first batches
        no_labels = torch.empty(0, dtype=torch.long)
        no_images = torch.empty(0, dtype=torch.uint8)  # uint8 as the batches: a float start would make them float
        self.wrong = (torch.empty(0), no_images, no_labels, no_labels)  # confidence, images, labels, predictions

    def on_test_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: torch.Tensor,
                          batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        images, labels = batch
        confidence, predicted = outputs.float().softmax(1).max(1)
        self.confusion.update(predicted, labels)
        if sum(len(s[0]) for s in self.samples) < self.n_samples:
            self.samples.append((images.cpu(), labels.cpu(), predicted.cpu()))
        miss = predicted != labels
        if miss.any():  # keep the most confident misses seen so far
            pool = [torch.cat([kept, new]) for kept, new in zip(self.wrong, (
                confidence[miss].cpu(), images[miss].cpu(), labels[miss].cpu(), predicted[miss].cpu()))]
            top = pool[0].argsort(descending=True)[: self.n_wrong]
            self.wrong = tuple(part[top] for part in pool)

    def on_test_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        confusion = self.confusion.compute()  # on every process: it gathers across them
        loggers = [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        if not loggers or trainer.global_rank != 0:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = module.hparams.class_names
        images, labels, predicted = (torch.cat(parts)[: self.n_samples] for parts in zip(*self.samples))
        figures = {"test/confusion_matrix": self.confusion.plot(confusion, labels=names)[0],
                   "test/samples": _grid(images, labels, predicted, names),
                   "test/confidently_wrong": _grid(*self.wrong[1:], names, self.wrong[0])}
        for logger in loggers:
            for tag, figure in figures.items():
                logger.experiment.add_figure(tag, figure, global_step=trainer.global_step, close=False)
        for figure in figures.values():
            plt.close(figure)


def _grid(images: torch.Tensor, labels: torch.Tensor, predicted: torch.Tensor, names: list[str],
          confidence: torch.Tensor | None = None):
    """A figure of uint8 images titled 'GroundTruth / Predicted' (and the prediction's probability)."""
    import matplotlib.pyplot as plt

    columns = 8
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(images):
            continue
        image = images[i].permute(1, 2, 0).squeeze(-1)  # the batch as the data module hands it: uint8
        ax.imshow(image.numpy(), cmap="gray" if image.ndim == 2 else None)
        title = f"{names[labels[i]]} / {names[predicted[i]]}"
        if confidence is not None:
            title += f"\n{100 * confidence[i]:.0f}%"
        ax.set_title(title, fontsize=7, color="green" if labels[i] == predicted[i] else "red")
    figure.suptitle("ground truth / predicted", fontsize=9)
    figure.tight_layout()
    return figure
