"""Evaluating single-path children with inherited (shared) weights.

A child's BatchNorm statistics are those of the whole supernet, which trains many children: SPOS (Guo et al.,
ECCV 2020, Sec. 3.3) recomputes them for each child on a few training batches before evaluating it. The three
``bn_mode`` choices:

- ``recalibrate`` (SPOS): reset the running statistics, accumulate them (cumulative average) over the
  calibration batches in train mode with the child's path, then evaluate in eval mode;
- ``batch``: evaluate in train mode, with each evaluation batch's own statistics (what the supernet's training
  forward sees; no calibration batches needed);
- ``running``: eval mode with the supernet's running statistics as they are.

Every mode leaves the network's BN running statistics, momentum and train/eval mode as they were.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from torch import nn

from lightning_nas.search_spaces.base import Path, Supernet


@contextlib.contextmanager
def saved_bn_stats(module: nn.Module) -> Iterator[None]:
    """BN running statistics saved and put back after the block, which may change them (a child's
    re-calibration)."""
    saved = [(m, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, mean, var, n in saved:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(n)


@contextlib.contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """Run forwards in train mode (batch statistics) without changing BN running statistics: each BN stops
    tracking them for the block (no copy of any buffer: nothing runs on the device for it)."""
    tracking = [m for m in module.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in tracking:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in tracking:
            m.track_running_stats = True


BNMode = Literal["recalibrate", "batch", "running"]
BN_MODES: tuple[str, ...] = ("recalibrate", "batch", "running")
Batch = tuple[torch.Tensor, torch.Tensor]


def _batchnorms(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextlib.contextmanager
def child_bn(net: Supernet, path: Path, calib_batches: Sequence[Batch], bn_mode: BNMode) -> Iterator[None]:
    """Inside the block (without autograd), ``net(x, path=path)`` evaluates the child with BN as ``bn_mode``
    says."""
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {list(BN_MODES)}, got {bn_mode!r}")
    was_training = net.training
    bns = _batchnorms(net)
    momenta = [m.momentum for m in bns]
    try:
        with saved_bn_stats(net), torch.no_grad():
            if bn_mode == "recalibrate":
                net.train()
                for m in bns:
                    m.reset_running_stats()
                    m.momentum = None  # cumulative moving average over the calibration batches
                for x, _ in calib_batches:
                    net(x, path=path)
                net.eval()
            else:
                net.train(bn_mode == "batch")
            yield
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        net.train(was_training)


def child_accuracy(net: Supernet, path: Path, eval_batches: Sequence[Batch], calib_batches: Sequence[Batch] = (),
                   bn_mode: BNMode = "recalibrate") -> float:
    """Top-1 accuracy (fraction) of the child ``path`` with the supernet's weights on ``eval_batches``."""
    if bn_mode == "recalibrate" and not calib_batches:
        raise ValueError("bn_mode 'recalibrate' needs at least one calibration batch")
    correct = total = 0
    with child_bn(net, path, calib_batches, bn_mode):  # grad-free inside
        for x, y in eval_batches:
            correct += int((net(x, path=path).argmax(1) == y).sum())
            total += len(y)
    return correct / max(total, 1)
