"""An exponential moving average of the weights: Lightning's EMAWeightAveraging, whose average is validated and
checkpointed, and here also the weights tested after training."""

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn


class EMA(EMAWeightAveraging):
    """Lightning's callback loads a checkpoint's raw (not averaged) weights whenever its average exists, so the
    trainer that just fitted would test the best checkpoint's raw weights (litvision's train() tests with the
    same trainer). Only resuming a fit restores them; testing and validating a checkpoint use its averaged
    weights, as a new process (train=false ckpt_path=...) does."""

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
