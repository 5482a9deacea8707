"""train(cfg): data, model, trainer from the Hydra config; fit; test the best checkpoint; report."""

import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from litvision import UserError, atomic_write, instantiate
from litvision.classifier import Classifier
from litvision.datamodule import ImageDataModule

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Run what cfg asks (fit if cfg.train, test if cfg.test) and return every logged metric."""
    started = time.perf_counter()
    if cfg.get("seed") is not None:  # 0 is a seed too
        L.seed_everything(cfg.seed, workers=True)
    datamodule: ImageDataModule = instantiate(cfg.data, _convert_="all")
    model = build_model(cfg, datamodule)
    callbacks, loggers = _instantiate_all(cfg.get("callbacks")), _instantiate_all(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                      enable_progress_bar=any(isinstance(c, ProgressBar) for c in callbacks))
    seconds, metrics, best = {}, {}, ""
    if cfg.train:
        seconds["fit"] = _timed(trainer.fit, model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics |= trainer.callback_metrics  # trainer.test replaces them
    if cfg.test:
        best = trainer.checkpoint_callback.best_model_path if cfg.train and trainer.checkpoint_callback else ""
        seconds["test"] = _timed(trainer.test, model, datamodule=datamodule, ckpt_path=best or None)
        metrics |= trainer.callback_metrics
    seconds["total"] = time.perf_counter() - started
    metrics = {name: float(value) for name, value in metrics.items()}
    log_hyperparameters(loggers, cfg, metrics)
    evaluated = (best or cfg.get("ckpt_path")) if cfg.test else None
    sizes = {split: len(getattr(datamodule, f"{split}_set")) for split in ("train", "val", "test")}
    report(cfg, metrics, model.hparams.class_names, sizes, seconds, evaluated)
    return metrics


def build_model(cfg: DictConfig, datamodule: ImageDataModule) -> Classifier:
    """A new model (cfg.classifier) for the data's classes, shape and normalization, or (train=false) the model in
    cfg.ckpt_path with the data prepared as that model was trained (normalization; size and channels of an image
    folder). The data is set up here, before Lightning would: the model is built from what it holds."""
    path = cfg.get("ckpt_path")
    if path and not Path(path).is_file():
        raise UserError(f"ckpt_path={path} is not a file: name a .ckpt file, e.g. "
                        "logs/train/runs/DATE/checkpoints/last.ckpt")
    if not cfg.train:
        if not path:
            raise UserError("ckpt_path=None: train=false evaluates a checkpoint, so set ckpt_path=PATH.ckpt")
        model = Classifier.load_from_checkpoint(path, map_location="cpu")
        hp = model.hparams
        datamodule.match(hp.input_shape, hp.mean, hp.std)
        datamodule.prepare_data()
        datamodule.setup()
        if len(hp.class_names) != len(datamodule.class_names) or hp.input_shape != datamodule.input_shape:
            raise UserError(f"ckpt_path={path} was trained on {len(hp.class_names)} classes of {hp.input_shape} images "
                            f"but data={cfg.data.dataset} has {len(datamodule.class_names)} classes of "
                            f"{datamodule.input_shape}: pick the data it was trained on")
        return model
    datamodule.prepare_data()
    datamodule.setup()
    model: Classifier = instantiate(cfg.classifier, **datamodule.spec)
    try:  # fail now, not after the first epoch, on e.g. optimizer.lr=-1
        model.make_optimizer()
    except (ValueError, TypeError) as e:
        raise UserError(f"optimizer {model.hparams.optimizer} is invalid: {e}. Fix that value, e.g. "
                        "optimizer.lr=0.001") from e
    return model


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
    return {"data": cfg.data.dataset, "model": _class_name(cfg.model), "optimizer": _class_name(cfg.optimizer),
            "lr": cfg.optimizer.get("lr"), "weight_decay": cfg.optimizer.get("weight_decay"),
            "scheduler": _class_name(scheduler.get("scheduler")), "batch_size": cfg.data.batch_size,
            "max_epochs": cfg.trainer.max_epochs, "precision": str(cfg.trainer.precision), "seed": cfg.get("seed"),
            "crop_padding": cfg.data.get("crop_padding"), "flip": cfg.data.get("flip")}


@rank_zero_only
def report(cfg: DictConfig, metrics: dict[str, float], class_names: list[str], sizes: dict[str, int],
           seconds: dict[str, float], ckpt_path: str | None) -> None:
    """Print the tutorial's two answers (overall and per-class accuracy); write them to metrics.json."""
    stage = "test" if "test/acc" in metrics else "val"
    per_class = {name: metrics[f"{stage}/acc_class/{name}"] for name in class_names
                 if f"{stage}/acc_class/{name}" in metrics}
    if f"{stage}/acc" in metrics:
        what = f"the {sizes[stage]} {stage} images"
        lines = [f"Accuracy of the network on {what}: {100 * metrics[f'{stage}/acc']:.1f} %"]
        lines += [f"Accuracy for class: {name:10s} is {100 * acc:.1f} %" for name, acc in per_class.items()]
        log.info("\n".join(lines))
    config = OmegaConf.to_container(cfg, resolve=True)
    keys = ("data", "model", "optimizer", "scheduler", "trainer", "seed", "train", "test", "ckpt_path")
    result = {
        "accuracy": metrics.get(f"{stage}/acc"),
        "accuracy_per_class": per_class,
        "evaluated_on": stage,
        "checkpoint": ckpt_path,
        "seconds": seconds,
        "images": sizes,
        "metrics": metrics,
        "config": {key: config.get(key) for key in keys},
    }
    path = Path(cfg.paths.output_dir) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:  # never a half-written metrics.json
        tmp.write_text(json.dumps(result, indent=2))
    log.info(f"metrics written to {path}")


def _class_name(node: DictConfig | None) -> str:
    return node["_target_"].rsplit(".", 1)[-1] if node and "_target_" in node else "none"


def _timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def _instantiate_all(group: DictConfig | None) -> list:
    """Each entry of a callbacks/logger group that has a _target_ (null entries switch one off)."""
    return [instantiate(node) for node in (group or {}).values() if node and "_target_" in node]
