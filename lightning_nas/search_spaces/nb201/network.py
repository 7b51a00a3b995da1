"""The NAS-Bench-201 macro network (Dong & Yang, ICLR 2020, Fig. 1; AutoDL ``TinyNetwork`` / ``InferCell``).

stem (3x3 conv, BN) -> N cells at C -> residual reduction -> N cells at 2C -> residual reduction -> N cells at
4C -> BN, ReLU -> global average pooling -> linear classifier. The benchmark trains C=16, N=5. The same skeleton
builds the discrete network (``NB201Network``) and the supernet (``supernet.NB201Supernet``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lightning_nas.search_spaces.nb201.arch import NUM_NODES, NB201Arch
from lightning_nas.search_spaces.nb201.ops import ResidualReduction, make_op


class Cell(nn.Module):
    """A discrete cell: node i sums op(i<-j)(node j) over j < i; the output is the last node."""

    def __init__(self, arch: NB201Arch, channels: int, affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        self.edges = nn.ModuleList(make_op(op, channels, channels, 1, affine, track_running_stats)
                                   for op in arch.ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        k = 0
        for to in range(1, NUM_NODES):
            nodes.append(sum(self.edges[k + j](nodes[j]) for j in range(to)))
            k += to
        return nodes[-1]


def build_stages(make_cell: Callable[[int], nn.Module], in_channels: int, channels: int, cells_per_stage: int
                 ) -> tuple[nn.Module, nn.ModuleList, int]:
    """The stem and the cell/reduction sequence of the benchmark's macro network; returns the last width."""
    stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
    layers = nn.ModuleList()
    c_prev = channels
    for stage in range(3):
        c = channels * 2 ** stage
        if stage > 0:
            layers.append(ResidualReduction(c_prev, c))
        layers.extend(make_cell(c) for _ in range(cells_per_stage))
        c_prev = c
    return stem, layers, c_prev


class NB201Network(nn.Module):
    """The benchmark's network for one architecture (C=16, N=5 are the benchmark's settings)."""

    def __init__(self, arch: NB201Arch | str, num_classes: int = 10, in_channels: int = 3, channels: int = 16,
                 cells_per_stage: int = 5):
        super().__init__()
        self.arch = arch if isinstance(arch, NB201Arch) else NB201Arch.from_string(arch)
        self.stem, self.layers, c_last = build_stages(lambda c: Cell(self.arch, c), in_channels, channels,
                                                      cells_per_stage)
        self.head = nn.Sequential(nn.BatchNorm2d(c_last), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return self.classifier(self.global_pooling(self.head(x)).flatten(1))



