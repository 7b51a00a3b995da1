"""β-DARTS: Beta-decay regularisation (Ye et al., CVPR 2022; official Sunshine-Ye/Beta-DARTS @ f307704,
``optimizers/darts/architect.py:55-85``).

The architecture step adds ``lambda * L_beta`` to the validation loss, with L_beta the mean over edges of
``logsumexp(alpha_edge)`` of the raw (pre-softmax) alpha; its gradient is ``softmax(alpha_edge) / |E|``, so each
alpha decays in proportion to its softmax weight. ``lambda = lambda_start + lambda_step * epoch`` (official:
``0 + 50 * epoch / 100``, i.e. 0.5 per epoch, tied to the epoch index and not to the search's length: 0 -> 49.5 over
the official 100 NB201 epochs). On the DARTS space L_beta is the mean over the edges of both cells (the official
DARTS-space script does not run, see baselines.md; this is the natural reading of the NB201 code). Adam's weight
decay on alpha stays on, as in the official code.

Second order: the official unrolled step does *not* add L_beta (``beta_in_unrolled: false``, the default, follows
it); ``true`` adds its gradient there too (it does not depend on the weights, so it is the same term).

The weight-LR schedule: the official NB201 script calls ``scheduler.step()`` before each epoch, which under
PyTorch >= 1.1 shifts its cosine schedule one epoch ahead (epoch e trains at the (e+1)-th value, the last epoch at
eta_min); ``lr_schedule_shift: 1`` reproduces it, the default 0 is DARTS's (epoch e at the e-th value).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from lightning_nas.errors import ConfigError
from lightning_nas.methods.bilevel.darts import DARTS


def beta_decay_loss(alphas: list[torch.Tensor]) -> torch.Tensor:
    """L_beta: the mean over every edge of every cell type of ``logsumexp`` of its raw alpha row."""
    return torch.cat([torch.logsumexp(a, dim=-1).reshape(-1) for a in alphas]).mean()


class BetaDARTS(DARTS):
    """DARTS with the Beta-decay regulariser on the architecture loss (first order by default, as published)."""

    def __init__(self, *args: Any, lambda_start: float = 0.0, lambda_step: float = 0.5,
                 beta_in_unrolled: bool = False, lr_schedule_shift: int = 0, **kwargs: Any):
        """
        Args:
            lambda_start, lambda_step: the regulariser's weight ``lambda_start + lambda_step * epoch`` (official:
                0 and 0.5).
            beta_in_unrolled: with ``order: 2``, add L_beta's gradient to the unrolled hypergradient too (the
                official code does not: false).
            lr_schedule_shift: epochs the weight-LR schedule runs ahead (official NB201 script: 1; default 0).
        """
        super().__init__(*args, **kwargs)
        if lambda_start < 0 or lambda_step < 0:
            raise ConfigError(f"model.lambda_start and model.lambda_step must be >= 0, got {lambda_start}, "
                              f"{lambda_step}")
        if lr_schedule_shift not in (0, 1):
            raise ConfigError(f"model.lr_schedule_shift must be 0 or 1, got {lr_schedule_shift}")
        self.lambda_start, self.lambda_step, self.beta_in_unrolled = lambda_start, lambda_step, beta_in_unrolled
        self.lr_schedule_shift = lr_schedule_shift

    def sync_lr_schedule(self) -> None:
        """The frame's per-epoch schedule, ``lr_schedule_shift`` epochs ahead."""
        sched = self.lr_schedulers()
        with warnings.catch_warnings():  # stepping before the first optimizer step is the official shift itself
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            while sched.last_epoch < self.current_epoch + self.lr_schedule_shift:
                sched.step()

    def beta_weight(self) -> float:
        """lambda at the current epoch."""
        return self.lambda_start + self.lambda_step * self.current_epoch

    def architecture_gradient(self, x_t: torch.Tensor, y_t: torch.Tensor, x_v: torch.Tensor,
                              y_v: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        grads, loss = super().architecture_gradient(x_t, y_t, x_v, y_v)
        weight = self.beta_weight()
        if weight and (self.order == 1 or self.beta_in_unrolled):
            alphas = self.supernet.arch_parameters()
            beta = torch.autograd.grad(beta_decay_loss(alphas), alphas)
            grads = [g + weight * b for g, b in zip(grads, beta)]
        return grads, loss

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        with torch.no_grad():
            self.log_replicated("beta/lambda", self.beta_weight())
            self.log_replicated("beta/loss", float(beta_decay_loss(self.supernet.arch_parameters())))

    def summary_extras(self) -> dict[str, Any]:
        return {"beta": {"lambda_start": self.lambda_start, "lambda_step": self.lambda_step,
                         "in_unrolled": self.beta_in_unrolled, "lr_schedule_shift": self.lr_schedule_shift}}
