"""train(cfg): data, model, trainer from the Hydra config; fit; test the best checkpoint; report."""

import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from litvision import UserError, atomic_write, checkpoints, instantiate
from litvision.checkpoints import AtomicCheckpointIO
from litvision.classifier import Classifier, Diverged
from litvision.datamodule import ImageDataModule
from litvision.runfolder import owned, save_hydra_config

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Run what cfg asks (fit if cfg.train, test if cfg.test) and return every logged metric. The run owns its
    folder while it runs (litvision.runfolder): a second run on the same folder refuses to start."""
    folder = Path(cfg.paths.output_dir)
    if rank_zero_only.rank > 0:  # a DDP process Lightning started: rank 0 owns the folder
        return _run(cfg)
    with owned(folder):
        if HydraConfig.initialized():
            save_hydra_config(cfg)
        return _run(cfg)


def _run(cfg: DictConfig) -> dict[str, float]:
    started = time.perf_counter()
    _check(cfg)
    if cfg.get("seed") is not None:  # 0 is a seed too
        L.seed_everything(cfg.seed, workers=True)
    datamodule: ImageDataModule = instantiate(cfg.data, _convert_="all")
    model = build_model(cfg, datamodule)
    callbacks, loggers = _instantiate_all(cfg.get("callbacks")), _instantiate_all(cfg.get("logger"))
    trainer = build_trainer(cfg, callbacks, loggers)
    log.info(f"training on {_accelerator(trainer)} x {trainer.num_devices}, precision {trainer.precision}")
    seconds, metrics, best = {}, {}, ""
    if cfg.train:
        try:
            seconds["fit"] = _timed(trainer.fit, model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        except Diverged as e:  # metrics.json says so: no normal-looking accuracy is left for a diverged run
            report(cfg, trainer, {}, model.hparams.class_names, {}, {}, None, status=f"diverged: {e}")
            raise
        metrics |= trainer.callback_metrics  # trainer.test replaces them
    if cfg.test:
        best = trainer.checkpoint_callback.best_model_path if cfg.train and trainer.checkpoint_callback else ""
        seconds["test"] = _timed(trainer.test, model, datamodule=datamodule, ckpt_path=best or None)
        metrics |= trainer.callback_metrics
    seconds["total"] = time.perf_counter() - started
    metrics = {name: float(value) for name, value in metrics.items()}
    if "val/acc_best" not in metrics and model.restored_val_acc_best is not None:  # a finished run, re-tested
        metrics["val/acc_best"] = model.restored_val_acc_best
    log_hyperparameters(loggers, cfg, metrics)
    evaluated = (best or cfg.get("ckpt_path")) if cfg.test else None
    sizes = {split: len(getattr(datamodule, f"{split}_set")) for split in ("train", "val", "test")}
    report(cfg, trainer, metrics, model.hparams.class_names, sizes, seconds, evaluated)
    return metrics


def _check(cfg: DictConfig) -> None:
    """Values that would fail deep inside Lightning, or after the first epoch, stop here with one line."""
    seed = cfg.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise UserError(f"seed={seed!r} is invalid: give an integer (e.g. seed=0), or seed=null for an unseeded run")
    for key, least in (("max_epochs", -1), ("min_epochs", 0), ("max_steps", -1), ("log_every_n_steps", 1),
                       ("check_val_every_n_epoch", 1)):
        value = cfg.trainer.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
            raise UserError(f"trainer.{key}={value!r} is invalid: it must be an integer of at least {least}")
    accelerator = str(cfg.trainer.get("accelerator"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError(f"trainer.accelerator={accelerator}: this machine has no CUDA GPU that torch "
                        f"{torch.__version__} can use. Use trainer.accelerator=cpu, or trainer.accelerator=auto "
                        "(a GPU where there is one, else the CPU)")


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list) -> L.Trainer:
    """The Trainer of cfg.trainer, saving checkpoints atomically (litvision.checkpoints). A misconfiguration
    Lightning finds (devices, strategy, precision) is a one-line error."""
    try:
        trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                          plugins=[AtomicCheckpointIO()],
                                          enable_progress_bar=any(isinstance(c, ProgressBar) for c in callbacks))
    except InstantiationException as e:
        cause = e.__cause__ or e
        if isinstance(cause, (MisconfigurationException, ValueError, TypeError)):
            raise UserError(f"trainer: {cause}. Fix that trainer.* value (see conf/trainer/)") from e
        raise
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if multirun and isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher):
        raise UserError("trainer.strategy=ddp inside a sweep (-m) would start every process on the whole sweep "
                        "again: in a sweep use ++trainer.strategy=ddp_spawn (with trainer.devices=N)")
    return trainer


def build_model(cfg: DictConfig, datamodule: ImageDataModule) -> Classifier:
    """A new model (cfg.classifier) for the data's classes, shape and normalization, or (train=false) the model in
    cfg.ckpt_path with the data prepared as that model was trained (normalization; size and channels of an image
    folder). The data is set up here, before Lightning would: the model is built from what it holds. A checkpoint
    to resume must be of this model, data and optimizer: a mismatch is named before any training."""
    path = cfg.get("ckpt_path")
    checkpoint = checkpoints.load(path) if path else None  # one clear line for a missing or bad file
    if not cfg.train:
        if not path:
            raise UserError("ckpt_path=None: train=false evaluates a checkpoint, so set ckpt_path=PATH.ckpt")
        model = Classifier.load_from_checkpoint(path, map_location="cpu")
        hp = model.hparams
        datamodule.match(hp.input_shape, hp.mean, hp.std)
        datamodule.prepare_data()
        datamodule.setup()
        if list(hp.class_names) != datamodule.class_names or list(hp.input_shape) != datamodule.input_shape:
            raise UserError(f"ckpt_path={path} was trained on classes {list(hp.class_names)} of "
                            f"{'x'.join(map(str, hp.input_shape))} images, but data={_data_name(cfg)} has classes "
                            f"{datamodule.class_names} of {'x'.join(map(str, datamodule.input_shape))}: pick the data "
                            "it was trained on (or name its classes with data.class_names=[...])")
        return model
    datamodule.prepare_data()
    datamodule.setup()
    model: Classifier = instantiate(cfg.classifier, **datamodule.spec)
    model.config_choices = _choices()
    try:  # fail now, not after the first epoch, on e.g. optimizer.lr=-1
        model.make_optimizer()
    except (ValueError, TypeError) as e:
        raise UserError(f"optimizer {model.hparams.optimizer} is invalid: {e}. Fix that value, e.g. "
                        "optimizer.lr=0.001") from e
    if checkpoint is not None:
        problem = checkpoints.mismatch(checkpoint, dict(model.hparams), model.config_choices)
        if problem:
            raise UserError(f"ckpt_path={path} cannot be resumed by this run: {problem}. Resume with the settings "
                            "it was trained with, or start a new run without ckpt_path")
    return model


def _choices() -> dict[str, str]:
    """The run's config-group choices (data=mnist, model=lenet, ...), when Hydra composed it."""
    if not HydraConfig.initialized():
        return {}
    return {group: str(choice) for group, choice in HydraConfig.get().runtime.choices.items()
            if group in ("data", "model", "optimizer", "scheduler", "experiment") and choice is not None}


