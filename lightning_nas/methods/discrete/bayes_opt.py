"""GP-UCB Bayesian optimisation over the cells of any search space (BoTorch / GPyTorch): the strategy
``GPUCB`` (pure ask/tell, no Lightning), the search ``BayesOpt`` that drives it, and the GP helpers that MF-KD's
multi-fidelity strategy (``mf_kd.py``) shares.

- Encoding: ``SearchSpace.encode``, one-hot of each edge's op (NAS-Bench-201: 6 edges x 5 ops = 30 inputs in
  {0, 1}; DARTS: 2 cells x 14 edges x 8 ops, absent edges all zero).
- ``GPUCB`` (single fidelity, the authors' Vega port of MF-KD without its low fidelity): a GP with BoTorch's
  default RBF kernel (dimension-scaled lengthscale prior), outcomes standardised, ``initial_points`` (5) seeded
  random cells, then the UCB maximiser ``mu + kappa sigma`` (kappa 0.5) over ``candidates`` random unevaluated
  cells. ``BayesOpt``: ``budget`` evaluations of the search's fitness (the benchmark, or the proxy on a space
  without a table); it resumes after the last completed evaluation (``run.checkpoint_every_n_steps: 1``).
Every draw comes from the generator the caller passes and each fit runs under a seed drawn from it, so a seeded
search (and a resumed one) proposes the same cells.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from botorch.acquisition import UpperConfidenceBound
from botorch.exceptions import InputDataWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from gpytorch.mlls import ExactMarginalLogLikelihood

from lightning_nas.core.capabilities import AskTell
from lightning_nas.errors import ConfigError
from lightning_nas.methods.discrete.frame import DiscreteSearch
from lightning_nas.search_spaces.space import SearchSpace

DTYPE = torch.float64


def standardise(y: torch.Tensor) -> torch.Tensor:
    std = y.std() if len(y) > 1 else torch.ones((), dtype=y.dtype)
    return (y - y.mean()) / (std if std > 0 else 1.0)


def _fit(model: Any, seed: int) -> Any:
    """Maximum marginal likelihood under a fixed seed (BoTorch re-draws hyper-parameters from their priors
    when an L-BFGS attempt fails)."""
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(seed)
        warnings.simplefilter("ignore", InputDataWarning)  # one-hot inputs are not in the unit cube's interior
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model.eval()


def random_unevaluated(space: SearchSpace, g: torch.Generator, n: int, exclude: set[str]) -> list[Any]:
    """``n`` distinct random cells of ``space`` none of which is in ``exclude`` (``space.key`` texts)."""
    out: list[Any] = []
    seen = set(exclude)
    attempts = 0
    while len(out) < n and attempts < 50 * n + 1000:
        attempts += 1
        arch = space.sample(g)
        key = space.key(arch)
        if key not in seen:
            seen.add(key)
            out.append(arch)
    if not out:
        raise ConfigError(f"every cell of the {space.name} space has been evaluated: lower the search budget")
    return out


def ucb_argmax(model: Any, candidates: torch.Tensor, kappa: float) -> int:
    """Index of the candidate maximising ``mu + kappa sigma`` (BoTorch's UCB takes beta = kappa^2); ties go to
    the first."""
    acq = UpperConfidenceBound(model, beta=kappa ** 2)
    with torch.no_grad():
        values = acq(candidates.unsqueeze(1))
    return int(torch.argmax(values))


class GPUCB(AskTell):
    """Single-fidelity GP-UCB (the DiscreteSearch strategy interface: ``ask(g)`` / ``tell(arch, fitness)``)."""

    def __init__(self, space: SearchSpace, initial_points: int = 5, candidates: int = 1000, kappa: float = 0.5):
        if initial_points < 1 or candidates < 1 or kappa < 0:
            raise ConfigError(f"BO needs initial_points >= 1, candidates >= 1, ucb kappa >= 0, got {initial_points}, "
                              f"{candidates}, {kappa}")
        self.space = space
        self.initial_points, self.candidates, self.kappa = initial_points, candidates, kappa
        self.observations: list[tuple[str, float]] = []

    def _evaluated(self) -> set[str]:
        return {a for a, _ in self.observations}

    def model(self, seed: int) -> SingleTaskGP:
        archs = [self.space.parse(a) for a, _ in self.observations]
        y = torch.tensor([[v] for _, v in self.observations], dtype=DTYPE)
        return _fit(SingleTaskGP(self.space.encode(archs), y, outcome_transform=Standardize(m=1)), seed)

    def ask(self, g: torch.Generator) -> Any:
        if len(self.observations) < self.initial_points:
            return random_unevaluated(self.space, g, 1, self._evaluated())[0]
        fit_seed = int(torch.randint(2**62, (1,), generator=g))
        pool = random_unevaluated(self.space, g, self.candidates, self._evaluated())
        return pool[ucb_argmax(self.model(fit_seed), self.space.encode(pool), self.kappa)]

    def tell(self, arch: Any, fitness: float) -> None:
        self.observations.append((self.space.key(arch), float(fitness)))

    def state_dict(self) -> dict[str, Any]:
        return {"observations": [list(o) for o in self.observations]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.observations = [(str(a), float(v)) for a, v in state["observations"]]


class BayesOpt(DiscreteSearch):
    """Single-fidelity GP-UCB (``GPUCB``): 5 seeded random cells, then UCB
    ``mu + 0.5 sigma`` over 1,000 random unevaluated cells; the incumbent is the best observed cell."""

    def __init__(self, *args: Any, initial_points: int = 5, candidates: int = 1000, ucb_kappa: float = 0.5,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        if initial_points > self.budget:
            raise ConfigError(f"model.initial_points ({initial_points}) is larger than model.budget ({self.budget}): "
                              "the GP would never be used")
        self.strategy = GPUCB(self.space, initial_points, candidates, ucb_kappa)
