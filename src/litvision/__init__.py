"""litvision: image classifiers with PyTorch Lightning and Hydra."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf


class UserError(ValueError):
    """Bad input from the user (config value, data folder, image file). Its message names the bad value and
    the fix; the entry point prints it alone, without a traceback."""


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, renamed onto it when the block succeeds and removed when it fails: `path`
    is whole or as it was, never half-written, also when several processes write it at once."""
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def writable_output(path: Path) -> None:
    """Before any work: a UserError naming `path` if the folder it goes into is missing or not writable."""
    folder = path.parent.resolve()
    if not folder.is_dir():
        raise UserError(f"output={path}: the folder {folder} does not exist; create it or give another output")
    if not os.access(folder, os.W_OK):
        raise UserError(f"output={path}: the folder {folder} is not writable; give another output")


def temporary_path(path: Path) -> Path:
    """Where `path` is written before it is renamed into place: beside it (the rename is atomic only within one
    filesystem), one per process."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def remove_orphans(folder: Path) -> None:
    """Delete the temporary files (temporary_path) in `folder` whose writer is no longer running: what a killed
    process left behind."""
    for tmp in folder.glob("*.*.tmp"):
        pid = tmp.suffixes[-2][1:]
        if pid.isdigit() and not _running(int(pid)):
            tmp.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def instantiate(node, **kwargs):
    """Hydra's instantiate, with a UserError raised inside let through unwrapped: it needs no traceback."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, UserError):
            raise e.__cause__ from None
        raise


def resumed_run_dir(ckpt_path: str | None, train: bool, default: str) -> str:
    """hydra.run.dir (conf/hydra/default.yaml): a training run resumed from RUN/checkpoints/NAME.ckpt continues in
    RUN, so its checkpoints, logs and metrics stay together and the best checkpoint of every epoch is at hand; any
    other run (evaluation included) gets `default`, a new dated folder."""
    path = Path(ckpt_path) if ckpt_path else None
    if train and path is not None and path.is_file() and path.resolve().parent.name == "checkpoints":
        return str(path.resolve().parent.parent)
    return default


def wandb_offline() -> bool:
    """conf/logger/wandb.yaml: log offline unless this machine is logged in to Weights & Biases."""
    if os.environ.get("WANDB_API_KEY"):
        return False
    import netrc

    try:
        return netrc.netrc().authenticators("api.wandb.ai") is None
    except (OSError, netrc.NetrcParseError):
        return True


def run_folder(overrides: str, limit: int = 150) -> str:
    """A sweep job's folder name from its overrides (conf/hydra/default.yaml): what TensorBoard names the run by.
    Floats searched to 16 digits are written with 4 (optimizer.lr=0.1252), and a name longer than `limit` is cut
    and ends in a hash of the whole: a folder name may not exceed 255 bytes."""
    import hashlib
    import re

    name = re.sub(r"(?<==)-?\d+\.\d{5,}(?:e-?\d+)?(?=,|$)", lambda m: f"{float(m.group()):.4g}", overrides)
    if len(name.encode()) <= limit:
        return name
    return name.encode()[: limit - 9].decode(errors="ignore") + "~" + hashlib.sha1(overrides.encode()).hexdigest()[:8]


def if_bf16(bf16: Any, other: Any, *, _root_: Any) -> Any:
    """${if_bf16:A,B}: A when the run trains in bfloat16 (trainer.precision, or what auto picks on this hardware),
    else B. A recipe sized to its machine: bf16 matmuls with AMX ran 8x as fast as float32 without it (2,096
    against 263 GFLOP/s, litvision.hardware)."""
    from litvision.hardware import resolved_precision

    precision, _ = resolved_precision(_root_.trainer.precision, _root_.trainer.get("accelerator", "auto"))
    chosen = bf16 if precision.startswith("bf16") else other
    return OmegaConf.create(chosen) if isinstance(chosen, (list, dict)) else chosen  # a node, as a list value is


OmegaConf.register_new_resolver("if_bf16", if_bf16, replace=True)
OmegaConf.register_new_resolver("resumed_run_dir", resumed_run_dir, replace=True)
OmegaConf.register_new_resolver("run_folder", run_folder, replace=True)
OmegaConf.register_new_resolver("basename", lambda path: Path(path).name, replace=True)
OmegaConf.register_new_resolver("wandb_offline", wandb_offline, replace=True)
