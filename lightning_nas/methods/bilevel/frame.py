"""The bilevel search loop shared by DARTS-family methods (manual optimisation).

Per training step (Liu et al., 2019, Alg. 1 and the official ``train_search.py``):
1. architecture step first, at the current weights: ``architecture_gradient`` (overridable) returns
   d L / d alpha; it is all-reduced once across ranks and applied by the architecture optimizer;
2. weight step on the same train batch: ``weight_logits`` (overridable), grad-norm clipping of the weights
   only, SGD. The LR scheduler advances once per epoch, at epoch start.

Alphas are excluded from DDP's gradient reducer (``_ddp_params_and_buffers_to_ignore``): DDP reduces the
weight gradients once per step and this class reduces the alpha gradient once, so all ranks keep
identical alphas. The architecture step leaves BN running statistics untouched (the official code lets
its extra forwards update them; only eval-mode metrics could differ).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch
import torch.distributed as dist
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from lightning_nas.core.capabilities import SamplesChildren, TrainsArchitecture
from lightning_nas.core.child_eval import frozen_bn_stats
from lightning_nas.core.module import (
    DARTS_WEIGHT_SGD,
    CompileSpec,
    NASModule,
    build_optimizer,
    compile_options,
    epoch_mean,
    resolve_callable,
)
from lightning_nas.errors import ConfigError
from lightning_nas.search_spaces.base import SupernetFactory
from lightning_nas.search_spaces.darts.supernet import DartsSupernet
from lightning_nas.search_spaces.space import SearchSpace

DARTS_ARCH_ADAM = {"class_path": "torch.optim.Adam",
                   "init_args": {"lr": 3e-4, "betas": [0.5, 0.999], "weight_decay": 1e-3}}


class BilevelSearch(TrainsArchitecture, SamplesChildren, NASModule):
    """Base class of the differentiable searches: owns the loop, logging and genotype tracking."""

    optimizer_steps_per_search_step = 2  # the architecture step and the weight step

    def __init__(self, supernet: Optional[SupernetFactory] = None, num_classes: int = 10, in_channels: int = 3,
                 weight_optimizer: OptimizerCallable = DARTS_WEIGHT_SGD,
                 arch_optimizer: OptimizerCallable = DARTS_ARCH_ADAM,
                 lr_scheduler: Optional[LRSchedulerCallable] = None, eta_min: float = 0.001,
                 grad_clip: float = 5.0, warmup_epochs: int = 0, seed: int = 2, compile: CompileSpec = False):
        """
        Args:
            supernet: the search space, built as ``supernet(num_classes, in_channels)``; default the DARTS space
                (``DartsSupernet``). No class default here: jsonargparse would carry its init args over to
                another space's class_path.
            num_classes, in_channels: linked from the datamodule by the CLI.
            weight_optimizer: optimizer of the supernet weights (DARTS: SGD 0.025, momentum 0.9, wd 3e-4).
            arch_optimizer: optimizer of alpha (DARTS: Adam 3e-4, betas (0.5, 0.999), wd 1e-3).
            lr_scheduler: weight-LR schedule stepped per epoch; default cosine to ``eta_min`` over max_epochs.
            grad_clip: max gradient norm of the weights (DARTS: 5); 0 disables clipping.
            warmup_epochs: epochs of weight-only training before architecture steps start.
            seed: seeds the methods' own sampling (``step_generator``); the CLI sets it from seed_everything.
            compile: ``torch.compile`` the supernet when the fit starts (``core.module.compile_options``): its
                forward and, through AOTAutograd, the backward that the weight step and the architecture step run
                (the optimizer steps stay eager, foreach on a GPU). Off by default: compiling takes minutes and pays
                only over long runs (README, Speed).
        """
        super().__init__()
        if grad_clip < 0 or warmup_epochs < 0:
            raise ConfigError("model.grad_clip and model.warmup_epochs must be >= 0")
        self.automatic_optimization = False
        factory = DartsSupernet if supernet is None else resolve_callable(supernet, "model.supernet")
        self.supernet = factory(num_classes, in_channels)
        self.weight_optimizer, self.arch_optimizer = weight_optimizer, arch_optimizer
        self.lr_scheduler_factory, self.eta_min = lr_scheduler, eta_min
        self.grad_clip, self.warmup_epochs, self.seed = grad_clip, warmup_epochs, seed
        self.compile_spec = compile
        compile_options(compile, torch.device("cpu"))  # a bad option fails here, before any data is loaded
        names = [n for n, p in self.named_parameters() if any(p is a for a in self.supernet.arch_parameters())]
        self._ddp_params_and_buffers_to_ignore = names
        self.init_accuracy_metrics(num_classes)
        self.arch_loss_mean, self.weight_loss_mean = epoch_mean(), epoch_mean()

    # ---- identity --------------------------------------------------------------------------------------
    def space_id(self) -> str:
        return self.supernet.space_id()

    def genotype(self) -> Any:
        return self.supernet.genotype()

    def search_space(self) -> SearchSpace:
        return self.supernet.space

    # ---- optimisers ---------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        w_opt = build_optimizer(self.weight_optimizer, self.supernet.weight_parameters(), "model.weight_optimizer")
        a_opt = build_optimizer(self.arch_optimizer, self.supernet.arch_parameters(), "model.arch_optimizer")
        return [w_opt, a_opt], [self.weight_schedule(w_opt, self.lr_scheduler_factory, self.eta_min)]

    def _weight_opt(self) -> torch.optim.Optimizer:
        opt = self.optimizers()[0]
        return getattr(opt, "optimizer", opt)

    @property
    def weight_lr(self) -> float:
        return float(self._weight_opt().param_groups[0]["lr"])

    # ---- the pieces methods override --------------------------------------------------------------------
    def arch_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """L_val(w, alpha) on a batch, differentiable in alpha and w (NA-DARTS overrides it)."""
        return self.loss(self.supernet(x), y)

    def architecture_gradient(self, x_t: torch.Tensor, y_t: torch.Tensor, x_v: torch.Tensor,
                              y_v: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """d objective / d alpha at the current weights; first-order DARTS by default. Returns (grads, loss)."""
        loss = self.arch_loss(x_v, y_v)
        grads = torch.autograd.grad(loss, self.supernet.arch_parameters())
        return list(grads), loss.detach()

    def trains_architecture(self) -> bool:
        """Whether this step trains alpha: after ``warmup_epochs`` (DrNAS's stages add their own warm-up)."""
        return self.current_epoch >= self.warmup_epochs

    def transform_arch_grads(self) -> None:
        """Called between the all-reduce of the alpha gradients (in ``.grad``) and the architecture optimizer's
        step; a no-op here (SNAS clips them)."""

    def weight_logits(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Logits of the weight step; alpha enters as a constant (SDARTS overrides it)."""
        mixing = {k: v.detach() for k, v in self.supernet.mixing_weights().items()}
        return self.supernet(x, mixing=mixing)

    # ---- the loop -------------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        epochs = self.trainer.max_epochs
        if self.warmup_epochs and epochs is not None and epochs > 0 and self.warmup_epochs >= epochs:
            raise ConfigError(f"model.warmup_epochs ({self.warmup_epochs}) >= trainer.max_epochs ({epochs}): the "
                              "architecture would never be trained and the genotype would come from the initial "
                              "random alphas; lower warmup_epochs or raise max_epochs")
        if dist.is_available() and dist.is_initialized():  # alphas are not broadcast by DDP: do it here
            for a in self.supernet.arch_parameters():
                dist.broadcast(a.data, src=0)
        options = compile_options(self.compile_spec, self.device)
        if options is not None:
            self.supernet.compile(**options)  # in place: the state_dict keys stay the same

    def _all_reduce_mean(self, grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return list(grads)
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        out, offset = [], 0
        for g in grads:
            out.append(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
        return out

    def architecture_step(self, x_t: torch.Tensor, y_t: torch.Tensor, x_v: torch.Tensor,
                          y_v: torch.Tensor) -> torch.Tensor:
        a_opt = self.optimizers()[1]
        with frozen_bn_stats(self.supernet):
            grads, loss = self.architecture_gradient(x_t, y_t, x_v, y_v)
        for a, g in zip(self.supernet.arch_parameters(), self._all_reduce_mean(grads)):
            a.grad = g.detach().to(a.dtype)
        self.transform_arch_grads()
        a_opt.step()
        a_opt.zero_grad(set_to_none=True)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> None:
        self.sync_lr_schedule()  # DARTS steps the schedule at epoch start
        x_t, y_t = batch["train"]
        x_v, y_v = batch["val"]
        if self.trains_architecture():
            arch_loss = self.architecture_step(x_t, y_t, x_v, y_v)
            self.arch_loss_mean.update(arch_loss)
            self.log("search/arch_loss", self.arch_loss_mean, on_step=False, on_epoch=True)
        self.weight_step(self.optimizers()[0], lambda: self.weight_logits(x_t, y_t), y_t, self.grad_clip)

    def on_train_epoch_end(self) -> None:
        self.log_replicated("search/weight_lr", self.weight_lr)  # the LR this epoch trained with
        for cell, weights in self.supernet.mixing_weights().items():
            for e, row in enumerate(weights.detach().cpu()):
                for op, w in zip(self.supernet.primitives, row.tolist()):
                    self.log_replicated(f"alpha_{cell}/e{e:02d}_{op}", w)

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.supernet(x)
