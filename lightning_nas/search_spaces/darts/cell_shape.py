"""Cell width and depth (Shu, Wang & Cai, "Understanding architectures learnt by cell-based NAS", ICLR 2020).

The rule that reproduces the paper's published values (NASNet 5c/2, AmoebaNet 4c/4, ENAS 5c/2, DARTS_V2 3.5c/3,
SNAS 4c/2; tested):
- width: 0.5c for every edge whose source is a cell input (node 0 or 1), in units of the per-node channel count
  c. A node fed by one input and one intermediate node therefore counts 0.5c: it is half connected to the
  inputs (the paper leaves partially connected nodes open; this is the convention its numbers follow);
- depth: the number of edges on the longest path from a cell input through the intermediate nodes to the output
  node, every intermediate node feeding the output (the concatenation counts as one edge, whatever the concat
  list says). A cell whose nodes all read only the inputs has depth 2; a chain of four nodes has depth 5.
"""

from __future__ import annotations

from collections.abc import Sequence


def cell_depth(gene: Sequence[tuple[str, int]]) -> int:
    """Edges on the longest input -> output path of a cell given as (op, input node) pairs, two per node."""
    depth = {0: 0, 1: 0}
    for i in range(len(gene) // 2):
        depth[2 + i] = 1 + max(depth[j] for _, j in gene[2 * i:2 * i + 2])
    return 1 + max(depth[n] for n in range(2, 2 + len(gene) // 2))


def cell_width(gene: Sequence[tuple[str, int]]) -> float:
    """0.5 per edge from a cell input, in units of c."""
    return 0.5 * sum(1 for _, j in gene if j < 2)
