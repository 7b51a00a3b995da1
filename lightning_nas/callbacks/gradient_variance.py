"""Mini-batch gradient variance of the loss w.r.t. a method's weights (or alpha) every N epochs (Shu, Wang & Cai,
ICLR 2020, Sec. 4.2: lower in the wide, shallow cells NAS picks).

``landscape/grad_variance_<target>`` = mean over ``num_batches`` fixed mini-batches b of ||g_b - g_mean||^2 on the
whole parameter vector (``lightning_nas.analysis.landscape.gradient_variance``: a mini-batch estimate, which
scales with 1 / batch size), ``landscape/grad_mean_sq_norm_<target>`` = ||g_mean||^2 beside it. The batches are
fixed and unaugmented (default: the weights' training images, in the datamodule's eval batch size); BN in eval
mode by default (running statistics, as the loss-landscape code the paper's measurement builds on), ``train``
for batch statistics. Every rank computes the same value on the same batches.
"""

from __future__ import annotations

from typing import Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from lightning_nas.analysis.landscape import BNMode, batch_gradients, bn_mode, gradient_variance
from lightning_nas.callbacks.probes import Split, Target, analysis_probe, check_choice, probe_batches
from lightning_nas.callbacks.schedule import every_nth_or_last_epoch
from lightning_nas.errors import ConfigError

OWNER = "GradientVariance"


class GradientVariance(Callback):
    def __init__(self, every_n_epochs: int = 1, num_batches: int = 8, batch_size: Optional[int] = None,
                 split: Split = "train", target: Target = "weights", bn_mode: BNMode = "eval"):
        check_choice(OWNER, "target", target, ("weights", "alpha"))
        check_choice(OWNER, "split", split, ("heldout", "train"))
        check_choice(OWNER, "bn_mode", bn_mode, ("eval", "train"))
        if every_n_epochs < 1 or num_batches < 2:
            raise ConfigError(f"{OWNER}: every_n_epochs must be >= 1 and num_batches >= 2 (a variance needs two "
                              f"batches), got {every_n_epochs} and {num_batches}")
        self.every_n_epochs, self.num_batches, self.batch_size = every_n_epochs, num_batches, batch_size
        self.split, self.target, self.bn_mode = split, target, bn_mode
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.history: list[tuple[int, float, float]] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        analysis_probe(pl_module, self.target, OWNER)
        self.batches = probe_batches(trainer, self.split, self.num_batches, self.batch_size, OWNER)

    def compute(self, pl_module: pl.LightningModule) -> tuple[float, float]:
        """(gradient variance, squared norm of the mean gradient) at the current parameters."""
        probe = analysis_probe(pl_module, self.target, OWNER)
        with bn_mode(probe.net, self.bn_mode):
            return gradient_variance(batch_gradients(probe.logits_fn, probe.loss_fn, probe.params, self.batches))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not every_nth_or_last_epoch(trainer, self.every_n_epochs):
            return
        variance, mean_sq = self.compute(pl_module)
        self.history.append((trainer.current_epoch, variance, mean_sq))
        pl_module.log_replicated(f"landscape/grad_variance_{self.target}", variance)
        pl_module.log_replicated(f"landscape/grad_mean_sq_norm_{self.target}", mean_sq)
