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

Progressive search (``stage_epochs``, ``stage_partial_channels``, ``stage_keep``; official
``201-space/train_search_progressive.py``, ``DARTS-space/train_search.py:118-159``): the search runs in stages; at a
later stage's start the ops of every edge are pruned to the ``keep`` strongest alphas (official ``prune``: pruned
ops stay out, pruned alphas are set to 0, kept ones keep their values), the supernet's partial channels go to the
stage's K with every op widened by net2net copies (``net2wider.py``; the SGD momentum buffers follow, the cosine
schedule continues over all epochs), and alpha is frozen for each stage's first ``stage_warmup_epochs`` (official
10). Pruned ops get weight 0 and the sample is renormalised over the kept ones (``process_step_vector`` with a mask);
the genotype and the evaluation use the masked, renormalised weights. A stage replaces parameters mid-run, which
DDP's reducer cannot follow: a progressive search runs on one device (refused otherwise).

Differences from the official code, by design: samples come from ``step_generator`` on the run's device (the same
on every DDP rank; the official draws from the global RNG, one ``Dirichlet`` per edge row: the same numbers under
the same RNG state, tested; a GPU's generator draws other numbers than the CPU's); validation and test use the
Dirichlet mean (deterministic; the official evaluates a fresh sample per batch); the weight step's clip norm covers
the weights only (official NB201: ``clip_grad_norm_(model.parameters())`` also counts the alpha gradient of the
weight loss, alpha being a module parameter there); the widening's random
channels come from the run's seeded generator. Not offered: the second-order ``--unrolled`` option.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from pytorch_lightning.cli import OptimizerCallable
from torch.distributions import Dirichlet, kl_divergence

from lightning_nas.errors import ConfigError
from lightning_nas.methods.bilevel.frame import BilevelSearch
from lightning_nas.methods.bilevel.net2wider import WideningLog, remap_momentum, widen_op
from lightning_nas.methods.bilevel.sampling import dirichlet_rsample
from lightning_nas.reproducibility import mix_seed

#: DrNAS's alpha optimizer: Adam 3e-4, betas (0.5, 0.999); the L2 anchor (its weight decay) is ``reg_scale``
DRNAS_ARCH_ADAM = {"class_path": "torch.optim.Adam", "init_args": {"lr": 3e-4, "betas": [0.5, 0.999]}}
WEIGHT_STREAM, ARCH_STREAM, WIDEN_STREAM = 41, 43, 61


def concentration(alpha: torch.Tensor) -> torch.Tensor:
    """DrNAS's Dirichlet concentration ``elu(alpha) + 1`` (positive, 1 at alpha = 0)."""
    return F.elu(alpha) + 1


