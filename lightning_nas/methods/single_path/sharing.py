"""Reduced weight sharing (Zhang et al., "Deeper Insights into Weight Sharing in NAS", arXiv 2001.01431, Sec. 5):
``groups`` = m > 1 keeps m copies of a supernet's weights, and each child trains and is evaluated with its group's
copy. Memory and checkpoint size are m times the supernet's; m = 1 is full sharing.

``grouping: random`` assigns a child by a seeded hash of its encoding; ``grouping: similarity`` by its nearest
(Hamming distance over edge ops) of m seeded centroid children, ties broken by the same hash, so similar children
share weights (groups are then not equally large: 23/27/27/23 % of NAS-Bench-201 for m = 4). Every copy starts
from the same initial weights. ``shared_prefix`` = k shares the stem and the first k blocks (``supernet.blocks()``:
cells, and on NAS-Bench-201 the residual reductions) across all groups and keeps the rest per group.

A component, not a method: the single-path frame holds one; the assignment depends only on ``grouping_seed`` (not
the run seed), so runs with other seeds group children alike.
"""

from __future__ import annotations

import copy
from typing import Literal, Optional

import torch

from lightning_nas.errors import ConfigError
from lightning_nas.reproducibility import mix_seed
from lightning_nas.search_spaces.base import Path, Supernet

Grouping = Literal["similarity", "random"]


def path_code(path: Path) -> tuple[int, ...]:
    """A child as one flat tuple of op indices (cell types in sorted order)."""
    return tuple(op for key in sorted(path) for op in path[key])


class GroupSharing:
    """The m - 1 extra weight copies of ``supernet`` (``copies``; group 0 is the supernet itself) and the map from
    a child to its group."""

    def __init__(self, supernet: Supernet, groups: int = 1, grouping: Grouping = "similarity",
                 grouping_seed: int = 0, shared_prefix: Optional[int] = None):
        if groups < 1:
            raise ConfigError(f"model.groups must be a positive integer, got {groups}")
        if grouping not in ("similarity", "random"):
            raise ConfigError(f"model.grouping must be 'similarity' or 'random', got {grouping!r}")
        self.groups, self.grouping, self.grouping_seed, self.shared_prefix = groups, grouping, grouping_seed, \
            shared_prefix
        self.copies = self._copies(supernet)
        self.centroids = [path_code(supernet.random_path(torch.Generator().manual_seed(
            mix_seed(grouping_seed, k, 23)))) for k in range(groups)] if groups > 1 else []

    def _copies(self, supernet: Supernet) -> list[Supernet]:
        if self.groups == 1:
            if self.shared_prefix is not None:
                raise ConfigError("model.shared_prefix needs model.groups > 1 (with one group everything is shared)")
            return []
        blocks = len(supernet.blocks())
        if self.shared_prefix is not None and not 0 <= self.shared_prefix <= blocks:
            raise ConfigError(f"model.shared_prefix must be in [0, {blocks}] (the supernet's blocks), "
                              f"got {self.shared_prefix}")
        copies = []
        for _ in range(self.groups - 1):
            net = copy.deepcopy(supernet)
            if self.shared_prefix is not None:  # tie the stem and the first blocks to group 0's modules
                net.stem = supernet.stem
                for i in range(self.shared_prefix):
                    net.blocks()[i] = supernet.blocks()[i]
            copies.append(net)
        return copies

    def describe(self) -> str:
        """What a checkpoint's space id adds for this sharing ("" for full sharing)."""
        return "" if self.groups == 1 else f", groups={self.groups} ({self.grouping}), prefix={self.shared_prefix}"

    def group_of(self, path: Path) -> int:
        """The group whose weights the child ``path`` trains and is evaluated with."""
        if self.groups == 1:
            return 0
        code = path_code(path)
        key = mix_seed(self.grouping_seed, *(c + 1 for c in code))
        if self.grouping == "random":
            return key % self.groups
        distances = [sum(a != b for a, b in zip(code, c)) for c in self.centroids]
        nearest = [k for k, d in enumerate(distances) if d == min(distances)]
        return nearest[key % len(nearest)]  # ties: a seeded hash of the child, not the first centroid
