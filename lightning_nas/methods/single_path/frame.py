"""Single-path weight sharing with uniform sampling: RSPS (Li & Talwalkar, UAI 2019, random search with weight
sharing) and SPOS's supernet training (Guo et al., ECCV 2020, Eq. 5: one uniformly sampled child per step).

Per training step one child is drawn uniformly from the space with a generator seeded by (seed, global step):
every DDP rank trains the same child and a resumed run draws the children the uninterrupted one would have.
The child runs the supernet's sampling mode (``forward(x, path=...)``), so ops off its path compute nothing and
get no gradient; SGD skips them (no weight decay, no momentum step), as in the official SPOS code. Under DDP the
method sets ``find_unused_parameters=True`` on Lightning's DDP strategy (the unused ops are unused on every rank,
so DDP leaves their gradients empty instead of raising or hanging).

Ranking: ``candidates`` children, drawn once from (seed, 17), are evaluated with the inherited weights on the
first ``rank_batches`` held-out batches, BN re-calibrated per child on ``calib_batches`` training batches
(``bn_mode``, see ``child_eval``); the best is ``genotype()`` (the first on ties). The ranking is refreshed
whenever the weights changed since the last one (at every validation and whenever ``genotype()`` is asked, so
``BenchmarkAccuracy`` reports the anytime accuracy of the search's current pick). ``val/acc`` is that pick's
accuracy on the whole held-out split.

Reduced sharing (Zhang et al., arXiv 2001.01431, Sec. 5): ``groups`` = m > 1 keeps m copies of the supernet
weights (``sharing.GroupSharing``: the copies, ``grouping``, ``grouping_seed`` and ``shared_prefix``); a child
trains and is evaluated with its group's copy. m = 1 is full sharing.

NA-RS (neighbourhood-aware random search; Wang, Cao, Li, Kitani, BMVC 2021, arXiv 2105.06369; only the abstract
could be read, so this is the documented interpretation of methods.md 4): with ``neighbours`` = K > 0 a candidate
is scored by ``aggregation`` (mean by default, max or min) of the inherited-weight accuracies of itself and K
neighbours at ``distance`` d (``search_spaces.neighbourhood``, the notion NA-DARTS uses: d edges per cell type
switched to another op). Each candidate's neighbours are drawn once, from (seed, 19, candidate), and stay fixed for
the run; training is RSPS's, unchanged. K = 0 is random search with weight sharing exactly.

DI-NAS (disturbance-immune weight sharing; Niu et al., arXiv 2003.13089): ``projector`` replaces the plain weight
update by an orthogonal one (``single_path.projection``: ``OWMProjector`` or ``GradientSpaceProjector``, both
documented interpretations; None = plain updates). ``callbacks.DisturbanceProbe`` measures what it is meant to
remove.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any, Literal, Optional

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.strategies import DDPStrategy
from torch import nn

from lightning_nas.core.capabilities import UpdatesChildren
from lightning_nas.core.child_eval import BN_MODES, BNMode, child_accuracy, child_bn
from lightning_nas.core.module import DARTS_WEIGHT_SGD, NASModule, build_optimizer, epoch_mean, resolve_callable
from lightning_nas.data.datamodules import SearchDataModule
from lightning_nas.errors import CheckpointError, ConfigError
from lightning_nas.methods.single_path.projection import GradientProjector
from lightning_nas.methods.single_path.sharing import GroupSharing, path_code
from lightning_nas.reproducibility import mix_seed
from lightning_nas.search_spaces.base import Path, Supernet, SupernetFactory
from lightning_nas.search_spaces.darts.supernet import DartsSupernet
from lightning_nas.search_spaces.neighbourhood import neighbour_path
from lightning_nas.search_spaces.space import SearchSpace

CANDIDATE_STREAM, NEIGHBOUR_STREAM = 17, 19
#: an orthogonal-update projector, built with no arguments (a class_path/init_args in a config)
ProjectorFactory = Callable[[], GradientProjector]
AGGREGATIONS = {"mean": lambda v: sum(v) / len(v), "max": max, "min": min}


class SinglePathSearch(UpdatesChildren, NASModule):
    """Uniform single-path supernet training (RSPS / SPOS), ranking of candidates with inherited weights,
    optional group or prefix sharing."""

    def __init__(self, supernet: Optional[SupernetFactory] = None, num_classes: int = 10, in_channels: int = 3,
                 weight_optimizer: OptimizerCallable = DARTS_WEIGHT_SGD,
                 lr_scheduler: Optional[LRSchedulerCallable] = None, eta_min: float = 0.001, grad_clip: float = 5.0,
                 candidates: int = 100, rank_batches: int = 4, calib_batches: int = 2,
                 bn_mode: BNMode = "recalibrate", groups: int = 1,
                 grouping: Literal["similarity", "random"] = "similarity", grouping_seed: int = 0,
                 shared_prefix: Optional[int] = None, neighbours: int = 0, distance: int = 1,
                 aggregation: Literal["mean", "max", "min"] = "mean", projector: Optional[ProjectorFactory] = None,
                 seed: int = 2):
        """
        Args:
            supernet: the search space, built as ``supernet(num_classes, in_channels)``; default the DARTS space.
            weight_optimizer: optimizer of the shared weights (default SGD 0.025, momentum 0.9, wd 3e-4).
            lr_scheduler: per-epoch weight-LR schedule; default cosine to ``eta_min`` over max_epochs.
            grad_clip: max gradient norm of the weights; 0 disables clipping.
            candidates: children ranked with the inherited weights to pick the genotype.
            rank_batches: held-out batches (eval batch size) each candidate is evaluated on.
            calib_batches: training batches that re-calibrate BN per child (``bn_mode: recalibrate``).
            bn_mode: ``recalibrate`` (SPOS), ``batch`` (batch statistics) or ``running``.
            groups: copies of the supernet weights (1: full sharing); memory is ``groups`` times the supernet's.
            grouping: how children map to groups: ``similarity`` (nearest of ``groups`` seeded centroid children)
                or ``random`` (seeded hash).
            grouping_seed: seeds the group assignment (not the run seed: runs with other seeds group alike).
            shared_prefix: with groups, the stem and this many first blocks are shared by all groups.
            neighbours: NA-RS's K, neighbours whose accuracies score a candidate with its own (0: RSPS).
            distance: NA-RS's d, edges per cell type a neighbour changes.
            aggregation: how a candidate's and its neighbours' accuracies combine: mean, max or min.
            projector: DI-NAS's orthogonal update (``single_path.projection``); None: plain updates.
            seed: seeds the sampled children and the candidates; the CLI sets it from seed_everything.
        """
        super().__init__()
        for name, value in (("candidates", candidates), ("rank_batches", rank_batches)):
            if value < 1:
                raise ConfigError(f"model.{name} must be a positive integer, got {value}")
        if grad_clip < 0 or calib_batches < 0:
            raise ConfigError("model.grad_clip and model.calib_batches must be >= 0")
        if bn_mode not in BN_MODES:
            raise ConfigError(f"model.bn_mode must be one of {list(BN_MODES)}, got {bn_mode!r}")
        if bn_mode == "recalibrate" and calib_batches == 0:
            raise ConfigError("model.bn_mode 'recalibrate' needs model.calib_batches >= 1 (or bn_mode 'batch')")
        if neighbours < 0 or distance < 1:
            raise ConfigError(f"need model.neighbours >= 0 and model.distance >= 1, got {neighbours}, {distance}")
        if aggregation not in AGGREGATIONS:
            raise ConfigError(f"model.aggregation must be one of {list(AGGREGATIONS)}, got {aggregation!r}")
        self.automatic_optimization = False
        factory = DartsSupernet if supernet is None else resolve_callable(supernet, "model.supernet")
        self.supernet: Supernet = factory(num_classes, in_channels)
        self.weight_optimizer, self.lr_scheduler_factory, self.eta_min = weight_optimizer, lr_scheduler, eta_min
        self.grad_clip, self.seed = grad_clip, seed
        self.rank_batches, self.calib_batches = rank_batches, calib_batches
        self.bn_mode: BNMode = bn_mode
        self.sharing = GroupSharing(self.supernet, groups, grouping, grouping_seed, shared_prefix)
        self.group_supernets = nn.ModuleList(self.sharing.copies)
        self._ddp_params_and_buffers_to_ignore = [
            n for n, p in self.named_parameters() if any(p is a for net in self.all_supernets()
                                                         for a in net.arch_parameters())]
        self.projector: Optional[GradientProjector] = None
        if projector is not None:
            self.projector = resolve_callable(projector, "model.projector")()
            if not isinstance(self.projector, GradientProjector):
                raise ConfigError("model.projector must build a lightning_nas.methods.single_path.projection."
                                  f"GradientProjector, got {type(self.projector).__name__}")
            self.projector.attach(self.all_supernets())
            # identical on every rank by construction: DDP need not broadcast it every forward
            self._ddp_params_and_buffers_to_ignore += [f"projector.{n}" for n, _ in self.projector.named_buffers()]
        self.init_accuracy_metrics(num_classes)
        self.weight_loss_mean = epoch_mean()
        g = torch.Generator().manual_seed(mix_seed(seed, CANDIDATE_STREAM))
        self.candidates: list[Path] = [self.supernet.random_path(g) for _ in range(candidates)]
        self.neighbours, self.distance, self.aggregation = neighbours, distance, aggregation
        self.candidate_neighbours: list[list[Path]] = [
            self._neighbours_of(k, path) for k, path in enumerate(self.candidates)]
        self.ranking: list[dict[str, Any]] = []  # candidates' accuracies at `ranked_step`, in candidate order
        self.ranked_step = -1
        self._ranking_scoring: dict[str, Any] = {}
        self.last_path: Optional[Path] = None
        self._eval_path: Optional[Path] = None
        self._eval_bn: Any = None
        self._probes: Optional[tuple[list, list]] = None  # (held-out, calibration) batches on the device

    def _neighbours_of(self, k: int, path: Path) -> list[Path]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, NEIGHBOUR_STREAM, k))
        return [neighbour_path(path, self.supernet.primitives, self.distance, g) for _ in range(self.neighbours)]

    # ---- identity ----------------------------------------------------------------------------------
    def space_id(self) -> str:
        return self.supernet.space_id() + self.sharing.describe()

    def all_supernets(self) -> list[Supernet]:
        return [self.supernet, *self.group_supernets]

    def group_of(self, path: Path) -> int:
        """The group whose weights the child ``path`` trains and is evaluated with."""
        return self.sharing.group_of(path)

    def supernet_for(self, path: Path) -> Supernet:
        return self.all_supernets()[self.group_of(path)]

    # ---- optimisation ----------------------------------------------------------------------------------
    def weight_parameters(self) -> list[nn.Parameter]:
        seen: set[int] = set()
        params = []
        for net in self.all_supernets():
            for p in net.weight_parameters():
                if id(p) not in seen:  # prefix-shared modules appear in several groups
                    seen.add(id(p))
                    params.append(p)
        return params

    def configure_optimizers(self) -> Any:
        opt = build_optimizer(self.weight_optimizer, self.weight_parameters(), "model.weight_optimizer")
        return [opt], [self.weight_schedule(opt, self.lr_scheduler_factory, self.eta_min)]

    def setup(self, stage: str) -> None:
        self._probes = None  # fixed for a run: built once, on first use, on the run's device
        strategy = self.trainer.strategy
        if isinstance(strategy, DDPStrategy):  # ops off the sampled path are unused on every rank
            strategy._ddp_kwargs["find_unused_parameters"] = True

    def sample_path(self) -> Path:
        """The child of this training step, from (seed, global step): the same on every rank and after resume."""
        return self.supernet.random_path(self.step_generator(stream=5))

    def training_step(self, batch: dict, batch_idx: int) -> None:
        self.sync_lr_schedule()
        x, y = batch["train"]
        path = self.sample_path()
        self.last_path = path
        net = self.supernet_for(path)

        def forward() -> torch.Tensor:
            with self._capture():
                return net(x, path=path)

        self.weight_step(self.optimizers(), forward, y, self.grad_clip)

    def _capture(self) -> Any:
        return self.projector.capture() if self.projector is not None else contextlib.nullcontext()

    def progress(self) -> float:
        """The fraction of the search's optimiser steps done (the OWM ``a`` schedule)."""
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else float("inf")
        return self.global_step / total if math.isfinite(total) and total > 0 else 0.0

    def transform_weight_grads(self) -> None:
        if self.projector is not None:
            self.projector.project(self.progress())

    def after_weight_step(self) -> None:
        if self.projector is not None:
            self.projector.commit()

    def child_update(self, path: Path, x: torch.Tensor, y: torch.Tensor) -> float:
        """One weight step of the child ``path`` outside the training loop, with the search's update rule (loss
        gradient, projector, clipping, the run's optimizer and learning rate) but no logging and no DDP gradient
        reduction (``torch.autograd.grad``): the disturbance probe's sandbox, which restores the state after it.
        Returns the loss."""
        opt = self.optimizers().optimizer
        net = self.supernet_for(path)
        params = [p for p in self.weight_parameters() if p.requires_grad]
        opt.zero_grad(set_to_none=True)
        with self._capture():
            loss = self.loss(net(x, path=path), y)
        self.weight_update(opt, loss, self.grad_clip, sandbox=params)
        return float(loss.detach())

    def on_train_start(self) -> None:
        if self.projector is not None:
            self.log_replicated("search/projector_mb", self.projector.state_bytes() / 2**20)

    def on_train_epoch_end(self) -> None:
        self.log_replicated("search/weight_lr", float(self.optimizers().param_groups[0]["lr"]))

    # ---- ranking -----------------------------------------------------------------------------------
    def _probe_batches(self) -> tuple[list, list]:
        """(held-out batches that rank the candidates, training batches that re-calibrate BN), built once."""
        if self._probes is None:
            trainer = self.trainer
            dm = trainer.datamodule
            if not isinstance(dm, SearchDataModule):
                raise ConfigError("SinglePathSearch ranks children on held-out data: use "
                                  "lightning_nas.data.datamodules.SearchDataModule")
            calib = self.calib_batches if self.bn_mode == "recalibrate" else 0
            self._probes = dm.child_eval_batches(self.rank_batches, calib, trainer)
        return self._probes

    def scoring(self) -> dict[str, Any]:
        """What a ranking depends on besides the weights: a stored ranking is reused only if this is equal."""
        return {"candidates": len(self.candidates), "neighbours": self.neighbours, "distance": self.distance,
                "aggregation": self.aggregation, "rank_batches": self.rank_batches,
                "calib_batches": self.calib_batches, "bn_mode": self.bn_mode}

    def rank_candidates(self) -> list[dict[str, Any]]:
        """Score every candidate with the inherited weights (cached until the weights change): its own held-out
        accuracy (``acc``) and, with NA-RS neighbours, ``score`` = the aggregation of its and its neighbours'
        accuracies (without neighbours ``score`` = ``acc``)."""
        if self.ranked_step == self.global_step and self.ranking and self._ranking_scoring == self.scoring():
            return self.ranking
        if self._trainer is None:
            raise ConfigError("ranking the candidates needs the trainer's data; call genotype() during a run")
        eval_batches, calib = self._probe_batches()
        cache: dict[tuple[int, ...], float] = {}  # children evaluated in this ranking (neighbours may repeat)

        def accuracy(path: Path) -> float:
            code = path_code(path)
            if code not in cache:
                cache[code] = child_accuracy(self.supernet_for(path), path, eval_batches, calib, self.bn_mode)
            return cache[code]

        self.ranking = []
        for k, path in enumerate(self.candidates):
            acc = accuracy(path)
            record = {"candidate": k, "group": self.group_of(path), "acc": acc, "score": acc,
                      "genotype": self.supernet.path_genotype(path).to_text()}
            if self.neighbours:
                accs = [accuracy(n) for n in self.candidate_neighbours[k]]
                record["score"] = AGGREGATIONS[self.aggregation]([acc, *accs])
                record["neighbour_accs"] = accs
            self.ranking.append(record)
        self.ranked_step, self._ranking_scoring = self.global_step, self.scoring()
        return self.ranking

    def best_path(self) -> Path:
        ranking = self.rank_candidates()
        best = max(range(len(ranking)), key=lambda k: (ranking[k]["score"], -k))
        return self.candidates[best]

    def genotype(self) -> Any:
        return self.supernet.path_genotype(self.best_path())

    def search_space(self) -> SearchSpace:
        return self.supernet.space

    # ---- evaluation: the current pick on the held-out split / test set ------------------------------------
    def _start_eval(self) -> None:
        path = self.best_path()
        net = self.supernet_for(path)
        _, calib = self._probe_batches()
        self._eval_path = path
        self._eval_bn = child_bn(net, path, calib, self.bn_mode)
        self._eval_bn.__enter__()

    def _end_eval(self) -> None:
        if self._eval_bn is not None:
            self._eval_bn.__exit__(None, None, None)
        self._eval_bn = self._eval_path = None

    on_validation_epoch_start = on_test_epoch_start = _start_eval
    on_validation_epoch_end = on_test_epoch_end = _end_eval

    def analysis_network(self) -> torch.nn.Module:
        raise ConfigError("the single-path search has no forward without a sampled child, so the landscape, "
                          "gradient-variance and Hessian callbacks do not apply: retrain the picked cell and "
                          "attach them to the retraining (the WeightSharingVariance callback analyses the children)")

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        assert self._eval_path is not None
        return self.supernet_for(self._eval_path)(x, path=self._eval_path)

    def variant(self) -> dict[str, Any]:
        out = dict(super().variant())
        if self.sharing.groups > 1:
            out["groups"] = self.sharing.groups
        if self.projector is not None:
            out["projector"] = type(self.projector).__name__
        if self.neighbours:
            out.update(neighbours=self.neighbours, distance=self.distance, aggregation=self.aggregation)
        return out

    def summary_extras(self) -> dict[str, Any]:
        # rankings stored by older versions have no score: it was the accuracy
        ranking = sorted(self.ranking, key=lambda r: (-r.get("score", r["acc"]), r["candidate"]))
        extras = {"groups": self.sharing.groups, "ranked_at_step": self.ranked_step, "scoring": self.scoring(),
                  "top_candidates": ranking[:10], "ranking": self.ranking}
        if self.projector is not None:
            extras["projector"] = {"class": type(self.projector).__name__,
                                   "state_mb": self.projector.state_bytes() / 2**20}
        return extras

    # ---- checkpoints -------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lightning_nas"]["search_state"] = {
            "ranking": self.ranking, "ranked_step": self.ranked_step, "scoring": self._ranking_scoring,
            "projector": self._projector_name()}

    def _projector_name(self) -> Optional[str]:
        return None if self.projector is None else type(self.projector).__name__

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint["lightning_nas"].get("search_state", {})
        if state.get("projector") != self._projector_name():
            raise CheckpointError(
                f"the checkpoint was trained with projector {state.get('projector')}, this run has "
                f"{self._projector_name()}: resume it with the config it was written with (config.yaml in its run "
                "directory)")
        self.ranking, self.ranked_step = list(state.get("ranking", [])), int(state.get("ranked_step", -1))
        self._ranking_scoring = dict(state.get("scoring", {}))
