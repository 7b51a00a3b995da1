"""The DARTS search supernet (Liu et al., 2019, Sec. 2.1-2.2; official ``model_search.py``).

A pure ``nn.Module``: mixed ops over a configurable op set, search cells with 4 intermediate nodes
(14 edges), one ``alpha_normal`` shared by all normal cells and one ``alpha_reduce`` by all reduction cells.
``forward(x, mixing=...)`` accepts replacement mixing weights so methods (SDARTS, NA-DARTS) can feed
perturbed or neighbour weights without touching alpha.

Sampling mode: ``forward(x, path={"normal": ops, "reduce": ops})`` runs, per edge, the one op ``ops[e]`` (an index
into ``primitives``) or nothing (-1). A child is a discrete DARTS cell pair: every intermediate node has exactly
two input edges, each with one op other than ``none`` (the genotype form, as RSPS samples it; Li & Talwalkar
2019), so ``random_path`` draws two distinct inputs per node and a uniform non-``none`` op per kept edge.

PC-DARTS (Xu et al., ICLR 2020) as options any relaxation can use: ``partial_channels = K`` builds every edge's
ops on C/K channels (``MixedOp``'s partial mode: the rest bypass, max-pooled on reduction edges, then a channel
shuffle), and ``edge_normalization`` adds ``beta_normal`` / ``beta_reduce`` (one per edge, init 1e-3 randn after
the alphas, trained with them): node ``i`` sums ``softmax_i(beta)_j * MixedOp_j``, and the genotype ranks the
edges by ``softmax(alpha) * softmax_i(beta)`` (official ``model_search.py:78-89,138-158,186-231``). DrNAS's
DARTS-space supernet is partial channels without edge normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from lightning_nas.errors import ConfigError
from lightning_nas.search_spaces.base import Path, Supernet, check_partial_channels, check_primitives, node_softmax
from lightning_nas.search_spaces.darts.genotype import Genotype, derive_genotype
from lightning_nas.search_spaces.darts.ops import PRIMITIVES, FactorizedReduce, ReLUConvBN, make_op
from lightning_nas.search_spaces.darts.space import DartsSpace, num_edges
from lightning_nas.search_spaces.mixed_op import MixedOp, drop_path


def darts_mixed_op(channels: int, stride: int, primitives: Sequence[str], partial_channels: int = 1) -> MixedOp:
    """A DARTS edge: every candidate op without affine BN; pooling ops get a BN(affine=False) as in DARTS. With
    ``partial_channels = K`` the ops work on C/K channels (PC-DARTS)."""
    c = channels // partial_channels
    ops = []
    for name in primitives:
        op = make_op(name, c, stride, affine=False)
        ops.append(nn.Sequential(op, nn.BatchNorm2d(c, affine=False)) if "pool" in name else op)
    return MixedOp(ops, primitives, partial_channels, stride, c)


class SearchCell(nn.Module):
    """A search cell: 2 preprocessed inputs, ``steps`` nodes each summing mixed ops over all predecessors."""

    def __init__(self, steps: int, multiplier: int, c_prev_prev: int, c_prev: int, channels: int,
                 reduction: bool, reduction_prev: bool, primitives: Sequence[str], partial_channels: int = 1):
        super().__init__()
        self.reduction = reduction
        self.steps = steps
        self.multiplier = multiplier
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_prev_prev, channels, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, channels, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList()
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self.edges.append(darts_mixed_op(channels, stride, primitives, partial_channels))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor,
                edge_weights: Optional[torch.Tensor] = None, drop_prob: float = 0.0) -> torch.Tensor:
        """Node i sums its edges' mixed ops, each times its edge weight with edge normalisation (PC-DARTS); while
        training with ``drop_prob`` > 0 each edge's output is drop-pathed (SNAS's search, ``model_search.py:104``)."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            s = 0
            for j, h in enumerate(states):
                out = self.edges[offset + j](h, weights[offset + j])
                if self.training and drop_prob > 0:
                    out = drop_path(out, drop_prob)
                s = s + (out if edge_weights is None else edge_weights[offset + j] * out)
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self.multiplier:], dim=1)

    def forward_hard(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor,
                     ops: tuple[int, ...], edge_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        """GDAS: every edge runs one op times its hard weight (AutoDL's DARTS-space cell: no scalar terms)."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            s = sum((1 if edge_weights is None else edge_weights[offset + j])
                    * self.edges[offset + j].forward_hard(h, weights[offset + j], ops[offset + j])
                    for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self.multiplier:], dim=1)

    def forward_path(self, s0: torch.Tensor, s1: torch.Tensor, ops: tuple[int, ...]) -> torch.Tensor:
        """Each node sums only its edges' chosen ops; a node without any is zero."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            terms = [t for j, h in enumerate(states)
                     if (t := self.edges[offset + j].forward_path(h, ops[offset + j])) is not None]
            if not terms:  # zeros of a node's shape, as the `none` op makes them
                stride = 2 if self.reduction else 1
                terms = [states[0][:, :, ::stride, ::stride].mul(0.0)]
            offset += len(states)
            states.append(sum(terms[1:], terms[0]))
        return torch.cat(states[-self.multiplier:], dim=1)


