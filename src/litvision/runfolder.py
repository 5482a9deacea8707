"""A run folder belongs to one run at a time: the run that holds its lock writes the folder's config, checkpoints,
logs and metrics; a second run given the same folder (hydra.run.dir=X twice at once) refuses to start.

The lock is an flock on RUN/.lock, which the operating system releases when its process ends, however it ends:
a killed run does not leave the folder locked. Hydra's own copy of the config (.hydra/) is written here, after
the lock is taken (hydra.output_subdir is null in conf/hydra/default.yaml), so a refused run overwrites nothing."""

import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from litvision import UserError, atomic_write


@contextmanager
def owned(folder: Path) -> Iterator[None]:
    """Hold `folder`'s lock for the block; a UserError naming the run that holds it if another process does."""
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".lock", "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UserError(f"run folder {folder} is in use by {holder}: wait for it to end, or give this run "
                            "another folder (leave hydra.run.dir unset for a new dated one)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"run {os.getpid()} started {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


def save_hydra_config(cfg: DictConfig) -> None:
    """What Hydra writes into RUN/.hydra/ (config, hydra and overrides), once the run owns its folder. A resumed
    run keeps the first run's files and writes its own beside them, in .hydra/resumed_DATE/."""
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    folder = Path(hydra.runtime.output_dir) / ".hydra"
    if (folder / "config.yaml").exists():
        folder = folder / f"resumed_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    for name, node in (("config", cfg), ("hydra", OmegaConf.create({"hydra": hydra})),
                       ("overrides", hydra.overrides.task)):
        with atomic_write(folder / f"{name}.yaml") as tmp:
            OmegaConf.save(node, tmp)
