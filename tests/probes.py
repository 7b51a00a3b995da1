"""Callbacks the tests attach from the command line (``--trainer.callbacks``)."""

from __future__ import annotations

import json

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class StopAfterBatches(Callback):
    """Simulates an interruption: save a checkpoint after ``batches`` training batches, then stop."""

    def __init__(self, batches: int, checkpoint: str):
        self.batches, self.checkpoint, self.seen = batches, checkpoint, 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        self.seen += 1
        if self.seen == self.batches:
            trainer.save_checkpoint(self.checkpoint)
            trainer.should_stop = True


class AlphaRecorder(Callback):
    """Writes this rank's alphas after every training step to ``<prefix>.rank<R>.jsonl``."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        alphas = [a.detach().cpu().double().flatten().tolist() for a in pl_module.supernet.arch_parameters()]
        with open(f"{self.prefix}.rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps({"epoch": trainer.current_epoch, "batch": batch_idx, "alphas": alphas}) + "\n")