def log_hyperparameters(loggers: list, cfg: DictConfig, metrics: dict[str, float]) -> None:
    """TensorBoard's hparams tab: the run's settings beside its results, to compare the runs of a sweep."""
    keys = ("test/acc", "test/loss", "val/acc_best")
    results = {f"hp/{key.replace('/', '_')}": metrics[key] for key in keys if key in metrics}
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(hyperparameters(cfg), results)
        else:  # CSV: hparams.yaml
            logger.log_hyperparams(hyperparameters(cfg))
        logger.finalize("success")  # flush: the trainer has finalized its loggers already


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """The run's key settings, flat: what tells the runs of a sweep apart."""
    scheduler = cfg.get("scheduler") or {}
    return {"data": _data_name(cfg), "model": _class_name(cfg.model), "optimizer": _class_name(cfg.optimizer),
            "lr": cfg.optimizer.get("lr"), "weight_decay": cfg.optimizer.get("weight_decay"),
            "scheduler": _class_name(scheduler.get("scheduler")), "batch_size": cfg.data.batch_size,
            "max_epochs": cfg.trainer.max_epochs, "precision": str(cfg.trainer.precision), "seed": cfg.get("seed"),
            "crop_padding": cfg.data.get("crop_padding"), "flip": cfg.data.get("flip")}


