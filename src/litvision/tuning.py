"""tune=lr / tune=batch_size / tune=[batch_size,lr]: Lightning's batch-size and learning-rate finders (its Tuner)
before training. What they find is written into the run's config (data.batch_size, optimizer.lr), so the model the
run then builds, its schedule (a one-cycle max_lr follows optimizer.lr), its checkpoint and metrics.json use it."""

import logging
from pathlib import Path

import lightning as L
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
            epochs, trainer.fit_loop.max_epochs = trainer.fit_loop.max_epochs, 10 ** 6  # its 100 steps, not
            try:                                                                         # the run's epochs
                finder = tuner.lr_find(model, datamodule=datamodule, update_attr=False)
            finally:
                trainer.fit_loop.max_epochs = epochs
            lr = finder.suggestion() if finder is not None else None
            if lr is None:
                raise UserError("tune=lr: the learning-rate finder found no point of steepest descent (the loss did "
                                "not fall). Set optimizer.lr yourself, or give it more data")
            figure = finder.plot(suggest=True)
            figure.savefig(folder / "lr_find.png", dpi=100)
            with open_dict(cfg):
                cfg.optimizer.lr = float(lr)
            log.info(f"tune: optimizer.lr={lr:.3g} (Lightning's learning-rate finder over "
                     f"{len(finder.results['lr'])} steps; its curve: {folder / 'lr_find.png'})")
