"""A low-fidelity evaluation (MF-KD, Trofimov et al., arXiv 2006.08341): train a cell's network for a few epochs
with cross-entropy or distillation, return its accuracy on held-out training images.

It runs inside one step of a search (``mf_kd.MFKD``) and in the correlation study, so it is a plain loop over
in-memory uint8 batches (augmented on the device by ``BatchAugment``), not a nested Lightning Trainer; the network,
teacher and loss are ``TrainCell``'s (``cell_training.distillation_loss``). Every draw (initialisation, batch
order, augmentation) comes from ``seed``: the same seed gives the same accuracy on the same machine, and the CE and
KD trainings of a cell with the same seed start from the same weights and see the same batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from lightning_nas.data.augment import BatchAugment
from lightning_nas.data.batches import IndexBatchStream
from lightning_nas.data.sources import ImageData
from lightning_nas.errors import ConfigError
from lightning_nas.methods.training.cell_training import CellNetwork, NetworkSpec, Teacher, distillation_loss
from lightning_nas.methods.training.distill_losses import DistillationLoss
from lightning_nas.reproducibility import mix_seed, seeded


@dataclass
class LowFidelitySplit:
    """The images of a low-fidelity evaluation: ``train`` to fit, ``heldout`` to score (both from the dataset's
    training set: the search never sees the test set)."""

    train: ImageData
    heldout: ImageData
    augment: BatchAugment

    def to(self, device: torch.device | str) -> LowFidelitySplit:
        """The split with its uint8 images on ``device`` (a GPU holds them once, batches are sliced there)."""
        return LowFidelitySplit(ImageData(self.train.images.to(device), self.train.labels.to(device)),
                                ImageData(self.heldout.images.to(device), self.heldout.labels.to(device)),
                                self.augment)

    @classmethod
    def from_training_set(cls, train: ImageData, augment: BatchAugment, heldout: int,
                          train_samples: Optional[int] = None, split_seed: int = 0) -> LowFidelitySplit:
        """A seeded split of the training set: ``heldout`` images to score, then ``train_samples`` (default all the
        rest) to train on. ``split_seed`` is fixed by default: the split is part of the protocol, as the
        benchmark's train/valid split, so every search and seed scores cells on the same images."""
        n = len(train)
        if not 0 < heldout < n:
            raise ConfigError(f"the low-fidelity held-out split needs 0 < heldout_samples < {n} training images, "
                              f"got {heldout}")
        if train_samples is not None and train_samples < 1:
            raise ConfigError(f"low-fidelity train_samples must be positive, got {train_samples}")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
        held = order[:heldout].sort().values
        rest = (order[heldout:] if train_samples is None else order[heldout:heldout + train_samples]).sort().values
        return cls(ImageData(train.images[rest], train.labels[rest]), ImageData(train.images[held], train.labels[held]),
                   augment)


@dataclass
class LowFidelityRecipe:
    """How a low-fidelity evaluation trains (NAS-Bench-201's recipe at a few epochs: SGD Nesterov 0.9, lr 0.1,
    wd 5e-4, cosine to 0 per epoch, batch 256)."""

    epochs: int = 2
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True
    eval_batch_size: int = 512

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1 or self.lr <= 0:
            raise ConfigError(f"low-fidelity training needs epochs, batch sizes >= 1 and lr > 0, got {self}")


def train_low_fidelity(spec: NetworkSpec, loss_fn: DistillationLoss, teacher: Optional[Teacher],
                       data: LowFidelitySplit, recipe: LowFidelityRecipe, seed: int,
                       device: torch.device | str = "cpu") -> dict[str, float]:
    """Train ``spec``'s network for ``recipe.epochs`` and score it on the held-out images. Returns the held-out
    accuracy (%), the held-out CE loss and the last epoch's mean training loss. The global RNG is untouched."""
    device = torch.device(device)
    if loss_fn.needs_teacher and teacher is None:
        raise ConfigError(f"{loss_fn.describe()} needs a teacher checkpoint")
    with seeded(mix_seed(seed, 1)):
        net = CellNetwork(spec).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay, nesterov=recipe.nesterov)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe.epochs, eta_min=0.0)
    current = {"epoch": 0}  # the stream reshuffles per epoch
    stream = IndexBatchStream(data.train.images, data.train.labels, {"train": torch.arange(len(data.train))},
                              recipe.batch_size, mix_seed(seed, 2), shuffle=True, epoch_fn=lambda: current["epoch"])
    train_loss = float("nan")
    net.train()
    for epoch in range(recipe.epochs):
        current["epoch"] = epoch
        total, count = torch.zeros((), device=device), 0
        for batch in stream:
            x, y = batch["train"]
            x = data.augment(x.to(device), batch["seed"])
            y = y.to(device)
            loss, _ = distillation_loss(net, teacher, loss_fn, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(y)
            count += len(y)
        sched.step()
        train_loss = float(total) / max(1, count)
        if not math.isfinite(train_loss):
            break  # diverged: scored as it is (its held-out accuracy shows it)
    acc, heldout_loss = evaluate(net, data.heldout, data.augment, recipe.eval_batch_size, device)
    return {"accuracy": acc, "heldout_loss": heldout_loss, "train_loss": train_loss}


@torch.no_grad()
def evaluate(net: CellNetwork, split: ImageData, augment: BatchAugment, batch_size: int,
             device: torch.device) -> tuple[float, float]:
    """Accuracy (%) and mean CE of ``net`` (eval mode: BN running statistics) on ``split``."""
    net.eval()
    correct, loss, n = 0, 0.0, len(split)
    for start in range(0, n, batch_size):
        x = augment.normalize(split.images[start:start + batch_size].to(device))
        y = split.labels[start:start + batch_size].to(device)
        logits = net(x).logits
        loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return 100.0 * correct / n, loss / n