@rank_zero_only
def report(cfg: DictConfig, trainer: L.Trainer, metrics: dict[str, float], class_names: list[str],
           sizes: dict[str, int], seconds: dict[str, float], ckpt_path: str | None, status: str = "ok") -> None:
    """Print the tutorial's two answers (overall and per-class accuracy) for the images really evaluated; write
    them to metrics.json with what really ran (precision, accelerator) and how the run ended (status)."""
    stage = "test" if "test/acc" in metrics else "val"
    per_class = {name: metrics[f"{stage}/acc_class/{name}"] for name in class_names
                 if f"{stage}/acc_class/{name}" in metrics}
    evaluated = int(metrics.get(f"{stage}/images", sizes.get(stage, 0)))
    if f"{stage}/acc" in metrics:
        of = f" (of {sizes[stage]})" if evaluated != sizes.get(stage) else ""
        lines = [f"Accuracy of the network on the {evaluated}{of} {stage} images: {100 * metrics[f'{stage}/acc']:.1f} %"]
        lines += [f"Accuracy for class: {name:10s} is {100 * acc:.1f} %" for name, acc in per_class.items()]
        log.info("\n".join(lines))
    config = OmegaConf.to_container(cfg, resolve=True)
    keys = ("data", "model", "optimizer", "scheduler", "classifier", "trainer", "seed", "train", "test", "ckpt_path")
    result = {
        "status": status,
        "accuracy": metrics.get(f"{stage}/acc"),
        "accuracy_per_class": per_class,
        "evaluated_on": stage,
        "evaluated_images": evaluated,
        "checkpoint": ckpt_path,
        "precision": trainer.precision,  # what ran: Lightning may change what was asked (16-mixed on a CPU)
        "accelerator": _accelerator(trainer),
        "seconds": seconds,
        "images": sizes,
        "metrics": metrics,
        "config": {key: config.get(key) for key in keys},
    }
    for key in ("net", "optimizer", "scheduler"):  # the classifier's copies of model, optimizer and scheduler
        (result["config"].get("classifier") or {}).pop(key, None)
    path = Path(cfg.paths.output_dir) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:  # never a half-written metrics.json
        tmp.write_text(json.dumps(result, indent=2))
    log.info(f"metrics written to {path}")


def _accelerator(trainer: L.Trainer) -> str:
    """What the run ran on, in the words of trainer.accelerator: cpu, cuda, mps."""
    return trainer.accelerator.__class__.__name__.removesuffix("Accelerator").lower()


def _data_name(cfg: DictConfig) -> str:
    return cfg.data.get("dataset", "streaming")  # data=streaming names no dataset: its folder holds one


def _class_name(node: DictConfig | None) -> str:
    return node["_target_"].rsplit(".", 1)[-1] if node and "_target_" in node else "none"


def _timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def _instantiate_all(group: DictConfig | None) -> list:
    """Each entry of a callbacks/logger group that has a _target_ (null entries switch one off)."""
    return [instantiate(node) for node in (group or {}).values() if node and "_target_" in node]
