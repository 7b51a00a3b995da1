"""The discrete searches of the papers, each a thin class on ``DiscreteSearch`` (``discrete/frame.py``): random
search, REA (Real et al., AAAI 2019), AREA and NASWOT (Mellor et al., ICML 2021). They run on every registered
space; on one without a table they score cells with the proxy (see the frame)."""

from __future__ import annotations

from typing import Any

import torch

from lightning_nas.errors import ConfigError
from lightning_nas.methods.discrete.frame import DiscreteSearch
from lightning_nas.methods.discrete.strategies import RegularizedEvolution
from lightning_nas.reproducibility import mix_seed


class RandomSearch(DiscreteSearch):
    """Random search: the best of ``budget`` uniformly sampled cells (scored by the benchmark or the proxy)."""


class REA(DiscreteSearch):
    """Regularised evolution (Real et al., AAAI 2019). Defaults are the NAS-Bench-201 baseline's: population 10,
    tournament sample 3."""

    def __init__(self, *args: Any, population_size: int = 10, sample_size: int = 3, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if population_size > self.budget:
            raise ConfigError(f"model.population_size ({population_size}) is larger than model.budget "
                              f"({self.budget}): evolution would never start (the first population_size "
                              "evaluations are random); raise the budget or lower the population")
        self.strategy = RegularizedEvolution(self.space, population_size, sample_size)


class AREA(REA):
    """Assisted REA (Mellor et al., ICML 2021, Sec. 5): score ``proxy_candidates`` random cells with the proxy
    (no oracle query), start REA's population from the best ``population_size`` of them. ``budget`` counts the
    oracle queries of REA only, so the proxy scoring comes on top (one batch per candidate)."""

    def __init__(self, *args: Any, proxy_candidates: int = 20, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if proxy_candidates < self.strategy.population_size:
            raise ConfigError(f"model.proxy_candidates ({proxy_candidates}) must be >= model.population_size "
                              f"({self.strategy.population_size})")
        self.proxy_candidates = proxy_candidates
        self.candidate_scores: list[tuple[str, float]] = []

    def prepare(self, batch: dict) -> None:
        g = torch.Generator().manual_seed(mix_seed(self.seed, 13))
        scored = []
        for _ in range(self.proxy_candidates):
            arch = self.space.sample(g)
            scored.append((arch, self.proxy_score(arch, batch, g)))
        self.candidate_scores = [(self.space.key(a), s) for a, s in scored]
        ranked = sorted(range(len(scored)), key=lambda i: (-scored[i][1], i))
        self.strategy.initial = [scored[i][0] for i in ranked[: self.strategy.population_size]]

    def extra_state(self) -> dict[str, Any]:
        return {"candidate_scores": self.candidate_scores}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.candidate_scores = [tuple(c) for c in state.get("candidate_scores", [])]

    def summary_extras(self) -> dict[str, Any]:
        return {**super().summary_extras(), "proxy": self.proxy, "proxy_candidates": self.candidate_scores}


class NASWOT(DiscreteSearch):
    """Training-free search (Mellor et al., ICML 2021, Alg. 1): sample ``budget`` (N) cells, score each with the
    proxy (default the v2 NASWOT score) on one batch, keep the best. The benchmark is never queried to choose."""

    def __init__(self, *args: Any, **kwargs: Any):
        if kwargs.get("fitness") not in (None, "proxy"):
            raise ConfigError("NASWOT scores cells with the proxy only: drop model.fitness (or use RandomSearch for "
                              "benchmark queries)")
        kwargs["fitness"] = "proxy"
        super().__init__(*args, **kwargs)
