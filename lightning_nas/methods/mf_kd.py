"""Bayesian-optimisation searches over NAS-Bench-201 (discrete searches: one training step = one evaluation).

- ``BayesOpt``: single-fidelity GP-UCB with the benchmark as oracle (the Vega port of MF-KD without its low
  fidelity): ``budget`` evaluations, each one high-fidelity (200-epoch) result.
- ``MFKD`` (Trofimov et al., arXiv 2006.08341; later version, methods.md section 6): multi-fidelity GP-UCB whose
  low fidelity trains the cell's network for a few epochs with a distillation loss from a trained teacher
  (``low_fidelity.train_low_fidelity``: Hinton KD T 32, alpha 1 by default; CE or NST by ``loss``) and scores it
  on held-out *training* images; the high fidelity is the benchmark's 200-epoch accuracy (a table lookup whose
  cost counts as ``high_fidelity_epochs``). The budget is in epochs; the fidelity schedule
  (``bayes_opt.fidelity_schedule``) is fixed up front, so the number of evaluations is known. The answer is the
  best observed high-fidelity cell. A low-fidelity evaluation costs its training epochs whatever the network's
  size (the reduced CPU networks of the shipped configs make it cheaper than the benchmark's C=16, N=5).

Both resume after the last completed evaluation (``run.checkpoint_every_n_steps: 1``): the strategy's
observations are checkpointed, every GP fit and low-fidelity training is seeded by (seed, evaluation number).
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import torch

from lightning_nas.errors import ConfigError
from lightning_nas.methods.bayes_opt import GPUCB, HIGH, LOW, MultiFidelityUCB, fidelity_schedule
from lightning_nas.methods.cell_training import NetworkSpec, load_teacher
from lightning_nas.methods.discrete import DiscreteSearch
from lightning_nas.methods.distill_losses import DistillationLoss, HintonKD
from lightning_nas.methods.low_fidelity import LowFidelityRecipe, LowFidelitySplit, train_low_fidelity
from lightning_nas.reproducibility import mix_seed

Dataset = Literal["cifar10", "cifar100", "imagenet16_120"]


class BayesOpt(DiscreteSearch):
    """Single-fidelity GP-UCB on the benchmark (``bayes_opt.GPUCB``): 5 seeded random cells, then UCB
    ``mu + 0.5 sigma`` over 1,000 random unevaluated cells; the incumbent is the best observed cell."""

    def __init__(self, *args: Any, initial_points: int = 5, candidates: int = 1000, ucb_kappa: float = 0.5,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        if initial_points > self.budget:
            raise ConfigError(f"model.initial_points ({initial_points}) is larger than model.budget ({self.budget}): "
                              "the GP would never be used")
        self.strategy = GPUCB(self.space, initial_points, candidates, ucb_kappa)


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
                         benchmark_path=benchmark_path, seed=seed, num_classes=num_classes, in_channels=in_channels)
        self.budget_epochs, self.high_fidelity_epochs = budget_epochs, high_fidelity_epochs
        self.channels, self.cells_per_stage = channels, cells_per_stage
        self.num_classes, self.in_channels = num_classes, in_channels
        self.heldout_samples, self.train_samples = heldout_samples, train_samples
        if LOW in self.plan and num_classes is None:
            raise ConfigError("MF-KD's low fidelity trains networks on images: set data.init_args.dataset (e.g. "
                              "image_folder with data_dir) in the ProxyDataModule")
        if self.benchmark is None:
            raise ConfigError(f"MF-KD's high fidelity is the benchmark table, and the {self.space.name} space has "
                              "none: use a space with a benchmark (nb201)")
        self.teacher = load_teacher(teacher, self.loss_fn, self.space.name, num_classes)
        self.strategy = MultiFidelityUCB(self.space, initial_high, initial_low, candidates, ucb_kappa, gp_model,
                                         low_fidelity_value=low_fidelity_epochs / high_fidelity_epochs)
        self._data: Optional[LowFidelitySplit] = None

    def space_id(self) -> str:
        return f"{self.space.label} (discrete, multi-fidelity)"

    def low_fidelity_data(self) -> LowFidelitySplit:
        if self._data is None:
            dm = self.trainer.datamodule
            self._data = LowFidelitySplit.from_training_set(dm.data.train, dm.augment, self.heldout_samples,
                                                            self.train_samples).to(self.device)
        return self._data

    def evaluate(self, n: int, batch: dict, g: torch.Generator) -> dict[str, Any]:
        fidelity = self.plan[n]
        arch = self.strategy.ask(g, fidelity)
        record: dict[str, Any] = {**self.record(arch), "fidelity": fidelity}
        if fidelity == HIGH:
            value = self.benchmark.accuracy(arch, self.dataset, self.oracle_metric)
            record["cost_epochs"] = self.high_fidelity_epochs
            self.log("search/fitness", value, on_step=False, on_epoch=True, batch_size=1)
        else:
            spec = NetworkSpec(self.space.name, self.space.key(arch), self.channels, self.cells_per_stage,
                               int(self.num_classes), self.in_channels)
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
