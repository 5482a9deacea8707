"""hydra/sweeper=grid: Hydra's basic sweeper, except that a failing job does not stop the sweep, and the sweep
ends with a summary table (summary.py) of every job, failures listed with their error."""

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn

from hydra_plugins.litvision_sweepers.summary import finish, job_of, prepare_sweep_dir


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
