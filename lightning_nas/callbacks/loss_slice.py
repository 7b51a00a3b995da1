"""Filter-normalised loss-landscape slices (Li et al., NeurIPS 2018) of any method's network, along its weights
or (supernets) along alpha: ``lightning_nas.analysis.landscape`` does the work, this callback picks the moment,
the batches and the outputs.

Outputs per slice, in ``<run dir>/landscape/``: ``slice_<target>_<dims>d_epoch<E>.csv`` (one row per grid point:
coordinates, loss, accuracy, and the gradient variance when asked) and a PNG of the same name (curve or contour
plot); the PNG also goes to wandb when a WandbLogger is attached. Logged: ``landscape/slice_<target>_sharpness``
(the largest rise of the loss over the slice's centre) and ``..._centre_loss``.

Directions come from a generator seeded with ``seed`` (the same on every rank, every epoch and after a resume;
the global RNG is not touched), so slices of one run at different epochs share their random draw. Every rank
computes the slice on the same batches (identical results); rank 0 writes the files.
"""

from __future__ import annotations

from typing import Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from lightning_nas.analysis.landscape import (
    BNMode,
    bn_mode,
    centre_loss,
    filter_normalized_direction,
    grid,
    landscape_slice,
    plot_slice,
    sharpness,
    write_csv,
)
from lightning_nas.callbacks.probes import (
    Split,
    Target,
    analysis_probe,
    check_choice,
    log_image,
    probe_batches,
    run_dir,
)
from lightning_nas.callbacks.schedule import every_nth_or_last_epoch
from lightning_nas.errors import ConfigError

OWNER = "LossLandscapeSlice"


class LossLandscapeSlice(Callback):
    def __init__(self, target: Target = "weights", dims: int = 1, points: int = 21, span: tuple[float, float] =
                 (-1.0, 1.0), num_batches: int = 2, batch_size: Optional[int] = None, split: Split = "heldout",
                 bn_mode: BNMode = "eval", gradient_variance: bool = False, every_n_epochs: Optional[int] = None,
                 seed: int = 0):
        """
        Args:
            target: ``weights`` (the network's weights) or ``alpha`` (a supernet's architecture parameters).
            dims: 1 (a curve along one direction) or 2 (a surface over two).
            points: grid points per axis over ``span`` (odd, so that the centre is on the grid).
            num_batches, batch_size, split: the fixed probe batches (``heldout``: a search's alpha split or a
                retraining's test set, as Li et al.; ``train``: the weights' training images); batch size
                default: the datamodule's eval batch size.
            bn_mode: ``eval`` (running statistics, as Li et al.) or ``train`` (batch statistics, running ones
                untouched).
            gradient_variance: also compute the mini-batch gradient variance at every grid point (Shu et al.'s
                surfaces; costs ``num_batches`` backward passes per point).
            every_n_epochs: slice every n epochs and after the last; default (None): after the last epoch only.
        """
        check_choice(OWNER, "target", target, ("weights", "alpha"))
        check_choice(OWNER, "split", split, ("heldout", "train"))
        check_choice(OWNER, "bn_mode", bn_mode, ("eval", "train"))
        if dims not in (1, 2):
            raise ConfigError(f"{OWNER}: dims must be 1 or 2, got {dims}")
        if points < 3 or points % 2 == 0:
            raise ConfigError(f"{OWNER}: points must be odd and >= 3 (the centre on the grid), got {points}")
        if not span[0] < 0 < span[1] or span[0] != -span[1]:
            # the slice's centre (the trained weights) must be a grid point: sharpness is measured from it
            raise ConfigError(f"{OWNER}: span must be symmetric around 0, e.g. [-1, 1], got {tuple(span)}")
        if num_batches < 1 or (every_n_epochs is not None and every_n_epochs < 1):
            raise ConfigError(f"{OWNER}: num_batches and every_n_epochs must be >= 1")
        self.target, self.dims, self.points, self.span = target, dims, points, (float(span[0]), float(span[1]))
        self.num_batches, self.batch_size, self.split, self.bn_mode = num_batches, batch_size, split, bn_mode
        self.gradient_variance, self.every_n_epochs, self.seed = gradient_variance, every_n_epochs, seed
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        analysis_probe(pl_module, self.target, OWNER)  # refuse a method or target it cannot analyse, up front
        self.batches = probe_batches(trainer, self.split, self.num_batches, self.batch_size, OWNER)

    def compute(self, pl_module: pl.LightningModule) -> list[dict[str, float]]:
        probe = analysis_probe(pl_module, self.target, OWNER)
        g = torch.Generator().manual_seed(self.seed)
        directions = [filter_normalized_direction(probe.params, g) for _ in range(self.dims)]
        with bn_mode(probe.net, self.bn_mode):
            return landscape_slice(probe.logits_fn, probe.loss_fn, probe.params, directions,
                                   grid(self.points, self.span, self.dims), self.batches, self.gradient_variance)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not every_nth_or_last_epoch(trainer, self.every_n_epochs):
            return
        rows = self.compute(pl_module)
        epoch = trainer.current_epoch
        sharp, centre = sharpness(rows), centre_loss(rows)
        key = f"landscape/slice_{self.target}"
        pl_module.log_replicated(f"{key}_sharpness", sharp)
        pl_module.log_replicated(f"{key}_centre_loss", centre)
        if trainer.is_global_zero:
            stem = run_dir(trainer) / "landscape" / f"slice_{self.target}_{self.dims}d_epoch{epoch + 1}"
            write_csv(rows, stem.with_suffix(".csv"), {"epoch": epoch + 1})
            title = (f"{type(pl_module).__name__}: loss along {self.target}, epoch {epoch + 1} "
                     f"({self.split} batches, BN {self.bn_mode})")
            png = plot_slice(rows, stem.with_suffix(".png"), title)
            log_image(trainer, f"{key}_{self.dims}d", png)
