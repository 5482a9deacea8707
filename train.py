"""Train, test and report an image classifier: `python train.py model=lenet trainer.accelerator=gpu`.

Configs live in conf/ (train.yaml composes the groups); see README.md."""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

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
    except MissingMandatoryValue as e:  # a ??? value in the config that the command line did not give
        raise_or_exit(UserError(f"{e.full_key} is not set: give it, e.g. {e.full_key}=/path/to/images"
                                if e.full_key == "data.root" else f"{e.full_key} is not set: give {e.full_key}=VALUE"),
                      multirun)
    except UserError as e:
        raise_or_exit(e, multirun)
    except Exception as e:
        from optuna import TrialPruned

        if isinstance(e, TrialPruned):
            log.info(f"pruned: {e}")
            raise
        log.exception("the run failed")  # the traceback goes to the run's train.log too
        if multirun:  # the sweeper lists the job as failed, with this error, and runs the others
            raise
        sys.exit(1)
    return metrics.get(cfg.optimized_metric) if cfg.get("optimized_metric") else None


def raise_or_exit(error: UserError, multirun: bool) -> None:
    """A user error is one line; in a sweep the job fails with it and the others run."""
    log.error(f"error: {error}")
    if multirun:
        raise error
    sys.exit(1)


if __name__ == "__main__":
    main()
