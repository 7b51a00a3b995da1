"""Evaluation networks built from a genotype (Liu et al., 2019, Sec. 3.2; official ``model.py``).

CIFAR: C=36, 20 cells, auxiliary head after cell ``2 * layers // 3``; ImageNet (mobile setting): C=48,
14 cells, two stride-2 stems. Parameter counts equal the official code's (test_published_counts).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from lightning_nas.search_spaces.darts.genotype import Genotype
from lightning_nas.search_spaces.darts.ops import FactorizedReduce, Identity, ReLUConvBN, make_op
from lightning_nas.search_spaces.mixed_op import drop_path


class EvalCell(nn.Module):
    def __init__(self, genotype: Genotype, c_prev_prev: int, c_prev: int, channels: int,
                 reduction: bool, reduction_prev: bool):
        super().__init__()
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_prev_prev, channels)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, channels, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0)
        gene = genotype.reduce if reduction else genotype.normal
        self.concat = list(genotype.reduce_concat if reduction else genotype.normal_concat)
        self.reduction = reduction
        self.multiplier = len(self.concat)
        self.steps = len(gene) // 2
        self.inputs = [idx for _, idx in gene]
        self.ops = nn.ModuleList(
            make_op(name, channels, 2 if reduction and idx < 2 else 1, affine=True) for name, idx in gene)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(self.steps):
            outs = []
            for k in (2 * i, 2 * i + 1):
                op = self.ops[k]
                h = op(states[self.inputs[k]])
                if self.training and drop_prob > 0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                outs.append(h)
            states.append(outs[0] + outs[1])
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """Auxiliary classifier on the 8x8 feature map (Szegedy et al.; DARTS ``model.py``)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(channels, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class AuxiliaryHeadImageNet(nn.Module):
    """Auxiliary classifier on the 14x14 feature map (the official code has no BN after the 2x2 conv)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=2, padding=0, count_include_pad=False),
            nn.Conv2d(channels, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class _EvalNetwork(nn.Module):
    """Shared cell stacking; subclasses define the stem, the aux head and the pooling."""

    auxiliary_head: Optional[nn.Module]

    def _build_cells(self, genotype: Genotype, channels: int, layers: int, c_stem: int,
                     reduction_prev: bool) -> int:
        self.drop_path_prob = 0.0
        c_prev_prev, c_prev, c_curr = c_stem, c_stem, channels
        self.cells = nn.ModuleList()
        self.aux_position = 2 * layers // 3
        c_aux = 0
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
            cell = EvalCell(genotype, c_prev_prev, c_prev, c_curr, reduction, reduction_prev)
            reduction_prev = reduction
            self.cells.append(cell)
            c_prev_prev, c_prev = c_prev, cell.multiplier * c_curr
            if i == self.aux_position:
                c_aux = c_prev
        self._c_aux = c_aux
        return c_prev

    def _stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Return (logits, auxiliary logits or None); the auxiliary logits exist only in training mode."""
        logits_aux = None
        s0, s1 = self._stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_position and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        return self.classifier(self.global_pooling(s1).flatten(1)), logits_aux


class NetworkCIFAR(_EvalNetwork):
    def __init__(self, genotype: Genotype, channels: int = 36, num_classes: int = 10, layers: int = 20,
                 auxiliary: bool = True, in_channels: int = 3, stem_multiplier: int = 3):
        super().__init__()
        c_stem = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
        c_prev = self._build_cells(genotype, channels, layers, c_stem, reduction_prev=False)
        self.auxiliary_head = AuxiliaryHeadCIFAR(self._c_aux, num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def _stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.stem(x)
        return s, s


class NetworkImageNet(_EvalNetwork):
    def __init__(self, genotype: Genotype, channels: int = 48, num_classes: int = 1000, layers: int = 14,
                 auxiliary: bool = True, in_channels: int = 3):
        super().__init__()
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_channels, channels // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels // 2), nn.ReLU(inplace=True),
            nn.Conv2d(channels // 2, channels, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(channels),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        c_prev = self._build_cells(genotype, channels, layers, channels, reduction_prev=True)
        self.auxiliary_head = AuxiliaryHeadImageNet(self._c_aux, num_classes) if auxiliary else None
        # the official code uses AvgPool2d(7) for 224x224 inputs; adaptive pooling equals it there
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def _stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s0 = self.stem0(x)
        return s0, self.stem1(s0)

