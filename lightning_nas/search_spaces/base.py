"""What a search space's supernet offers the differentiable methods (a pure ``nn.Module``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from lightning_nas.errors import ConfigError
from lightning_nas.search_spaces.mixed_op import MixedOp
from lightning_nas.search_spaces.space import Path, SearchSpace


def node_softmax(beta: torch.Tensor, in_degrees: Sequence[int]) -> torch.Tensor:
    """PC-DARTS edge normalisation (Xu et al., ICLR 2020, Eq. 4; official ``model_search.py:138-158``): softmax of
    ``beta`` over each node's incoming edges (``in_degrees[i]`` consecutive edges per node), concatenated."""
    return torch.cat([F.softmax(part, dim=-1) for part in torch.split(beta, list(in_degrees))])


def check_partial_channels(k: int, widths: Sequence[int]) -> int:
    """PC-DARTS's K: a positive divisor of every cell width."""
    if k < 1 or any(c % k for c in widths):
        raise ConfigError(f"partial_channels (PC-DARTS's K) must be a positive divisor of every cell's channel count "
                          f"{sorted(set(widths))}, got {k}: pick K that divides them, or 1 to disable")
    return k


def check_primitives(primitives: Sequence[str], known: Sequence[str]) -> tuple[str, ...]:
    """A space's op set from a config: distinct names of ``known``, at least two."""
    primitives = tuple(primitives)
    unknown = [p for p in primitives if p not in known]
    if unknown or len(set(primitives)) != len(primitives) or len(primitives) < 2:
        raise ConfigError(f"primitives must be distinct names from {list(known)}, at least two; "
                          f"got {list(primitives)}")
    return primitives


