"""tune=lr / tune=batch_size / tune=epochs / tune=[batch_size,lr,...]: before training, Lightning's batch-size and
learning-rate finders (its Tuner), and the epochs that fit trainer.max_time on this machine. What they find is
written into the run's config (data.batch_size, optimizer.lr, trainer.max_epochs), so the model the run then builds,
its schedule (a one-cycle max_lr follows optimizer.lr, its length the epochs), its checkpoint and metrics.json use
it, and the same config without tune= repeats the run."""

import copy
import datetime
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.tuner import Tuner
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from litvision import UserError, instantiate

log = logging.getLogger(__name__)
KINDS = ("batch_size", "lr", "epochs")


def asked(cfg: DictConfig) -> list[str]:
    """The finders cfg.tune asks for, in the order they run (the batch size first: the lr depends on it; the epochs
    last: their seconds depend on it)."""
    tune = cfg.get("tune")
    if tune is None or tune is False:
        return []
    kinds = list(tune) if isinstance(tune, (list, ListConfig)) else [str(tune)]
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        raise UserError(f"tune={tune} is invalid: use tune=lr, tune=batch_size, tune=epochs or a list of them, "
                        "e.g. tune=[batch_size,lr] (or tune=null)")
    if "epochs" in kinds:
        budget_seconds(cfg.trainer.get("max_time"))
    return [kind for kind in KINDS if kind in kinds]


def budget_seconds(max_time) -> float:
    """trainer.max_time in seconds, in any of the forms Lightning takes ("DD:HH:MM:SS", {"minutes": 5}, a
    timedelta); a UserError naming the value when it is missing or malformed."""
    try:
        if isinstance(max_time, str):
            days, hours, minutes, seconds = map(float, max_time.split(":"))
            max_time = datetime.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        elif max_time is not None and not isinstance(max_time, datetime.timedelta):
            max_time = datetime.timedelta(**dict(max_time))
    except (ValueError, TypeError) as e:
        raise UserError(f"trainer.max_time={max_time} is invalid: give DD:HH:MM:SS, e.g. "
                        "trainer.max_time=00:00:15:00") from e
    if max_time is None or max_time.total_seconds() <= 0:
        raise UserError(f"tune=epochs fits the epochs to trainer.max_time, which is {max_time}: set it, e.g. "
                        "trainer.max_time=00:00:15:00")
    return max_time.total_seconds()


def tune(cfg: DictConfig, finders: list[str], trainer: L.Trainer, model: L.LightningModule,
         datamodule: L.LightningDataModule, rebuild: Callable[[DictConfig], L.LightningModule]) -> None:
    """Run `finders` (asked(cfg)) and set what they found in cfg; each result is logged in one line. `rebuild`
    builds the model a config describes (for time_choices)."""
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
        elif kind == "lr":
            lr = _find_lr(tuner, trainer, model, datamodule, folder)
            with open_dict(cfg):
                cfg.optimizer.lr = lr
        else:
            if trainer.world_size > 1:
                raise UserError(f"tune=epochs times one process, not the {trainer.world_size} processes of this "
                                "run's trainer: set trainer.max_epochs instead")
            _fit_to_time(cfg, model, datamodule, rebuild)
            trainer.fit_loop.max_epochs = cfg.trainer.max_epochs


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


class _StepClock(L.Callback):
    """The end time of each training step, until `warmup` steps and then `least` more have run and `seconds` have
    passed since the warm-up, or `most` steps; and each whole epoch's seconds and steps (validation included)."""

    def __init__(self, warmup: int, least: int, most: int, seconds: float) -> None:
        self.warmup, self.least, self.most, self.seconds = warmup, least, most, seconds
        self.ends: list[float] = []
        self.epochs: list[tuple[float, int]] = []  # (seconds, steps) of each epoch that ran to its end
        self._epoch_start = (0.0, 0)

    def on_train_epoch_start(self, trainer: L.Trainer, *args) -> None:
        self._epoch_start = (time.perf_counter(), len(self.ends))

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())
        timed = self.ends[self.warmup:]
        if len(timed) > self.most or (len(timed) > self.least and timed[-1] - timed[0] >= self.seconds):
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: L.Trainer, *args) -> None:
        start, steps = self._epoch_start
        if not trainer.should_stop:
            self.epochs.append((time.perf_counter() - start, len(self.ends) - steps))

    def step_seconds(self) -> float:
        return float(torch.tensor(self.ends[self.warmup:], dtype=torch.float64).diff().median())

    def epoch_overhead(self, step: float) -> float | None:
        """The median seconds an epoch took beyond its steps (validation, epoch-end work), from the epochs after
        the first that ran to their end; None if none did."""
        extra = [seconds - steps * step for seconds, steps in self.epochs[1:]]
        return max(0.0, float(torch.tensor(extra).median())) if extra else None


