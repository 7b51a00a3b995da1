"""GDAS: gradient-based search with a differentiable sampler (Dong & Yang, CVPR 2019; official
D-X-Y/AutoDL-Projects @ f46486e, ``exps/NAS-Bench-201-algos/GDAS.py``, ``search_model_gdas.py:114-129``).

Per edge one op is drawn by the Gumbel-max trick on ``log_softmax(alpha)`` at temperature tau, and its weight is
the straight-through hard one-hot ``one_hot(argmax) - probs.detach() + probs``: only the drawn op runs in the
forward (the supernet's hard mode, ``forward(x, mixing=hard, path=drawn)``; on NAS-Bench-201 the edge's other
weights enter as scalars, 0 in the forward, so every alpha gets a gradient, as AutoDL's cell; on the DARTS space
only the drawn op's weight enters, as AutoDL's DARTS-space cell). A draw with inf/NaN is redrawn (AutoDL's guard).

One step, as the official loop (no unrolling): the weight step first, on the train batch with a fresh draw
(alpha held constant, weights clipped at 5), then the architecture step on the validation batch with another draw
(Adam). tau falls linearly per epoch, ``tau_max - (tau_max - tau_min) * epoch / (epochs - 1)`` (10 -> 0.1).

Differences from the official code, by design: the Gumbel noise comes from ``step_generator`` (seeded by seed and
step: the same draw on every DDP rank and after a resume; the official code draws from the device RNG per
replica); the architecture step leaves BN running statistics alone (the frame's rule, see ``frame.py``);
validation and test evaluate the argmax child (``forward(x, path=argmax alpha)``), deterministic where the
official search evaluates sampled nets. The genotype is NAS-Bench-201's per-edge argmax, ``none`` included
(official); on the DARTS space ``genotype_rule: pooled`` (default, official ``search_model_gdas_nasnet.py:128-143``)
pools every (op, input) pair of a node and keeps the top 2 (both may share an input), ``darts`` is DARTS's rule.
Each draw reads the drawn ops to the host (they pick the modules that run), as any single-path forward must.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from pytorch_lightning.strategies import DDPStrategy

from lightning_nas.core.host_reads import host_read
from lightning_nas.core.module import compile_options
from lightning_nas.errors import ConfigError
from lightning_nas.methods.bilevel.frame import BilevelSearch
from lightning_nas.methods.bilevel.sampling import gumbel_noise
from lightning_nas.search_spaces.space import Path

WEIGHT_STREAM, ARCH_STREAM = 31, 37


def gumbel_hard_sample(alpha: torch.Tensor, tau: float, generator: torch.Generator
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """One GDAS draw per row of ``alpha`` (edges x ops): the straight-through hard weights and the drawn ops (on
    alpha's device). The Gumbel noise is drawn on the CPU from ``generator``; a draw with inf is redrawn. The
    official ``search_cells.py`` also redraws when the softmax has inf or NaN; that happens only for a non-finite
    alpha (on which its loop never ends; here the divergence check stops the run) or when a logit overflows the
    float range, (noise + log_softmax(alpha)) / tau > 3.4e38 in float32, i.e. tau below about 3e-37 (the noise of
    a float32 draw is at most about 104): short of those, checking the noise on the host decides the same."""
    while True:
        gumbels = gumbel_noise(alpha.shape, alpha.dtype, generator)
        if bool(torch.isfinite(gumbels).all()):
            break
    probs = F.softmax((alpha.log_softmax(-1) + gumbels.to(alpha.device)) / tau, dim=-1)
    index = probs.argmax(-1)
    hard = F.one_hot(index, alpha.shape[-1]).to(probs) - probs.detach() + probs
    return hard, index


class GDAS(BilevelSearch):
    """GDAS on any supernet with the hard mode (defaults: the official tau 10 -> 0.1)."""

    def __init__(self, *args: Any, tau_max: float = 10.0, tau_min: float = 0.1,
                 genotype_rule: Literal["pooled", "darts"] = "pooled", **kwargs: Any):
        """
        Args:
            tau_max, tau_min: the Gumbel-softmax temperature at the first and the last epoch (linear per epoch).
            genotype_rule: the DARTS-space derivation: ``pooled`` (official GDAS) or ``darts``; NB201 has one rule.
        """
        super().__init__(*args, **kwargs)
        if not 0 < tau_min <= tau_max:
            raise ConfigError(f"need 0 < model.tau_min <= model.tau_max, got {tau_min}, {tau_max}")
        if genotype_rule not in ("pooled", "darts"):
            raise ConfigError(f"model.genotype_rule must be 'pooled' or 'darts', got {genotype_rule!r}")
        if compile_options(self.compile_spec, torch.device("cpu")) is not None:  # ``{}`` compiles too
            raise ConfigError("GDAS runs another sub-network at every draw, and torch.compile would compile each one "
                              "anew: set model.compile false")
        self.genotype_rule = genotype_rule
        self.tau_max, self.tau_min = tau_max, tau_min
        self._eval_path: Optional[Path] = None

    def setup(self, stage: str) -> None:
        strategy = self.trainer.strategy
        if isinstance(strategy, DDPStrategy):  # ops off the drawn path get no gradient, on every rank alike
            strategy._ddp_kwargs["find_unused_parameters"] = True

    def genotype(self) -> Any:
        return self.supernet.genotype(rule=self.genotype_rule)

    def tau(self) -> float:
        """The temperature of the current epoch."""
        epochs = int(self.trainer.max_epochs or 1) if self._trainer is not None else 1
        return self.tau_max - (self.tau_max - self.tau_min) * self.current_epoch / max(epochs - 1, 1)

    def sample(self, stream: int, detach: bool = False) -> tuple[dict[str, torch.Tensor], Path]:
        """Hard weights and drawn ops per cell type, from (seed, step, stream): the same on every rank."""
        g = self.step_generator(stream)
        tau = self.tau()
        mixing, picks = {}, {}
        for key, alpha in self.supernet.arch_logits().items():
            mixing[key], picks[key] = gumbel_hard_sample(alpha.detach() if detach else alpha, tau, g)
        with host_read("GDAS runs only the drawn op of each edge: the host needs the draw (one read per sample)"):
            drawn = torch.stack(list(picks.values())).tolist()
        return mixing, {key: tuple(ops) for key, ops in zip(picks, drawn)}

    def weight_logits(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mixing, path = self.sample(WEIGHT_STREAM, detach=True)
        return self.supernet(x, mixing=mixing, path=path)

    def architecture_gradient(self, x_t: torch.Tensor, y_t: torch.Tensor, x_v: torch.Tensor,
                              y_v: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        mixing, path = self.sample(ARCH_STREAM)
        loss = self.loss(self.supernet(x_v, mixing=mixing, path=path), y_v)
        return list(torch.autograd.grad(loss, self.supernet.arch_parameters())), loss.detach()

    def training_step(self, batch: dict, batch_idx: int) -> None:
        """The official order: weights first, then alpha (DARTS does alpha first)."""
        self.sync_lr_schedule()
        x_t, y_t = batch["train"]
        x_v, y_v = batch["val"]
        self.weight_step(self.optimizers()[0], lambda: self.weight_logits(x_t, y_t), y_t, self.grad_clip)
        if self.trains_architecture():
            self.arch_loss_mean.update(self.architecture_step(x_t, y_t, x_v, y_v))
            self.log("search/arch_loss", self.arch_loss_mean, on_step=False, on_epoch=True)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.log_replicated("gdas/tau", self.tau())

    # ---- evaluation: the argmax child -----------------------------------------------------------------
    def argmax_path(self) -> Path:
        return {key: tuple(a.detach().argmax(-1).tolist()) for key, a in self.supernet.arch_logits().items()}

    def _start_eval(self) -> None:
        self._eval_path = self.argmax_path()

    on_validation_epoch_start = on_test_epoch_start = _start_eval

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.supernet(x, path=self._eval_path if self._eval_path is not None else self.argmax_path())

    def summary_extras(self) -> dict[str, Any]:
        return {"tau": {"max": self.tau_max, "min": self.tau_min}}
