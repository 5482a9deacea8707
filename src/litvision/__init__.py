"""litvision: image classifiers with PyTorch Lightning and Hydra."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class UserError(ValueError):
    """Bad input from the user (config value, data folder, image file). Its message names the bad value and
    the fix; the entry point prints it alone, without a traceback."""


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, renamed onto it when the block succeeds and removed when it fails: `path`
    is whole or as it was, never half-written, also when several processes write it at once."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # one per process; created with the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
