"""Train, test and report an image classifier: `python train.py model=lenet trainer.accelerator=gpu`.

Configs live in conf/ (train.yaml composes the groups); see README.md."""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from litvision import UserError

log = logging.getLogger("litvision")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns cfg.optimized_metric for Hydra sweepers."""
    # imported here, after Hydra has parsed the command line: --help stays fast
    from lightning.pytorch.utilities import rank_zero_only

    from litvision.training import train

    logging.getLogger("lightning").handlers.clear()  # Hydra's handlers print (and file) its messages already
    if rank_zero_only.rank > 0:  # a DDP process Lightning started (same run folder): rank 0 keeps the log file
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            root.removeHandler(handler)

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        metrics = train(cfg)
    except UserError as e:
        log.error(f"error: {e}")
        if multirun:
            raise  # the sweeper lists the job as failed and runs the others
        sys.exit(1)
    except Exception as e:
        if multirun:  # Hydra hands the exception to the sweeper but logs nothing: put it in the job's log
            from optuna import TrialPruned

            if isinstance(e, TrialPruned):
                log.info(f"pruned: {e}")
            else:
                log.exception("the job failed")
        raise
    return metrics.get(cfg.optimized_metric) if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    main()
