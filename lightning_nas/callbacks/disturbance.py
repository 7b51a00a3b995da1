"""Performance disturbance of single-path weight sharing (the problem DI-NAS names; Niu et al., arXiv 2003.13089):
training later children through the shared weights changes what earlier children learned.

The probe (after every ``every_n_epochs``-th training epoch and the last), for each of ``children`` fixed children
A (drawn with ``seed``, independent of the run seed, so runs compare on the same children): train A for
``prime_steps`` steps (A becomes "the earlier architecture"), record its held-out accuracy with the shared weights,
train ``max(steps)`` steps on other random children (fixed per A), and re-evaluate A after each k in ``steps``.
The disturbance after k steps is the accuracy before minus after (positive: the later children hurt A). Every
step uses the search's own update (``pl_module.child_update``: its optimizer, learning rate, clipping and
projector), on fixed unaugmented training batches of the search's batch size (disjoint from the calibration
batches; cycled when the split has too few). The probe runs in a sandbox: weights, BN statistics, optimizer and
projector state and the RNG are restored afterwards, bit for bit, so a run with the probe trains exactly as one
without it (tested).

Logged: ``disturbance/acc_before`` and ``disturbance/drop_k{k}`` (means over the children); every value goes to
``<run dir>/disturbance.csv``. Cost per probe: ``children * (prime_steps + max(steps))`` extra weight steps and
``children * (1 + len(steps))`` child evaluations.
"""

from __future__ import annotations

import copy
import csv
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from lightning_nas.callbacks.probes import run_dir
from lightning_nas.callbacks.schedule import epoch_number, every_nth_or_last_epoch
from lightning_nas.core.capabilities import UpdatesChildren
from lightning_nas.core.child_eval import BN_MODES, BNMode, child_accuracy
from lightning_nas.core.module import log_replicated
from lightning_nas.data.datamodules import SearchDataModule
from lightning_nas.errors import ConfigError
from lightning_nas.reproducibility import mix_seed, rng_state, set_rng_state
from lightning_nas.search_spaces.base import Path as ChildPath

CSV_NAME = "disturbance.csv"
CSV_FIELDS = ["epoch", "global_step", "child", "genotype", "k", "acc_before", "acc_after", "drop"]




