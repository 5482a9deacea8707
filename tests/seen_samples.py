"""A callback for the DDP test, given to train.py as `+callbacks.seen._target_=seen_samples.SeenSamples`: each
process writes which training-set positions its first epoch drew and how many images it trained on."""

import hashlib
import json
from pathlib import Path

import lightning as L
import torch


class SeenSamples(L.Callback):
    def __init__(self, out: str) -> None:
        self.out, self.images = Path(out), 0

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if trainer.current_epoch == 0:
            self.images += len(batch[1])

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.current_epoch == 0:
            order = torch.cat(list(trainer.train_dataloader.batch_sampler)).tolist()  # the epoch's draw, again
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(
                {"world_size": trainer.world_size, "positions": order, "images": self.images,
                 "images_file": _mapped_file(trainer.datamodule.train_set.images)}))


def _mapped_file(tensor: torch.Tensor) -> str | None:
    """The file whose memory map holds `tensor` (None: memory of this process alone), from /proc/self/maps."""
    address = tensor.untyped_storage().data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, _, _, _, _, *path = line.split()
        start, end = (int(part, 16) for part in span.split("-"))
        if start <= address < end:
            return path[0] if path and path[0].startswith("/") else None
    return None


class SeenImages(L.Callback):
    """For a streamed dataset (no batch sampler to ask): each process writes a digest of every training image of
    its first epoch."""

    def __init__(self, out: str) -> None:
        self.out, self.digests = Path(out), []

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if trainer.current_epoch == 0:
            self.digests += [hashlib.sha1(image.cpu().numpy().tobytes()).hexdigest() for image in batch[0]]

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.current_epoch == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(
                {"world_size": trainer.world_size, "digests": self.digests}))
