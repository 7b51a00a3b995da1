"""NA-DARTS: neighbourhood-aware DARTS (Wang, Cao, Li, Kitani, BMVC 2021, arXiv 2105.06369).

Only the paper's abstract could be read. This implements the interpretation in the README's method notes
(NA-DARTS) and is documented as such, not as the paper's exact objective:
- the architecture loss is the mean of L_val over the current mixing weights softmax(alpha) and ``neighbours``
  (K) neighbour mixing weights;
- a neighbour is built from softmax(alpha) by picking ``distance`` (d) edges at random in each cell type and, on
  each, moving the mass of the strongest op onto another op chosen at random (``none`` excluded when present);
  the move is written with tensor arithmetic, so gradients reach alpha through softmax(alpha) in every term;
- everything else is DARTS (first or second order); with K = 0 the method is DARTS exactly.
The neighbour sampler is ``neighbour_mixing`` (override it to try another neighbourhood). Draws come from
``step_generator``: identical on all ranks and across resume.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from lightning_nas.core.host_reads import host_read
from lightning_nas.errors import ConfigError
from lightning_nas.methods.bilevel.darts import DARTS
from lightning_nas.search_spaces.neighbourhood import neighbour_moves, replacement_ops


class NADARTS(DARTS):
    def __init__(self, *args: Any, neighbours: int = 2, distance: int = 1, **kwargs: Any):
        """
        Args:
            neighbours: K, neighbour architectures averaged with the current one (0: plain DARTS).
            distance: d, edges changed per cell type in each neighbour.
        """
        super().__init__(*args, **kwargs)
        if neighbours < 0 or distance < 1:
            raise ConfigError(f"need model.neighbours >= 0 and model.distance >= 1, got {neighbours}, {distance}")
        self.neighbours, self.distance = neighbours, distance

    def variant(self) -> dict[str, Any]:
        return {**super().variant(), "neighbours": self.neighbours, "distance": self.distance}

    def strongest_ops(self, mixing: dict[str, torch.Tensor]) -> dict[str, list[int]]:
        """Per cell type, each edge's strongest op: one host read per architecture step (declared), shared by the
        step's K neighbours."""
        with host_read("NA-DARTS moves each picked edge's strongest op: the host draws the moves around it"):
            picks = torch.stack([w.detach().argmax(-1) for w in mixing.values()]).tolist()
        return dict(zip(mixing, picks))

    def neighbour_mixing(self, mixing: dict[str, torch.Tensor], generator: torch.Generator,
                         strongest: Optional[dict[str, list[int]]] = None) -> dict[str, torch.Tensor]:
        """One neighbour (``search_spaces.neighbourhood``, the notion NA-RS shares): on ``distance`` random edges
        per cell, the strongest op's mass moves to another op. ``strongest``: ``strongest_ops(mixing)``, if
        known."""
        allowed = replacement_ops(self.supernet.primitives)
        strongest = strongest or self.strongest_ops(mixing)
        out = {}
        for cell, w in mixing.items():
            move = torch.zeros(w.shape, dtype=w.dtype)  # built on the host, one copy to the device
            for e, target in neighbour_moves(strongest[cell], self.distance, allowed, generator):
                move[e, strongest[cell][e]], move[e, target] = -1.0, 1.0
            move = move.to(w.device)
            strongest_mass = (w * (move < 0)).sum(-1, keepdim=True)  # differentiable in w
            out[cell] = w + strongest_mass * move
        return out

    def arch_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mixing = self.supernet.mixing_weights()
        loss = self.loss(self.supernet(x, mixing=mixing), y)
        if self.neighbours == 0:
            return loss
        g = self.step_generator(stream=2)
        strongest = self.strongest_ops(mixing)
        for _ in range(self.neighbours):
            loss = loss + self.loss(self.supernet(x, mixing=self.neighbour_mixing(mixing, g, strongest)), y)
        return loss / (self.neighbours + 1)
