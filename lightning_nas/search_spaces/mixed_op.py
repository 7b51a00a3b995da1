"""The mixed operation of a supernet edge, shared by every space: the continuous relaxation (Liu et al., ICLR
2019, Eq. 2) sums every candidate op weighted by the edge's mixing weights; the single-path mode runs one op.

A space builds the candidate ops (DARTS adds a BN after pooling; NAS-Bench-201's ops have no affine BN) and
hands them to ``MixedOp``; ``none`` contributes w * 0 = 0 (and a zero gradient to w), so it is skipped, which is
exact and cheaper.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Optional

import torch
from torch import nn


class MixedOp(nn.Module):
    """Candidate ops of one edge (``ops``, in the supernet's primitive order) and which of them are ``none``."""

    def __init__(self, ops: Iterable[nn.Module], primitives: Sequence[str]):
        super().__init__()
        self.ops = nn.ModuleList(ops)
        self.is_zero: list[bool] = [name == "none" for name in primitives]
        if len(self.ops) != len(self.is_zero):
            raise ValueError(f"{len(self.ops)} ops for {len(self.is_zero)} primitives")

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> Any:
        """The weighted sum of every op but ``none`` (0 if only ``none`` is there)."""
        return sum(w * op(x) for w, op, zero in zip(weights, self.ops, self.is_zero) if not zero)

    def forward_hard(self, x: torch.Tensor, weights: torch.Tensor, op: int,
                     others_as_scalars: bool = False) -> torch.Tensor:
        """GDAS's edge (Dong & Yang, CVPR 2019): only op ``op`` runs, times its (straight-through) weight. With
        ``others_as_scalars`` the other weights are added as scalars, which are 0 in the forward but give every
        weight of the edge a gradient (AutoDL's NAS-Bench-201 cell, ``search_cells.py:72-86``); without, only the
        chosen weight enters (its DARTS-space cell, ``search_cells.py:180-181``)."""
        out = weights[op] * self.ops[op](x)
        if others_as_scalars:
            for k in range(len(self.ops)):
                if k != op:
                    out = out + weights[k]
        return out

    def forward_path(self, x: torch.Tensor, op: int) -> Optional[torch.Tensor]:
        """The one op ``op`` (None for an absent edge, -1, or ``none``: nothing is computed)."""
        if op < 0 or self.is_zero[op]:
            return None
        return self.ops[op](x)