def _fit_to_time(cfg: DictConfig, model: L.LightningModule, datamodule: L.LightningDataModule,
                 rebuild: Callable[[DictConfig], L.LightningModule], margin: float = 0.95) -> None:
    """tune=epochs: trainer.max_epochs becomes the most epochs, up to the config's, that train within
    trainer.max_time here, with 5% kept spare for what the timing does not run (checkpoints, figures); the seconds of
    the timing count against the time. With cfg.time_choices (a list of {set: {KEY: VALUE, ...}, least_epochs: N}),
    the first choice that fits at least its least_epochs is set in cfg (the last if none does): e.g. the widest
    network that trains enough epochs on this machine. Lightning's max_time still stops training at the time."""
    budget, started = budget_seconds(cfg.trainer.get("max_time")), time.perf_counter()
    choices = list(cfg.get("time_choices") or [{}])
    for number, choice in enumerate(choices, start=1):
        settings = dict(choice.get("set") or {})
        trial = copy.deepcopy(cfg)
        with open_dict(trial):
            for key, value in settings.items():
                if OmegaConf.select(trial, key, default=_ABSENT) is _ABSENT:
                    raise UserError(f"time_choices[{number - 1}] sets {key}, which this config does not have: "
                                    "name a key it has, e.g. model.widths")
                OmegaConf.update(trial, key, value, merge=False)
        if settings:
            datamodule.batch_size = trial.data.get("batch_size", datamodule.batch_size)
            model = rebuild(trial)
        epoch, how = _epoch_seconds(trial, model, datamodule, seconds=0.03 * budget)
        fits = math.floor((budget - (time.perf_counter() - started)) * margin / epoch)
        chosen = "".join(f"{k}={v}, " for k, v in settings.items() if k != "trainer.max_epochs")
        least = choice.get("least_epochs", 1)
        if fits < least and number < len(choices):
            log.info(f"tune: {chosen}{fits} epochs fit trainer.max_time={cfg.trainer.max_time} here ({how}), fewer "
                     f"than its least_epochs={least}: the next of time_choices")
            continue
        if fits < 1:
            raise UserError(f"trainer.max_time={cfg.trainer.max_time} is shorter than one epoch here ({how}): give "
                            "it more time, or a smaller model or batch")
        most = trial.trainer.get("max_epochs")
        epochs = fits if most is None or most < 0 else min(fits, most)
        with open_dict(cfg):
            for key, value in settings.items():
                OmegaConf.update(cfg, key, value, merge=False)
            cfg.trainer.max_epochs = epochs
        datamodule.batch_size = cfg.data.get("batch_size", datamodule.batch_size)
        log.info(f"tune: {chosen}trainer.max_epochs={epochs} (the epochs that fit trainer.max_time="
                 f"{cfg.trainer.max_time}{f', at most {most}' if epochs < fits else ''}: {how}, timed in "
                 f"{time.perf_counter() - started:.1f} s; this config with these values and without tune=epochs "
                 "repeats this run)")
        return


_ABSENT = object()


def _epoch_seconds(cfg: DictConfig, model: L.LightningModule, datamodule: L.LightningDataModule,
                   seconds: float) -> tuple[float, str]:
    """An epoch's seconds here, and how they were found: a copy of the model trains a few steps (1 to warm up, then
    at least 3, for `seconds` or 20 steps) on the run's data, trainer settings and precision, with its validation;
    an epoch is its batches at the median step's seconds, plus what the probe's whole epochs took beyond their steps
    (when an epoch is that short), else its validation batches at a third of a step (a forward pass)."""
    clock = _StepClock(warmup=1, least=3, most=20, seconds=seconds)
    probe: L.Trainer = instantiate(cfg.trainer, max_epochs=10 ** 6, min_epochs=0, max_steps=-1, max_time=None,
                                   logger=False, callbacks=[clock], enable_checkpointing=False,
                                   enable_progress_bar=False, num_sanity_val_steps=0)
    with torch.random.fork_rng(devices=[]):  # the run's draws stay those of a run without tune=epochs
        probe.fit(copy.deepcopy(model), datamodule=datamodule)
    step, batches = clock.step_seconds(), probe.num_training_batches
    overhead = clock.epoch_overhead(step)
    if overhead is None:
        val_batches = sum(probe.num_val_batches) / cfg.trainer.get("check_val_every_n_epoch", 1)
        overhead = step * val_batches / 3
    epoch = step * batches + overhead
    return epoch, (f"an epoch about {epoch:.3g} s, {batches} steps of {step:.3g} s (the median of "
                   f"{len(clock.ends) - 2} timed) and {overhead:.2g} s beside them")


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