class DisturbanceProbe(Callback):
    def __init__(self, children: int = 4, steps: Sequence[int] = (1, 5, 20), prime_steps: int = 1,
                 every_n_epochs: int = 1, seed: int = 0, eval_batches: int = 2, calib_batches: int = 1,
                 bn_mode: BNMode = "recalibrate"):
        """
        Args:
            children: probed children A (fixed for the run).
            steps: the k (steps on other children) after which A is re-evaluated.
            prime_steps: steps A itself trains before its accuracy is recorded (0: A as the supernet has it).
            every_n_epochs: probe after every n-th epoch (and after the last).
            seed: seeds the probed children and the children trained after them.
            eval_batches: held-out batches (eval batch size) A is evaluated on.
            calib_batches: training batches re-calibrating BN per evaluation (``bn_mode: recalibrate``).
            bn_mode: ``recalibrate`` (SPOS), ``batch`` or ``running`` (``core.child_eval``).
        """
        steps = sorted(set(int(k) for k in steps))
        if children < 1 or not steps or steps[0] < 1 or prime_steps < 0 or every_n_epochs < 1 or eval_batches < 1:
            raise ConfigError("DisturbanceProbe: children, every_n_epochs, eval_batches and every k in steps must be "
                              ">= 1 (steps not empty), prime_steps >= 0")
        if bn_mode not in BN_MODES:
            raise ConfigError(f"DisturbanceProbe: bn_mode must be one of {list(BN_MODES)}, got {bn_mode!r}")
        if bn_mode == "recalibrate" and calib_batches < 1:
            raise ConfigError("DisturbanceProbe: bn_mode 'recalibrate' needs calib_batches >= 1")
        self.children, self.steps, self.prime_steps = children, steps, prime_steps
        self.every_n_epochs, self.seed, self.eval_batches = every_n_epochs, seed, eval_batches
        self.calib_batches, self.bn_mode = calib_batches if bn_mode == "recalibrate" else 0, bn_mode
        self.probed: list[ChildPath] = []
        self.others: list[list[ChildPath]] = []
        self._data: tuple[list, list, list] = ([], [], [])

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not isinstance(pl_module, UpdatesChildren):
            raise ConfigError("DisturbanceProbe needs the single-path search (lightning_nas.methods."
                              "SinglePathSearch); remove it from trainer.callbacks for this run")
        net = pl_module.supernet
        g = torch.Generator().manual_seed(mix_seed(self.seed, 29))
        self.probed = [net.random_path(g) for _ in range(self.children)]
        self.others = []
        for a in self.probed:
            others = []
            while len(others) < self.steps[-1]:
                b = net.random_path(g)
                if b != a:
                    others.append(b)
            self.others.append(others)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        if not isinstance(dm, SearchDataModule):
            raise ConfigError("DisturbanceProbe needs a SearchDataModule (held-out and training batches)")
        needed = self.prime_steps + self.steps[-1]  # training batches of the search's batch size
        per = max(1, dm.eval_batch_size // dm.batch_size)
        n_train = self.calib_batches + -(-needed // per)
        eval_batches, train = dm.child_eval_batches(self.eval_batches, n_train, trainer)
        calib = train[: self.calib_batches]
        steps = [(x[i:i + dm.batch_size], y[i:i + dm.batch_size]) for x, y in train[self.calib_batches:]
                 for i in range(0, len(y), dm.batch_size)]
        steps = [b for b in steps if len(b[1]) == dm.batch_size] or steps
        if not steps:
            raise ConfigError("DisturbanceProbe: the training split has no images beyond the calibration batches; "
                              "lower calib_batches")
        self._data = (eval_batches, calib, [steps[j % len(steps)] for j in range(needed)])  # cycled if too few

    def probe(self, pl_module: pl.LightningModule) -> list[dict[str, Any]]:
        """The disturbance of every probed child (rows of the CSV); the module's state is restored after each."""
        eval_batches, calib, steps = self._data
        opt = pl_module.optimizers().optimizer
        rows = []
        for i, a in enumerate(self.probed):
            saved = (copy.deepcopy(pl_module.state_dict()), copy.deepcopy(opt.state_dict()), rng_state())
            try:
                for x, y in steps[: self.prime_steps]:
                    pl_module.child_update(a, x, y)
                before = child_accuracy(pl_module.supernet_for(a), a, eval_batches, calib, self.bn_mode)
                for k, (b, (x, y)) in enumerate(zip(self.others[i], steps[self.prime_steps:]), start=1):
                    pl_module.child_update(b, x, y)
                    if k in self.steps:
                        after = child_accuracy(pl_module.supernet_for(a), a, eval_batches, calib, self.bn_mode)
                        rows.append({"child": i, "genotype": pl_module.supernet.path_genotype(a).to_text(), "k": k,
                                     "acc_before": before, "acc_after": after, "drop": before - after})
            finally:
                pl_module.load_state_dict(saved[0])
                opt.load_state_dict(saved[1])
                set_rng_state(saved[2])
        return rows

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not every_nth_or_last_epoch(trainer, self.every_n_epochs):
            return
        rows = self.probe(pl_module)
        firsts = [r for r in rows if r["k"] == self.steps[0]]
        log_replicated(pl_module, "disturbance/acc_before", sum(r["acc_before"] for r in firsts) / len(firsts))
        for k in self.steps:
            drops = [r["drop"] for r in rows if r["k"] == k]
            log_replicated(pl_module, f"disturbance/drop_k{k}", sum(drops) / len(drops))
        if trainer.is_global_zero:
            path = run_dir(trainer) / CSV_NAME
            new = not path.exists()
            with open(path, "a", newline="") as f:
                writer = csv.writer(f)
                if new:
                    writer.writerow(CSV_FIELDS)
                for r in rows:
                    writer.writerow([epoch_number(trainer), trainer.global_step, r["child"], r["genotype"], r["k"],
                                     f"{r['acc_before']:.6f}", f"{r['acc_after']:.6f}", f"{r['drop']:.6f}"])
