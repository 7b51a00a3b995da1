"""Checkpoints that survive being killed: atomic writes and a clean stop on SIGTERM / SIGUSR1 / SIGINT.

``AtomicCheckpointIO`` writes every checkpoint to ``<name>.tmp`` and renames it over ``<name>`` only when the write
finished, so a kill (or a full disk) during a write leaves the previous checkpoint intact; the CLI installs it
unless the config names its own CheckpointIO plugin.

``GracefulStop`` turns SIGTERM (what schedulers such as SLURM send before they kill), SIGUSR1 (SLURM's
``--signal``) and SIGINT (Ctrl-C) into a stop at the next training-step boundary: it writes ``last.ckpt`` there
(a mid-epoch checkpoint: resuming from it continues exactly) and ends the run with ``Interrupted``, which the CLI
reports with the command that resumes the run and exit code 128 + the signal number (143 for SIGTERM), so a
scheduler does not record success. A second Ctrl-C stops at once. Under DDP the ranks agree on the stop with one
boolean all-reduce every 10 steps (and at the epoch's last), so all of them write and stop at the same step.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback

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
        good = last if last.is_file() else path if path.is_file() else None  # the write never touched them
        kept = ("no checkpoint of this run was written before" if good is None else
                f"the last good checkpoint, {good}, is intact; after freeing space (or making {path.parent} writable) "
                f"resume with: {self.resume_command.format(ckpt=good)}")
        return f"cannot write the checkpoint {path} ({cause}): {kept}"

    def write(self, checkpoint: dict[str, Any], path: Path, storage_options: Optional[Any] = None) -> None:
        super().save_checkpoint(checkpoint, path, storage_options)


class GracefulStop(Callback):
    def __init__(self, checkpoint_dir: str, resume_command: str, ddp_every_n_steps: int = 10):
        """
        Args:
            checkpoint_dir: where ``last.ckpt`` is written at the signal.
            resume_command: the command the message tells the user to run (``{ckpt}`` is replaced by the path).
            ddp_every_n_steps: on several processes the ranks agree to stop (an all-reduce the host waits for)
                after every n-th step and the epoch's last one, not after every step; one process checks every
                step, for free.
        """
        self.checkpoint_dir, self.resume_command = Path(checkpoint_dir), resume_command
        self.ddp_every_n_steps = ddp_every_n_steps
        self.received: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if signum == getattr(signal, "SIGINT", None) and self.received == signum:
            signal.signal(signum, signal.default_int_handler)  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.received = signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after Lightning's signal connector: its SIGTERM handler would end the run with exit code 0 and no
        # checkpoint at the signal, so it is replaced for the run (and put back after it)
        self.received = None
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

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        stop = self.received is not None
        if trainer.world_size > 1:
            if (batch_idx + 1) % self.ddp_every_n_steps and batch_idx + 1 < trainer.num_training_batches:
                return
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        ckpt = self.checkpoint_dir / "last.ckpt"
        trainer.save_checkpoint(ckpt)
        signum = self.received if self.received is not None else signal.SIGTERM
        step = pl_module.search_steps if isinstance(pl_module, NASModule) else trainer.global_step
        raise Interrupted(
            f"stopped by {signal.Signals(signum).name} after search step {step} (epoch {trainer.current_epoch + 1}); "
            f"the run so far is saved in {ckpt}. Resume it with: {self.resume_command.format(ckpt=ckpt)}",
            exit_code=128 + int(signum))
