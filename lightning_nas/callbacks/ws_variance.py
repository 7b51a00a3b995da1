"""Weight-sharing variance (Zhang et al., "Deeper Insights into Weight Sharing in NAS", arXiv 2001.01431): how
stable is the ranking of child models that the shared weights give?

A fixed panel of children (``panel_size`` distinct random ones drawn with ``panel_seed``, plus ``children``) is
evaluated with the inherited weights on the first ``eval_batches`` held-out batches, BN as ``bn_mode`` says
(``recalibrate`` on ``calib_batches`` training batches, SPOS's protocol; see ``core.child_eval``), after every
``every_n_epochs``-th training epoch and, with ``last_k_batches`` = K, also after each of that epoch's last K
training steps (the paper's "GT-Tau over the last 64 mini-batches"). Logged per evaluation: ``wsv/s_tau``
(Kendall tau against the previous epoch evaluation), ``wsv/gt_tau`` (against the benchmark, NAS-Bench-201 only),
``wsv/t{n}r`` and ``wsv/panel_acc_mean``; with K: ``wsv/gt_tau_last_mean`` / ``_std`` and
``wsv/s_tau_consecutive_batches_mean``. Every panel accuracy goes to ``<run dir>/ws_variance.csv``;
``python -m lightning_nas ws-variance RUN_DIR...`` compares runs (S-Tau across seeds).

Works on any method whose supernet has the sampling mode: the single-path search (a child is evaluated with its
group's weights under group sharing: ``pl_module.supernet_for``) and the bilevel methods. The panel does not
depend on the run seed, so runs with different seeds rank the same children.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from lightning_nas.analysis.ws_variance import CSV_FIELDS, CSV_NAME, kendall_tau, mean_std, top_n_rank
from lightning_nas.callbacks.probes import run_dir
from lightning_nas.callbacks.schedule import epoch_number, every_nth_or_last_epoch
from lightning_nas.core.capabilities import SamplesChildren
from lightning_nas.core.child_eval import BN_MODES, BNMode, child_accuracy
from lightning_nas.core.module import log_replicated
from lightning_nas.data.datamodules import SearchDataModule
from lightning_nas.errors import ConfigError
from lightning_nas.search_spaces.base import Path as ChildPath
from lightning_nas.search_spaces.base import Supernet


class WeightSharingVariance(Callback):
    def __init__(self, panel_size: int = 64, children: Sequence[str] = (), panel_seed: int = 0,
                 every_n_epochs: int = 1, eval_batches: int = 4, calib_batches: int = 2,
                 bn_mode: BNMode = "recalibrate", last_k_batches: int = 0, top_n: Sequence[int] = (1, 5, 10),
                 benchmark_dataset: str = "cifar10", benchmark_path: Optional[str] = None):
        """
        Args:
            panel_size: distinct random children in the panel (the paper's space has 64).
            children: more children by genotype (NAS-Bench-201 arch string or index; DARTS text or name).
            panel_seed: seeds the random children (keep it equal across runs to compare them).
            every_n_epochs: evaluate after every n-th epoch (and after the last).
            eval_batches: held-out batches (the datamodule's eval batch size) per evaluation.
            calib_batches: training batches re-calibrating BN per child (``bn_mode: recalibrate``).
            bn_mode: ``recalibrate`` (SPOS), ``batch`` or ``running`` (``core.child_eval``).
            last_k_batches: also evaluate after each of the last K training steps of an evaluated epoch.
            top_n: the n of TnR.
            benchmark_dataset, benchmark_path: ground truth on NAS-Bench-201 (default: the shipped table).
        """
        if panel_size < 0 or every_n_epochs < 1 or eval_batches < 1 or calib_batches < 0 or last_k_batches < 0:
            raise ConfigError("WeightSharingVariance: panel_size, calib_batches, last_k_batches must be >= 0 and "
                              "every_n_epochs, eval_batches >= 1")
        if bn_mode not in BN_MODES:
            raise ConfigError(f"WeightSharingVariance: bn_mode must be one of {list(BN_MODES)}, got {bn_mode!r}")
        if bn_mode == "recalibrate" and calib_batches == 0:
            raise ConfigError("WeightSharingVariance: bn_mode 'recalibrate' needs calib_batches >= 1")
        if any(n < 1 for n in top_n):
            raise ConfigError(f"WeightSharingVariance: top_n values must be positive, got {list(top_n)}")
        self.panel_size, self.children, self.panel_seed = panel_size, list(children), panel_seed
        self.every_n_epochs, self.eval_batches, self.calib_batches = every_n_epochs, eval_batches, calib_batches
        self.bn_mode: BNMode = bn_mode
        self.last_k_batches, self.top_n = last_k_batches, list(top_n)
        self.benchmark_dataset, self.benchmark_path = benchmark_dataset, benchmark_path
        self.panel: list[ChildPath] = []
        self.genotypes: list[str] = []
        self.truth: Optional[list[float]] = None
        self.previous: Optional[list[float]] = None  # the last epoch evaluation (S-Tau)
        self.batch_evals: list[list[float]] = []
        self._data: tuple[list, list] = ([], [])

    # ---- setup -------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not isinstance(pl_module, SamplesChildren):
            raise ConfigError("WeightSharingVariance needs a method with a supernet (SinglePathSearch or a "
                              "bilevel method); remove it from trainer.callbacks for this run")
        net = pl_module.supernet
        self.panel = self.build_panel(net)
        self.genotypes = [net.path_genotype(p).to_text() for p in self.panel]
        bench = net.space.benchmark(self.benchmark_path)
        if bench is not None:
            self.truth = [bench.accuracy(net.path_genotype(p), self.benchmark_dataset) for p in self.panel]

    def build_panel(self, net: Supernet) -> list[ChildPath]:
        panel = [net.genotype_path(net.space.parse(spec)) for spec in self.children]
        g = torch.Generator().manual_seed(self.panel_seed)
        seen = {str(p) for p in panel}
        target, tries = len(panel) + self.panel_size, 0
        while len(panel) < target:
            path = net.random_path(g)
            tries += 1
            if str(path) not in seen:
                seen.add(str(path))
                panel.append(path)
            elif tries > 100 * self.panel_size:
                raise ConfigError(f"WeightSharingVariance: the space has fewer than {self.panel_size} distinct "
                                  "children; lower panel_size")
        if len(panel) < 2:
            raise ConfigError("WeightSharingVariance: the panel needs at least two children")
        return panel

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        if not isinstance(dm, SearchDataModule):
            raise ConfigError("WeightSharingVariance needs a SearchDataModule (held-out and training batches)")
        calib = self.calib_batches if self.bn_mode == "recalibrate" else 0
        self._data = dm.child_eval_batches(self.eval_batches, calib, trainer)

    # ---- evaluation --------------------------------------------------------------------------------
    def evaluate(self, pl_module: pl.LightningModule) -> list[float]:
        """Shared-weight accuracy of every panel child (each with its group's weights under group sharing)."""
        eval_batches, calib = self._data
        return [child_accuracy(pl_module.supernet_for(path), path, eval_batches, calib, self.bn_mode)
                for path in self.panel]

    def _groups(self, pl_module: SamplesChildren) -> list[int]:
        return [pl_module.group_of(p) for p in self.panel]

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, point: str, accs: list[float]) -> None:
        if not trainer.is_global_zero:
            return
        path = run_dir(trainer) / CSV_NAME
        new = not path.exists()
        groups = self._groups(pl_module)
        with open(path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(CSV_FIELDS)
            for k, acc in enumerate(accs):
                truth = "" if self.truth is None else self.truth[k]
                writer.writerow([epoch_number(trainer), trainer.global_step, point, k, self.genotypes[k], groups[k],
                                 f"{acc:.6f}", truth])

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self.last_k_batches or not every_nth_or_last_epoch(trainer, self.every_n_epochs):
            return
        if batch_idx < trainer.num_training_batches - self.last_k_batches:
            return
        accs = self.evaluate(pl_module)
        self.batch_evals.append(accs)
        self._write(trainer, pl_module, "batch", accs)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not every_nth_or_last_epoch(trainer, self.every_n_epochs):
            return
        accs = self.evaluate(pl_module)
        self._write(trainer, pl_module, "epoch", accs)
        log_replicated(pl_module, "wsv/panel_acc_mean", sum(accs) / len(accs))
        if self.previous is not None:
            log_replicated(pl_module, "wsv/s_tau", kendall_tau(self.previous, accs))
        if self.truth is not None:
            log_replicated(pl_module, "wsv/gt_tau", kendall_tau(accs, self.truth))
            for n in self.top_n:
                log_replicated(pl_module, f"wsv/t{n}r", float(top_n_rank(accs, self.truth, n)))
        if self.batch_evals:
            if self.truth is not None:
                mean, std = mean_std([kendall_tau(a, self.truth) for a in self.batch_evals])
                log_replicated(pl_module, "wsv/gt_tau_last_mean", mean)
                log_replicated(pl_module, "wsv/gt_tau_last_std", std)
            if len(self.batch_evals) > 1:
                mean, _ = mean_std([kendall_tau(a, b) for a, b in zip(self.batch_evals, self.batch_evals[1:])])
                log_replicated(pl_module, "wsv/s_tau_consecutive_batches_mean", mean)
        self.previous, self.batch_evals = accs, []

    # ---- resume --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"previous": self.previous, "batch_evals": self.batch_evals}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.previous = state_dict.get("previous")
        self.batch_evals = list(state_dict.get("batch_evals", []))
