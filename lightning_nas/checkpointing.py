"""Checkpoints that survive being killed: atomic writes and a clean stop on SIGTERM / SIGUSR1 / SIGINT.

``AtomicCheckpointIO`` writes every checkpoint to ``<name>.tmp`` and renames it over ``<name>`` only when the write
finished, so a kill (or a full disk) during a write leaves the previous checkpoint intact; the CLI installs it
unless the config names its own CheckpointIO plugin.

``GracefulStop`` turns SIGTERM (what schedulers such as SLURM send before they kill), SIGUSR1 (SLURM's
``--signal``) and SIGINT (Ctrl-C) into a stop at the next training-step boundary: it writes ``last.ckpt`` there
(a mid-epoch checkpoint: resuming from it continues exactly) and ends the run with ``Interrupted``, which the CLI
reports with the command that resumes the run and exit code 128 + the signal number (143 for SIGTERM), so a
scheduler does not record success. A second Ctrl-C stops at once. Under DDP the ranks agree on the stop with one
boolean all-reduce every 10 steps (and at each epoch's start), so all of them write and stop at the same step.

No mid-epoch checkpoint is ever written after an epoch's last training batch (``MidEpochCheckpoint``, and a signal
there stops at the next epoch's start instead): Lightning resumes such a checkpoint in the next epoch, so the
epoch's validation, its logged means, its epoch-end checkpoints and genotype line would never happen.
``ResumeState`` stores what Lightning leaves out: the epoch's partial metric sums in a mid-epoch checkpoint (a
resumed run logs the epoch means the uninterrupted run logs) and, under DDP, every rank's own buffers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
import torchmetrics
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.trainer.connectors.logger_connector.result import _ResultMetric

from lightning_nas.core.module import NASModule
from lightning_nas.errors import Interrupted, OutputError

SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGUSR1", "SIGINT")) if s is not None)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file next to the target (never through TMPDIR), then an atomic rename. A write
    that fails (a full disk, a folder turned read-only) stops the run with one line naming the file, the cause, the
    last good checkpoint (left intact) and ``resume_command`` (``{ckpt}`` is replaced by that checkpoint)."""

    def __init__(self, resume_command: str = "python -m lightning_nas fit --config <run>/config.yaml "
                                             "--ckpt_path {ckpt}"):
        super().__init__()
        self.resume_command = resume_command

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.write(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        except (OSError, RuntimeError) as err:
            if isinstance(err, RuntimeError) and "PytorchStreamWriter" not in str(err):
                raise  # not a failed write
            raise OutputError(self._failed_write(path, err)) from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def _failed_write(self, path: Path, err: BaseException) -> str:
        cause = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0]
        with contextlib.suppress(OSError):
            if shutil.disk_usage(path.parent if path.parent.exists() else Path.cwd()).free < 64 * 2**20:
                cause = f"{cause}; the disk is full"
        last = path.parent / "last.ckpt"
        # the write never touched them: last.ckpt, else the newest other checkpoint (the epoch's best)
        others = sorted(path.parent.glob("*.ckpt"), key=lambda p: p.stat().st_mtime) if path.parent.is_dir() else []
        good = last if last.is_file() else others[-1] if others else None
        kept = ("no checkpoint of this run was written before" if good is None else
                f"the last good checkpoint, {good}, is intact; after freeing space (or making {path.parent} writable) "
                f"resume with: {self.resume_command.format(ckpt=good)}")
        return f"cannot write the checkpoint {path} ({cause}): {kept}"

    def write(self, checkpoint: dict[str, Any], path: Path, storage_options: Optional[Any] = None) -> None:
        super().save_checkpoint(checkpoint, path, storage_options)


def _last_batch_of_epoch(trainer: pl.Trainer, batch_idx: int) -> bool:
    return batch_idx + 1 >= trainer.num_training_batches


def _saved_after_a_training_batch(trainer: pl.Trainer) -> bool:
    """Whether a checkpoint written now is a mid-epoch one (written in ``on_train_batch_end``: Lightning's
    ``RESTARTED_ON_TRAIN_BATCH_END``): the batch is processed, not yet completed."""
    progress = trainer.fit_loop.epoch_loop.batch_progress.current
    return trainer.training and not trainer.sanity_checking and progress.processed > progress.completed


class _ModelCheckpointKey(ModelCheckpoint):
    @property
    def state_key(self) -> str:
        # the key of the ModelCheckpoint these checkpoints were written by before: earlier runs resume its state
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)


