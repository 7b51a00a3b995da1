"""Discrete searches on any registered space: random search, REA, AREA and NASWOT, through the same CLI and run
directory as the differentiable methods.

Each training step evaluates one architecture; an epoch is ``data.steps_per_epoch`` of them and the search
stops after ``budget`` evaluations. ``fitness`` says how a cell is scored:

- ``benchmark`` (the default on a space with a table, NAS-Bench-201): the table is the oracle (the shipped
  200-epoch test accuracy, ``oracle_metric: valid`` with the official files); random search, REA and AREA query it
  once per evaluation, so their budget counts queried architectures;
- ``proxy`` (the default on a space without a table, such as DARTS): a registered training-free proxy (NASWOT's
  score by default) of the cell's network (``SearchSpace.network`` at ``channels`` x ``layers``, initialised from a
  seed the step's generator draws) on the step's proxy batch;
- ``training``: a short training of the cell's network (the same size) with cross-entropy, NAS-Bench-201's recipe
  at ``training_epochs`` epochs (``low_fidelity.train_low_fidelity``: the loop MF-KD's low fidelity runs), scored
  by its accuracy (%) on ``heldout_samples`` held-out *training* images (a fixed seeded split; the test set is
  never seen); its initialisation, batches and augmentation are seeded from the step's generator.

NASWOT always scores with the proxy and never queries a table; the benchmark accuracy of the chosen cell is then
only reported. The incumbent (best fitness so far, the first on ties) is ``genotype()``, so ``genotype.json`` and
the ``BenchmarkAccuracy`` callback see it after every epoch.

Subclasses set ``strategy`` (an ``AskTell``), change ``fitness`` (how a cell is scored) or ``evaluate`` (one whole
evaluation: the multi-fidelity search in ``mf_kd`` records low-fidelity evaluations, which never become the
incumbent).

Every draw comes from a generator seeded by (seed, evaluation number), and proxy networks are initialised from
one as well: the same seed gives the same search on any device, and a resumed run continues exactly. They run
in one process (a table lookup or one batch per step gains nothing from DDP; more than one device is refused).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, Literal, Optional

import torch

from lightning_nas.core.host_reads import host_read
from lightning_nas.core.module import NASModule
from lightning_nas.errors import ConfigError
from lightning_nas.methods.discrete.low_fidelity import LowFidelityRecipe, LowFidelitySplit, train_low_fidelity
from lightning_nas.methods.discrete.strategies import RandomSampling
from lightning_nas.methods.training.cell_training import NetworkSpec
from lightning_nas.methods.training.distill_losses import CrossEntropy
from lightning_nas.proxies.registry import get_proxy
from lightning_nas.reproducibility import mix_seed, seeded
from lightning_nas.search_spaces.space import SearchSpace, get_space
from lightning_nas.tabular.nb201 import canonical_dataset

Dataset = Literal["cifar10", "cifar100", "imagenet16_120"]
Fitness = Literal["benchmark", "proxy", "training"]


def score_cell(arch: Any, x: torch.Tensor, y: Optional[torch.Tensor], init_seed: int, proxy: str = "naswot",
               num_classes: int = 1, channels: int = 16, layers: int = 5, space: str | SearchSpace = "nb201"
               ) -> float:
    """A registered proxy's score of one cell: the space's network of the cell (NAS-Bench-201's C=16, N=5 by
    default) with ``num_classes`` outputs (NASWOT: 1), initialised on the CPU from ``init_seed`` (the same weights
    on every device and rank), scored on the batch ``x`` where it lies."""
    with seeded(init_seed):
        net = get_space(space).network(arch, num_classes, x.shape[1], channels, layers)
    return float(get_proxy(proxy)(net.to(x.device), x, y))


class DiscreteSearch(NASModule):
    """Base: the step loop, history, incumbent, checkpoint state. Subclasses set ``strategy`` and may change
    ``fitness``."""

    def __init__(self, budget: int = 100, space: str = "nb201", fitness: Optional[Fitness] = None,
                 dataset: Dataset = "cifar10", oracle_metric: Literal["test", "valid"] = "test",
                 benchmark_path: Optional[str] = None, proxy: str = "naswot", proxy_num_classes: int = 1,
                 channels: Optional[int] = None, layers: Optional[int] = None, cells_per_stage: Optional[int] = None,
                 training_epochs: int = 2, training_batch_size: int = 256, training_lr: float = 0.1,
                 heldout_samples: int = 5000, train_samples: Optional[int] = None, seed: int = 2,
                 num_classes: Optional[int] = None, in_channels: int = 3):
        """
        Args:
            budget: architectures evaluated (oracle queries; NASWOT: architectures scored).
            space: the registered search space (``nb201``, ``darts``).
            fitness: ``benchmark`` (the space's table), ``proxy`` or ``training``; default: the table where the space
                has one, else the proxy.
            dataset: the benchmark dataset whose accuracy is the oracle and the report.
            oracle_metric: ``test`` (the shipped table) or ``valid`` (needs the official files).
            benchmark_path: official NAS-Bench-201 / NATS-Bench files or a CSV; default: the shipped table.
            proxy: a name registered in ``lightning_nas.proxies`` (NASWOT's v2 score: ``naswot``).
            proxy_num_classes: outputs of the scored network (NASWOT builds it with 1).
            channels, layers: the size of the network a cell is scored (proxy) or trained at (default the space's
                ``search_network_defaults``: NAS-Bench-201 C=16, N=5 cells per stage; DARTS C=16, 8 cells).
            cells_per_stage: NAS-Bench-201's name for ``layers`` (configs written before ``layers``).
            training_epochs, training_batch_size, training_lr: the ``training`` fitness (SGD Nesterov, wd 5e-4,
                cosine to 0).
            heldout_samples, train_samples: the seeded split of the training images a trained cell is scored /
                trained on (default: 5,000 scored, the rest trained on).
            seed: seeds every draw; the CLI sets it from seed_everything.
            num_classes, in_channels: linked from the datamodule by the CLI; the ``training`` fitness builds its
                networks with them (a proxy's network takes its input channels from the batch and has
                ``proxy_num_classes`` outputs).
        """
        super().__init__()
        if budget < 1:
            raise ConfigError(f"model.budget must be a positive integer, got {budget}")
        self.automatic_optimization = False
        self.space = get_space(space)
        self.benchmark = self.space.benchmark(benchmark_path)
        self.fitness_kind: Fitness = fitness or ("benchmark" if self.benchmark is not None else "proxy")
        if self.fitness_kind not in ("benchmark", "proxy", "training"):
            raise ConfigError(f"model.fitness must be 'benchmark', 'proxy' or 'training', got {self.fitness_kind!r}")
        if self.fitness_kind == "training" and num_classes is None:
            raise ConfigError("model.fitness 'training' trains each cell on images: set data.init_args.dataset in "
                              "the ProxyDataModule (e.g. digits, cifar10 or image_folder with data_dir)")
        if self.fitness_kind == "benchmark" and self.benchmark is None:
            raise ConfigError(f"the {self.space.name} space has no benchmark table to query: set model.fitness: "
                              "proxy (a training-free score of each cell)")
        if self.benchmark is not None:
            dataset = canonical_dataset(dataset)  # our spelling or the benchmark's (ImageNet16-120)
            self.benchmark.column(dataset, oracle_metric)  # fails now, with the fix, if the table lacks it
        self.budget, self.dataset, self.oracle_metric, self.seed = budget, dataset, oracle_metric, seed
        get_proxy(proxy)
        c, n = self.space.search_network_defaults
        layers = layers if layers is not None else cells_per_stage
        self.proxy, self.proxy_num_classes = proxy, proxy_num_classes
        self.cell_channels, self.cell_layers = channels or c, layers or n
        self.training_recipe = LowFidelityRecipe(epochs=training_epochs, batch_size=training_batch_size,
                                                 lr=training_lr)
        self.heldout_samples, self.train_samples = heldout_samples, train_samples
        self.num_classes, self.in_channels = num_classes, in_channels
        self._data: Optional[LowFidelitySplit] = None
        self.strategy: Any = RandomSampling(self.space)
        self.history: list[dict[str, Any]] = []

    def space_id(self) -> str:
        return f"{self.space.label} (discrete)"

    def search_space(self) -> SearchSpace:
        return self.space

    def configure_optimizers(self) -> None:
        return None

    # ---- pieces subclasses change ------------------------------------------------------------------
    def fitness(self, arch: Any, batch: dict, g: torch.Generator) -> float:
        if self.fitness_kind == "benchmark":
            return self.benchmark.accuracy(arch, self.dataset, self.oracle_metric)
        if self.fitness_kind == "training":
            return self.trained_accuracy(arch, g)
        return self.proxy_score(arch, batch, g)

    def network_spec(self, arch: Any, channels: int, layers: int) -> NetworkSpec:
        """What builds the cell's network on this run's data (``training.cell_training.CellNetwork``)."""
        return NetworkSpec(self.space.name, self.space.key(arch), channels, layers, int(self.num_classes),
                           self.in_channels)

    def low_fidelity_data(self) -> LowFidelitySplit:
        """The seeded split of the datamodule's training images (held-out to score, the rest to train), on the
        run's device, built once."""
        if self._data is None:
            dm = self.trainer.datamodule
            self._data = LowFidelitySplit.from_training_set(dm.data.train, dm.augment, self.heldout_samples,
                                                            self.train_samples).to(self.device)
        return self._data

    def trained_accuracy(self, arch: Any, g: torch.Generator) -> float:
        """The ``training`` fitness: held-out accuracy (%) after a short cross-entropy training of the cell."""
        seed = int(torch.randint(2**62, (1,), generator=g))
        spec = self.network_spec(arch, self.cell_channels, self.cell_layers)
        return train_low_fidelity(spec, CrossEntropy(), None, self.low_fidelity_data(), self.training_recipe, seed,
                                  self.device)["accuracy"]

    def proxy_score(self, arch: Any, batch: dict, g: torch.Generator) -> float:
        """The proxy's score of the cell on the step's proxy batch, its network initialised from a seed drawn
        from ``g``."""
        if "proxy" not in batch:
            raise ConfigError(f"proxy {self.proxy!r} needs images: give the ProxyDataModule a dataset")
        x, y = batch["proxy"]
        seed = int(torch.randint(2**62, (1,), generator=g))
        return score_cell(arch, x, y, seed, self.proxy, self.proxy_num_classes, self.cell_channels,
                          self.cell_layers, self.space)

    def record(self, arch: Any) -> dict[str, Any]:
        """A history record's identity of a cell: its text and, with a benchmark, its index."""
        rec: dict[str, Any] = {"arch": self.space.key(arch)}
        if self.benchmark is not None:
            rec["index"] = self.benchmark.index(arch)
        return rec

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
        g = torch.Generator().manual_seed(mix_seed(self.seed, n, 11))
        with host_read("a discrete search's step scores one cell, and its strategy reads the score on the host"):
            if n == 0:
                self.prepare(batch)
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
        return {**self.record(arch), "fitness": fit}

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

    def genotype(self) -> Any:
        best = self.incumbent()
        if best is None:
            raise ConfigError("the search has evaluated no architecture yet")
        return self.space.parse(best["arch"])

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
        if self.benchmark is not None:
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
        extras: dict[str, Any] = {"evaluated": len(self.history)}
        if self.fitness_kind == "proxy":
            extras.update(fitness="proxy", proxy=self.proxy)
        elif self.fitness_kind == "training":
            extras.update(fitness="training", training=asdict(self.training_recipe))
        if self.benchmark is None:
            return {**extras, "incumbent": best and {"arch": best["arch"], "fitness": best["fitness"]}}
        trajectory: list[Optional[float]] = []
        top, acc = -math.inf, None
        for rec in self.history:  # the oracle accuracy of the incumbent after each evaluation
            if rec.get("fidelity", "high") == "high" and (acc is None or rec["fitness"] > top):
                top, acc = rec["fitness"], self.benchmark.accuracy(rec["index"], self.dataset)
            trajectory.append(acc)
        return {**extras,
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
