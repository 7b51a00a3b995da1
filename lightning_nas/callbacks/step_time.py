"""Mean wall-clock seconds per training step, logged per epoch as ``perf/step_time_s`` (CUDA synchronised).

For comparing methods' cost inside one session; report ratios, not absolute seconds.
"""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback


class StepTime(Callback):
    """``times`` holds the current epoch's per-step seconds (benchmarks read it)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    @staticmethod
    def _sync(trainer: pl.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.times = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        self._sync(trainer)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        self._sync(trainer)
        self.times.append(time.perf_counter() - self._t0)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.times:
            pl_module.log("perf/step_time_s", sum(self.times) / len(self.times), sync_dist=True)  # rank mean
