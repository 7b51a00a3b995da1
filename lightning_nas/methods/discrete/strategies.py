"""Sampling and evolution over the cells of any search space: pure ask/tell strategies, no Lightning.

- ``RandomSampling``: every proposal is ``space.sample`` (NAS-Bench-201: every edge's op uniform, so uniform over
  all 15,625 cells; DARTS: two distinct inputs per node, each with a uniform non-``none`` op).
- ``RegularizedEvolution``: Real et al., AAAI 2019, Alg. 1. The first ``population_size`` proposals are the
  ``initial`` cells (AREA) then random ones; afterwards each proposal mutates (``space.mutate``: NAS-Bench-201's
  REA baseline changes one edge's op) the fittest of ``sample_size`` members drawn with replacement; every
  evaluated child joins the population and the oldest member dies.
All draws come from the ``torch.Generator`` the caller passes, so a seeded caller reproduces a search exactly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import torch

from lightning_nas.core.capabilities import AskTell
from lightning_nas.errors import ConfigError
from lightning_nas.search_spaces.space import SearchSpace, uniform_index


class RandomSampling(AskTell):
    """Random search's strategy: every proposal is a fresh random cell."""

    def __init__(self, space: SearchSpace):
        self.space = space

    def ask(self, g: torch.Generator) -> Any:
        return self.space.sample(g)

    def tell(self, arch: Any, fitness: float) -> None:
        pass


class RegularizedEvolution(AskTell):
    def __init__(self, space: SearchSpace, population_size: int = 10, sample_size: int = 3,
                 initial: Sequence[Any] = ()):
        if population_size < 1 or not 1 <= sample_size:
            raise ConfigError(f"need population_size >= 1 and sample_size >= 1, got {population_size}, "
                              f"{sample_size}")
        self.space = space
        self.population_size, self.sample_size = population_size, sample_size
        self.initial = list(initial)
        self.population: deque[tuple[Any, float]] = deque()
        self.told = 0

    def ask(self, g: torch.Generator) -> Any:
        if self.told < self.population_size:
            return self.initial[self.told] if self.told < len(self.initial) else self.space.sample(g)
        members = [self.population[uniform_index(len(self.population), g)] for _ in range(self.sample_size)]
        parent = max(members, key=lambda m: m[1])[0]
        return self.space.mutate(parent, g)

    def tell(self, arch: Any, fitness: float) -> None:
        self.population.append((arch, float(fitness)))
        if len(self.population) > self.population_size:
            self.population.popleft()
        self.told += 1

    def state_dict(self) -> dict[str, Any]:
        key = self.space.key
        return {"initial": [key(a) for a in self.initial], "told": self.told,
                "population": [(key(a), f) for a, f in self.population]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        parse = self.space.parse
        self.initial = [parse(a) for a in state["initial"]]
        self.told = int(state["told"])
        self.population = deque((parse(a), float(f)) for a, f in state["population"])
