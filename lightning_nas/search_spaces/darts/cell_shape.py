"""Cell depth and width (Shu, Wang & Cai, "Understanding architectures learnt by cell-based NAS", ICLR 2020).

Conventions (stated because the paper leaves partially connected nodes open):
- depth: the number of operation edges on the longest path from an input node (0 or 1) to any node in
  the concat; the concatenation into the cell output is not counted. A cell whose nodes all read only
  the inputs has depth 1; a chain has depth ``steps``.
- width: the number of intermediate nodes with at least one edge from an input node, in units of the
  per-node channel count c (a node fed by one input and one intermediate node counts fully).
"""

from __future__ import annotations

from collections.abc import Sequence


def cell_depth(gene: Sequence[tuple[str, int]], concat: Sequence[int]) -> int:
    depth = {0: 0, 1: 0}
    for i in range(len(gene) // 2):
        depth[2 + i] = 1 + max(depth[j] for _, j in gene[2 * i:2 * i + 2])
    return max(depth[c] for c in concat)


def cell_width(gene: Sequence[tuple[str, int]]) -> int:
    return sum(1 for i in range(len(gene) // 2) if any(j < 2 for _, j in gene[2 * i:2 * i + 2]))
