"""airbench's lookahead weight averaging as a Lightning callback."""

from typing import Any

import lightning as L
import torch


class Lookahead(L.Callback):
    """Every `every` optimizer steps, move a slow copy of the network's weights and BatchNorm statistics towards the
    trained ones (slow = decay * slow + (1 - decay) * fast), then restart training from the slow copy. The decay
    grows as base**every * progress**3: early on the copy follows training closely; late, it averages over many
    steps, which smooths the noise of SGD. After the last step the network is the slow copy, so the checkpoint
    written at the end of the epoch holds the averaged weights."""

    def __init__(self, every: int = 5, base: float = 0.95) -> None:
        self.every, self.base = every, base
        self.slow: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        saved = self.slow  # a resumed run brings its slow copy from the checkpoint
        self.slow = {name: saved.get(name, value).detach().to(value.device, copy=True)
                     for name, value in self._floats(pl_module)}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step, total = trainer.global_step, trainer.estimated_stepping_batches
        if step >= total:
            decay = 1.0
        elif step % self.every == 0:
            decay = self.base ** self.every * (step / total) ** 3
        else:
            return
        with torch.no_grad():
            for name, fast in self._floats(pl_module):
                slow = self.slow[name]
                slow.lerp_(fast, 1 - decay)
                fast.copy_(slow)

    @staticmethod
    def _floats(pl_module: L.LightningModule):
        return ((name, value) for name, value in pl_module.state_dict().items() if value.is_floating_point())

    def state_dict(self) -> dict[str, Any]:
        return {"slow": self.slow}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.slow = state_dict["slow"]
