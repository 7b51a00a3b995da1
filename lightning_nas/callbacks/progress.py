"""One line per training epoch with the search metrics, so every run shows progress (with or without a progress
bar, in a terminal or a log file). Added by the CLI to every ``fit``."""

from __future__ import annotations

import math
import time
from typing import Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.callbacks.progress import ProgressBar

#: the metrics an epoch line shows, in this order, when the run logs them
KEYS = ("search/arch_loss", "search/weight_loss", "train/acc", "val/acc", "search/evaluated", "search/best_fitness",
        "benchmark/cifar10_test", "landscape/hessian_eig", "wsv/gt_tau", "wsv/s_tau",
        "disturbance/drop_k1")


class EpochLines(Callback):
    """Prints ``epoch E/N | metric value | ... | seconds`` once an epoch's metrics are final (rank 0)."""

    def __init__(self) -> None:
        self._start = time.time()
        self._pending: Optional[int] = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.time()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pending = trainer.current_epoch  # its epoch-level metrics are reduced after this hook

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(trainer)

    def _flush(self, trainer: pl.Trainer) -> None:
        if self._pending is None or not trainer.is_global_zero:
            self._pending = None
            return
        metrics = trainer.callback_metrics
        parts = [f"epoch {self._pending + 1}/{trainer.max_epochs if trainer.max_epochs not in (None, -1) else '?'}"]
        for key in KEYS:
            if key in metrics:
                value = float(metrics[key])
                if math.isfinite(value):
                    parts.append(f"{key} {value:.4g}")
        parts.append(f"{time.time() - self._start:.0f} s")
        line = " | ".join(parts)
        bar = trainer.progress_bar_callback
        if isinstance(bar, ProgressBar):
            bar.print(line)  # keeps a live progress bar intact
        else:
            print(line, flush=True)
        self._pending = None
