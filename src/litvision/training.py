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
from lightning.pytorch.callbacks import ProgressBar, Timer
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from litvision import UserError, atomic_write, checkpoints, instantiate, tuning
from litvision.checkpoints import AtomicCheckpointIO
from litvision.classifier import Classifier, Diverged
from litvision.console import quiet_third_party, report_table
from litvision.datamodule import ImageBatches
from litvision.hardware import auto_channels_last, resolved_precision
from litvision.runfolder import owned, save_hydra_config
from litvision.tensorboard import TensorBoard

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
    quiet_third_party()
    _check(cfg)
    if cfg.get("seed") is not None:  # 0 is a seed too
        L.seed_everything(cfg.seed, workers=True)
    datamodule: ImageBatches = instantiate(cfg.data, _convert_="all")
    why = resolve_precision(cfg)
    finders = tuning.asked(cfg)  # a bad tune= stops before any work
    model = _model(cfg, datamodule)
    callbacks, loggers = _instantiate_all(cfg.get("callbacks")), _instantiate_all(cfg.get("logger"))
    trainer = build_trainer(cfg, callbacks, loggers)
    seconds: dict[str, float] = {}
    if cfg.train and finders:  # the finders train a copy; the run trains a model built with their values
        seconds["tune"] = _timed(tuning.tune, cfg, finders, trainer, model, datamodule,
                                  lambda trial: _model(trial, datamodule))
        if cfg.get("seed") is not None:
            L.seed_everything(cfg.seed, workers=True)
        model = _model(cfg, datamodule)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    layout = ", channels_last" if model.hparams.channels_last else ""
    log.info(f"{_class_name(cfg.model)}: {params:,} parameters ({'all' if trainable == params else f'{trainable:,}'} "
             f"trainable); training on {_accelerator(trainer)} x {trainer.num_devices}, precision "
             f"{trainer.precision}{layout}" + (f" (auto: {why})" if why else ""))
    hparams = hyperparameters(cfg)
    for logger in loggers:
        if isinstance(logger, TensorBoard) and rank_zero_only.rank == 0:
            logger.describe(OmegaConf.to_yaml(cfg, resolve=True), model.hparams.class_names)
    metrics, best = {}, ""
    if cfg.train:
        try:
            seconds["fit"] = _timed(trainer.fit, model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        except Exception as e:  # metrics.json and HPARAMS say how it ended: no normal-looking accuracy is left
            status = _ended(e)
            if status is not None:  # HPARAMS shows the val accuracy it reached beside "pruned" or "diverged"
                log_hyperparameters(loggers, hparams | {"status": status.split(":")[0]})
                report(cfg, trainer, {}, model.hparams.class_names, {}, {}, None, hparams, status=status)
            raise
        metrics |= trainer.callback_metrics  # trainer.test replaces them
        _warn_if_cut(cfg, trainer)
    if cfg.test:
        best = trainer.checkpoint_callback.best_model_path if cfg.train and trainer.checkpoint_callback else ""
        seconds["test"] = _timed(trainer.test, model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        metrics |= trainer.callback_metrics
    seconds["total"] = time.perf_counter() - started
    metrics = {name: float(value) for name, value in metrics.items()}
    if "val/acc_best" not in metrics and model.restored_val_acc_best is not None:  # a finished run, re-tested
        metrics["val/acc_best"] = model.restored_val_acc_best
    log_hyperparameters(loggers, hparams | {"status": "ok"})
    evaluated = (best or cfg.get("ckpt_path")) if cfg.test else None
    sizes = {split: len(getattr(datamodule, f"{split}_set")) for split in ("train", "val", "test")}
    report(cfg, trainer, metrics, model.hparams.class_names, sizes, seconds, evaluated, hparams)
    return metrics


def _model(cfg: DictConfig, datamodule: ImageBatches) -> Classifier:
    """build_model, and classifier.channels_last=auto decided for its network and the run's precision."""
    model = build_model(cfg, datamodule)
    if cfg.train and cfg.classifier.get("channels_last") == "auto":
        model.use_channels_last(auto_channels_last(cfg.trainer.precision, model.net))
    return model


def resolve_precision(cfg: DictConfig) -> str | None:
    """trainer.precision=auto becomes the precision this hardware trains fastest in (litvision.hardware); the
    config then holds the value used, as metrics.json and HPARAMS record it. Returns why, when it chose."""
    precision, why = resolved_precision(cfg.trainer.get("precision"), cfg.trainer.get("accelerator", "auto"))
    if why is not None:
        with open_dict(cfg):
            cfg.trainer.precision = precision
    return why


def _warn_if_cut(cfg: DictConfig, trainer: L.Trainer) -> None:
    """One line when trainer.max_time, not the epochs, ended training: its schedule did not run to its end."""
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    if timer is not None and timer.time_remaining() <= 0 and trainer.current_epoch < trainer.max_epochs:
        log.warning(f"trainer.max_time={cfg.trainer.max_time} stopped training after {trainer.current_epoch} of "
                    f"{trainer.max_epochs} epochs, before its schedule ended: give it more time or fewer epochs"
                    + ("" if "epochs" in tuning.asked(cfg) else ", or tune=epochs to fit the epochs to it"))


def _ended(error: Exception) -> str | None:
    """How a fit that raised ended, when that is a result and not a fault: diverged, or pruned by Optuna."""
    if isinstance(error, Diverged):
        return f"diverged: {error}"
    if type(error).__name__ == "TrialPruned":  # optuna's; optuna is imported only by searches
        return f"pruned: {error}"
    return None


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


def build_model(cfg: DictConfig, datamodule: ImageBatches) -> Classifier:
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
    # from a resolved copy: instantiating the node itself would resolve ${optimizer.lr} inside cfg.scheduler for good,
    # and a value set later (tune=lr) would not reach the schedule
    model: Classifier = instantiate(OmegaConf.to_container(cfg.classifier, resolve=True), **datamodule.spec)
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


def log_hyperparameters(loggers: list, hparams: dict[str, Any]) -> None:
    """HPARAMS (TensorBoard) and hparams.yaml (CSV): the run's settings, read beside its results."""
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    for logger in loggers:
        if isinstance(logger, TensorBoard):
            if rank_zero_only.rank == 0:
                logger.log_session(hparams, hparams.get("status", "ok"), experiment=not multirun,
                                   chosen=[*_overridden(), "model", "data", "status"])
        else:  # CSV: hparams.yaml; MLflow, W&B: the run's parameters
            logger.log_hyperparams(hparams)
        logger.finalize("failed" if hparams.get("status") == "diverged" else "success")  # flush; MLflow: its status
        if type(logger).__name__ == "WandbLogger" and rank_zero_only.rank == 0:
            logger.experiment.finish()  # else the next run of this process would log into this one


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """The run's settings, flat, under their config keys (as an override names them), with their types: the
    config-group choices, the optimizer's and network's plain settings, the common data and trainer settings, and
    every override on the command line (a sweep's or a search's values)."""
    choices = _choices()
    params: dict[str, Any] = {"data": choices.get("data", _data_name(cfg)),
                              "model": choices.get("model", _class_name(cfg.model)),
                              "optimizer": choices.get("optimizer", _class_name(cfg.optimizer)),
                              "scheduler": choices.get("scheduler", _class_name((cfg.get("scheduler") or {})
                                                                                .get("scheduler")))}
    if "experiment" in choices:
        params["experiment"] = choices["experiment"]
    for group in ("optimizer", "model"):
        params |= {f"{group}.{key}": value for key, value in (cfg.get(group) or {}).items()
                   if not key.startswith("_") and _plain(value)}
    for key in ("data.batch_size", "data.crop_padding", "data.flip", "data.augment", "trainer.max_epochs",
                "trainer.precision", "seed"):
        value = OmegaConf.select(cfg, key)
        if _plain(value):
            params[key] = value
    for key, text in _overridden().items():
        value = OmegaConf.select(cfg, key, default=text)
        params[key] = value if _plain(value) else text
    return params


def _overridden() -> dict[str, str]:
    """The command line's overrides (a sweep job's: its values), KEY -> VALUE text, but for paths."""
    if not HydraConfig.initialized():
        return {}
    pairs = (override.lstrip("+~").partition("=") for override in HydraConfig.get().overrides.task)
    return {key: text for key, _, text in pairs if key and not key.startswith(("paths.", "hydra."))
            and key not in ("data.root", "ckpt_path", "callbacks.optuna_pruning.trial")}


def _plain(value: Any) -> bool:
    return isinstance(value, (bool, int, float, str))


@rank_zero_only
def report(cfg: DictConfig, trainer: L.Trainer, metrics: dict[str, float], class_names: list[str],
           sizes: dict[str, int], seconds: dict[str, float], ckpt_path: str | None, hparams: dict[str, Any],
           status: str = "ok") -> None:
    """The end of a run, once: the tutorial's answer (overall accuracy) for the images really evaluated, then per
    class its precision, recall (the tutorial's per-class accuracy) and F1, the best val accuracy, the seconds, the
    checkpoint evaluated, the run folder and how to open it. metrics.json gets all of it with what really ran
    (precision, accelerator), the hyperparameters and how the run ended (status)."""
    stage = "test" if "test/acc" in metrics else "val"
    per_class = {name: metrics[f"{stage}/acc_class/{name}"] for name in class_names
                 if f"{stage}/acc_class/{name}" in metrics}
    evaluated = int(metrics.get(f"{stage}/images", sizes.get(stage, 0)))
    folder = Path(cfg.paths.output_dir)
    if f"{stage}/acc" in metrics:
        of = f" (of {sizes[stage]})" if evaluated != sizes.get(stage) else ""
        lines = [f"Accuracy of the network on the {evaluated}{of} {stage} images: {100 * metrics[f'{stage}/acc']:.1f} %",
                 *report_table(class_names, metrics, stage)]
        if "val/acc_best" in metrics:
            lines.append(f"best val accuracy {100 * metrics['val/acc_best']:.1f} %")
        if seconds:
            lines.append(", ".join(f"{part} {value:.1f} s" for part, value in seconds.items()))
        if ckpt_path:
            lines.append(f"checkpoint evaluated: {ckpt_path}")
        lines.append(f"run folder: {folder}")
        for logger in trainer.loggers:
            kind = type(logger).__name__
            if isinstance(logger, TensorBoard):
                lines.append(f"open it: tensorboard --logdir {folder}")
            elif kind == "MLFlowLogger":
                lines.append(f"open it: mlflow ui --backend-store-uri {logger._tracking_uri}")
            elif kind == "WandbLogger" and logger._offline:
                lines.append(f"upload it: wandb sync {folder / 'wandb'}/offline-run-*")
        log.info("\n".join(lines))
    config, module = OmegaConf.to_container(cfg, resolve=True), trainer.lightning_module
    keys = ("data", "model", "optimizer", "scheduler", "classifier", "trainer", "seed", "train", "test", "ckpt_path")
    result = {
        "status": status,
        "accuracy": metrics.get(f"{stage}/acc"),
        "accuracy_per_class": per_class,
        "per_class": {name: {kind: metrics.get(f"{stage}/{key}/{name}") for kind, key in (
            ("precision", "precision_class"), ("recall", "acc_class"), ("f1", "f1_class"))} for name in class_names},
        "macro": {kind: metrics.get(f"{stage}/{kind}_macro") for kind in ("precision", "recall", "f1")},
        "evaluated_on": stage,
        "evaluated_images": evaluated,
        "checkpoint": ckpt_path,
        "precision": trainer.precision,  # what ran: auto resolved; Lightning may change what was asked
        "channels_last": bool(module and module.hparams.channels_last),
        "accelerator": _accelerator(trainer),
        "seconds": seconds,
        "images": sizes,
        "metrics": metrics,
        "hyperparameters": hparams,
        "config": {key: config.get(key) for key in keys},
    }
    for key in ("net", "optimizer", "scheduler"):  # the classifier's copies of model, optimizer and scheduler
        (result["config"].get("classifier") or {}).pop(key, None)
    path = folder / "metrics.json"
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
