"""Stops a run whose weights or architecture parameters became NaN or Inf, before it writes them anywhere.

Lightning's ``detect_anomaly`` re-runs autograd checks on every op and is far too slow to leave on. This check is
cheap: every ``every_n_steps`` training steps, and before every validation and epoch end (so before any checkpoint
is written), it takes the norms of all parameters and floating-point buffers (BN statistics overflow first when
activations explode) with one fused call and one device-to-host read. A NaN or Inf
loss reaches the parameters at the next optimizer step (its gradients are not finite), so checking the parameters
catches it; a parameter so large that its norm overflows counts as diverged too. On failure the run stops with a
``DivergedError`` (the CLI prints it and exits 2) naming the step range and the last checkpoint, which still holds
finite weights because no checkpoint is written after the check fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from lightning_nas.core.module import NASModule
from lightning_nas.errors import ConfigError, DivergedError


def finite_parameters(module: torch.nn.Module) -> bool:
    """Whether every parameter and floating-point buffer (BN statistics) is finite (one fused norm, one host
    read)."""
    params = [p.detach() for p in module.parameters() if p.numel()]
    params += [b for b in module.buffers() if b.is_floating_point() and b.numel()]
    if not params:
        return True
    norms = torch._foreach_norm(params)
    return bool(torch.stack([n.to(params[0].device) for n in norms]).isfinite().all())


class FiniteCheck(Callback):
    def __init__(self, every_n_steps: int = 20, checkpoint_dir: Optional[str] = None):
        """
        Args:
            every_n_steps: check after every n-th training step (and always before validation and at epoch end).
            checkpoint_dir: where the run's last.ckpt lives (named in the error).
        """
        if every_n_steps < 1:
            raise ConfigError(f"run.finite_check_every must be >= 1, got {every_n_steps}")
        self.every_n_steps, self.checkpoint_dir = every_n_steps, checkpoint_dir
        self.last_good_step = 0

    def _check(self, trainer: pl.Trainer, pl_module: pl.LightningModule, when: str) -> None:
        step = pl_module.search_steps if isinstance(pl_module, NASModule) else trainer.global_step
        if finite_parameters(pl_module):
            self.last_good_step = step
            return
        last = Path(self.checkpoint_dir) / "last.ckpt" if self.checkpoint_dir else None
        resume = (f"the last checkpoint, {last}, was written before and holds finite values"
                  if last is not None and last.is_file() else "no checkpoint was written before it")
        raise DivergedError(
            "training diverged: the weights, architecture parameters or BN statistics became NaN or Inf between "
            f"search step {self.last_good_step} and step {step} (epoch {trainer.current_epoch + 1}, seen {when}); "
            f"{resume}. "
            "Lower the learning rates (model.init_args.weight_optimizer / arch_optimizer lr), keep gradient "
            "clipping on (model.init_args.grad_clip), or check the data for NaN values")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if (batch_idx + 1) % self.every_n_steps == 0:
            self._check(trainer, pl_module, "during training")

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._check(trainer, pl_module, "before validation")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer, pl_module, "at the end of the epoch")
