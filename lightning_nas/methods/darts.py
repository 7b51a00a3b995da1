"""DARTS bilevel search, first and second order (Liu et al., ICLR 2019, Eq. 6-8; official ``architect.py``).

Second order: the unrolled weights follow the SGD step actually taken,
``w' = w - eta (momentum * buf + dL_train/dw + wd * w)``; the implicit term uses the finite-difference
Hessian-vector product around the original ``w`` on the train batch, ``R = hvp_epsilon / ||v||``.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import torch

from lightning_nas.errors import ConfigError
from lightning_nas.methods.base import BilevelSearch


class DARTS(BilevelSearch):
    def __init__(self, *args: Any, order: Literal[1, 2] = 1, hvp_epsilon: float = 0.01, **kwargs: Any):
        """
        Args:
            order: 1 (first order: dL_val/dalpha) or 2 (unrolled, Eq. 7-8).
            hvp_epsilon: finite-difference scale r of Eq. 8; the step is R = r / ||v|| (DARTS: 0.01).
        """
        super().__init__(*args, **kwargs)
        if order not in (1, 2):
            raise ConfigError(f"model.order must be 1 or 2, got {order}")
        if hvp_epsilon <= 0:
            raise ConfigError(f"model.hvp_epsilon must be positive, got {hvp_epsilon}")
        self.order, self.hvp_epsilon = order, hvp_epsilon

    def architecture_gradient(self, x_t: torch.Tensor, y_t: torch.Tensor, x_v: torch.Tensor,
                              y_v: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        if self.order == 1:
            return super().architecture_gradient(x_t, y_t, x_v, y_v)
        return self.unrolled_gradient(x_t, y_t, x_v, y_v)

    # ---- second order ----------------------------------------------------------------------------------
    def _train_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss(self.supernet(x), y)

    def unrolled_gradient(self, x_t: torch.Tensor, y_t: torch.Tensor, x_v: torch.Tensor, y_v: torch.Tensor,
                          optimizer: Optional[torch.optim.Optimizer] = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """g = dL_val(w', alpha)/dalpha - eta * hvp (Eq. 7-8); the weights are restored afterwards.

        eta, momentum and weight decay are read from ``optimizer`` (default: the weight optimizer).
        """
        net = self.supernet
        alphas, weights = net.arch_parameters(), net.weight_parameters()
        opt = optimizer if optimizer is not None else self._weight_opt()
        group = opt.param_groups[0]
        eta = float(group["lr"])
        momentum = float(group.get("momentum", 0.0))
        wd = float(group.get("weight_decay", 0.0))
        original = [p.detach().clone() for p in weights]
        try:
            g_train = torch.autograd.grad(self._train_loss(x_t, y_t), weights, allow_unused=True)
            with torch.no_grad():
                for p, g, w0 in zip(weights, g_train, original):
                    step = wd * w0 if g is None else g + wd * w0
                    buf = opt.state.get(p, {}).get("momentum_buffer")
                    if buf is not None and momentum:
                        step = step + momentum * buf
                    p.sub_(eta * step)
            loss_val = self.arch_loss(x_v, y_v)
            grads = torch.autograd.grad(loss_val, alphas + weights, allow_unused=True)
            d_alpha = [torch.zeros_like(a) if g is None else g for a, g in zip(alphas, grads[:len(alphas)])]
            v = [torch.zeros_like(p) if g is None else g for p, g in zip(weights, grads[len(alphas):])]
            hvp = self.hessian_vector_product(v, original, x_t, y_t)
        finally:
            with torch.no_grad():
                for p, w0 in zip(weights, original):
                    p.copy_(w0)
        return [da - eta * h for da, h in zip(d_alpha, hvp)], loss_val.detach()

    def hessian_vector_product(self, v: list[torch.Tensor], w: list[torch.Tensor], x: torch.Tensor,
                               y: torch.Tensor) -> list[torch.Tensor]:
        """(d^2 L_train / dalpha dw) v by central differences around ``w`` (Eq. 8)."""
        net = self.supernet
        alphas, weights = net.arch_parameters(), net.weight_parameters()
        norm = torch.sqrt(sum((t.double() ** 2).sum() for t in v))
        if norm == 0:
            return [torch.zeros_like(a) for a in alphas]
        r = self.hvp_epsilon / norm.item()

        def grad_at(sign: float) -> tuple[torch.Tensor, ...]:
            with torch.no_grad():
                for p, w0, vi in zip(weights, w, v):
                    p.copy_(w0 + sign * r * vi)
            return torch.autograd.grad(self._train_loss(x, y), alphas)

        g_plus, g_minus = grad_at(1.0), grad_at(-1.0)
        return [(gp - gm) / (2 * r) for gp, gm in zip(g_plus, g_minus)]
