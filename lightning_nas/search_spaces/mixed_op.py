"""The mixed operation of a supernet edge, shared by every space: the continuous relaxation (Liu et al., ICLR
2019, Eq. 2) sums every candidate op weighted by the edge's mixing weights; the single-path mode runs one op.

A space builds the candidate ops (DARTS adds a BN after pooling; NAS-Bench-201's ops have no affine BN) and
hands them to ``MixedOp``; ``none`` contributes w * 0 = 0 (and a zero gradient to w), so it is skipped, which is
exact and cheaper.

Partial channels (PC-DARTS, Xu et al., ICLR 2020, Sec. 3.2; official yuhuixu1993/PC-DARTS ``model_search.py:9-53``):
with ``partial_channels = K > 1`` the ops are built on C/K channels (by the space), only the first C/K channels of
the input go through them, the rest bypass the edge (max-pooled 2x2 on a stride-2 edge) and the two parts are
concatenated and channel-shuffled with K groups. K = 1 is the plain edge (no shuffle, as DrNAS's NB201 cell).
Every mode (soft, hard, single path) applies the same split, so any relaxation can use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Drop a whole path per sample with probability ``drop_prob``, rescaling survivors (DARTS ``utils``)."""
    keep = 1.0 - drop_prob
    mask = torch.empty(x.size(0), 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle (PC-DARTS ``channel_shuffle``): (B, g*c, H, W) -> channels interleaved."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class MixedOp(nn.Module):
    """Candidate ops of one edge (``ops``, in the supernet's primitive order) and which of them are ``none``."""

    def __init__(self, ops: Iterable[nn.Module], primitives: Sequence[str], partial_channels: int = 1,
                 stride: int = 1, channels: int = 0):
        """``channels``: what the ops see (C / ``partial_channels``), for resource models and widening."""
        super().__init__()
        self.ops = nn.ModuleList(ops)
        self.is_zero: list[bool] = [name == "none" for name in primitives]
        self.partial_channels, self.stride, self.channels = partial_channels, stride, channels
        if len(self.ops) != len(self.is_zero):
            raise ValueError(f"{len(self.ops)} ops for {len(self.is_zero)} primitives")

    def _partial(self, x: torch.Tensor, run: Callable[[torch.Tensor], Any]) -> Any:
        """``run`` on the first C/K channels, the rest bypassed and shuffled back in (PC-DARTS); plain for K = 1.
        ``run`` returning None (nothing computed) leaves the op part zero."""
        k = self.partial_channels
        if k == 1:
            return run(x)
        part, rest = x[:, :x.shape[1] // k], x[:, x.shape[1] // k:]
        if self.stride == 2:
            rest = F.max_pool2d(rest, 2, 2)
        out = run(part)
        if out is None or isinstance(out, int):  # only `none` (or no op) on the edge: zeros of the op part's shape
            out = part[:, :, ::self.stride, ::self.stride].mul(0.0)
        return channel_shuffle(torch.cat([out, rest], dim=1), k)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> Any:
        """The weighted sum of every op but ``none`` (0 if only ``none`` is there)."""
        return self._partial(x, lambda h: sum(w * op(h) for w, op, zero in zip(weights, self.ops, self.is_zero)
                                              if not zero))

    def forward_hard(self, x: torch.Tensor, weights: torch.Tensor, op: int,
                     others_as_scalars: bool = False) -> torch.Tensor:
        """GDAS's edge (Dong & Yang, CVPR 2019): only op ``op`` runs, times its (straight-through) weight. With
        ``others_as_scalars`` the other weights are added as scalars, which are 0 in the forward but give every
        weight of the edge a gradient (AutoDL's NAS-Bench-201 cell, ``search_cells.py:72-86``); without, only the
        chosen weight enters (its DARTS-space cell, ``search_cells.py:180-181``)."""
        def run(h: torch.Tensor) -> torch.Tensor:
            out = weights[op] * self.ops[op](h)
            if others_as_scalars:
                for k in range(len(self.ops)):
                    if k != op:
                        out = out + weights[k]
            return out

        return self._partial(x, run)

    def forward_path(self, x: torch.Tensor, op: int) -> Optional[torch.Tensor]:
        """The one op ``op`` (None for an absent edge, -1, or ``none`` without partial channels: nothing is
        computed)."""
        if op < 0 or (self.is_zero[op] and self.partial_channels == 1):
            return None
        return self._partial(x, lambda h: None if self.is_zero[op] else self.ops[op](h))