class BestCheckpoint(_ModelCheckpointKey):
    """``ModelCheckpoint`` whose file names number epochs from 1, as every output does (``best-epoch003.ckpt``:
    the third epoch's); Lightning's ``{epoch}`` counts from 0."""

    def format_checkpoint_name(self, metrics: dict[str, Any], *args: Any, **kwargs: Any) -> str:
        if "epoch" in metrics:
            metrics = {**metrics, "epoch": metrics["epoch"] + 1}
        return super().format_checkpoint_name(metrics, *args, **kwargs)


class MidEpochCheckpoint(_ModelCheckpointKey):
    """``ModelCheckpoint`` for checkpoints every n steps or minutes that skips the epoch's last training batch:
    the epoch's own checkpoints follow its validation, and Lightning would resume a checkpoint written after the last
    batch in the next epoch, skipping that validation and everything logged at the epoch's end."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not _last_batch_of_epoch(trainer, batch_idx):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class ResumeState(Callback):
    """What Lightning does not checkpoint and an exact resume needs: each rank's buffers and a mid-epoch checkpoint's
    partial epoch metrics.

    **Buffers.** Under DDP every rank keeps its own BatchNorm running statistics (they follow its own batches), and
    the checkpoint's state_dict holds rank 0's. Every checkpoint therefore also stores the other ranks' buffers, and
    a resume on as many processes gives each rank its own back, so eval-mode work a rank does before the next
    evaluation (a probe, a child's score) sees what it would have seen; evaluations themselves use rank 0's
    statistics on every rank (``NASModule.evaluate_rank0_buffers``).

    **Epoch metrics.** Lightning checkpoints neither the running sums of values logged with ``on_epoch=True`` nor the
    states of torchmetrics objects, so a resumed epoch's means would cover only the batches after the resume. A
    mid-epoch checkpoint (written after a training batch) therefore stores, for each rank, the states of the module's
    torchmetrics objects and the sums and counts of the epoch's logged tensors. On resume the metrics get their states
    back at once; each logged sum is merged when its key is first logged again, as ``saved + this step's value``: the
    addition the uninterrupted run makes, so the means are equal bit for bit when a key is logged at most once per
    step (a key logged twice in one step: equal up to rounding). A key the resumed epoch never logs again is lost
    from that epoch's mean.

    A resume on another number of processes keeps the checkpoint's weights and rank 0's buffers and starts the
    epoch's means afresh (the ranks' partial sums no longer match the ranks).
    """

    KEY = "lightning_nas_resume_state"

    def __init__(self) -> None:
        self._pending: dict[str, dict[str, torch.Tensor]] = {}
        self._buffers: dict[str, torch.Tensor] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        buffers = dict(pl_module.named_buffers())
        with torch.no_grad():
            for name, value in self._buffers.items():
                if name in buffers:
                    buffers[name].copy_(value)
        self._buffers = {}

    @staticmethod
    def _metric_states(pl_module: pl.LightningModule) -> dict[str, dict[str, Any]]:
        out = {}
        for name, metric in pl_module.named_modules():
            if isinstance(metric, torchmetrics.Metric) and not isinstance(metric, _ResultMetric):
                state = {k: v.detach().cpu().clone() for k, v in metric.metric_state.items()
                         if isinstance(v, torch.Tensor)}
                out[name] = {"state": state, "updates": int(metric._update_count)}
        return out

    @staticmethod
    def _logged_sums(trainer: pl.Trainer) -> dict[str, dict[str, torch.Tensor]]:
        out = {}
        for key, result in trainer.fit_loop.epoch_loop._results.items():
            if isinstance(result, _ResultMetric) and result.is_tensor and result.meta.on_epoch:
                entry = {"value": result.value.detach().cpu().clone()}
                if result.meta.is_mean_reduction:
                    entry["count"] = result.cumulated_batch_size.detach().cpu().clone()
                out[key] = entry
        return out

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        state: dict[str, Any] = {}
        if trainer.world_size > 1:
            state["buffers"] = {k: v.detach().cpu().clone() for k, v in pl_module.named_buffers()
                                if k in checkpoint["state_dict"]}
        if _saved_after_a_training_batch(trainer):  # else an epoch-end checkpoint: the resumed run starts an epoch
            state.update(metrics=self._metric_states(pl_module), logged=self._logged_sums(trainer))
        if not state:
            return
        ranks = [state]
        if trainer.world_size > 1:  # every rank writes the checkpoint together (Lightning's save is collective)
            ranks = [None] * trainer.world_size
            torch.distributed.all_gather_object(ranks, state)
            ranks[0].pop("buffers")  # rank 0's are the state_dict's
        checkpoint[self.KEY] = {"ranks": ranks}

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self._pending, self._buffers = {}, {}
        ranks = (checkpoint.get(self.KEY) or {}).get("ranks") or []
        if len(ranks) != trainer.world_size:
            return
        state = ranks[trainer.global_rank]
        self._buffers = state.get("buffers") or {}  # after DDP's setup, which broadcasts rank 0's (on_fit_start)
        modules = dict(pl_module.named_modules())
        for name, saved in (state.get("metrics") or {}).items():
            metric = modules.get(name)
            if not isinstance(metric, torchmetrics.Metric):
                continue
            for attr, value in saved["state"].items():
                current = getattr(metric, attr)
                setattr(metric, attr, value.to(device=current.device, dtype=current.dtype))
            metric._update_count = saved["updates"]
            metric._computed = None
        self._pending = dict(state.get("logged") or {})

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._pending:
            return
        results = trainer.fit_loop.epoch_loop._results
        for key in [k for k in self._pending if k in results]:
            saved, result = self._pending.pop(key), results[key]
            value = saved["value"].to(result.value.device)
            if result.meta.is_mean_reduction:  # what `update` adds, in the uninterrupted run's order
                result.value = value + result.value
                result.cumulated_batch_size = saved["count"].to(result.cumulated_batch_size.device) + \
                    result.cumulated_batch_size
            elif result.meta.is_sum_reduction:
                result.value = value + result.value
            else:
                result.value = result.meta.reduce_fx(value, result.value)
            result._computed = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pending = {}


class GracefulStop(Callback):
    def __init__(self, checkpoint_dir: str, resume_command: str, ddp_every_n_steps: int = 10):
        """
        Args:
            checkpoint_dir: where ``last.ckpt`` is written at the signal.
            resume_command: the command the message tells the user to run (``{ckpt}`` is replaced by the path).
            ddp_every_n_steps: on several processes the ranks agree to stop (an all-reduce the host waits for)
                after every n-th step and at each epoch's start, not after every step; one process checks every
                step, for free.
        """
        self.checkpoint_dir, self.resume_command = Path(checkpoint_dir), resume_command
        self.ddp_every_n_steps = ddp_every_n_steps
        self.received: Optional[int] = None
        self._previous: dict[int, Any] = {}
        self._steps_unchecked = 0
        self._epochs_ended = 0

    def _handler(self, signum: int, frame: Any) -> None:
        if signum == getattr(signal, "SIGINT", None) and self.received == signum:
            signal.signal(signum, signal.default_int_handler)  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.received = signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after Lightning's signal connector: its SIGTERM handler would end the run with exit code 0 and no
        # checkpoint at the signal, so it is replaced for the run (and put back after it)
        self.received = None
        self._steps_unchecked, self._epochs_ended = 0, 0
        try:
            self._previous = {s: signal.signal(s, self._handler) for s in SIGNALS}
        except ValueError:  # not the main thread: signals cannot be handled here
            self._previous = {}

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _should_stop(self, trainer: pl.Trainer) -> bool:
        stop = self.received is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        return stop

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if _last_batch_of_epoch(trainer, batch_idx):
            return  # the epoch's validation and end come first; the stop follows at the next epoch's start
        if trainer.world_size > 1:
            self._steps_unchecked += 1
            if self._steps_unchecked < self.ddp_every_n_steps:
                return
            self._steps_unchecked = 0
        if self._should_stop(trainer):
            trainer.save_checkpoint(self.checkpoint_dir / "last.ckpt")
            self._interrupt(trainer, pl_module, f"epoch {trainer.current_epoch + 1}")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epochs_ended += 1

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the epoch that just ended wrote last.ckpt after its validation: a signal since then stops here
        if self._epochs_ended and self._should_stop(trainer):
            self._interrupt(trainer, pl_module, f"the end of epoch {trainer.current_epoch}")

    def _interrupt(self, trainer: pl.Trainer, pl_module: pl.LightningModule, where: str) -> None:
        ckpt = self.checkpoint_dir / "last.ckpt"
        signum = self.received if self.received is not None else signal.SIGTERM
        step = pl_module.search_steps if isinstance(pl_module, NASModule) else trainer.global_step
        raise Interrupted(
            f"stopped by {signal.Signals(signum).name} after search step {step} ({where}); "
            f"the run so far is saved in {ckpt}. Resume it with: {self.resume_command.format(ckpt=ckpt)}",
            exit_code=128 + int(signum))
