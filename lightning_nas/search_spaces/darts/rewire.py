"""Rewired variants of a DARTS-space cell (Shu, Wang & Cai, ICLR 2020, Sec. 4; official code
shuyao95/Understanding-NAS ``genotypes.py``): the same ops with other connections.

- ``random_conn``: the official ``random_conn``. Every edge keeps its op and draws its source uniformly among
  the nodes available to its node (node k: 0 .. k-1), normal and reduce cells interleaved, from NumPy's legacy
  generator seeded with ``seed`` (``np.random.seed(seed)`` there): seed s gives the official ``*_CONN<s>`` cell.
- ``widest``: the paper's ``*_ADAPT`` idea, every edge from a cell input (widest and shallowest: width 0.5c per
  edge, depth 2). The official ADAPT cells were edited by hand; here an edge from an intermediate node moves to
  the input its node's other edge does not use (c_{k-1}, node 1, when the other edge is not from an input), and
  edges already from an input stay.
- ``width_buckets``: the paper's C1..C12 protocol: draw seeds 1, 2, ... and keep the first ``per_bucket`` variants
  whose normal-cell width falls in each requested bucket (the seeds are reported with the cells).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lightning_nas.search_spaces.darts.cell_shape import cell_width
from lightning_nas.search_spaces.darts.genotype import Genotype


def random_conn(genotype: Genotype, seed: int) -> Genotype:
    """The official ``random_conn(arch, num_ops=len(normal), seed)`` (both cells need the same edge count)."""
    if len(genotype.normal) != len(genotype.reduce):
        raise ValueError("random_conn needs normal and reduce cells with the same number of edges")
    rng = np.random.RandomState(seed)
    states = [0, 1]
    normal, reduce = list(genotype.normal), list(genotype.reduce)
    for i in range(len(normal)):
        normal[i] = (normal[i][0], int(rng.choice(states, 1).item()))
        reduce[i] = (reduce[i][0], int(rng.choice(states, 1).item()))
        if i % 2 == 1:
            states.append(states[-1] + 1)
    return Genotype(tuple(normal), genotype.normal_concat, tuple(reduce), genotype.reduce_concat,
                    source=f"random_conn({genotype.source or 'genotype'}, seed={seed})")


def _widest_cell(gene: Sequence[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    out: list[tuple[str, int]] = []
    for k in range(0, len(gene), 2):
        pair = list(gene[k:k + 2])
        for e in range(2):
            op, src = pair[e]
            if src >= 2:
                other = pair[1 - e][1]
                pair[e] = (op, 0 if other == 1 else 1)
        out.extend(pair)
    return tuple(out)


def widest(genotype: Genotype) -> Genotype:
    """Every edge from a cell input, ops unchanged (see the module docstring for which input)."""
    return Genotype(_widest_cell(genotype.normal), genotype.normal_concat, _widest_cell(genotype.reduce),
                    genotype.reduce_concat, source=f"widest({genotype.source or 'genotype'})")


def width_buckets(genotype: Genotype, widths: Sequence[float], per_bucket: int = 3, max_seed: int = 10_000
                  ) -> dict[float, list[tuple[int, Genotype]]]:
    """``per_bucket`` (seed, variant) pairs per normal-cell width in ``widths``, from seeds 1, 2, ..."""
    buckets: dict[float, list[tuple[int, Genotype]]] = {float(w): [] for w in widths}
    for seed in range(1, max_seed + 1):
        if all(len(v) >= per_bucket for v in buckets.values()):
            return buckets
        variant = random_conn(genotype, seed)
        width = cell_width(variant.normal)
        if width in buckets and len(buckets[width]) < per_bucket:
            buckets[width].append((seed, variant))
    missing = {w: len(v) for w, v in buckets.items() if len(v) < per_bucket}
    raise ValueError(f"seeds 1..{max_seed} give too few variants for the widths {missing}")