class Supernet(nn.Module):
    """Base of the supernets: the methods use only this interface, so each runs on every space.

    Subclasses set ``space`` (the ``SearchSpace`` whose cells they relax), ``primitives`` (the ops searched, a
    subset of the space's) and ``ARCH_NAMES``, and implement ``mixing_weights``, ``forward`` and ``genotype``;
    ``genotype()`` returns the space's genotype type (with ``to_dict()`` and ``to_text()``).

    Sampling mode (single-path weight sharing: Guo et al. 2020, SPOS; Li & Talwalkar 2019, RSPS):
    ``forward(x, path=p)`` runs exactly one op per edge of the child ``p`` (a ``Path``) and computes nothing for
    the other ops, so their parameters get no gradient. ``random_path`` draws a uniform child of the space,
    ``path_genotype`` / ``genotype_path`` convert between children and genotypes (the space's, over this
    supernet's ``primitives``), ``blocks`` lists the cells in
    forward order (prefix sharing ties the stem and the first blocks of several supernets).
    """

    ARCH_NAMES: tuple[str, ...] = ()
    primitives: Sequence[str]
    space: SearchSpace
    #: PC-DARTS's options (see ``edge_weights`` and ``mixed_op``)
    partial_channels: int = 1
    edge_normalization: bool = False
    #: drop-path probability of each edge's mixed output in the soft forward while training (SNAS's search; a method
    #: sets it, 0 = off)
    drop_path_prob: float = 0.0

    def space_id(self) -> str:
        """Identifies the space in checkpoints (a checkpoint of another space is refused)."""
        raise NotImplementedError

    def pc_id(self) -> str:
        """The PC-DARTS options as ``space_id`` names them (empty without them: older ids stay as they were)."""
        return (f", partial_channels={self.partial_channels}" if self.partial_channels > 1 else "") + \
            (", edge_normalization" if self.edge_normalization else "")

    def arch_parameters(self) -> list[nn.Parameter]:
        return [getattr(self, name) for name in self.ARCH_NAMES]

    def named_weight_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        for name, p in self.named_parameters():
            if name not in self.ARCH_NAMES:
                yield name, p

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_weight_parameters()]

    def mixing_weights(self) -> dict[str, torch.Tensor]:
        """The continuous relaxation: softmax(alpha) per edge, one tensor per alpha."""
        raise NotImplementedError

    def arch_logits(self) -> dict[str, nn.Parameter]:
        """The raw alpha (edges x ``primitives``) per cell type, the keys of ``mixing_weights`` (the first
        ``arch_parameters``; edge-normalisation betas follow them)."""
        return dict(zip(self.space.cell_types, self.arch_parameters()))

    def edge_weights(self) -> Optional[dict[str, torch.Tensor]]:
        """PC-DARTS edge normalisation: per cell type, the node-wise softmax of beta (one weight per edge), which
        scales each edge's output in the soft and hard forwards and its row of the mixing weights in the genotype;
        None without edge normalisation."""
        return None

    def forward(self, x: torch.Tensor, mixing: Optional[dict[str, torch.Tensor]] = None,
                path: Optional[Path] = None) -> torch.Tensor:
        """``mixing`` alone: every op weighted (default ``mixing_weights()``); ``path`` alone: the child's ops only;
        both (hard sampling, GDAS): the path's op per edge times its weight in ``mixing``."""
        raise NotImplementedError

    def genotype(self, mixing: Optional[dict[str, torch.Tensor]] = None, rule: str = "darts") -> Any:
        """The space's genotype derived from ``mixing`` (default ``mixing_weights()``); ``rule`` names a space's
        alternative derivation (DARTS space: ``pooled``, GDAS's), ignored by a space with one."""
        raise NotImplementedError

    # ---- sampling mode ----------------------------------------------------------------------------
    def random_path(self, generator: torch.Generator) -> Path:
        """A child drawn uniformly from the space with ``generator`` (CPU): the same child on every rank."""
        return self.space.random_path(generator, self.primitives)

    def path_genotype(self, path: Path) -> Any:
        """The genotype (``genotype()``'s type) of a child."""
        return self.space.path_genotype(path, self.primitives)

    def genotype_path(self, genotype: Any) -> Path:
        """The child of a genotype (inverse of ``path_genotype``); refuses ops outside ``primitives``."""
        return self.space.genotype_path(genotype, self.primitives)

    def blocks(self) -> nn.ModuleList:
        """The stacked cells (and reduction blocks) after ``stem``, in forward order."""
        raise NotImplementedError

    def repartition(self, k: int, widen: Callable[[nn.Module, int], None]) -> None:
        """PC-DARTS's K becomes ``k``: every edge's ops go from C/K to C/k channels through ``widen(op, channels)``
        (DrNAS's progressive search widens them with net2net copies)."""
        for m in self.modules():
            if isinstance(m, MixedOp):
                full = m.channels * m.partial_channels
                if full % k:
                    raise ConfigError(f"partial_channels {k} does not divide an edge's {full} channels")
                for op in m.ops:
                    widen(op, full // k)
                m.channels, m.partial_channels = full // k, k
        self.partial_channels = k

    def edge_shapes(self, image_size: int) -> list[tuple[str, list[tuple[int, int, int]]]]:
        """Per cell in forward order, its cell type and, per edge, the (channels, input height, stride) its ops
        run at on ``image_size`` images: what resource models (SNAS's) price an op by."""
        raise ConfigError(f"{type(self).__name__} does not give its edges' shapes, which SNAS's resource constraint "
                          "prices: implement Supernet.edge_shapes, or set model.resource_lambda 0")

    def path_mixing(self, path: Path) -> dict[str, torch.Tensor]:
        """One-hot mixing weights of a child (absent edges all zero): ``forward(x, mixing=path_mixing(p))``
        equals ``forward(x, path=p)`` while computing every op (the reference the sampling mode is tested on)."""
        mixing = self.mixing_weights()
        out = {}
        for key, ops in path.items():
            w = torch.zeros_like(mixing[key])
            for e, op in enumerate(ops):
                if op >= 0:
                    w[e, op] = 1.0
            out[key] = w
        return out


#: a search space in a method's config: called with (num_classes, in_channels) it builds the supernet
SupernetFactory = Callable[[int, int], Supernet]
