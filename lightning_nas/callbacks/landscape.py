"""Dominant Hessian eigenvalue of the validation loss with respect to alpha (Zela et al., ICLR 2020; the
metric SDARTS, Chen & Hsieh 2020, reduces): a rising value is the usual sign of a collapsing DARTS search.

Power iteration on exact Hessian-vector products (double backward) over a fixed set of held-out batches,
chosen once at the start of fit from the datamodule's validation loader, identical on every rank. The model
stays in train mode (batch-statistics BN, as SDARTS's code measures it) with BN running statistics untouched.
``weight_decay`` adds lambda * I (SDARTS includes the alpha weight decay, 1e-3); the default 0 is the Hessian
of the loss alone. The eigenvalue of largest magnitude is reported with its sign. The callback works on any
method through ``NASModule.analysis_*`` (also w.r.t. the weights: ``target: weights``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from lightning_nas.analysis.landscape import BNMode, bn_mode
from lightning_nas.callbacks.probes import Split, Target, analysis_probe, check_choice, probe_batches
from lightning_nas.callbacks.schedule import every_nth_or_last_epoch
from lightning_nas.errors import ConfigError

OWNER = "HessianEigenvalue"


def dominant_eigenvalue(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], iterations: int = 20,
                        tol: float = 1e-4, generator: Optional[torch.Generator] = None,
                        weight_decay: float = 0.0) -> tuple[float, int]:
    """(eigenvalue of largest magnitude of d^2 loss / d params^2 + weight_decay * I, iterations used)."""
    params = list(params)
    with torch.compiler.set_stance("force_eager"):  # a compiled network has no double backward: run it eagerly
        grads_or_none = torch.autograd.grad(loss_fn(), params, create_graph=True, allow_unused=True)
    # parameters the loss does not use (e.g. a cell's unused input preprocessing) have a zero Hessian block
    params = [p for p, g in zip(params, grads_or_none) if g is not None]
    grads = [g for g in grads_or_none if g is not None]
    v = [torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p) for p in params]
    norm = torch.sqrt(sum((t * t).sum() for t in v))
    v = [t / norm for t in v]
    eig = 0.0
    for it in range(1, iterations + 1):
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        hv = [h + weight_decay * t for h, t in zip(hv, v)]
        new_eig = float(sum((h * t).sum() for h, t in zip(hv, v)))  # Rayleigh quotient, ||v|| = 1
        norm = torch.sqrt(sum((h * h).sum() for h in hv))
        if norm == 0:
            return 0.0, it
        v = [h / norm for h in hv]
        if it > 1 and abs(new_eig - eig) <= tol * max(1.0, abs(new_eig)):
            return new_eig, it
        eig = new_eig
    return eig, iterations


class HessianEigenvalue(Callback):
    """Logs ``landscape/hessian_eig`` (alpha) or ``landscape/hessian_eig_weights`` every ``every_n_epochs``
    epochs and after the last (after the epoch's training; ``None``: after the last only).

    ``target: weights`` takes the Hessian of the loss w.r.t. the network's weights (a retraining's sharpness, as
    Shu et al. compare cells); ``split`` and ``bn_mode`` choose the probe batches and BN statistics (defaults:
    held-out batches, batch statistics, as above)."""

    def __init__(self, every_n_epochs: Optional[int] = 1, num_batches: int = 1, iterations: int = 20, tol: float = 1e-4,
                 weight_decay: float = 0.0, seed: int = 0, target: Target = "alpha", split: Split = "heldout",
                 bn_mode: BNMode = "train", batch_size: Optional[int] = None):
        if (every_n_epochs is not None and every_n_epochs < 1) or num_batches < 1 or iterations < 1:
            raise ConfigError("HessianEigenvalue: every_n_epochs, num_batches and iterations must be positive")
        check_choice(OWNER, "target", target, ("weights", "alpha"))
        check_choice(OWNER, "split", split, ("heldout", "train"))
        check_choice(OWNER, "bn_mode", bn_mode, ("eval", "train"))
        self.every_n_epochs, self.num_batches, self.iterations = every_n_epochs, num_batches, iterations
        self.tol, self.weight_decay, self.seed = tol, weight_decay, seed
        self.target, self.split, self.bn_mode, self.batch_size = target, split, bn_mode, batch_size
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.history: list[tuple[int, float]] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        analysis_probe(pl_module, self.target, OWNER)
        self.batches = probe_batches(trainer, self.split, self.num_batches, self.batch_size, OWNER)

    def compute(self, pl_module: pl.LightningModule) -> tuple[float, int]:
        probe = analysis_probe(pl_module, self.target, OWNER)
        with bn_mode(probe.net, self.bn_mode), torch.enable_grad():
            def loss_fn() -> torch.Tensor:
                return sum(probe.loss_fn(probe.logits_fn(x), y) for x, y in self.batches) / len(self.batches)

            g = torch.Generator().manual_seed(self.seed)
            return dominant_eigenvalue(loss_fn, probe.params, self.iterations, self.tol, g, self.weight_decay)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not every_nth_or_last_epoch(trainer, self.every_n_epochs):
            return
        eig, iters = self.compute(pl_module)
        self.history.append((trainer.current_epoch, eig))
        suffix = "" if self.target == "alpha" else "_weights"
        pl_module.log(f"landscape/hessian_eig{suffix}", eig, sync_dist=True)
        pl_module.log(f"landscape/power_iterations{suffix}", float(iters), sync_dist=True)
