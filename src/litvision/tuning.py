"""tune=lr / tune=batch_size / tune=[batch_size,lr]: Lightning's batch-size and learning-rate finders (its Tuner)
before training. What they find is written into the run's config (data.batch_size, optimizer.lr), so the model the
run then builds, its schedule (a one-cycle max_lr follows optimizer.lr), its checkpoint and metrics.json use it."""

import logging
import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.tuner import Tuner
from omegaconf import DictConfig, ListConfig, open_dict

from litvision import UserError

log = logging.getLogger(__name__)
KINDS = ("batch_size", "lr")


def asked(cfg: DictConfig) -> list[str]:
    """The finders cfg.tune asks for, in the order they run (the batch size first: the lr depends on it)."""
    tune = cfg.get("tune")
    if tune is None or tune is False:
        return []
    kinds = list(tune) if isinstance(tune, (list, ListConfig)) else [str(tune)]
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        raise UserError(f"tune={tune} is invalid: use tune=lr, tune=batch_size or tune=[batch_size,lr] "
                        "(or tune=null)")
    return [kind for kind in KINDS if kind in kinds]


def tune(cfg: DictConfig, finders: list[str], trainer: L.Trainer, model: L.LightningModule,
         datamodule: L.LightningDataModule) -> None:
    """Run `finders` (asked(cfg)) and set what they found in cfg; each result is logged in one line."""
    tuner, folder = Tuner(trainer), Path(cfg.paths.output_dir)
    for kind in finders:
        if kind == "batch_size":  # the largest that fits in memory, doubling from data.batch_size
            largest = min(8192, len(datamodule.train_set))
            size = min(largest, tuner.scale_batch_size(model, datamodule=datamodule, mode="power",
                                                       init_val=datamodule.batch_size, max_val=largest))
            datamodule.batch_size = size  # the finder leaves its last trial's there, which may exceed `largest`
            with open_dict(cfg):
                cfg.data.batch_size = int(size)
            log.info(f"tune: data.batch_size={size} (Lightning's batch-size finder: the largest of the doublings "
                     f"that trained, at most {largest:,})")
        else:
            lr = _find_lr(tuner, trainer, model, datamodule, folder)
            with open_dict(cfg):
                cfg.optimizer.lr = lr


def _find_lr(tuner: Tuner, trainer: L.Trainer, model: L.LightningModule, datamodule: L.LightningDataModule,
             folder: Path) -> float:
    """Lightning's range test (100 steps, the lr rising from 1e-8 to 1), its curve corrected and written to
    lr_find.csv and lr_find.png, and the rate of its steepest fall; a UserError where the loss did not fall."""
    epochs, trainer.fit_loop.max_epochs = trainer.fit_loop.max_epochs, 10 ** 6  # its 100 steps, not the run's epochs
    try:
        finder = tuner.lr_find(model, datamodule=datamodule, update_attr=False)
    finally:
        trainer.fit_loop.max_epochs = epochs
    if finder is None:  # Lightning skips it under fast_dev_run
        raise UserError("tune=lr does not run with trainer.fast_dev_run: drop one of the two")
    lrs, losses = finder.results["lr"], finder.results["loss"]
    _debias(losses)
    (folder / "lr_find.csv").write_text("lr,loss\n" + "".join(f"{r:.6g},{v:.6g}\n" for r, v in zip(lrs, losses)))
    best, why = _steepest(lrs, losses)
    _plot(lrs, losses, best, folder / "lr_find.png")
    if best is None:
        raise UserError(f"tune=lr: {why}: no rate to read from its curve ({folder / 'lr_find.png'}). Set "
                        "optimizer.lr yourself (a model that starts learning slowly needs more than the finder's 100 "
                        "steps)")
    lr = float(lrs[best])
    log.info(f"tune: optimizer.lr={lr:.3g} (the steepest fall of the loss in Lightning's learning-rate finder over "
             f"{len(lrs)} steps; its curve: {folder / 'lr_find.png'}, .csv)")
    return lr


def _debias(losses: list[float], beta: float = 0.98) -> None:
    """Undo an off-by-one in Lightning's smoothing: its _LRCallback divides step k's running mean by 1 - beta^(k+1),
    not 1 - beta^k, which halves the first losses and draws a curve that climbs before it falls. In place."""
    for step, loss in enumerate(losses, start=1):
        losses[step - 1] = loss * (1 - beta ** (step + 1)) / (1 - beta ** step)


def _steepest(lrs: list[float], losses: list[float], skip: int = 10, fall: float = 0.02) -> tuple[int | None, str]:
    """The index of the steepest fall of the loss against log10(lr), before its lowest point, or None and why.
    Lightning's suggestion() takes the slope against the lr itself, so at lr 1e-7 a wobble of 0.001 is 'steeper'
    than any real fall at 1e-2; and on a curve that stays flat until it diverges any wobble is the steepest."""
    loss, lr = torch.tensor(losses, dtype=torch.float64), torch.tensor(lrs, dtype=torch.float64)
    finite = torch.isfinite(loss).nonzero().flatten()
    if len(finite) < skip + 3:
        return None, f"only {len(finite)} of its steps had a finite loss"
    lowest = int(finite[torch.argmin(loss[finite])])
    start = float(loss[finite[:skip]].median())
    if lowest < skip or loss[lowest] > start * (1 - fall):
        return None, (f"the loss fell by {100 * (1 - float(loss[lowest]) / start):.1f}% at most ({start:.3g} to "
                      f"{float(loss[lowest]):.3g}, at lr {float(lr[lowest]):.2g}; {100 * fall:.0f}% is the least "
                      "that counts)")
    span = finite[(finite >= skip) & (finite <= lowest)]
    if len(span) < 2:
        return None, "the loss fell only in its first steps"
    slope = torch.gradient(loss[span], spacing=[torch.log10(lr[span])])[0]
    return int(span[torch.argmin(slope)]), ""


def _plot(lrs: list[float], losses: list[float], best: int | None, path: Path) -> None:
    """The curve on a log-lr axis, the y-axis kept to where it is readable (a diverged loss off the top), the chosen
    rate as a red point."""
    from litvision.callbacks.figures import pyplot

    plt = pyplot()
    figure, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    finite = [v for v in losses if math.isfinite(v)]
    if finite:
        low, start = min(finite), finite[0]
        ax.set_ylim(low - 0.05 * (start - low + 1e-3), start + 0.5 * (start - low + 1e-3))
    if best is None:
        ax.set_title("tune=lr: the loss did not fall; no rate suggested")
    else:
        ax.plot(lrs[best], losses[best], "o", color="red", markersize=9)
        ax.set_title(f"tune=lr: optimizer.lr={lrs[best]:.3g} (red: the steepest fall)")
    ax.grid(True, which="major", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
