"""MiLeNAS mixed-level search (He et al., CVPR 2020, Eq. 6-7; official code chaoyanghe/MiLeNAS).

alpha <- alpha - eta_a (dL_train/dalpha + lambda dL_val/dalpha): the two gradients come from the step's train
batch and validation batch at the current weights; the weight step is DARTS's. ``order: 2`` unrolls each term
as DARTS does (the paper's appendix form). Weights are clipped at 5 as in DARTS; the official code clips the
alpha gradients instead, which the paper does not describe, so it is not reproduced.

Options from the paper: model-size-based search (``track_model_size``: the best held-out accuracy per number of
conv ops in the derived cells, logged and stored in summary.json) and its early stop (``early_stop``: stop once
the normal cell has 6 conv ops and the reduction cell 0).
"""

from __future__ import annotations

from typing import Any

import torch

from lightning_nas.errors import ConfigError
from lightning_nas.methods.bilevel.darts import DARTS
from lightning_nas.search_spaces.space import SearchSpace

#: the paper's stopping rule: 6 conv ops in the normal cell, none in the reduction cell
EARLY_STOP = {"normal": 6, "reduce": 0}


def model_size(space: SearchSpace, genotype: Any) -> int:
    """Conv ops in the derived cells (DARTS: normal + reduction cell; NAS-Bench-201: the one cell)."""
    return sum(space.conv_ops(genotype).values())


def reached_early_stop(space: SearchSpace, genotype: Any) -> bool:
    return space.conv_ops(genotype) == EARLY_STOP


class MiLeNAS(DARTS):
    def __init__(self, *args: Any, lambda_val: float = 1.0, track_model_size: bool = True, early_stop: bool = False,
                 **kwargs: Any):
        """
        Args:
            lambda_val: weight of dL_val/dalpha (the paper studies {0.1, 1, 999}; 1 is best and the default).
            track_model_size: track the best validation accuracy per conv-op count of the derived cells.
            early_stop: stop when the normal cell has 6 conv ops and the reduction cell none (paper, Sec. 4.3).
        """
        super().__init__(*args, **kwargs)
        if lambda_val < 0:
            raise ConfigError(f"model.lambda_val must be >= 0, got {lambda_val}")
        if early_stop and set(self.supernet.space.cell_types) != set(EARLY_STOP):
            raise ConfigError("model.early_stop is the paper's rule for the DARTS space (6 conv ops in the normal "
                              "cell, none in the reduction cell); set it to false on this space")
        self.lambda_val, self.track_model_size, self.early_stop = lambda_val, track_model_size, early_stop
        self.best_by_size: dict[int, dict[str, Any]] = {}

    def architecture_gradient(self, x_t: torch.Tensor, y_t: torch.Tensor, x_v: torch.Tensor,
                              y_v: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        alphas = self.supernet.arch_parameters()
        if self.order == 1:
            g_train = torch.autograd.grad(self.loss(self.supernet(x_t), y_t), alphas)
            loss_val = self.arch_loss(x_v, y_v)
            g_val = torch.autograd.grad(loss_val, alphas)
        else:
            g_train, _ = self.unrolled_gradient(x_t, y_t, x_t, y_t)
            g_val, loss_val = self.unrolled_gradient(x_t, y_t, x_v, y_v)
        return [gt + self.lambda_val * gv for gt, gv in zip(g_train, g_val)], loss_val.detach()

    # ---- model-size-based search ----------------------------------------------------------------------------
    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self.track_model_size and not self.early_stop:
            return
        g = self.genotype()
        size = model_size(self.supernet.space, g)
        self.log_replicated("milenas/conv_ops", float(size))
        if self.track_model_size and self.val_acc.update_called:
            acc = float(self.val_acc.compute())  # this epoch's value (callback_metrics still holds the last one)
            best = self.best_by_size.get(size)
            if best is None or acc > best["val_acc"]:
                self.best_by_size[size] = {"val_acc": acc, "epoch": self.current_epoch, "genotype": g.to_text()}
        if self.early_stop and reached_early_stop(self.supernet.space, g):
            self.trainer.should_stop = True

    def summary_extras(self) -> dict[str, Any]:
        return {"best_by_conv_ops": {str(k): v for k, v in sorted(self.best_by_size.items())}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lightning_nas"]["milenas_best_by_size"] = {str(k): v for k, v in self.best_by_size.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint["lightning_nas"].get("milenas_best_by_size", {})
        self.best_by_size = {int(k): v for k, v in saved.items()}
