"""A callback for the DDP test, given to train.py as `+callbacks.seen._target_=seen_samples.SeenSamples`: each
process writes which training-set positions its first epoch drew and how many images it trained on."""

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
                {"world_size": trainer.world_size, "positions": order, "images": self.images}))
