"""The NAS-Bench-201 search supernet (Dong & Yang, ICLR 2020, Sec. 5; AutoDL ``TinyNetworkDarts``).

The benchmark's macro network with every cell a mixed cell: each of the 6 edges sums all candidate ops weighted
by softmax(alpha). One alpha (6 x |ops|) is shared by all 15 cells; ops inside cells use BN without affine
parameters, the stem and the residual reductions are the benchmark's. Same interface as ``DartsSupernet``
(``arch_parameters``, ``weight_parameters``, ``mixing_weights``, ``forward(x, mixing=...)``, ``genotype``), so
every differentiable method runs on it unchanged. The derived cell takes each edge's strongest op, ``none``
included, as the benchmark's DARTS baseline does (that is how DARTS's collapse shows on this space).

Sampling mode: ``forward(x, path={"cell": ops})`` runs one op per edge (``ops[k]`` indexes ``primitives``) in
every cell; ``none`` computes nothing. A child is any of the benchmark's cells (all 6 edges present), so
``random_path`` is uniform over the 15,625 cells (over |primitives|^6 with a reduced op set).

PC-DARTS's options, as on the DARTS space: ``partial_channels = K`` (ops on C/K channels, the rest bypassed and
shuffled; DrNAS's NB201 cell ``NAS201SearchCell_PartialChannel``) and ``edge_normalization`` (one ``beta`` per
edge, node-wise softmax over nodes 1, 2, 3's incoming edges). The official PC-DARTS has no NB201 code; this is its
DARTS-space rule applied to this cell.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from lightning_nas.errors import ConfigError
from lightning_nas.search_spaces.base import Path, Supernet, check_partial_channels, check_primitives, node_softmax
from lightning_nas.search_spaces.mixed_op import MixedOp, drop_path
from lightning_nas.search_spaces.nb201.arch import EDGES, NUM_NODES, NB201Arch, arch_from_mixing
from lightning_nas.search_spaces.nb201.network import build_stages
from lightning_nas.search_spaces.nb201.ops import PRIMITIVES, make_op
from lightning_nas.search_spaces.nb201.space import NB201Space

#: state_dict keys written before the edges were ``MixedOp`` s: ``edges.<k>.<op>.`` is now ``edges.<k>.ops.<op>.``
_OLD_EDGE_KEY = re.compile(r"^edges\.(\d+)\.(\d+)\.")


class MixedCell(nn.Module):
    """A search cell: every edge is a ``MixedOp``, the softmax(alpha)-weighted sum of all candidate ops."""

    def __init__(self, channels: int, primitives: Sequence[str], partial_channels: int = 1):
        super().__init__()
        c = channels // partial_channels
        self.edges = nn.ModuleList(
            MixedOp((make_op(p, c, c, 1, affine=False) for p in primitives), primitives, partial_channels, 1, c)
            for _ in EDGES)
        self._register_load_state_dict_pre_hook(self._rename_old_keys)

    @staticmethod
    def _rename_old_keys(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Checkpoints written before the edges were ``MixedOp`` s load unchanged."""
        for key in [k for k in state_dict if k.startswith(prefix)]:
            new = _OLD_EDGE_KEY.sub(r"edges.\1.ops.\2.", key[len(prefix):])
            if new != key[len(prefix):]:
                state_dict[prefix + new] = state_dict.pop(key)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, edge_weights: Optional[torch.Tensor] = None,
                drop_prob: float = 0.0) -> torch.Tensor:
        nodes = [x]
        k = 0
        for to in range(1, NUM_NODES):
            total = 0
            for j in range(to):
                out = self.edges[k + j](nodes[j], weights[k + j])
                if self.training and drop_prob > 0:
                    out = drop_path(out, drop_prob)
                total = total + (out if edge_weights is None else edge_weights[k + j] * out)
            nodes.append(total)
            k += to
        return nodes[-1]

    def forward_hard(self, x: torch.Tensor, weights: torch.Tensor, ops: tuple[int, ...],
                     edge_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        """GDAS: one op per edge times its hard weight, the edge's other weights added as scalars (AutoDL)."""
        nodes = [x]
        k = 0
        for to in range(1, NUM_NODES):
            nodes.append(sum((1 if edge_weights is None else edge_weights[k + j])
                             * self.edges[k + j].forward_hard(nodes[j], weights[k + j], ops[k + j], True)
                             for j in range(to)))
            k += to
        return nodes[-1]

    def forward_path(self, x: torch.Tensor, ops: tuple[int, ...]) -> torch.Tensor:
        """One op per edge (``ops[k]`` indexes the primitives; ``none`` and -1 contribute nothing)."""
        nodes = [x]
        k = 0
        for to in range(1, NUM_NODES):
            terms = [t for j in range(to) if (t := self.edges[k + j].forward_path(nodes[j], ops[k + j])) is not None]
            nodes.append(sum(terms[1:], terms[0]) if terms else torch.zeros_like(x))
            k += to
        return nodes[-1]


class NB201Supernet(Supernet):
    """NAS-Bench-201 search network; the benchmark's settings are C=16, N=5 cells per stage."""

    ARCH_NAMES = ("alpha",)

    def __init__(self, num_classes: int = 10, in_channels: int = 3, channels: int = 16, cells_per_stage: int = 5,
                 primitives: Sequence[str] = PRIMITIVES, alpha_init_std: float = 1e-3, partial_channels: int = 1,
                 edge_normalization: bool = False):
        """``partial_channels`` (K) and ``edge_normalization``: PC-DARTS's options (see the module docstring)."""
        super().__init__()
        primitives = check_primitives(primitives, PRIMITIVES)
        if channels < 1 or cells_per_stage < 1:
            raise ConfigError(f"need channels >= 1 and cells_per_stage >= 1, got {channels}, {cells_per_stage}")
        check_partial_channels(partial_channels, [channels, 2 * channels, 4 * channels])
        self.partial_channels, self.edge_normalization = partial_channels, edge_normalization
        self.primitives = primitives
        self.steps = NUM_NODES - 1
        self.space = NB201Space()
        self.stem, self.layers, c_last = build_stages(lambda c: MixedCell(c, primitives, partial_channels),
                                                      in_channels, channels, cells_per_stage)
        self.head = nn.Sequential(nn.BatchNorm2d(c_last), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_last, num_classes)
        self.alpha = nn.Parameter(alpha_init_std * torch.randn(len(EDGES), len(primitives)))
        if edge_normalization:
            self.beta = nn.Parameter(1e-3 * torch.randn(len(EDGES)))
            self.ARCH_NAMES = ("alpha", "beta")

    def space_id(self) -> str:
        return f"NB201Supernet(primitives={list(self.primitives)}{self.pc_id()})"

    def edge_weights(self) -> Optional[dict[str, torch.Tensor]]:
        if not self.edge_normalization:
            return None
        return {"cell": node_softmax(self.beta, list(range(1, NUM_NODES)))}

    def mixing_weights(self) -> dict[str, torch.Tensor]:
        return {"cell": F.softmax(self.alpha, dim=-1)}

    def forward(self, x: torch.Tensor, mixing: Optional[dict[str, torch.Tensor]] = None,
                path: Optional[Path] = None) -> torch.Tensor:
        x = self.stem(x)
        edge_w = (self.edge_weights() or {}).get("cell") if path is None or mixing is not None else None
        if path is not None and mixing is not None:  # hard sampling (GDAS): path's ops times mixing's weights
            ops, weights = path["cell"], mixing["cell"]
            for layer in self.layers:
                x = layer.forward_hard(x, weights, ops, edge_w) if isinstance(layer, MixedCell) else layer(x)
        elif path is not None:
            ops = path["cell"]
            for layer in self.layers:
                x = layer.forward_path(x, ops) if isinstance(layer, MixedCell) else layer(x)
        else:
            weights = (mixing if mixing is not None else self.mixing_weights())["cell"]
            for layer in self.layers:
                x = layer(x, weights, edge_w, self.drop_path_prob) if isinstance(layer, MixedCell) else layer(x)
        return self.classifier(self.global_pooling(self.head(x)).flatten(1))

    def genotype(self, mixing: Optional[dict[str, torch.Tensor]] = None, rule: str = "darts") -> NB201Arch:
        """Each edge's strongest op in ``mixing`` (default softmax(alpha); the edge weights of edge normalisation
        scale a row and cannot change it). The space has one rule: ``rule`` is ignored."""
        mixing = self.mixing_weights() if mixing is None else mixing
        return arch_from_mixing(mixing["cell"].detach().cpu().tolist(), self.primitives)

    def blocks(self) -> nn.ModuleList:
        return self.layers

    def edge_shapes(self, image_size: int) -> list[tuple[str, list[tuple[int, int, int]]]]:
        """Every edge at stride 1; each residual reduction between the stages halves the size."""
        out, h = [], image_size
        for layer in self.layers:
            if isinstance(layer, MixedCell):
                out.append(("cell", [(edge.channels, h, 1) for edge in layer.edges]))
            else:
                h //= 2
        return out
