"""Optuna pruning inside a trial's training: report the monitored metric after each validation, and stop the
trial (optuna.TrialPruned, which hydra/sweeper=optuna records as pruned) when the study's pruner says so."""

from typing import Any

import lightning as L


class OptunaPruning(L.Callback):
    """trial: what hydra/sweeper=optuna gives each job as `callbacks.optuna_pruning.trial` ({number, study,
    storage}); None, outside a search, turns the callback off. The pruner is the sweeper's (hydra.sweeper.pruner): Optuna does not store pruners with
    the study. Only rank 0 talks to the study; every process stops together."""

    def __init__(self, trial: dict[str, Any] | None = None, monitor: str = "val/acc") -> None:
        self.where, self.monitor = trial, monitor
        self.trial = None
        self.pruner = None
        if trial is not None:  # read here, in the job's process: a process that ddp_spawn starts has no HydraConfig
            from hydra.core.hydra_config import HydraConfig
            from omegaconf import OmegaConf

            self.pruner = OmegaConf.to_container(HydraConfig.get().sweeper.pruner, resolve=True)

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        if self.where is None or stage != "fit" or trainer.global_rank != 0:
            return
        import optuna
        from hydra.utils import instantiate

        storage = optuna.storages.get_storage(self.where["storage"])
        study = optuna.load_study(study_name=self.where["study"], storage=storage, pruner=instantiate(self.pruner))
        study_id = storage.get_study_id_from_name(self.where["study"])
        self.trial = optuna.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id,
                                                                                          self.where["number"]))

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.where is None or trainer.sanity_checking:
            return
        value, prune = trainer.callback_metrics.get(self.monitor), False
        if self.trial is not None and value is not None:
            self.trial.report(float(value), step=trainer.current_epoch)
            prune = self.trial.should_prune()
        if trainer.strategy.broadcast(prune):
            import optuna

            raise optuna.TrialPruned(f"trial {self.where['number']} pruned after epoch {trainer.current_epoch}: "
                                     f"{self.monitor}={float(value):.4f}" if value is not None else "")
