"""What a run prints: a progress bar that fits 80 columns, no third-party noise, and one report at the end."""

import logging
import math
import shutil
import sys
import warnings
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

log = logging.getLogger(__name__)

WIDTH = 80


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, narrowed to the training loss and the last validation accuracy, redrawn `refreshes`
    times per epoch whatever its length. Not in a terminal (a pipe, a log file, a scheduler's output), each refresh
    is one line instead of a redrawn bar."""

    def __init__(self, refreshes: int = 4) -> None:
        if not isinstance(refreshes, int) or refreshes < 1:
            from litvision import UserError

            raise UserError(f"callbacks.progress_bar.refreshes={refreshes!r} is invalid: give a positive integer, "
                            "e.g. 4 (refreshes per epoch)")
        super().__init__(refresh_rate=1, leave=True)
        self.refreshes = refreshes
        self.terminal = sys.stdout.isatty()
        self.loss: float | None = None

    @property
    def is_disabled(self) -> bool:  # no bars outside a terminal: lines instead (on_train_batch_end)
        return super().is_disabled or not self.terminal

    def _should_update(self, current: int, total: int | float | None) -> bool:
        every = math.ceil(total / self.refreshes) if total and math.isfinite(total) else 50
        return self.is_enabled and (current % max(1, every) == 0 or current == total)

    def get_metrics(self, trainer: L.Trainer, module: L.LightningModule) -> dict[str, str]:
        metrics = trainer.progress_bar_metrics
        shown = {}
        if self.loss is not None:
            shown["loss"] = f"{self.loss:.3f}"
        if "val/acc" in metrics:
            shown["val/acc"] = f"{100 * metrics['val/acc']:.1f}%"
        return shown

    def _bar(self, desc: str, position: int, leave: bool, **kwargs: Any) -> Tqdm:
        """Lightning's bar as it makes it, but 80 columns wide (or the terminal's width) from its first draw on."""
        return Tqdm(desc=desc, position=2 * self.process_position + position, disable=self.is_disabled, leave=leave,
                    dynamic_ncols=False, ncols=min(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns),
                    file=sys.stdout, bar_format=self.BAR_FORMAT, **kwargs)

    def init_sanity_tqdm(self) -> Tqdm:
        return self._bar(self.sanity_check_description, 0, leave=False)

    def init_train_tqdm(self) -> Tqdm:
        return self._bar(self.train_description, 0, leave=True, smoothing=0)

    def init_validation_tqdm(self) -> Tqdm:
        has_main_bar = self.trainer.state.fn != "validate"
        return self._bar(self.validation_description, int(has_main_bar), leave=not has_main_bar)

    def init_test_tqdm(self) -> Tqdm:
        return self._bar("Testing", 0, leave=True)

    def init_predict_tqdm(self) -> Tqdm:
        return self._bar(self.predict_description, 0, leave=True, smoothing=0)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        total = self.total_train_batches
        if self._should_update(batch_idx + 1, total):  # the batch's loss, read only when shown (a GPU sync)
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.loss = float(loss) if loss is not None else None
        super().on_train_batch_end(trainer, module, outputs, batch, batch_idx)
        if not self.terminal and self._should_update(batch_idx + 1, total):
            metrics = " ".join(f"{key}={value}" for key, value in self.get_metrics(trainer, module).items())
            of = f"/{total}" if total and math.isfinite(total) else ""
            print(f"epoch {trainer.current_epoch} step {batch_idx + 1}{of} {metrics}"[:WIDTH], flush=True)


class _Without(logging.Filter):
    """Drops the log records whose message starts with one of `starts`."""

    def __init__(self, *starts: str) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def quiet_third_party() -> None:
    """Leave out what a user cannot act on: Lightning's product tips, deprecation warnings that Lightning and
    litdata raise about their own code, and what they say of data=streaming that does not apply to it."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_Without("💡 Tip"))
    # said of every sharded evaluation split, which runs no collectives (litvision.streaming)
    logging.getLogger("litdata.streaming.dataset").addFilter(
        _Without("You're operating within a distributed environment and have disabled the `drop_last` option"))
    # the tuner's restore: litvision's checkpoint I/O (checkpoints.read) loads with weights_only=True whatever it says
    logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector").addFilter(
        _Without("`weights_only` was not set"))
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message="The given buffer is not writable")  # litdata's reads of its chunks
    warnings.filterwarnings("ignore", message="The number of training batches .* is smaller than the logging interval")
    # litdata shards a StreamingDataset across dataloader workers itself, which this warning for any sized
    # IterableDataset does not know
    warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")


def report_table(class_names: list[str], metrics: dict[str, float], stage: str) -> list[str]:
    """Per class (in the dataset's order) its precision, recall (the tutorial's per-class accuracy) and F1, in
    percent, then their macro averages: lines of at most 80 columns."""
    width = min(max([len(name) for name in class_names] + [9]), WIDTH - 29)
    columns = (("precision", "precision_class", "precision_macro"), ("recall", "acc_class", "recall_macro"),
               ("F1", "f1_class", "f1_macro"))

    def row(name: str, values: list[float | None]) -> str:
        cells = [f"{'-' if v is None else f'{100 * v:.1f}':>{max(len(title), 6)}}"
                 for v, (title, _, _) in zip(values, columns)]
        return f"{name[:width]:<{width}}  " + "  ".join(cells)

    lines = [f"{'class':<{width}}  " + "  ".join(f"{title:>{max(len(title), 6)}}" for title, _, _ in columns)]
    lines += [row(name, [metrics.get(f"{stage}/{kind}/{name}") for _, kind, _ in columns]) for name in class_names]
    macro = [metrics.get(f"{stage}/{kind}") for _, _, kind in columns]
    if any(v is not None for v in macro):
        lines.append(row("macro avg", macro))
    return lines
