"""DARTS bilevel search, first and second order (Liu et al., ICLR 2019, Eq. 6-8; official ``architect.py``).

Second order: the unrolled weights are exactly the ``torch.optim.SGD`` step the weight optimizer would take on the
train batch (``sgd_unrolled_step``: weight decay, momentum, dampening, nesterov, per parameter group; parameters
without a gradient are left alone, as SGD does), ``w' = w - lr * (c * dL_train/dw + k)`` with ``c`` and ``k`` from
the optimizer's state; the implicit term is ``lr * c`` times the finite-difference Hessian-vector product around the
original ``w`` on the train batch, ``R = hvp_epsilon / ||v||`` (Eq. 8). Other weight optimizers (Adam, ...) and
SGD with ``maximize`` are refused for order 2: their unroll is not implemented, and approximating it silently would
give a different hypergradient than the one the config names.

``unroll: official`` is instead the unrolled step of the official DARTS ``architect.py`` and of AutoDL's DARTS-V2
(the code behind NAS-Bench-201's DARTS-V2 row): ``w' = w - lr * (momentum * buf + g + wd * w)`` with ``buf`` the
optimizer's momentum buffer (zero before the first step), whatever its ``nesterov`` flag, and the implicit term
``lr`` times the Hessian-vector product. It describes SGD with momentum and weight decay only: dampening is refused.
``exact`` (default) is the step the optimizer really takes; the two differ with nesterov (by a factor of order one
in the implicit term) and after the first step.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import torch

from lightning_nas.errors import ConfigError
from lightning_nas.methods.bilevel.frame import BilevelSearch


class DARTS(BilevelSearch):
    def variant(self) -> dict[str, Any]:
        return {**super().variant(), "order": self.order}

    def __init__(self, *args: Any, order: Literal[1, 2] = 1, hvp_epsilon: float = 0.01,
                 unroll: Literal["exact", "official"] = "exact", **kwargs: Any):
        """
        Args:
            order: 1 (first order: dL_val/dalpha) or 2 (unrolled, Eq. 7-8).
            hvp_epsilon: finite-difference scale r of Eq. 8; the step is R = r / ||v|| (DARTS: 0.01).
            unroll: the unrolled weight step of order 2: ``exact`` (the optimizer's own step, nesterov included) or
                ``official`` (DARTS's / AutoDL's formula, see the module docstring).
        """
        super().__init__(*args, **kwargs)
        if order not in (1, 2):
            raise ConfigError(f"model.order must be 1 or 2, got {order}")
        if hvp_epsilon <= 0:
            raise ConfigError(f"model.hvp_epsilon must be positive, got {hvp_epsilon}")
        if unroll not in ("exact", "official"):
            raise ConfigError(f"model.unroll must be 'exact' or 'official', got {unroll!r}")
        self.order, self.hvp_epsilon, self.unroll = order, hvp_epsilon, unroll

    def configure_optimizers(self) -> Any:
        optimizers = super().configure_optimizers()
        if self.order == 2:
            check_unrollable(optimizers[0][0], self.unroll)  # before the first step, not in the middle of the search
        return optimizers

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
        """g = dL_val(w', alpha)/dalpha - lr c * hvp (Eq. 7-8) with w' the SGD step ``optimizer`` (default: the
        weight optimizer) would take; the weights are restored afterwards."""
        net = self.supernet
        alphas, weights = net.arch_parameters(), net.weight_parameters()
        opt = optimizer if optimizer is not None else self._weight_opt()
        original = [p.detach().clone() for p in weights]
        try:
            g_train = torch.autograd.grad(self._train_loss(x_t, y_t), weights, allow_unused=True)
            with torch.no_grad():
                scales = sgd_unrolled_step(opt, weights, g_train, self.unroll)
            loss_val = self.arch_loss(x_v, y_v)
            grads = torch.autograd.grad(loss_val, alphas + weights, allow_unused=True)
            d_alpha = [torch.zeros_like(a) if g is None else g for a, g in zip(alphas, grads[:len(alphas)])]
            v = [torch.zeros_like(p) if g is None else g for p, g in zip(weights, grads[len(alphas):])]
            if len(set(scales)) == 1:  # one learning rate and momentum state for all weights (the usual case)
                hvp = self.hessian_vector_product(v, original, x_t, y_t)
                implicit = [scales[0] * h for h in hvp]
            else:  # d w'_p / d g_p differs per parameter: the product with the scaled vector is exact
                implicit = self.hessian_vector_product([s * vi for s, vi in zip(scales, v)], original, x_t, y_t)
        finally:
            with torch.no_grad():
                for p, w0 in zip(weights, original):
                    p.copy_(w0)
        return [da - h for da, h in zip(d_alpha, implicit)], loss_val.detach()

    def hessian_vector_product(self, v: list[torch.Tensor], w: list[torch.Tensor], x: torch.Tensor,
                               y: torch.Tensor) -> list[torch.Tensor]:
        """(d^2 L_train / dalpha dw) v by central differences around ``w`` (Eq. 8)."""
        net = self.supernet
        alphas, weights = net.arch_parameters(), net.weight_parameters()
        norm = torch.sqrt(sum((t.double() ** 2).sum() for t in v))
        # r stays a device scalar (no host read); v = 0 gives a zero product, not 0/0; a NaN v stays NaN
        r = torch.where(norm == 0, torch.zeros_like(norm), self.hvp_epsilon / norm)

        def grad_at(sign: float) -> tuple[torch.Tensor, ...]:
            with torch.no_grad():
                for p, w0, vi in zip(weights, w, v):
                    p.copy_(w0 + sign * r * vi)
            return torch.autograd.grad(self._train_loss(x, y), alphas)

        g_plus, g_minus = grad_at(1.0), grad_at(-1.0)
        return [torch.where(norm == 0, torch.zeros_like(gp), (gp - gm) / (2 * r)) for gp, gm in zip(g_plus, g_minus)]


def check_unrollable(opt: torch.optim.Optimizer, unroll: str = "exact") -> None:
    """The second-order step unrolls ``torch.optim.SGD`` (exactly, or with the official formula); refuse anything
    else with the fix."""
    if not isinstance(opt, torch.optim.SGD):
        raise ConfigError(f"model.order 2 unrolls the weight step of torch.optim.SGD (momentum, dampening, nesterov "
                          f"and weight decay exactly); the weight optimizer is {type(opt).__name__}, whose unroll is "
                          "not implemented: use torch.optim.SGD as model.weight_optimizer, or model.order 1")
    if any(g.get("maximize", False) for g in opt.param_groups):
        raise ConfigError("model.order 2 cannot unroll SGD with maximize=True: set maximize false")
    if unroll == "official" and any(float(g.get("dampening", 0.0)) for g in opt.param_groups):
        raise ConfigError("model.unroll official is DARTS's formula lr * (momentum * buf + g + wd * w), which has no "
                          "dampening: set the weight optimizer's dampening to 0, or model.unroll exact")


def sgd_unrolled_step(opt: torch.optim.Optimizer, params: list[torch.Tensor],
                      grads: tuple[Optional[torch.Tensor], ...], rule: str = "exact") -> list[float]:
    """Apply to ``params`` (in place) the step ``torch.optim.SGD.step`` would take with ``grads``, leaving the
    optimizer's state untouched, and return per parameter ``lr * c`` = d w' / d grad (0 for a parameter without a
    gradient, which SGD skips). With d = g + wd w: no momentum: d (c = 1); first step (no buffer): buf = d,
    nesterov d + mu buf (c = 1 + mu) else buf (c = 1); later: buf = mu buf + (1 - dampening) d, nesterov
    d + mu buf (c = 1 + mu (1 - dampening)) else buf (c = 1 - dampening).

    ``rule="official"``: DARTS's ``_compute_unrolled_model`` (and AutoDL's DARTS-V2) instead, ``mu buf + g + wd w``
    with the optimizer's momentum buffer (zero before the first step; nesterov ignored), c = 1."""
    check_unrollable(opt, rule)
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    scales = []
    for p, g in zip(params, grads):
        if g is None:
            scales.append(0.0)
            continue
        group = group_of[id(p)]
        lr, mu = float(group["lr"]), float(group.get("momentum", 0.0))
        damp, nesterov, wd = float(group.get("dampening", 0.0)), bool(group.get("nesterov", False)), \
            float(group.get("weight_decay", 0.0))
        d = g + wd * p if wd else g
        buf = opt.state.get(p, {}).get("momentum_buffer")
        if rule == "official":
            step, c = (d if buf is None else mu * buf + d), 1.0
        elif mu == 0:
            step, c = d, 1.0
        elif buf is None:
            step, c = (d + mu * d, 1.0 + mu) if nesterov else (d, 1.0)
        else:
            new_buf = mu * buf + (1.0 - damp) * d
            step, c = (d + mu * new_buf, 1.0 + mu * (1.0 - damp)) if nesterov else (new_buf, 1.0 - damp)
        p.sub_(lr * step)
        scales.append(lr * c)
    return scales
