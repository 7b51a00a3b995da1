"""Bayesian optimisation over the cells of any search space with BoTorch / GPyTorch models: pure ask/tell
strategies, no Lightning (the searches in ``mf_kd`` drive them).

- Encoding: ``SearchSpace.encode``, one-hot of each edge's op (NAS-Bench-201: 6 edges x 5 ops = 30 inputs in
  {0, 1}; DARTS: 2 cells x 14 edges x 8 ops, absent edges all zero).
- ``GPUCB`` (single fidelity, the authors' Vega port): a GP with BoTorch's default RBF kernel (dimension-scaled
  lengthscale prior), outcomes standardised, ``initial_points`` (5) seeded random cells, then the UCB maximiser
  ``mu + kappa sigma`` (kappa 0.5) over ``candidates`` random unevaluated cells.
- ``MultiFidelityUCB`` (MF-KD's later version, methods.md section 6): AR(1) co-kriging
  ``f_high(x) = rho f_low(x) + delta(x)`` (Kennedy & O'Hagan, 2000), each of f_low and delta Constant * RBF, one
  white-noise level per fidelity, hyper-parameters by maximum marginal likelihood (``fit_gpytorch_mll``); or
  BoTorch's ``SingleTaskMultiFidelityGP`` (``model: botorch``). ``initial_high`` (3) random high- and
  ``initial_low`` (10) random low-fidelity points, then the fidelity schedule alternates (every 2nd evaluation
  high); each proposal maximises UCB of *its own* fidelity's posterior over random cells not yet evaluated at that
  fidelity. (The co-kriging reference code scores low-fidelity candidates with the high-fidelity posterior: a bug,
  not copied.) Each fidelity's outcomes are standardised on their own before fitting (the AR(1) link then carries
  how the two rank cells, not their offset).
Every draw comes from the generator the caller passes and each fit runs under a seed drawn from it, so a seeded
search (and a resumed one) proposes the same cells.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal, Optional

import torch
from botorch.acquisition import UpperConfidenceBound
from botorch.exceptions import InputDataWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP, SingleTaskMultiFidelityGP
from botorch.models.transforms.outcome import Standardize
from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
from gpytorch.kernels import Kernel, ScaleKernel
from gpytorch.likelihoods import HadamardGaussianLikelihood
from gpytorch.mlls import ExactMarginalLogLikelihood

from lightning_nas.core.capabilities import AskTell
from lightning_nas.errors import ConfigError
from lightning_nas.search_spaces.space import SearchSpace

DTYPE = torch.float64
LOW, HIGH = "low", "high"
Fidelity = Literal["low", "high"]


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


class CoKrigingKernel(Kernel):
    """The AR(1) co-kriging covariance over inputs ``[encoding, h]`` with h = 1 for high fidelity, 0 for low:
    ``k = s(h) s(h') k_low(x, x') + h h' k_delta(x, x')`` with ``s(h) = 1 + (rho - 1) h``, i.e.
    cov(low, low) = k_low, cov(low, high) = rho k_low, cov(high, high) = rho^2 k_low + k_delta."""

    has_lengthscale = False

    def __init__(self, dims: int):
        super().__init__()
        self.k_low = ScaleKernel(get_covar_module_with_dim_scaled_prior(ard_num_dims=dims))
        self.k_delta = ScaleKernel(get_covar_module_with_dim_scaled_prior(ard_num_dims=dims))
        self.register_parameter("rho", torch.nn.Parameter(torch.ones(1, dtype=DTYPE)))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False, **params: Any) -> torch.Tensor:
        z1, h1 = x1[..., :-1], x1[..., -1]
        z2, h2 = x2[..., :-1], x2[..., -1]
        s1, s2 = 1 + (self.rho - 1) * h1, 1 + (self.rho - 1) * h2
        k_low = self.k_low(z1, z2, diag=diag)
        k_delta = self.k_delta(z1, z2, diag=diag)
        if diag:
            return s1 * s2 * k_low + h1 * h2 * k_delta
        return (s1.unsqueeze(-1) * s2.unsqueeze(-2)) * k_low.to_dense() + \
            (h1.unsqueeze(-1) * h2.unsqueeze(-2)) * k_delta.to_dense()


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


def fidelity_schedule(budget_epochs: float, high_cost: float, low_cost: float, initial_high: int = 3,
                      initial_low: int = 10) -> list[str]:
    """The fidelities of a multi-fidelity search in order: ``initial_high`` high, ``initial_low`` low, then low and
    high alternating (every 2nd evaluation high), while the next evaluation fits in the budget (in epochs). A
    trailing low-fidelity evaluation is dropped: the answer is the best observed high-fidelity cell."""
    if high_cost <= 0 or low_cost <= 0 or initial_high < 1 or initial_low < 0:
        raise ConfigError("the multi-fidelity schedule needs positive costs, initial_high >= 1, initial_low >= 0")
    plan: list[str] = []
    spent = 0.0
    k = 0
    while True:
        if len(plan) < initial_high:
            nxt = HIGH
        elif len(plan) < initial_high + initial_low:
            nxt = LOW
        else:
            nxt = HIGH if k % 2 else LOW
            k += 1
        cost = high_cost if nxt == HIGH else low_cost
        if spent + cost > budget_epochs:
            break
        plan.append(nxt)
        spent += cost
    while plan and plan[-1] == LOW:
        plan.pop()
    if HIGH not in plan:
        raise ConfigError(f"a budget of {budget_epochs} epochs affords no high-fidelity evaluation ({high_cost} "
                          "epochs each): raise model.budget_epochs")
    return plan


class MultiFidelityUCB:
    """Multi-fidelity GP-UCB: ``ask(g, fidelity)`` / ``tell(arch, fidelity, value)``."""

    def __init__(self, space: SearchSpace, initial_high: int = 3, initial_low: int = 10, candidates: int = 1000,
                 kappa: float = 1.0, model: Literal["cokriging", "botorch"] = "cokriging",
                 low_fidelity_value: float = 0.0):
        """
        Args:
            model: ``cokriging`` (AR(1), default) or ``botorch`` (``SingleTaskMultiFidelityGP``, fidelity column
                ``low_fidelity_value`` / 1.0, its linear-truncated fidelity kernel).
            low_fidelity_value: the botorch model's fidelity input of a low-fidelity point (e.g. low / high epochs).
        """
        if initial_high < 1 or initial_low < 0 or candidates < 1 or kappa < 0:
            raise ConfigError("multi-fidelity BO needs initial_high >= 1, initial_low >= 0, candidates >= 1 and "
                              "kappa >= 0")
        if model not in ("cokriging", "botorch"):
            raise ConfigError(f"unknown multi-fidelity model {model!r}: use 'cokriging' or 'botorch'")
        self.space = space
        self.initial = {HIGH: initial_high, LOW: initial_low}
        self.candidates, self.kappa, self.model_kind = candidates, kappa, model
        self.low_value = low_fidelity_value
        self.observations: list[tuple[str, str, float]] = []

    def _evaluated(self, fidelity: str) -> set[str]:
        return {a for a, f, _ in self.observations if f == fidelity}

    def _fidelity_input(self, fidelity: str) -> float:
        if fidelity == HIGH:
            return 1.0
        return 0.0 if self.model_kind == "cokriging" else self.low_value

    def _inputs(self, archs: Sequence[Any], fidelity: str) -> torch.Tensor:
        x = self.space.encode(archs)
        return torch.cat([x, torch.full((len(x), 1), self._fidelity_input(fidelity), dtype=DTYPE)], dim=1)

    def training_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs [encoding, fidelity] and outcomes standardised within each fidelity."""
        xs, ys = [], []
        for fidelity in (LOW, HIGH):
            obs = [(a, v) for a, f, v in self.observations if f == fidelity]
            if obs:
                xs.append(self._inputs([self.space.parse(a) for a, _ in obs], fidelity))
                ys.append(standardise(torch.tensor([v for _, v in obs], dtype=DTYPE)))
        return torch.cat(xs), torch.cat(ys).unsqueeze(-1)

    def model(self, seed: int) -> Any:
        x, y = self.training_data()
        dims = x.shape[1] - 1
        if self.model_kind == "cokriging":
            likelihood = HadamardGaussianLikelihood(num_tasks=2, task_feature_index=dims)
            return _fit(SingleTaskGP(x, y, covar_module=CoKrigingKernel(dims), likelihood=likelihood,
                                     outcome_transform=None), seed)
        return _fit(SingleTaskMultiFidelityGP(x, y, data_fidelities=[dims], outcome_transform=None), seed)

    def ask(self, g: torch.Generator, fidelity: str) -> Any:
        done = self._evaluated(fidelity)
        if len(done) < self.initial[fidelity] or len(self.observations) < sum(self.initial.values()):
            return random_unevaluated(self.space, g, 1, done)[0]
        fit_seed = int(torch.randint(2**62, (1,), generator=g))
        pool = random_unevaluated(self.space, g, self.candidates, done)
        return pool[ucb_argmax(self.model(fit_seed), self._inputs(pool, fidelity), self.kappa)]

    def tell(self, arch: Any, fidelity: str, value: float) -> None:
        self.observations.append((self.space.key(arch), fidelity, float(value)))

    def state_dict(self) -> dict[str, Any]:
        return {"observations": [list(o) for o in self.observations]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.observations = [(str(a), str(f), float(v)) for a, f, v in state["observations"]]


def best_high(observations: Sequence[tuple[str, str, float]]) -> Optional[tuple[str, float]]:
    """The best observed high-fidelity cell (the first on ties)."""
    best: Optional[tuple[str, float]] = None
    for a, f, v in observations:
        if f == HIGH and (best is None or v > best[1]):
            best = (a, v)
    return best
