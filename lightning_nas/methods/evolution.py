"""Sampling and evolution over NAS-Bench-201 cells: pure ask/tell strategies, no Lightning.

- ``random_arch``: every edge's op uniform over the space (uniform over all 15,625 cells).
- ``mutate``: one edge chosen uniformly gets a different op chosen uniformly (the benchmark's REA baseline).
- ``RegularizedEvolution``: Real et al., AAAI 2019, Alg. 1. The first ``population_size`` proposals are the
  ``initial`` cells (AREA) then random ones; afterwards each proposal mutates the fittest of ``sample_size``
  members drawn with replacement; every evaluated child joins the population and the oldest member dies.
All draws come from the ``torch.Generator`` the caller passes, so a seeded caller reproduces a search exactly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import torch

from lightning_nas.errors import ConfigError
from lightning_nas.search_spaces.nb201.arch import EDGES, NB201Arch
from lightning_nas.search_spaces.nb201.ops import PRIMITIVES


def _choice(n: int, g: torch.Generator) -> int:
    return int(torch.randint(n, (1,), generator=g))


def random_arch(g: torch.Generator, primitives: Sequence[str] = PRIMITIVES) -> NB201Arch:
    return NB201Arch(tuple(primitives[_choice(len(primitives), g)] for _ in EDGES))


def mutate(arch: NB201Arch, g: torch.Generator, primitives: Sequence[str] = PRIMITIVES) -> NB201Arch:
    edge = _choice(len(EDGES), g)
    others = [p for p in primitives if p != arch.ops[edge]]
    ops = list(arch.ops)
    ops[edge] = others[_choice(len(others), g)]
    return NB201Arch(tuple(ops))


class RandomSampling:
    """Random search's strategy: every proposal is a fresh random cell."""

    def ask(self, g: torch.Generator) -> NB201Arch:
        return random_arch(g)

    def tell(self, arch: NB201Arch, fitness: float) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class RegularizedEvolution:
    def __init__(self, population_size: int = 10, sample_size: int = 3, initial: Sequence[NB201Arch] = ()):
        if population_size < 1 or not 1 <= sample_size:
            raise ConfigError(f"need population_size >= 1 and sample_size >= 1, got {population_size}, "
                              f"{sample_size}")
        self.population_size, self.sample_size = population_size, sample_size
        self.initial = list(initial)
        self.population: deque[tuple[NB201Arch, float]] = deque()
        self.told = 0

    def ask(self, g: torch.Generator) -> NB201Arch:
        if self.told < self.population_size:
            return self.initial[self.told] if self.told < len(self.initial) else random_arch(g)
        members = [self.population[_choice(len(self.population), g)] for _ in range(self.sample_size)]
        parent = max(members, key=lambda m: m[1])[0]
        return mutate(parent, g)

    def tell(self, arch: NB201Arch, fitness: float) -> None:
        self.population.append((arch, float(fitness)))
        if len(self.population) > self.population_size:
            self.population.popleft()
        self.told += 1

    def state_dict(self) -> dict[str, Any]:
        return {"initial": [a.to_string() for a in self.initial], "told": self.told,
                "population": [(a.to_string(), f) for a, f in self.population]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.initial = [NB201Arch.from_string(a) for a in state["initial"]]
        self.told = int(state["told"])
        self.population = deque((NB201Arch.from_string(a), float(f)) for a, f in state["population"])
