"""Callbacks the tests attach from the command line (``--trainer.callbacks``)."""

from __future__ import annotations

import json
import os
import signal

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from lightning_nas.callbacks.host_sync import HostSyncCounter
from lightning_nas.checkpointing import AtomicCheckpointIO
from lightning_nas.methods.single_path.projection import GradientProjector


class StopAfterBatches(Callback):
    """Simulates an interruption: save a checkpoint after ``batches`` training batches, then stop."""

    def __init__(self, batches: int, checkpoint: str):
        self.batches, self.checkpoint, self.seen = batches, checkpoint, 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        self.seen += 1
        if self.seen == self.batches:
            trainer.save_checkpoint(self.checkpoint)
            trainer.should_stop = True


class AlphaRecorder(Callback):
    """Writes, per rank and training step, the alphas and how many ``torch.distributed.all_reduce`` calls the
    step made to ``<prefix>.rank<R>.jsonl``, and the parameters DDP's reducer ignores to ``<prefix>.ddp.json``."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.calls = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import torch.distributed as dist

        original = dist.all_reduce

        def counting_all_reduce(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        dist.all_reduce = counting_all_reduce
        ignored = sorted(getattr(trainer.strategy.model, "parameters_to_ignore", []))
        if trainer.is_global_zero:
            with open(f"{self.prefix}.ddp.json", "w") as f:
                json.dump({"ignored": ignored}, f)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        self.calls = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        alphas = [a.detach().cpu().double().flatten().tolist() for a in pl_module.supernet.arch_parameters()]
        with open(f"{self.prefix}.rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps({"epoch": trainer.current_epoch, "batch": batch_idx, "all_reduce_calls": self.calls,
                                "alphas": alphas}) + "\n")


class PathRecorder(Callback):
    """Writes, per rank and training step of a single-path search, the sampled child, the names of the weights
    the step changed, and a checksum of all weights to ``<prefix>.rank<R>.jsonl``."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.before: dict = {}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        self.before = {n: p.detach().clone() for n, p in pl_module.named_parameters()}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        params = dict(pl_module.named_parameters())
        changed = sorted(n for n, p in params.items() if not p.detach().equal(self.before[n]))
        checksum = float(sum(p.detach().double().sum() for p in params.values()))
        with open(f"{self.prefix}.rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps({"step": trainer.global_step, "path": pl_module.last_path, "changed": changed,
                                "checksum": checksum}) + "\n")


class IdentityProjector(GradientProjector):
    """An orthogonal-update projector that changes nothing: the plumbing alone must leave training unchanged."""

    def attach(self, nets) -> None:
        self.calls = 0

    def project(self, progress: float) -> None:
        self.calls += 1

    def commit(self) -> None:
        pass


class PoisonWeights(Callback):
    """Sets one weight to NaN after the first training batch of ``epoch``: a divergence at a known point."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == 0:
            with torch.no_grad():
                next(pl_module.supernet.weight_parameters().__iter__()).view(-1)[0] = float("nan")


class SignalAt(Callback):
    """Sends ``signum`` to this very process after training batch ``batch`` (counted over the whole run)."""

    def __init__(self, batch: int, signum: int = 15):
        self.batch, self.signum, self.seen = batch, signum, 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        self.seen += 1
        if self.seen == self.batch:
            os.kill(os.getpid(), self.signum)


class DyingCheckpointIO(AtomicCheckpointIO):
    """Killed with SIGKILL halfway through its second checkpoint write."""

    def __init__(self):
        super().__init__()
        self.writes = 0

    def write(self, checkpoint, path, storage_options=None) -> None:
        self.writes += 1
        if self.writes == 2:
            with open(path, "wb") as f:
                f.write(b"PK\x03\x04 half a checkpoint")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        super().write(checkpoint, path, storage_options)


class StateRecorder(Callback):
    """Writes each rank's full state dict (members, candidates, mixture weights, BN statistics) after every
    training epoch to ``<prefix>.rank<R>.epoch<E>.pt``."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        torch.save(state, f"{self.prefix}.rank{trainer.global_rank}.epoch{trainer.current_epoch}.pt")


class RecordedHostSyncs(HostSyncCounter):
    """``HostSyncCounter`` whose instances the test reads back (``RecordedHostSyncs.last``)."""

    last: RecordedHostSyncs | None = None

    def __init__(self) -> None:
        super().__init__()
        RecordedHostSyncs.last = self


class KillRankAt(Callback):
    """SIGKILLs the process of ``rank`` after its training batch ``batch`` (counted over the run): a DDP rank lost
    to the out-of-memory killer."""

    def __init__(self, rank: int = 1, batch: int = 3):
        self.rank, self.batch, self.seen = rank, batch, 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        self.seen += 1
        if self.seen == self.batch and trainer.global_rank == self.rank:
            os.kill(os.getpid(), signal.SIGKILL)
