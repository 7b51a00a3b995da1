"""SNAS's resource constraint (Xie et al., ICLR 2019, Sec. 2.4; official SNAS-Series ``SNAS/operations.py`` for the
op costs, ``model_search.py:448-474`` and ``train_search.py:421-447`` for the penalty), the ``reparametrization`` /
``log_penalty`` / ``separation all`` form of the README's command.

Each op of an edge has a size (conv weights), FLOPs (``size * y^2``, y the output height) and a memory access cost
(MAC) from the official formulas, priced at the edge's (channels, input height, stride) (``Supernet.edge_shapes``).
Per edge the sample Z gives the expected costs ``R = sum_k Z_k cost_k``; an ``|R| < 1`` is set to 1 and the edge's
penalty is ``(ln R_size + ln R_flops + ln R_mac) / 3``; per cell type the edges of all its cells are summed and
divided by the number of those cells (the official code divides by 6 and 2, the counts of its 8-cell network, at
every depth: the same at 8 cells); the loss term is ``lambda * (normal + ratio * reduce)`` (one cell type: its own
sum). Gradients reach alpha through Z only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lightning_nas.errors import ConfigError


def _kernel(op: str) -> int:
    return int(op.rsplit("_", 1)[-1].split("x")[0])


def snas_op_cost(op: str, channels: int, height: int, stride: int) -> tuple[float, float, float]:
    """(size, FLOPs, MAC) of one op as the official ``operations.py`` prices it (C_in = C_out = ``channels``)."""
    c, y = channels, height if stride == 1 else height // 2
    if op == "none":
        return 0.0, 0.0, 0.0
    if op == "skip_connect":
        if stride == 1:  # Identity
            return 0.0, 0.0, float(2 * c * height ** 2)
        size = 2 * c * (c // 2)  # FactorizedReduce
        return float(size), float(size * y ** 2), float(2 * y ** 2 * (4 * c + c // 2) + size)
    if op in ("avg_pool_3x3", "max_pool_3x3"):
        return 0.0, float(9 * y ** 2 * c), float((2 if stride == 1 else 5) * y ** 2 * c)
    if op.startswith("sep_conv_"):
        k = _kernel(op)
        size, mac_in = 2 * c * k * k + 2 * c * c, (7 if stride == 1 else 10)
    elif op.startswith("dil_conv_"):
        k = _kernel(op)
        size, mac_in = c * k * k + c * c, (3 if stride == 1 else 6)
    elif op.startswith("nor_conv_"):  # ReLUConvBN (NAS-Bench-201's convolutions)
        k = _kernel(op)
        size, mac_in = c * c * k * k, (1 if stride == 1 else 4)
    else:
        raise ConfigError(f"SNAS's resource constraint has no cost for op {op!r}: use model.resource_lambda 0")
    return float(size), float(size * y ** 2), float(y ** 2 * (mac_in * c + c) + size)


def cost_tables(shapes: list[tuple[str, list[tuple[int, int, int]]]], primitives: Sequence[str]
                ) -> list[tuple[str, torch.Tensor]]:
    """Per cell (type, costs[edge, op, (size, FLOPs, MAC)]) in float64."""
    return [(key, torch.tensor([[snas_op_cost(op, *edge) for op in primitives] for edge in edges],
                               dtype=torch.float64)) for key, edges in shapes]


def log_resource_penalty(mixing: dict[str, torch.Tensor], tables: list[tuple[str, torch.Tensor]],
                         ratio: float = 1.0) -> torch.Tensor:
    """The penalty of a sample ``mixing`` (per cell type, edges x ops), differentiable in it."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    for key, cost in tables:
        z = mixing[key]
        expected = (cost.to(z) * z.unsqueeze(-1)).sum(1)  # edges x 3
        clean = torch.where(expected.abs() < 1, torch.ones_like(expected), expected)
        per_cell = (clean.abs().log().sum(-1) / 3).sum()
        sums[key] = sums[key] + per_cell if key in sums else per_cell
        counts[key] = counts.get(key, 0) + 1
    return sum((ratio if key == "reduce" else 1.0) * total / counts[key] for key, total in sums.items())
