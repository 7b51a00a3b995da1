"""What the trainings of one network share (``Retrain``, ``TrainCell``): the config-injected optimizer with a
per-epoch schedule (cosine to 0 by default) brought to the current epoch at the point of use, so a resumed run
continues exactly; optional grad-norm clipping; the epoch means of the training loss and accuracy."""

from __future__ import annotations

from typing import Any, Optional

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lightning_nas.core.module import NASModule, build_optimizer


class NetworkTraining(NASModule):
    """Base of a training of ``self.net`` (set by the subclass) with one optimizer."""

    net: nn.Module

    def __init__(self, optimizer: OptimizerCallable, lr_scheduler: Optional[LRSchedulerCallable], grad_clip: float):
        super().__init__()
        self.optimizer_spec, self.lr_scheduler_factory, self.grad_clip = optimizer, lr_scheduler, grad_clip

    def configure_optimizers(self) -> Any:
        opt = build_optimizer(self.optimizer_spec, self.net.parameters(), "model.optimizer")
        sched = self.weight_schedule(opt, self.lr_scheduler_factory, eta_min=0.0)  # default: cosine to 0
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: Any = None,
                                    gradient_clip_algorithm: Any = None) -> None:
        if self.grad_clip > 0:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Lightning's end-of-epoch step is replaced by ``sync_lr_schedule`` in ``training_step``."""

    def log_training(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        """``train/loss`` and ``train/acc``, epoch means."""
        self.train_acc.update(logits.detach(), y)
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)

    def analysis_network(self) -> nn.Module:
        return self.net
