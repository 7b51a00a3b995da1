"""The neighbourhood of an architecture, shared by NA-DARTS and NA-RS (Wang, Cao, Li, Kitani, BMVC 2021,
arXiv 2105.06369; only the abstract could be read, so this is the documented interpretation of methods.md 4):
a neighbour at distance d is the same cell with the ops of d distinct edges (per cell type) replaced by other
ops, never by ``none`` (a neighbour changes an operation, it does not delete an edge). Edges a child does not
have (-1 in a ``Path``) are never chosen. Every draw comes from the caller's generator, so neighbours are the
same on every rank and after a resume."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lightning_nas.search_spaces.base import Path


def replacement_ops(primitives: Sequence[str]) -> list[int]:
    """The op indices a neighbour may switch an edge to: every op but ``none``."""
    return [i for i, p in enumerate(primitives) if p != "none"]


def neighbour_moves(current: Sequence[int], distance: int, allowed: Sequence[int],
                    generator: torch.Generator) -> list[tuple[int, int]]:
    """``(edge, new op)`` for ``distance`` distinct edges drawn uniformly among those with an op (``current[e] >=
    0``; all of them if fewer), each switched to an op of ``allowed`` other than its current one, uniformly."""
    edges = [e for e, op in enumerate(current) if op >= 0]
    picked = torch.randperm(len(edges), generator=generator)[: min(distance, len(edges))].tolist()
    moves = []
    for i in picked:
        e = edges[i]
        targets = [op for op in allowed if op != current[e]]
        if not targets:
            raise ValueError(f"edge {e} has no other op to switch to (allowed ops {list(allowed)})")
        moves.append((e, targets[int(torch.randint(len(targets), (1,), generator=generator))]))
    return moves


def neighbour_path(path: Path, primitives: Sequence[str], distance: int, generator: torch.Generator) -> Path:
    """A neighbour of the child ``path``: ``distance`` edges per cell type with another op (see the module)."""
    allowed = replacement_ops(primitives)
    out = {}
    for cell, ops in path.items():
        new = list(ops)
        for e, op in neighbour_moves(ops, distance, allowed, generator):
            new[e] = op
        out[cell] = tuple(new)
    return out


def path_distance(a: Path, b: Path) -> dict[str, int]:
    """Per cell type, the number of edges whose op differs (Hamming distance)."""
    return {cell: sum(x != y for x, y in zip(a[cell], b[cell])) for cell in a}
