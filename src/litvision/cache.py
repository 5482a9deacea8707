"""Decoded datasets kept on disk, so that only the first run pays for decoding.

A cache file is named by a hash of what was asked (dataset, size, channels) and of every source file's path,
size and modification time: a changed source gets a new file. Files are written to a temporary name and
renamed into place, so that runs building the same cache at once (a parallel sweep) never read or leave a
half-written one."""

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from litvision import atomic_write

log = logging.getLogger(__name__)


def cached(build: Callable[[], dict[str, Any]], name: str, sources: Sequence[str | Path], options: Any,
           cache_dir: Path | None) -> dict:
    """build(), or its result saved by an earlier run with the same name, options and sources. Plain data only
    (tensors, lists, strings): the file loads with torch.load(weights_only=True)."""
    if cache_dir is None:
        return build()
    path = Path(cache_dir) / f"{name}-{signature(sources, options)}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True, mmap=True)
    data = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            torch.save(data, tmp)
        log.info(f"decoded {name} cached in {path}")
    except OSError as e:  # a read-only or full disk costs the next run a decode, not this run
        log.warning(f"could not cache decoded {name} in {cache_dir} ({e}); set data.cache_dir to a writable folder")
    return data


def signature(sources: Sequence[str | Path], options: Any) -> str:
    """Hash of the options and of each source's (absolute) path, size and modification time."""
    digest = hashlib.sha256(repr(options).encode())
    for path in sources:
        stat = os.stat(path)
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]
