"""Checkpoint I/O, in one place: every checkpoint is written beside its target and renamed into place, every one
is read with torch's safe unpickler and a bad file is named in one line, and the best checkpoint is tracked across
resumes.

Lightning's own save writes a temporary file in $TMPDIR and copies it over the target when the run folder is on
another filesystem (a tmpfs /tmp, a network or cluster scratch folder): the copy truncates the target first, so a
kill or a full disk mid-copy destroys a good checkpoint. Here a checkpoint on disk is always either the old whole
file or the new whole file."""

import errno
import os
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from litvision import UserError, remove_orphans, temporary_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """The Trainer's checkpoint I/O (plugins=[AtomicCheckpointIO()]): atomic saves, clear loads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        save(checkpoint, Path(path))

    def load_checkpoint(self, path, map_location: Any = "cpu", weights_only: bool | None = None) -> dict[str, Any]:
        return read(path, map_location=map_location)  # also Lightning's own files (ddp_spawn's weights)


def save(checkpoint: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file beside `path`, flushed to disk, then renamed onto it. A failed save leaves
    `path` as it was and no temporary file; one that fails for lack of space says where and how much is free."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path.parent)  # what a killed save left
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError of its zip writer
        tmp.unlink(missing_ok=True)
        if _no_space(e):
            free = shutil.disk_usage(path.parent).free
            raise UserError(f"no space left to save {path.name} in {path.parent} ({free / 2**20:.0f} MiB free): "
                            "free some space or set hydra.run.dir to a larger disk; the checkpoints already there "
                            "are whole") from None
        raise


def _no_space(error: BaseException | None) -> bool:
    """Whether a full disk is behind `error`: torch's zip writer raises its own error while the OSError that
    says so is in its context."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def load(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """A litvision checkpoint, read with torch.load(weights_only=True), or a UserError that names the file and says
    what is wrong with it: missing, empty, truncated or corrupt, refused because it holds code, or not litvision's.
    Memory-mapped: checking a file before Lightning loads it reads its hyperparameters, not its tensors."""
    checkpoint = read(path, map_location, mmap=True)
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict) or not {"net", "class_names", "input_shape"} <= hparams.keys() or \
            "state_dict" not in checkpoint:
        raise UserError(f"checkpoint {path} is not a litvision checkpoint (no network config, class names and "
                        "weights in it): name a .ckpt written by train.py")
    return checkpoint


def read(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """What torch.save wrote to `path`, read with torch.load(weights_only=True); a UserError for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ckpt_path={path} is not a file: name a .ckpt written by train.py, e.g. "
                        "logs/train/runs/DATE/checkpoints/last.ckpt")
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint {path} is empty (0 bytes): it was not written whole; use another checkpoint "
                        "of the run (checkpoints/epoch_*.ckpt or last.ckpt)")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as file:
            started = file.read(4) == b"PK\x03\x04"
        what = "truncated (its end is missing: was the save interrupted?)" if started else \
            "not a checkpoint: torch.save did not write it (a corrupt file, or a file of another kind)"
        raise UserError(f"checkpoint {path} is {what}; use another checkpoint of the run")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # torch's UnpicklingError repeats advice litvision never gives
        message = str(e)
        if "Weights only load failed" in message:
            found = next((line.strip() for line in message.splitlines() if "Unsupported" in line), "")
            raise UserError(f"checkpoint {path} is refused: it holds pickled code or objects, not plain data "
                            f"({found or 'not tensors, numbers, strings, lists or dicts'}). litvision loads only "
                            "plain-data checkpoints, as train.py writes them") from None
        raise UserError(f"checkpoint {path} is corrupt ({type(e).__name__}: {message.splitlines()[0][:200]}); "
                        "use another checkpoint of the run") from None
    return checkpoint


def mismatch(checkpoint: dict[str, Any], hparams: dict[str, Any], choices: dict[str, str]) -> str | None:
    """What makes a checkpoint unfit to resume this run's model: another network, data or optimizer (None: fit).
    choices: this run's config-group choices, to name both sides in the user's words (model=lenet)."""
    theirs, saved = checkpoint["hyper_parameters"], checkpoint.get("litvision", {}).get("choices", {})

    def named(group: str, node: dict[str, Any], side: dict[str, str]) -> str:
        target = (node or {}).get("_target_", "none").rsplit(".", 1)[-1]
        return f"{group}={side[group]} ({target})" if group in side else f"{group} {target}"

    for group, key in (("model", "net"), ("optimizer", "optimizer")):
        if (theirs.get(key) or {}).get("_target_") != (hparams.get(key) or {}).get("_target_"):
            return f"trained with {named(group, theirs.get(key), saved)}, this run is {named(group, hparams.get(key), choices)}"
    if theirs["net"] != hparams["net"]:
        changed = sorted(k for k in theirs["net"].keys() | hparams["net"].keys()
                         if theirs["net"].get(k) != hparams["net"].get(k))
        return "its network differs: " + ", ".join(f"model.{k}={theirs['net'].get(k)} there, {hparams['net'].get(k)} "
                                                    "here" for k in changed)
    for key in ("class_names", "input_shape"):
        if list(theirs[key]) != list(hparams[key]):
            data = f" (data={saved['data']})" if "data" in saved else ""
            return f"trained on data{data} with {key} {theirs[key]}, this run's data has {hparams[key]}"
    return None


class BestCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that keeps the best over the whole run when training resumes in another folder: Lightning
    forgets the best score then, so the first resumed epoch would become "best" and be tested. The earlier best
    (still on disk) stays the one to beat, and files outside this run's folder are never deleted."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        with warnings.catch_warnings():  # "The dirpath has changed ...": handled here
            warnings.simplefilter("ignore", UserWarning)
            super().load_state_dict(state_dict)
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            return
        kept = {path: score for path, score in state_dict.get("best_k_models", {}).items() if Path(path).is_file()}
        if self.best_model_path in kept:
            self.best_model_score, self.best_k_models = state_dict["best_model_score"], kept
            self.kth_best_model_path, self.kth_value = state_dict["kth_best_model_path"], state_dict["kth_value"]
        else:  # the earlier best file is gone: the best of this part of the run is all there is
            self.best_model_path = ""

    def _remove_checkpoint(self, trainer, filepath: str) -> None:
        if Path(filepath).resolve().parent == Path(self.dirpath).resolve():
            super()._remove_checkpoint(trainer, filepath)
