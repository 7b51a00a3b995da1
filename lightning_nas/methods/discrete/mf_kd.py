"""MF-KD: multi-fidelity Bayesian optimisation with knowledge-distilled low-fidelity evaluations (a discrete
search: one training step = one evaluation), and its multi-fidelity GP strategy.

- ``MFKD`` (Trofimov et al., arXiv 2006.08341; later version, methods.md section 6): multi-fidelity GP-UCB whose
  low fidelity trains the cell's network for a few epochs with a distillation loss from a trained teacher
  (``low_fidelity.train_low_fidelity``: Hinton KD T 32, alpha 1 by default; CE or NST by ``loss``) and scores it
  on held-out *training* images; the high fidelity is the benchmark's 200-epoch accuracy (a table lookup whose
  cost counts as ``high_fidelity_epochs``). The budget is in epochs; the fidelity schedule
  (``fidelity_schedule``) is fixed up front, so the number of evaluations is known. The answer is the
  best observed high-fidelity cell. A low-fidelity evaluation costs its training epochs whatever the network's
  size (the reduced CPU networks of the shipped configs make it cheaper than the benchmark's C=16, N=5).

- ``MultiFidelityUCB`` (MF-KD's later version, methods.md section 6): AR(1) co-kriging
  ``f_high(x) = rho f_low(x) + delta(x)`` (Kennedy & O'Hagan, 2000), each of f_low and delta Constant * RBF, one
  white-noise level per fidelity, hyper-parameters by maximum marginal likelihood (``fit_gpytorch_mll``); or
  BoTorch's ``SingleTaskMultiFidelityGP`` (``model: botorch``). ``initial_high`` (3) random high- and
  ``initial_low`` (10) random low-fidelity points, then the fidelity schedule alternates (every 2nd evaluation
  high); each proposal maximises UCB of *its own* fidelity's posterior over random cells not yet evaluated at that
  fidelity. (The co-kriging reference code scores low-fidelity candidates with the high-fidelity posterior: a bug,
  not copied.) Each fidelity's outcomes are standardised on their own before fitting (the AR(1) link then carries
  how the two rank cells, not their offset).

It resumes after the last completed evaluation (``run.checkpoint_every_n_steps: 1``): the strategy's
observations are checkpointed, every GP fit and low-fidelity training is seeded by (seed, evaluation number).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Optional

import torch
from botorch.models import SingleTaskGP, SingleTaskMultiFidelityGP
from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
from gpytorch.kernels import Kernel, ScaleKernel
from gpytorch.likelihoods import HadamardGaussianLikelihood

from lightning_nas.errors import ConfigError
from lightning_nas.methods.discrete.bayes_opt import DTYPE, _fit, random_unevaluated, standardise, ucb_argmax
from lightning_nas.methods.discrete.frame import DiscreteSearch
from lightning_nas.methods.discrete.low_fidelity import LowFidelityRecipe, train_low_fidelity
from lightning_nas.methods.training.cell_training import load_teacher
from lightning_nas.methods.training.distill_losses import DistillationLoss, HintonKD
from lightning_nas.reproducibility import mix_seed
from lightning_nas.search_spaces.space import SearchSpace

Dataset = Literal["cifar10", "cifar100", "imagenet16_120"]
LOW, HIGH = "low", "high"
Fidelity = Literal["low", "high"]


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


class MFKD(DiscreteSearch):
    """Multi-fidelity BO with knowledge-distilled low-fidelity evaluations (see the module docstring)."""

    def __init__(self, budget_epochs: float = 4000.0, high_fidelity_epochs: float = 200.0,
                 loss: Optional[DistillationLoss] = None, teacher: Optional[str] = None,
                 low_fidelity_epochs: int = 2, batch_size: int = 256, lr: float = 0.1, channels: int = 16,
                 cells_per_stage: int = 5, heldout_samples: int = 5000, train_samples: Optional[int] = None,
                 initial_high: int = 3, initial_low: int = 10, candidates: int = 1000, ucb_kappa: float = 1.0,
                 gp_model: Literal["cokriging", "botorch"] = "cokriging", dataset: Dataset = "cifar10",
                 oracle_metric: Literal["test", "valid"] = "test", benchmark_path: Optional[str] = None,
                 seed: int = 2, num_classes: Optional[int] = None, in_channels: int = 3):
        """
        Args:
            budget_epochs: total training epochs the search may spend (low- and high-fidelity evaluations).
            high_fidelity_epochs: cost of one benchmark lookup (NAS-Bench-201 trains 200 epochs).
            loss: the low-fidelity training loss: ``HintonKD`` (default, T 32, alpha 1), ``NST`` or ``CrossEntropy``
                (the MF-CE ablation).
            teacher: checkpoint of a ``TrainCell`` run on the same data (experiments/mf_kd/teacher_nb201_cifar10*).
            low_fidelity_epochs, batch_size, lr: the low-fidelity training (NAS-Bench-201's SGD recipe, cosine).
            channels, cells_per_stage: the low-fidelity network's C and N (the benchmark's: 16, 5).
            heldout_samples, train_samples: the seeded split of the training images (scored / trained on).
            initial_high, initial_low: random evaluations before the GP (3 and 10).
            candidates: random unevaluated cells scored by UCB per proposal; ucb_kappa: mu + kappa sigma (1).
            gp_model: ``cokriging`` (AR(1), default) or ``botorch`` (SingleTaskMultiFidelityGP).
            dataset, oracle_metric, benchmark_path: the high-fidelity oracle (see DiscreteSearch).
        """
        self.loss_fn = loss if loss is not None else HintonKD()
        self.recipe = LowFidelityRecipe(epochs=low_fidelity_epochs, batch_size=batch_size, lr=lr)
        self.plan = fidelity_schedule(budget_epochs, high_fidelity_epochs, low_fidelity_epochs, initial_high,
                                      initial_low)
        super().__init__(budget=len(self.plan), dataset=dataset, oracle_metric=oracle_metric,
                         benchmark_path=benchmark_path, heldout_samples=heldout_samples, train_samples=train_samples,
                         seed=seed, num_classes=num_classes, in_channels=in_channels)
        self.budget_epochs, self.high_fidelity_epochs = budget_epochs, high_fidelity_epochs
        self.channels, self.cells_per_stage = channels, cells_per_stage
        if LOW in self.plan and num_classes is None:
            raise ConfigError("MF-KD's low fidelity trains networks on images: set data.init_args.dataset (e.g. "
                              "image_folder with data_dir) in the ProxyDataModule")
        if self.benchmark is None:
            raise ConfigError(f"MF-KD's high fidelity is the benchmark table, and the {self.space.name} space has "
                              "none: use a space with a benchmark (nb201)")
        self.teacher = load_teacher(teacher, self.loss_fn, self.space.name, num_classes)
        self.strategy = MultiFidelityUCB(self.space, initial_high, initial_low, candidates, ucb_kappa, gp_model,
                                         low_fidelity_value=low_fidelity_epochs / high_fidelity_epochs)

    def space_id(self) -> str:
        return f"{self.space.label} (discrete, multi-fidelity)"

    def evaluate(self, n: int, batch: dict, g: torch.Generator) -> dict[str, Any]:
        fidelity = self.plan[n]
        arch = self.strategy.ask(g, fidelity)
        record: dict[str, Any] = {**self.record(arch), "fidelity": fidelity}
        if fidelity == HIGH:
            value = self.benchmark.accuracy(arch, self.dataset, self.oracle_metric)
            record["cost_epochs"] = self.high_fidelity_epochs
            self.log("search/fitness", value, on_step=False, on_epoch=True, batch_size=1)
        else:
            spec = self.network_spec(arch, self.channels, self.cells_per_stage)
            result = train_low_fidelity(spec, self.loss_fn, self.teacher, self.low_fidelity_data(), self.recipe,
                                        mix_seed(self.seed, n, 17), self.device)
            value = result["accuracy"]
            record.update(cost_epochs=self.recipe.epochs, train_loss=result["train_loss"])
            self.log("search/low_fidelity_acc", value, on_step=False, on_epoch=True, batch_size=1)
        self.strategy.tell(arch, fidelity, value)
        record["fitness"] = value
        return record

    def epochs_spent(self) -> float:
        return float(sum(rec.get("cost_epochs", 0.0) for rec in self.history))

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.log_replicated("search/epochs_spent", self.epochs_spent())

    def summary_extras(self) -> dict[str, Any]:
        return {**super().summary_extras(), "epochs_spent": self.epochs_spent(), "budget_epochs": self.budget_epochs,
                "high_fidelity_evaluations": sum(r.get("fidelity") == HIGH for r in self.history),
                "low_fidelity_evaluations": sum(r.get("fidelity") == LOW for r in self.history),
                "low_fidelity_loss": self.loss_fn.describe(),
                "teacher": None if self.teacher is None else self.teacher.source}