def prune_mask(alpha: torch.Tensor, mask: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DrNAS's ``prune`` (``utils.py:197-207``): the ``keep`` largest alphas per row among the unpruned ones;
    returns (new alpha: kept values, 0 elsewhere; new mask)."""
    scores = torch.where(mask, alpha.detach(), alpha.detach() - 1e6)
    src, index = scores.topk(keep, dim=-1)
    new_alpha = torch.zeros_like(alpha).scatter(1, index, src)
    return new_alpha, torch.zeros_like(mask).scatter(1, index, torch.ones_like(index, dtype=torch.bool))


def masked(weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Weights outside ``mask`` zeroed and each row renormalised (``process_step_vector`` with a mask)."""
    w = weights * mask
    return w / w.sum(-1, keepdim=True)


def dirichlet_kl_to_uniform(alphas: list[torch.Tensor]) -> torch.Tensor:
    """``sum_edges KL(Dir(elu(alpha)+1) || Dir(1))`` over every edge of every cell type."""
    # validate_args=False: the concentrations are positive by construction, and checking reads them on the host
    return sum(kl_divergence(Dirichlet(concentration(a), validate_args=False),
                             Dirichlet(torch.ones_like(a), validate_args=False)).sum() for a in alphas)


class DrNAS(BilevelSearch):
    """DrNAS on any supernet (defaults: the official NB201 settings, L2 anchor 1e-3)."""

    def __init__(self, *args: Any, arch_optimizer: OptimizerCallable = DRNAS_ARCH_ADAM,
                 reg_type: Literal["l2", "kl"] = "l2", reg_scale: float = 1e-3,
                 stage_epochs: Optional[list[int]] = None, stage_partial_channels: Optional[list[int]] = None,
                 stage_keep: Optional[list[int]] = None, stage_warmup_epochs: int = 0, **kwargs: Any):
        """
        Args:
            arch_optimizer: the alpha optimizer without weight decay (official Adam 3e-4, betas (0.5, 0.999)).
            reg_type: the anchor regulariser: ``l2`` (official default, as Adam's weight decay) or ``kl``.
            reg_scale: its weight (official 1e-3 for both; the official help says KL may need another value).
            stage_epochs, stage_partial_channels, stage_keep: the progressive search's stages (all three or none):
                epochs, partial channels K and ops kept per edge of each (official DARTS space: [25, 25], [6, 4],
                [7, 4]; NB201: [50, 50], [4, 2], [5, 3]). The first K is the supernet's, the first keep all its ops.
            stage_warmup_epochs: alpha frozen for each stage's first epochs (official progressive: 10).
        """
        super().__init__(*args, arch_optimizer=arch_optimizer, **kwargs)
        if reg_type not in ("l2", "kl"):
            raise ConfigError(f"model.reg_type must be 'l2' or 'kl', got {reg_type!r}")
        if reg_scale < 0:
            raise ConfigError(f"model.reg_scale must be >= 0, got {reg_scale}")
        self.reg_type, self.reg_scale = reg_type, reg_scale
        stages = (stage_epochs, stage_partial_channels, stage_keep)
        if any(s is not None for s in stages):
            if any(s is None for s in stages) or len({len(s) for s in stages}) != 1 or len(stage_epochs) < 1:
                raise ConfigError("model.stage_epochs, stage_partial_channels and stage_keep go together, one entry "
                                  "per stage")
            n_ops = len(self.supernet.primitives)
            if stage_partial_channels[0] != self.supernet.partial_channels or stage_keep[0] != n_ops or \
                    any(k < 1 for k in stage_partial_channels) or any(e < 1 for e in stage_epochs) or \
                    any(not 1 <= b <= a for a, b in zip(stage_keep, stage_keep[1:])):
                raise ConfigError(f"the first stage must be the supernet as built (partial_channels "
                                  f"{self.supernet.partial_channels}, keep all {n_ops} ops), epochs >= 1, K >= 1 and "
                                  f"stage_keep non-increasing >= 1; got {stage_epochs}, {stage_partial_channels}, "
                                  f"{stage_keep}")
        if stage_warmup_epochs < 0:
            raise ConfigError(f"model.stage_warmup_epochs must be >= 0, got {stage_warmup_epochs}")
        self.stage_epochs, self.stage_partial_channels, self.stage_keep = stage_epochs, stage_partial_channels, \
            stage_keep
        self.stage_warmup_epochs = stage_warmup_epochs
        self.stage = 0  # the stage the supernet is shaped for
        for key, alpha in self.supernet.arch_logits().items():
            self.register_buffer(f"op_mask_{key}", torch.ones(alpha.shape, dtype=torch.bool))

    def configure_optimizers(self) -> Any:
        optimizers = super().configure_optimizers()
        if any(g.get("weight_decay", 0) for g in optimizers[0][1].param_groups):
            raise ConfigError("DrNAS's anchor regulariser is model.reg_type / model.reg_scale; model.arch_optimizer's "
                              "weight_decay would add a second one: set it to 0")
        return optimizers

    # ---- progressive stages ----------------------------------------------------------------------------------
    def op_masks(self) -> dict[str, torch.Tensor]:
        return {key: getattr(self, f"op_mask_{key}") for key in self.supernet.arch_logits()}

    def stage_of(self, epoch: int) -> int:
        if self.stage_epochs is None:
            return 0
        total = 0
        for s, n in enumerate(self.stage_epochs):
            total += n
            if epoch < total:
                return s
        return len(self.stage_epochs) - 1

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.stage_epochs is not None and self.trainer.world_size > 1:
            raise ConfigError("a progressive DrNAS search replaces parameters between stages, which DDP cannot "
                              "follow: run it on one device (trainer.devices 1) or without model.stage_epochs")

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.stage_epochs is not None and self.trainer.max_epochs != sum(self.stage_epochs):
            raise ConfigError(f"the stages run {sum(self.stage_epochs)} epochs: set trainer.max_epochs "
                              f"{sum(self.stage_epochs)}")

    def enter_stage(self, stage: int, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
        """Prune to the stage's ``keep`` ops per edge and widen to its K; ``optimizer``'s momentum follows."""
        assert self.stage_keep is not None and self.stage_partial_channels is not None
        with torch.no_grad():
            for key, alpha in self.supernet.arch_logits().items():
                mask = getattr(self, f"op_mask_{key}")
                new_alpha, new_mask = prune_mask(alpha, mask, self.stage_keep[stage])
                alpha.copy_(new_alpha)
                mask.copy_(new_mask)
        g = torch.Generator().manual_seed(mix_seed(self.seed, WIDEN_STREAM, stage))
        log: WideningLog = []
        self.supernet.repartition(self.stage_partial_channels[stage], lambda op, c: widen_op(op, c, g, log))
        if optimizer is not None:
            remap_momentum(optimizer, log)
        self.stage = stage

    def trains_architecture(self) -> bool:
        start = sum((self.stage_epochs or [])[:self.stage_of(self.current_epoch)])
        return super().trains_architecture() and self.current_epoch - start >= self.stage_warmup_epochs

    def training_step(self, batch: dict, batch_idx: int) -> None:
        target = self.stage_of(self.current_epoch)
        while self.stage < target:
            self.enter_stage(self.stage + 1, self._weight_opt())
        super().training_step(batch, batch_idx)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lightning_nas"]["drnas_stage"] = self.stage

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint of a later stage: shape the supernet for it before its tensors load (they replace the
        widening's copies)."""
        saved = int(checkpoint.get("lightning_nas", {}).get("drnas_stage", 0))
        while self.stage < saved:
            self.enter_stage(self.stage + 1)
        super().on_load_checkpoint(checkpoint)

    # ---- sampling ----------------------------------------------------------------------------------------------
    def sample(self, stream: int, detach: bool = False) -> dict[str, torch.Tensor]:
        """One Dirichlet sample of op weights per cell type, from (seed, step, stream); pruned ops 0, renormalised."""
        g = self.step_generator(stream, device=self.device)  # on a GPU sampled there: no host round trip
        masks = self.op_masks()
        out = {}
        for key, a in self.supernet.arch_logits().items():
            w = dirichlet_rsample(concentration(a.detach() if detach else a), g)
            out[key] = masked(w, masks[key]) if self.stage else w
        return out

    def genotype(self) -> Any:
        """The supernet's rule on softmax(alpha), pruned ops excluded (official ``process_step_matrix`` with masks)."""
        if not self.stage:
            return self.supernet.genotype()
        masks = self.op_masks()
        return self.supernet.genotype({k: masked(w, masks[k]) for k, w in self.supernet.mixing_weights().items()})

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
        """The Dirichlet mean as the op weights (pruned ops 0, renormalised)."""
        mean, masks = {}, self.op_masks()
        for key, a in self.supernet.arch_logits().items():
            c = concentration(a)
            mean[key] = masked(c, masks[key]) if self.stage else c / c.sum(-1, keepdim=True)
        return self.supernet(x, mixing=mean)

    def summary_extras(self) -> dict[str, Any]:
        stages = None if self.stage_epochs is None else {
            "epochs": self.stage_epochs, "partial_channels": self.stage_partial_channels, "keep": self.stage_keep,
            "warmup_epochs": self.stage_warmup_epochs, "reached": self.stage}
        return {"drnas": {"reg_type": self.reg_type, "reg_scale": self.reg_scale, "stages": stages}}
