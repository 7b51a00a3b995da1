"""NA-RS, neighbourhood-aware random search with weight sharing (Wang, Cao, Li, Kitani, BMVC 2021, arXiv
2105.06369; only the abstract could be read, so this is the documented interpretation of methods.md 4).

RSPS's supernet training, unchanged; a candidate is scored by the ``aggregation`` (mean by default) of the
inherited-weight accuracies of itself and ``neighbours`` (K) neighbours at ``distance`` d
(``search_spaces.neighbourhood``: d edges per cell type switched to another op, never ``none``), drawn once per
candidate from (seed, 19, candidate). ``SinglePathSearch`` with ``neighbours: 0`` is RSPS exactly.
"""

from __future__ import annotations

from typing import Any, Literal

from lightning_nas.errors import ConfigError
from lightning_nas.methods.single_path.frame import SinglePathSearch


class NARS(SinglePathSearch):
    """NA-RS: RSPS whose ranking scores each candidate over its neighbourhood (defaults: K 4, d 1, mean)."""

    def __init__(self, *args: Any, neighbours: int = 4, distance: int = 1,
                 aggregation: Literal["mean", "max", "min"] = "mean", **kwargs: Any):
        """
        Args:
            neighbours: K, neighbours whose accuracies score a candidate with its own (>= 1).
            distance: d, edges per cell type a neighbour changes.
            aggregation: how a candidate's and its neighbours' accuracies combine: mean, max or min.
        """
        if neighbours < 1:
            raise ConfigError(f"NA-RS needs model.neighbours >= 1, got {neighbours} (0 is RSPS: use "
                              "lightning_nas.methods.SinglePathSearch)")
        super().__init__(*args, neighbours=neighbours, distance=distance, aggregation=aggregation, **kwargs)
