"""SNAS: stochastic neural architecture search (Xie et al., ICLR 2019; official SNAS-Series/SNAS-Series, ``SNAS/``:
``model_search.py:37-49,281-285,665-670``, ``train_search.py:245-271,394-513``, ``utils.py:128-148``).

Each edge's op weights are a relaxed one-hot sample ``softmax((alpha + G) / tau)`` with Gumbel noise G (Eq. 2):
every op runs, weighted (no straight-through, unlike GDAS); one sample per cell type per forward, shared by all
cells of that type. alpha's init mean (official N(1, 0.01)) does not matter: the sample is invariant to a shift of
a row; set ``alpha_init_std: 0.01`` on the supernet for the official spread.

Two loops (``levels``):
- ``single`` (official SNAS, default): one forward and one backward of the training loss on the *same* batch give
  both gradients; weights are clipped at 5 and alpha at ``arch_grad_clip`` = 10, then both optimizers step (alpha:
  plain SGD 3e-4, the official single-GPU optimizer; its distributed runs use Adam). The official code trains on
  all 50k training images and only monitors on the test set: use ``ClassificationDataModule`` (its val loop is the
  test set); with a ``SearchDataModule`` the alpha half of each batch is unused.
- ``bilevel`` (DrNAS's NB201 reimplementation, ``201-space/train_search.py --method snas``, the source of the SNAS
  row NB201 comparisons quote): the DARTS first-order loop, alpha on a validation batch (Adam 3e-4, wd 1e-3), each
  step with its own sample.

Temperature, set per epoch: ``tau_e = max(tau_min, tau_max - (tau_max - tau_min) * (e + tau_shift) / tau_epochs)``.
Official SNAS: 1 -> 0.03 with ``tau_shift = 1`` over a hard-coded ``tau_epochs = 150`` whatever the search's length
(``utils.py:144``); DrNAS's SNAS: 10 -> 1, ``tau_shift = 0`` over the search's epochs (``tau_epochs: null``).

Differences from the official code, by design: the Gumbel noise comes from ``step_generator`` (same on every DDP
rank); validation and test use ``softmax(alpha)`` (deterministic; the official evaluates samples); the genotype is
the supernet's rule (NB201 per-edge argmax; on the DARTS space DARTS's top-2 rule, which the official code has as
``genotype()``: the child it logs, ``genotype_edge_all``, keeps all 14 edges, which the DARTS genotype cannot hold).
The resource constraint (``resource_lambda`` > 0; official ``--resource_efficient --method reparametrization
--log_penalty``, lambda 1.5e-3 in the README command, off in the code's defaults as here): ``snas_resource.py``; it
enters the loss that trains alpha (single level: the one loss; bilevel: the architecture loss). The
search-time drop-path (0.3) of the README's DARTS-space command is ``drop_path``: each edge's mixed output is
drop-pathed per sample while training (the official ``isinstance(op, Identity)`` test never holds for a mixed op).
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import torch
from pytorch_lightning.cli import OptimizerCallable
from torch import nn

from lightning_nas.errors import ConfigError
from lightning_nas.methods.bilevel.frame import BilevelSearch
from lightning_nas.methods.bilevel.sampling import relaxed_gumbel_sample
from lightning_nas.methods.bilevel.snas_resource import cost_tables, log_resource_penalty

#: SNAS's single-GPU alpha optimizer: plain SGD, lr 3e-4, no momentum, no weight decay
SNAS_ARCH_SGD = {"class_path": "torch.optim.SGD", "init_args": {"lr": 3e-4}}
SAMPLE_STREAM, ARCH_STREAM = 47, 53


class SNAS(BilevelSearch):
    """SNAS on any supernet (defaults: the official single-level DARTS-space settings)."""

    def __init__(self, *args: Any, arch_optimizer: OptimizerCallable = SNAS_ARCH_SGD,
                 levels: Literal["single", "bilevel"] = "single", tau_max: float = 1.0, tau_min: float = 0.03,
                 tau_epochs: Optional[int] = 150, tau_shift: int = 1, arch_grad_clip: float = 10.0,
                 resource_lambda: float = 0.0, resource_ratio: float = 1.0, drop_path: float = 0.0, **kwargs: Any):
        """
        Args:
            arch_optimizer: alpha's optimizer (official single GPU: SGD 3e-4).
            levels: ``single`` (official SNAS) or ``bilevel`` (DrNAS's NB201 SNAS).
            tau_max, tau_min, tau_epochs, tau_shift: the temperature schedule (module docstring); ``tau_epochs:
                null`` anneals over the search's epochs.
            arch_grad_clip: max gradient norm of alpha (official 10); 0 disables it.
            resource_lambda: weight of the log resource penalty (0: off, the code's default; README 1.5e-3).
            resource_ratio: the reduction cells' weight in it (official ``--ratio`` 1).
            drop_path: per-sample drop-path probability of each edge's output while training (README: 0.3).
        """
        super().__init__(*args, arch_optimizer=arch_optimizer, **kwargs)
        if levels not in ("single", "bilevel"):
            raise ConfigError(f"model.levels must be 'single' or 'bilevel', got {levels!r}")
        if not 0 < tau_min <= tau_max:
            raise ConfigError(f"need 0 < model.tau_min <= model.tau_max, got {tau_min}, {tau_max}")
        if tau_epochs is not None and tau_epochs < 1 or tau_shift < 0 or arch_grad_clip < 0:
            raise ConfigError(f"need model.tau_epochs >= 1 (or null), tau_shift >= 0 and arch_grad_clip >= 0; got "
                              f"{tau_epochs}, {tau_shift}, {arch_grad_clip}")
        if resource_lambda < 0 or resource_ratio < 0:
            raise ConfigError(f"model.resource_lambda and resource_ratio must be >= 0, got {resource_lambda}, "
                              f"{resource_ratio}")
        if not 0 <= drop_path < 1:
            raise ConfigError(f"model.drop_path must be in [0, 1), got {drop_path}")
        self.resource_lambda, self.resource_ratio, self.drop_path = resource_lambda, resource_ratio, drop_path
        self.supernet.drop_path_prob = drop_path
        self._costs: Optional[list[tuple[str, torch.Tensor]]] = None
        self.levels, self.tau_max, self.tau_min = levels, tau_max, tau_min
        self.tau_epochs, self.tau_shift, self.arch_grad_clip = tau_epochs, tau_shift, arch_grad_clip

    def tau(self) -> float:
        """The temperature of the current epoch."""
        period = self.tau_epochs
        if period is None:
            period = max(int(self.trainer.max_epochs or 1), 1) if self._trainer is not None else 1
        tau = self.tau_max - (self.tau_max - self.tau_min) * (self.current_epoch + self.tau_shift) / period
        return max(self.tau_min, tau)

    def sample(self, stream: int, detach: bool = False) -> dict[str, torch.Tensor]:
        """One relaxed sample per cell type at the current temperature, from (seed, step, stream)."""
        g, tau = self.step_generator(stream), self.tau()
        return {key: relaxed_gumbel_sample(a.detach() if detach else a, tau, g)
                for key, a in self.supernet.arch_logits().items()}

    # ---- bilevel: DARTS's loop with samples ----------------------------------------------------------------
    def weight_logits(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.supernet(x, mixing=self.sample(SAMPLE_STREAM, detach=True))

    def resource_penalty(self, mixing: dict[str, torch.Tensor], image_size: int) -> torch.Tensor:
        """SNAS's log resource penalty of the sample ``mixing`` (costs priced once, at ``image_size``)."""
        if self._costs is None:
            self._costs = cost_tables(self.supernet.edge_shapes(image_size), self.supernet.primitives)
        return log_resource_penalty(mixing, self._costs, self.resource_ratio)

    def arch_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mixing = self.sample(ARCH_STREAM)
        loss = self.loss(self.supernet(x, mixing=mixing), y)
        if self.resource_lambda:
            loss = loss + self.resource_lambda * self.resource_penalty(mixing, x.shape[-1])
        return loss

    def transform_arch_grads(self) -> None:
        if self.arch_grad_clip > 0:
            nn.utils.clip_grad_norm_(self.supernet.arch_parameters(), self.arch_grad_clip)

    # ---- single level -----------------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> None:
        if self.levels == "bilevel":
            return super().training_step(batch, batch_idx)
        self.sync_lr_schedule()
        x, y = batch["train"]
        w_opt, a_opt = self.optimizers()
        a_opt.zero_grad(set_to_none=True)
        train_alpha = self.trains_architecture()
        # one backward of the train loss on one sample fills both gradients (alpha's only when it trains)
        mixing = self.sample(SAMPLE_STREAM, detach=not train_alpha)
        alphas = self.supernet.arch_parameters()
        extra: list[Optional[torch.Tensor]] = [None] * len(alphas)
        if train_alpha and self.resource_lambda:  # depends on alpha only: its gradient is added to the backward's
            penalty = self.resource_penalty(mixing, x.shape[-1])
            extra = list(torch.autograd.grad(self.resource_lambda * penalty, alphas, retain_graph=True,
                                             allow_unused=True))
            self.log("snas/resource_penalty", penalty.detach(), on_step=False, on_epoch=True)
        self.weight_step(w_opt, lambda: self.supernet(x, mixing=mixing), y, self.grad_clip)
        if train_alpha:
            grads = [torch.zeros_like(a) if a.grad is None else a.grad for a in alphas]
            grads = self._all_reduce_mean([g if e is None else g + e for g, e in zip(grads, extra)])
            for a, g in zip(alphas, grads):
                a.grad = g
            self.transform_arch_grads()
            a_opt.step()
            a_opt.zero_grad(set_to_none=True)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.log_replicated("snas/tau", self.tau())

    def summary_extras(self) -> dict[str, Any]:
        return {"snas": {"levels": self.levels, "tau": {"max": self.tau_max, "min": self.tau_min,
                                                        "epochs": self.tau_epochs, "shift": self.tau_shift},
                         "resource": {"lambda": self.resource_lambda, "ratio": self.resource_ratio},
                         "drop_path": self.drop_path}}
