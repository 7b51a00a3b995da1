"""What the analysis callbacks (Hessian eigenvalue, landscape slices, gradient variance) share: the method's
network, the parameters they act on, a loss of those parameters, and fixed probe batches on the device."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
from torch import nn

from lightning_nas.core.module import NASModule
from lightning_nas.data.datamodules import InMemoryDataModule
from lightning_nas.errors import ConfigError

Target = Literal["weights", "alpha"]
Split = Literal["heldout", "train"]


@dataclass
class AnalysisProbe:
    net: nn.Module
    params: list[nn.Parameter]
    logits_fn: Callable[[torch.Tensor], torch.Tensor]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_choice(owner: str, name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{owner}: {name} must be one of {list(choices)}, got {value!r}")


def analysis_probe(pl_module: pl.LightningModule, target: str, owner: str) -> AnalysisProbe:
    """The method's analysis network and its ``target`` parameters (``NASModule.analysis_*``)."""
    if not isinstance(pl_module, NASModule):
        raise ConfigError(f"{owner} needs a lightning_nas method (a NASModule)")
    named = pl_module.analysis_parameters(target)
    if not named:
        raise ConfigError(f"{owner}: {type(pl_module).__name__} has no {target} parameters to analyse")
    return AnalysisProbe(pl_module.analysis_network(), [p for _, p in named], pl_module.analysis_logits,
                         pl_module.loss)


def probe_batches(trainer: pl.Trainer, split: str, n: int, batch_size: int | None, owner: str
                  ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` unshuffled, unaugmented batches of the held-out images (a search's alpha split, a
    retraining's test set) or of the weights' training images, normalised, on the trainer's device, the same on
    every rank."""
    dm = trainer.datamodule
    if not isinstance(dm, InMemoryDataModule):
        raise ConfigError(f"{owner} needs one of lightning_nas's in-memory datamodules (SearchDataModule or "
                          "ClassificationDataModule) for its probe batches")
    batches = dm.fixed_val_batches(n, batch_size) if split == "heldout" else dm.fixed_train_batches(n, batch_size)
    return dm.device_batches(batches, trainer)


def run_dir(trainer: pl.Trainer) -> Path:
    return Path(trainer.log_dir or trainer.default_root_dir)


def log_image(trainer: pl.Trainer, key: str, path: Path) -> None:
    """Send a PNG to every WandbLogger of the run (no-op without one)."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)], step=trainer.global_step)