class DartsSupernet(Supernet):
    """DARTS search network. Reduction cells sit at ``layers // 3`` and ``2 * layers // 3``."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, channels: int = 16, layers: int = 8,
                 steps: int = 4, multiplier: int = 4, stem_multiplier: int = 3,
                 primitives: Sequence[str] = PRIMITIVES, alpha_init_std: float = 1e-3, partial_channels: int = 1,
                 edge_normalization: bool = False):
        """``num_classes`` and ``in_channels`` come first: a config gives the rest, the method calls
        ``supernet(num_classes, in_channels)`` with the datamodule's values. DARTS: C=16, 8 layers.
        ``partial_channels`` (K) and ``edge_normalization``: PC-DARTS (its CIFAR settings: 4 and true)."""
        super().__init__()
        primitives = check_primitives(primitives, PRIMITIVES)
        if layers < 3:
            raise ConfigError(f"the DARTS supernet needs layers >= 3, got {layers}: reduction cells sit at layers // 3 "
                              "and 2 * layers // 3, so fewer layers leave no normal cell (and alpha_normal untrained)")
        if layers < 1 or channels < 1 or steps < 1 or not 1 <= multiplier <= steps:
            raise ConfigError(f"invalid supernet shape layers={layers}, channels={channels}, steps={steps}, "
                              f"multiplier={multiplier}; need positive values and 1 <= multiplier <= steps")
        self.primitives = primitives
        self.steps = steps
        self.multiplier = multiplier
        self.space = DartsSpace(steps, multiplier)
        self.layers = layers
        check_partial_channels(partial_channels, [channels, 2 * channels, 4 * channels])
        self.partial_channels, self.edge_normalization = partial_channels, edge_normalization
        c_curr = stem_multiplier * channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_prev_prev, c_prev, c_curr = c_curr, c_curr, channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
            cell = SearchCell(steps, multiplier, c_prev_prev, c_prev, c_curr, reduction, reduction_prev, primitives,
                              partial_channels)
            reduction_prev = reduction
            self.cells.append(cell)
            c_prev_prev, c_prev = c_prev, multiplier * c_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)
        k = num_edges(steps)
        # official code: 1e-3 * randn (the paper says zeros; the code produced the published cells)
        self.alpha_normal = nn.Parameter(alpha_init_std * torch.randn(k, len(primitives)))
        self.alpha_reduce = nn.Parameter(alpha_init_std * torch.randn(k, len(primitives)))
        if edge_normalization:  # PC-DARTS: 1e-3 randn, drawn after the alphas as the official code does
            self.beta_normal = nn.Parameter(1e-3 * torch.randn(k))
            self.beta_reduce = nn.Parameter(1e-3 * torch.randn(k))
            self.ARCH_NAMES = self.ARCH_NAMES + ("beta_normal", "beta_reduce")

    ARCH_NAMES: tuple[str, ...] = ("alpha_normal", "alpha_reduce")  # deterministic order

    def space_id(self) -> str:
        return f"DartsSupernet(primitives={list(self.primitives)}, steps={self.steps}{self.pc_id()})"

    def edge_weights(self) -> Optional[dict[str, torch.Tensor]]:
        if not self.edge_normalization:
            return None
        degrees = [2 + i for i in range(self.steps)]
        return {"normal": node_softmax(self.beta_normal, degrees), "reduce": node_softmax(self.beta_reduce, degrees)}

    # ---- forward ---------------------------------------------------------------------------------
    def mixing_weights(self) -> dict[str, torch.Tensor]:
        """softmax(alpha) per edge: the continuous relaxation of Eq. 2."""
        return {"normal": F.softmax(self.alpha_normal, dim=-1), "reduce": F.softmax(self.alpha_reduce, dim=-1)}

    def forward(self, x: torch.Tensor, mixing: Optional[dict[str, torch.Tensor]] = None,
                path: Optional[Path] = None) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        edge_w = self.edge_weights() if path is None or mixing is not None else None  # not in single-path mode
        if path is not None and mixing is not None:  # hard sampling (GDAS): path's ops times mixing's weights
            for cell in self.cells:
                key = "reduce" if cell.reduction else "normal"
                s0, s1 = s1, cell.forward_hard(s0, s1, mixing[key], path[key], edge_w and edge_w[key])
        elif path is not None:
            for cell in self.cells:
                s0, s1 = s1, cell.forward_path(s0, s1, path["reduce" if cell.reduction else "normal"])
        else:
            if mixing is None:
                mixing = self.mixing_weights()
            for cell in self.cells:
                key = "reduce" if cell.reduction else "normal"
                s0, s1 = s1, cell(s0, s1, mixing[key], edge_w and edge_w[key], self.drop_path_prob)
        return self.classifier(self.global_pooling(s1).flatten(1))

    def genotype(self, mixing: Optional[dict[str, torch.Tensor]] = None, rule: str = "darts") -> Genotype:
        """DARTS's derivation (``rule: pooled``: GDAS's) from ``mixing`` (default softmax(alpha)); with edge
        normalisation each edge's row is scaled by its edge weight first."""
        mixing = self.mixing_weights() if mixing is None else mixing
        edge_w = self.edge_weights()
        if edge_w is not None:
            mixing = {key: w * edge_w[key].unsqueeze(-1) for key, w in mixing.items()}
        return derive_genotype(mixing["normal"], mixing["reduce"], self.primitives, self.steps, self.multiplier, rule)

    def edge_shapes(self, image_size: int) -> list[tuple[str, list[tuple[int, int, int]]]]:
        """A reduction cell's edges from its two inputs run at stride 2, those from its nodes at half the size."""
        out, h = [], image_size
        for cell in self.cells:
            edges = [(edge.channels, h if j < 2 or not cell.reduction else h // 2, 2 if cell.reduction and j < 2 else 1)
                     for edge, j in zip(cell.edges, (j for i in range(self.steps) for j in range(2 + i)))]
            out.append(("reduce" if cell.reduction else "normal", edges))
            h = h // 2 if cell.reduction else h
        return out

    # ---- sampling mode ------------------------------------------------------------------------------
    def blocks(self) -> nn.ModuleList:
        return self.cells
