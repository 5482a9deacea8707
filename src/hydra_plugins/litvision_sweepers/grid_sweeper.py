"""hydra/sweeper=grid: Hydra's basic sweeper, except that a failing job does not stop the sweep, and the sweep
ends with a summary table (litvision.sweeps) of every job, failures listed with their error."""

import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf

from litvision.sweeps import Job, summarize

log = logging.getLogger(__name__)


class GridSweeper(BasicSweeper):
    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None,
                 direction: str = "maximize") -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.direction = direction

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides(self._parse_config() + list(arguments))
        sweep_dir = prepare_sweep_dir(self.config)
        returns: list[JobReturn] = []
        for batch in self.split_arguments(overrides, self.max_batch_size):
            self.validate_batch_is_legal(batch)
            returns += self.launcher.launch(batch, initial_job_idx=len(returns))
        finish(sweep_dir, [job_of(r) for r in returns], self.config, self.direction == "maximize")
        return [returns]


def prepare_sweep_dir(config: DictConfig) -> Path:
    """The sweep folder, with the sweep's config saved in it as Hydra's own sweepers do."""
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    return sweep_dir


def job_of(result: JobReturn) -> Job:
    """A launcher's JobReturn as a summary row; a job that raised or returned NaN is failed."""
    hydra = result.hydra_cfg.hydra
    value: Any = result._return_value  # the exception when it failed (JobReturn.return_value would raise it)
    job = Job(number=hydra.job.num, overrides=list(result.overrides),
              status="ok", value=None, folder=Path(hydra.runtime.output_dir))
    if result.status != JobStatus.COMPLETED:
        job.status, job.error = "failed", error_text(value)
    elif isinstance(value, float) and math.isnan(value):
        job.status, job.error = "failed", "the optimized metric is NaN"
    elif value is not None:
        job.value = float(value)
    return job


def error_text(error: BaseException) -> str:
    """One line: what a summary table can show of an exception (the job's log has the traceback)."""
    text = f"{type(error).__name__}: {error}".strip().splitlines()[0]
    return text[:300]


def finish(sweep_dir: Path, jobs: list[Job], config: DictConfig, maximize: bool, fail_on_errors: bool = True) -> None:
    """Print and save the summary; fail the sweep (after every job ran) when any job failed and fail_on_errors."""
    log.info("\n" + summarize(sweep_dir, jobs, config.get("optimized_metric") or "value", maximize))
    failed = [job for job in jobs if job.status == "failed"]
    if failed and fail_on_errors:  # exit 1 with the message alone: a traceback of the sweeper would say nothing more
        log.error(f"{len(failed)} of {len(jobs)} jobs failed ({', '.join(str(j.number) for j in failed)}): "
                  f"see {sweep_dir / 'summary.md'} and each job's log")
        sys.exit(1)
