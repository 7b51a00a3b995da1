"""The stochastic relaxations of the bilevel family, drawn from an explicit generator (the method's
``step_generator``), so that every DDP rank draws the same sample at a step and a resumed run draws what the
uninterrupted one would have.

- Gumbel noise ``-log(E)``, E ~ Exp(1) (AutoDL's GDAS and ``F.gumbel_softmax``; SNAS's ``-log(-log U)`` has the
  same law): GDAS's hard straight-through sample and SNAS's relaxed sample.
- Dirichlet samples with the pathwise (implicit reparameterisation) gradient of ``torch.distributions.Dirichlet``'s
  ``rsample`` (DrNAS): the same sample as ``Dirichlet(c).rsample()`` under the same RNG state.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


def gumbel_noise(shape: torch.Size, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """Standard Gumbel noise ``-log(E)``, E ~ Exp(1), on the generator's device."""
    return -torch.empty(shape, dtype=dtype, device=generator.device).exponential_(generator=generator).log()


def relaxed_gumbel_sample(alpha: torch.Tensor, tau: float, generator: torch.Generator) -> torch.Tensor:
    """SNAS's relaxed one-hot per row of ``alpha`` (edges x ops): ``softmax((alpha + G) / tau)`` (Xie et al., ICLR
    2019, Eq. 2; official ``model_search.py:665-670``; DrNAS's NB201 SNAS: ``F.gumbel_softmax(hard=False)``)."""
    noise = gumbel_noise(alpha.shape, alpha.dtype, generator).to(alpha.device)
    return F.softmax((alpha + noise) / tau, dim=-1)


class _DirichletSample(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, concentration: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = torch._sample_dirichlet(concentration, generator=generator)
        ctx.save_for_backward(x, concentration)
        return x

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, concentration = ctx.saved_tensors  # torch.distributions.dirichlet._Dirichlet_backward
        total = concentration.sum(-1, True).expand_as(concentration)
        grad = torch._dirichlet_grad(x, concentration, total)
        return grad * (grad_output - (x * grad_output).sum(-1, True)), None


def dirichlet_rsample(concentration: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One reparameterised sample per row of ``concentration`` (Dirichlet's ``rsample``, drawn from
    ``generator``, which must be on ``concentration``'s device: the sample never visits the host)."""
    return _DirichletSample.apply(concentration, generator)
