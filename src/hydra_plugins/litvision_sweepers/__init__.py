"""litvision's Hydra sweepers, found by Hydra in the `hydra_plugins` namespace package:
`hydra/sweeper=grid` (litvision's default: every combination, failures listed, a summary table) and
`hydra/sweeper=optuna` (Optuna's ask/tell over Hydra's sweep syntax, resumable, with pruning).
Only the configs live here; the sweepers import optuna when they run. The configs are plain dicts, not
dataclasses, so that a key can be replaced whole: `~hydra.sweeper.pruner '+hydra.sweeper.pruner={...}'`."""

from hydra.core.config_store import ConfigStore

GRID = {
    "_target_": "hydra_plugins.litvision_sweepers.grid_sweeper.GridSweeper",
    "max_batch_size": None,  # jobs per launch; None: all at once
    "params": None,  # swept values, e.g. {optimizer.lr: "0.1,0.01"}
    "direction": "maximize",  # how the summary table ranks the optimized metric
}

OPTUNA = {
    "_target_": "hydra_plugins.litvision_sweepers.optuna_sweeper.OptunaSweeper",
    "direction": "maximize",
    "n_trials": 20,  # trials in the study, counting those an earlier run of the same search finished
    "n_jobs": 1,  # trials asked and launched together (in parallel with hydra/launcher=joblib)
    "study_name": "litvision",
    "storage": None,  # any Optuna storage URL; None: sqlite:///SWEEP_DIR/optuna.db
    "seed": 0,  # the sampler's seed (plus the number of trials a resumed study has done); None: unseeded
    # a partial: the sweeper gives it the seed. constant_liar: trials asked together (n_jobs > 1) spread out
    "sampler": {"_target_": "optuna.samplers.TPESampler", "_partial_": True, "constant_liar": True},
    "pruner": {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2, "n_warmup_steps": 1},
    "params": None,  # the search space: choice(...), interval(...), tag(log, interval(...)), range(...)
}

ConfigStore.instance().store(group="hydra/sweeper", name="grid", node=GRID, provider="litvision")
ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OPTUNA, provider="litvision")
