"""DrNAS: differentiable architecture search as distribution learning (Chen et al., ICLR 2021; official
xiangning-chen/DrNAS @ the stored snapshot, ``utils.py:167-194``, ``architect.py:14-54``,
``201-space/search_model.py:57-72,121-128``, ``201-space/train_search.py:252-276``).

Each edge's op weights are a sample of ``Dirichlet(elu(alpha) + 1)`` drawn with the pathwise gradient
(``rsample``): one sample per cell type per forward, shared by every cell of that type and the whole batch, a fresh
one for the architecture step (validation batch) and for the weight step (train batch, alpha constant). The loop is
DARTS's first order (architecture step first, then the weights, clipped at 5).

The anchor regulariser (paper Sec. 3.1): ``reg_type: l2`` (official default) is ``reg_scale * alpha`` added to the
alpha gradient, the official Adam ``weight_decay=reg_scale`` (Adam's coupled weight decay adds exactly this term
before its moments), so the default ``arch_optimizer`` has no weight decay of its own; ``kl`` adds
``reg_scale * sum_edges KL(Dir(elu(alpha)+1) || Dir(1))`` to the validation loss (official ``_get_kl_reg``). An arch
optimizer with its own weight decay is refused (it would be a second anchor).

The genotype is the supernet's rule on softmax(alpha) (official: NB201 per-edge argmax, ``none`` included, equal to
the argmax of the Dirichlet mean; DARTS space the top-2 rule, whose op set there has no ``none``).

Differences from the official code, by design: samples come from ``step_generator`` (the same on every DDP rank;
the official draws from the global RNG, one ``Dirichlet`` per edge row: the same numbers under the same RNG state,
tested); validation and test use the Dirichlet mean (deterministic; the official evaluates a fresh sample per
batch); the weight step's clip norm covers the weights only (official NB201: ``clip_grad_norm_(model.parameters())``
also counts the alpha gradient of the weight loss, alpha being a module parameter there). Not offered: the
second-order ``--unrolled`` option and the progressive scheme (partial channels 4 -> 2 with pruning of the
weakest ops and net2net widening between stages); fixed partial channels are the supernet's ``partial_channels``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pytorch_lightning.cli import OptimizerCallable
from torch.distributions import Dirichlet, kl_divergence

from lightning_nas.errors import ConfigError
from lightning_nas.methods.bilevel.frame import BilevelSearch
from lightning_nas.methods.bilevel.sampling import dirichlet_rsample

#: DrNAS's alpha optimizer: Adam 3e-4, betas (0.5, 0.999); the L2 anchor (its weight decay) is ``reg_scale``
DRNAS_ARCH_ADAM = {"class_path": "torch.optim.Adam", "init_args": {"lr": 3e-4, "betas": [0.5, 0.999]}}
WEIGHT_STREAM, ARCH_STREAM = 41, 43


def concentration(alpha: torch.Tensor) -> torch.Tensor:
    """DrNAS's Dirichlet concentration ``elu(alpha) + 1`` (positive, 1 at alpha = 0)."""
    return F.elu(alpha) + 1


def dirichlet_kl_to_uniform(alphas: list[torch.Tensor]) -> torch.Tensor:
    """``sum_edges KL(Dir(elu(alpha)+1) || Dir(1))`` over every edge of every cell type."""
    return sum(kl_divergence(Dirichlet(concentration(a)), Dirichlet(torch.ones_like(a))).sum() for a in alphas)


class DrNAS(BilevelSearch):
    """DrNAS on any supernet (defaults: the official NB201 settings, L2 anchor 1e-3)."""

    def __init__(self, *args: Any, arch_optimizer: OptimizerCallable = DRNAS_ARCH_ADAM,
                 reg_type: Literal["l2", "kl"] = "l2", reg_scale: float = 1e-3, **kwargs: Any):
        """
        Args:
            arch_optimizer: the alpha optimizer without weight decay (official Adam 3e-4, betas (0.5, 0.999)).
            reg_type: the anchor regulariser: ``l2`` (official default, as Adam's weight decay) or ``kl``.
            reg_scale: its weight (official 1e-3 for both; the official help says KL may need another value).
        """
        super().__init__(*args, arch_optimizer=arch_optimizer, **kwargs)
        if reg_type not in ("l2", "kl"):
            raise ConfigError(f"model.reg_type must be 'l2' or 'kl', got {reg_type!r}")
        if reg_scale < 0:
            raise ConfigError(f"model.reg_scale must be >= 0, got {reg_scale}")
        self.reg_type, self.reg_scale = reg_type, reg_scale

    def configure_optimizers(self) -> Any:
        optimizers = super().configure_optimizers()
        if any(g.get("weight_decay", 0) for g in optimizers[0][1].param_groups):
            raise ConfigError("DrNAS's anchor regulariser is model.reg_type / model.reg_scale; model.arch_optimizer's "
                              "weight_decay would add a second one: set it to 0")
        return optimizers

    def sample(self, stream: int, detach: bool = False) -> dict[str, torch.Tensor]:
        """One Dirichlet sample of op weights per cell type, from (seed, step, stream)."""
        g = self.step_generator(stream)
        return {key: dirichlet_rsample(concentration(a.detach() if detach else a), g)
                for key, a in self.supernet.arch_logits().items()}

    def weight_logits(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.supernet(x, mixing=self.sample(WEIGHT_STREAM, detach=True))

    def arch_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """CE on a fresh sample, plus the KL anchor with ``reg_type: kl`` (official ``_loss``)."""
        loss = self.loss(self.supernet(x, mixing=self.sample(ARCH_STREAM)), y)
        if self.reg_type == "kl" and self.reg_scale:
            loss = loss + self.reg_scale * dirichlet_kl_to_uniform(list(self.supernet.arch_logits().values()))
        return loss

    def architecture_gradient(self, x_t: torch.Tensor, y_t: torch.Tensor, x_v: torch.Tensor,
                              y_v: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        grads, loss = super().architecture_gradient(x_t, y_t, x_v, y_v)
        if self.reg_type == "l2" and self.reg_scale:  # Adam's coupled weight decay, as the official optimizer
            grads = [g + self.reg_scale * a.detach() for g, a in zip(grads, self.supernet.arch_parameters())]
        return grads, loss

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The Dirichlet mean as the op weights."""
        mean = {}
        for key, a in self.supernet.arch_logits().items():
            c = concentration(a)
            mean[key] = c / c.sum(-1, keepdim=True)
        return self.supernet(x, mixing=mean)

    def summary_extras(self) -> dict[str, Any]:
        return {"drnas": {"reg_type": self.reg_type, "reg_scale": self.reg_scale}}
