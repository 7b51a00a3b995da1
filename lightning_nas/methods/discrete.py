"""Discrete searches on NAS-Bench-201: random search, REA, AREA and NASWOT, through the same CLI and run
directory as the differentiable methods.

Each training step evaluates one architecture; an epoch is ``data.steps_per_epoch`` of them and the search
stops after ``budget`` evaluations. The *oracle* is the benchmark table (the shipped 200-epoch test accuracy
by default, ``oracle_metric: valid`` with the official files): random search, REA and AREA query it once per
evaluation, so their budget counts queried architectures. NASWOT never queries it: it scores each sampled
architecture with a training-free proxy on one batch and keeps the best score; the benchmark accuracy of the
chosen cell is then only reported. The incumbent (best fitness so far, the first on ties) is ``genotype()``,
so ``genotype.json`` and the ``BenchmarkAccuracy`` callback see it after every epoch.

Subclasses change ``fitness`` (how a cell is scored) or ``evaluate`` (one whole evaluation: the multi-fidelity
search in ``mf_kd`` records low-fidelity evaluations, which never become the incumbent).

Every draw comes from a generator seeded by (seed, evaluation number), and proxy networks are initialised from
one as well: the same seed gives the same search on any device, and a resumed run continues exactly. They run
in one process (a table lookup or one batch per step gains nothing from DDP; more than one device is refused).
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

import torch

from lightning_nas.data.batches import mix_seed
from lightning_nas.errors import ConfigError
from lightning_nas.methods.common import NASModule
from lightning_nas.methods.evolution import RandomSampling, RegularizedEvolution, random_arch
from lightning_nas.proxies.registry import get_proxy
from lightning_nas.reproducibility import seeded
from lightning_nas.search_spaces.nb201.arch import NB201Arch
from lightning_nas.search_spaces.nb201.network import NB201Network
from lightning_nas.tabular.nb201 import canonical_dataset, load_benchmark

Dataset = Literal["cifar10", "cifar100", "imagenet16_120"]


class DiscreteSearch(NASModule):
    """Base: the step loop, history, incumbent, checkpoint state. Subclasses set ``strategy`` and ``fitness``."""

    def __init__(self, budget: int = 100, dataset: Dataset = "cifar10", oracle_metric: Literal["test", "valid"]
                 = "test", benchmark_path: Optional[str] = None, seed: int = 2, num_classes: Optional[int] = None,
                 in_channels: int = 3):
        """
        Args:
            budget: architectures evaluated (oracle queries; NASWOT: architectures scored).
            dataset: the benchmark dataset whose accuracy is the oracle and the report.
            oracle_metric: ``test`` (the shipped table) or ``valid`` (needs the official files).
            benchmark_path: official NAS-Bench-201 / NATS-Bench files or a CSV; default: the shipped table.
            seed: seeds every draw; the CLI sets it from seed_everything.
            num_classes, in_channels: linked from the datamodule by the CLI; unused (a proxy's network takes its
                input channels from the batch and has ``proxy_num_classes`` outputs).
        """
        super().__init__()
        if budget < 1:
            raise ConfigError(f"model.budget must be a positive integer, got {budget}")
        dataset = canonical_dataset(dataset)  # our spelling or the benchmark's (ImageNet16-120)
        self.automatic_optimization = False
        self.budget, self.dataset, self.oracle_metric, self.seed = budget, dataset, oracle_metric, seed
        self.benchmark = load_benchmark(benchmark_path)
        self.benchmark.column(dataset, oracle_metric)  # fails now, with the fix, if the table lacks it
        self.strategy: Any = RandomSampling()
        self.history: list[dict[str, Any]] = []

    def space_id(self) -> str:
        return "NB201 (discrete)"

    def configure_optimizers(self) -> None:
        return None

    # ---- pieces subclasses change ------------------------------------------------------------------
    def fitness(self, arch: NB201Arch, batch: dict, g: torch.Generator) -> float:
        return self.benchmark.accuracy(arch, self.dataset, self.oracle_metric)

    def prepare(self, batch: dict) -> None:
        """Called before the first evaluation (AREA scores its candidates here)."""

    # ---- the loop ---------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.trainer.world_size > 1:  # runs before DDP would wrap a module that has no parameters
            raise ConfigError("discrete searches (random search, REA, AREA, NASWOT) run in one process: a table "
                              "lookup or one batch per step gains nothing from DDP; set trainer.devices: 1 and "
                              "drop trainer.strategy")

    def on_train_start(self) -> None:
        steps = self.trainer.num_training_batches
        steps = int(steps) if math.isfinite(steps) else None
        max_epochs = self.trainer.max_epochs
        if steps and max_epochs is not None and max_epochs >= 0 and max_epochs * steps < self.budget:
            raise ConfigError(f"trainer.max_epochs {max_epochs} x data.steps_per_epoch {steps} evaluates fewer "
                              f"than model.budget {self.budget} architectures: set trainer.max_epochs >= "
                              f"{math.ceil(self.budget / steps)}")

    def training_step(self, batch: dict, batch_idx: int) -> None:
        n = len(self.history)
        if n >= self.budget:
            self.trainer.should_stop = True
            return
        if n == 0:
            self.prepare(batch)
        g = torch.Generator().manual_seed(mix_seed(self.seed, n, 11))
        self.history.append({"step": n, **self.evaluate(n, batch, g)})
        self._count_step()
        if n + 1 >= self.budget:
            self.trainer.should_stop = True

    def evaluate(self, n: int, batch: dict, g: torch.Generator) -> dict[str, Any]:
        """Evaluation ``n``: ask the strategy, score the cell, tell the strategy; returns its history record
        (``arch``, ``index``, ``fitness``; a record with ``fidelity: low`` never becomes the incumbent)."""
        arch = self.strategy.ask(g)
        fit = self.fitness(arch, batch, g)
        self.strategy.tell(arch, fit)
        if math.isfinite(fit):  # NASWOT gives -inf to cells whose kernel is singular
            self.log("search/fitness", fit, on_step=False, on_epoch=True, batch_size=1)
        return {"arch": arch.to_string(), "index": self.benchmark.index(arch), "fitness": fit}

    def _count_step(self) -> None:
        """Lightning's global step counts optimizer steps, and a discrete search steps none: each evaluation is
        counted as one here, so checkpointing (which skips a step it has already saved), ``max_steps`` and
        ``log_every_n_steps`` work as for every other method. Lightning 2.6's manual-optimisation progress."""
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        progress.increment_ready()
        progress.increment_completed()

    def incumbent(self) -> Optional[dict[str, Any]]:
        best = None
        for rec in self.history:
            if rec.get("fidelity", "high") != "high":
                continue
            if best is None or rec["fitness"] > best["fitness"]:
                best = rec
        return best

    def genotype(self) -> NB201Arch:
        best = self.incumbent()
        if best is None:
            raise ConfigError("the search has evaluated no architecture yet")
        return NB201Arch.from_string(best["arch"])

    # ---- validate / test: the incumbent's benchmark accuracies ---------------------------------------
    def _report(self, stage: str) -> None:
        """``validate`` and ``test`` of a discrete search report its incumbent (from ``--ckpt_path``): its fitness
        and every benchmark column, logged as ``<stage>/<dataset>_<metric>``. There is no trained network to run
        on images, so the batch is empty."""
        best = self.incumbent()
        if best is None:
            if self.trainer.sanity_checking or self.trainer.state.fn == "fit":
                return
            raise ConfigError(f"`{stage}` of a discrete search reports the incumbent of a finished search: pass its "
                              "checkpoint with --ckpt_path <run dir>/checkpoints/last.ckpt")
        for key, value in self.benchmark.query(best["index"]).items():
            if key not in ("index", "arch"):
                self.log(f"{stage}/{key}", value, batch_size=1)
        self.log(f"{stage}/arch_index", float(best["index"]), batch_size=1)
        if math.isfinite(best["fitness"]):
            self.log(f"{stage}/fitness", best["fitness"], batch_size=1)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._report("val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._report("test")

    def on_train_epoch_end(self) -> None:
        best = self.incumbent()
        self.log_replicated("search/evaluated", float(len(self.history)))
        if best is not None:
            self.log_replicated("search/best_fitness", best["fitness"])

    def summary_extras(self) -> dict[str, Any]:
        best = self.incumbent()
        trajectory: list[Optional[float]] = []
        top, acc = -math.inf, None
        for rec in self.history:  # the oracle accuracy of the incumbent after each evaluation
            if rec.get("fidelity", "high") == "high" and (acc is None or rec["fitness"] > top):
                top, acc = rec["fitness"], self.benchmark.accuracy(rec["index"], self.dataset)
            trajectory.append(acc)
        return {"evaluated": len(self.history),
                "incumbent": None if best is None else {**self.benchmark.query(best["index"]),
                                                        "fitness": best["fitness"]},
                f"incumbent_{self.dataset}_test_by_evaluation": trajectory}

    # ---- checkpoints --------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lightning_nas"]["search_state"] = {"history": self.history,
                                                       "strategy": self.strategy.state_dict(),
                                                       **self.extra_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint["lightning_nas"]["search_state"]
        self.history = list(state["history"])
        self.strategy.load_state_dict(state["strategy"])
        self.load_extra_state(state)

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass


def score_cell(arch: NB201Arch, x: torch.Tensor, y: Optional[torch.Tensor], init_seed: int, proxy: str = "naswot",
               num_classes: int = 1, channels: int = 16, cells_per_stage: int = 5) -> float:
    """A registered proxy's score of one cell: the benchmark's network (C=16, N=5 by default) with
    ``num_classes`` outputs (NASWOT: 1), initialised on the CPU from ``init_seed`` (the same weights on every
    device and rank), scored on the batch ``x`` where it lies."""
    with seeded(init_seed):
        net = NB201Network(arch, num_classes, x.shape[1], channels, cells_per_stage)
    return float(get_proxy(proxy)(net.to(x.device), x, y))


class ProxyScoring:
    """Mixin of the searches that score cells with a registered proxy on the step's proxy batch
    (``score_cell``); it adds the proxy's options to the method's."""

    def __init__(self, *args: Any, proxy: str = "naswot", proxy_num_classes: int = 1, channels: int = 16,
                 cells_per_stage: int = 5, **kwargs: Any):
        """
        Args:
            proxy: a name registered in ``lightning_nas.proxies`` (NASWOT's v2 score: ``naswot``).
            proxy_num_classes: outputs of the scored network (NASWOT builds it with 1).
            channels, cells_per_stage: the scored network's C and N (the benchmark's: 16, 5).
        """
        super().__init__(*args, **kwargs)
        get_proxy(proxy)
        self.proxy, self.proxy_num_classes = proxy, proxy_num_classes
        self.channels, self.cells_per_stage = channels, cells_per_stage

    def proxy_score(self, arch: NB201Arch, batch: dict, g: torch.Generator) -> float:
        if "proxy" not in batch:
            raise ConfigError(f"proxy {self.proxy!r} needs images: give the ProxyDataModule a dataset")
        x, y = batch["proxy"]
        seed = int(torch.randint(2**62, (1,), generator=g))
        return score_cell(arch, x, y, seed, self.proxy, self.proxy_num_classes, self.channels, self.cells_per_stage)

    def summary_extras(self) -> dict[str, Any]:
        return {**super().summary_extras(), "proxy": self.proxy}  # type: ignore[misc]


class RandomSearch(DiscreteSearch):
    """Random search with the benchmark as oracle: the best of ``budget`` uniformly sampled cells."""


class REA(DiscreteSearch):
    """Regularised evolution (Real et al., AAAI 2019) with the benchmark as oracle. Defaults are the
    NAS-Bench-201 baseline's: population 10, tournament sample 3."""

    def __init__(self, *args: Any, population_size: int = 10, sample_size: int = 3, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if population_size > self.budget:
            raise ConfigError(f"model.population_size ({population_size}) is larger than model.budget "
                              f"({self.budget}): evolution would never start (the first population_size "
                              "evaluations are random); raise the budget or lower the population")
        self.strategy = RegularizedEvolution(population_size, sample_size)


class AREA(ProxyScoring, REA):
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
            arch = random_arch(g)
            scored.append((arch, self.proxy_score(arch, batch, g)))
        self.candidate_scores = [(a.to_string(), s) for a, s in scored]
        ranked = sorted(range(len(scored)), key=lambda i: (-scored[i][1], i))
        self.strategy.initial = [scored[i][0] for i in ranked[: self.strategy.population_size]]

    def extra_state(self) -> dict[str, Any]:
        return {"candidate_scores": self.candidate_scores}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.candidate_scores = [tuple(c) for c in state.get("candidate_scores", [])]

    def summary_extras(self) -> dict[str, Any]:
        return {**super().summary_extras(), "proxy_candidates": self.candidate_scores}


class NASWOT(ProxyScoring, DiscreteSearch):
    """Training-free search (Mellor et al., ICML 2021, Alg. 1): sample ``budget`` (N) cells, score each with the
    proxy (default the v2 NASWOT score) on one batch, keep the best. The benchmark is never queried to choose."""

    def fitness(self, arch: NB201Arch, batch: dict, g: torch.Generator) -> float:
        return self.proxy_score(arch, batch, g)
