"""hydra/sweeper=optuna: a hyperparameter search driven by Optuna's ask/tell API.

The search space is written in Hydra's sweep syntax (in hydra.sweeper.params or on the command line); each batch
of n_jobs trials is asked from the study, launched through the configured launcher as ordinary jobs, and told its
result. The study lives in storage (SQLite in the sweep folder by default), so running the same search again
resumes it. Each job learns its trial through the `callbacks.optuna_pruning.trial` override, which
litvision.callbacks.pruning.OptunaPruning reads
to report val accuracy per epoch and to stop a trial the pruner gives up on.

Hydra imports every plugin module at start-up, for every command: optuna is imported only when a search runs."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.litvision_sweepers.summary import Job, finish, job_of, prepare_sweep_dir

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

log = logging.getLogger(__name__)


def _finished() -> tuple:
    from optuna.trial import TrialState

    return TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL


class OptunaSweeper(Sweeper):
    def __init__(self, direction: str, n_trials: int, n_jobs: int, study_name: str, storage: str | None,
                 seed: int | None, sampler: Callable[..., optuna.samplers.BaseSampler], pruner: optuna.pruners.BasePruner,
                 params: dict[str, str] | None = None) -> None:
        if n_trials < 1 or n_jobs < 1:
            raise ValueError(f"hydra.sweeper.n_trials={n_trials}, n_jobs={n_jobs}: both must be at least 1")
        self.direction, self.n_trials, self.n_jobs = direction, n_trials, n_jobs
        self.study_name, self.storage, self.params = study_name, storage, params or {}
        self.seed, self.sampler, self.pruner = seed, sampler, pruner  # Hydra instantiated them from their _target_

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        import optuna
        from optuna.trial import TrialState

        sweep_dir = prepare_sweep_dir(self.config)
        storage = self.storage or f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"
        space, fixed = self._search_space(arguments)
        study = optuna.create_study(study_name=self.study_name, storage=storage, direction=self.direction,
                                    pruner=self.pruner, load_if_exists=True)
        for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            log.warning(f"trial {stale.number} was left running by an earlier, interrupted search: marked failed")
            study.tell(stale.number, state=TrialState.FAIL)
        done = len(study.get_trials(deepcopy=False, states=_finished()))
        if done:
            log.info(f"study {self.study_name!r} in {storage}: resuming after {done} finished trials")
        # seeded by the trials done so far: a resumed search does not draw its first trials again
        study.sampler = self.sampler(seed=None if self.seed is None else self.seed + done)
        while done < self.n_trials:
            try:
                trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - done))]
            except ValueError as e:  # optuna refuses a parameter whose distribution changed
                raise ValueError(f"{e} The search space is not the one study {self.study_name!r} in {storage} was "
                                 "started with: set another hydra.sweeper.study_name or hydra.sweep.dir") from e
            batch = [fixed + [f"{name}={Override._get_value_element_as_str(value)}"
                              for name, value in trial.params.items()]
                     + [f"++callbacks.optuna_pruning.trial={{number:{trial.number},study:'{self.study_name}',"
                        f"storage:'{storage}'}}"]
                     for trial in trials]
            self.validate_batch_is_legal(batch)
            returns = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            for trial, result in zip(trials, returns):
                _tell(study, trial, result)
            done += len(trials)
        self._finish(study, sweep_dir, storage)

    def _search_space(self, arguments: list[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
        """Sweep overrides -> Optuna distributions; the rest stay fixed. The command line replaces a config param
        of the same key (`data.batch_size=64` fixes what the config searched)."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        params = [f"{key}={value}" for key, value in self.params.items()] + list(arguments)
        overrides = {o.get_key_element(): o for o in parser.parse_overrides(params)}
        space = {key: distribution(o) for key, o in overrides.items() if o.is_sweep_override()}
        fixed = [o.input_line for o in overrides.values() if not o.is_sweep_override()]
        if not space:
            raise ValueError("hydra/sweeper=optuna has nothing to search: give hydra.sweeper.params (see "
                             "conf/hparams_search/) or sweep overrides such as optimizer.lr=tag(log,interval(1e-4,1))")
        return space, fixed

    def _finish(self, study: optuna.Study, sweep_dir: Path, storage: str) -> None:
        """Best parameters to best_params.yaml, the optimization history to an image, every trial to the summary."""
        import optuna

        states = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,))) for state in _finished()}
        completed = states["complete"] > 0
        best = {"study": self.study_name, "storage": storage, "direction": self.direction,
                "metric": self.config.get("optimized_metric"), "trials": states}
        if completed:
            best |= {"best_trial": study.best_trial.number, "best_value": study.best_value,
                     "best_params": study.best_params}
        OmegaConf.save(OmegaConf.create(best), sweep_dir / "best_params.yaml")
        if completed:
            import matplotlib

            matplotlib.use("Agg")
            with warnings.catch_warnings():  # the matplotlib backend is "experimental" since optuna 2.2
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = optuna.visualization.matplotlib.plot_optimization_history(study)
            axes.figure.savefig(sweep_dir / "optimization_history.png", dpi=120, bbox_inches="tight")
            log.info(f"best {best['metric']} {study.best_value:.4f} (trial {study.best_trial.number}): "
                     f"{study.best_params}; in {sweep_dir / 'best_params.yaml'}")
        jobs = [Job(number=t.number, overrides=[f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                  for k, v in t.params.items()],
                    status={"COMPLETE": "ok", "PRUNED": "pruned"}.get(t.state.name, "failed"), value=t.value,
                    folder=Path(t.user_attrs.get("folder", "")), error=t.user_attrs.get("error", ""))
                for t in study.get_trials(deepcopy=False, states=_finished())]
        finish(sweep_dir, jobs, self.config, self.direction == "maximize", fail_on_errors=not completed)


def distribution(override: Override) -> BaseDistribution:
    """choice(...) -> categorical; range(...) of integers -> integers with that step; interval(a, b) -> floats
    (integers when a and b are), log-scaled when tagged `log`."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution([v for v in value.list])
    if isinstance(value, RangeSweep):
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            last = value.start + (len(range(value.start, value.stop, value.step)) - 1) * value.step
            return IntDistribution(value.start, last, step=value.step)
        return CategoricalDistribution(list(override.sweep_iterator()))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(value.start, value.end, log=log_scale)
    raise ValueError(f"{override.input_line}: the optuna sweeper takes choice(...), range(...) and interval(...)")


def _tell(study: optuna.Study, trial: optuna.Trial, result: JobReturn) -> None:
    """Complete, pruned (the job raised TrialPruned) or failed (it raised, or returned None or NaN)."""
    import optuna
    from optuna.trial import TrialState

    job = job_of(result)
    trial.set_user_attr("folder", str(job.folder))
    if isinstance(result._return_value, optuna.TrialPruned):
        study.tell(trial, state=TrialState.PRUNED)
    elif job.status == "ok" and job.value is not None:
        study.tell(trial, job.value)
    else:
        error = job.error or "the job returned no optimized metric: is optimized_metric logged?"
        trial.set_user_attr("error", error)
        log.warning(f"trial {trial.number} failed: {error}")
        study.tell(trial, state=TrialState.FAIL)
