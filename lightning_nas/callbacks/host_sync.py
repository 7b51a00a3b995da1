"""Counts the host synchronisations inside training steps: every place a step makes the host wait for the device.

On a GPU a step that reads a device tensor from Python (``.item()``, ``float(t)``, ``bool(t)`` in an ``if``,
``.tolist()``, ``.cpu()``, ``.numpy()``) or runs an op whose output size depends on the data (``nonzero``,
boolean-mask indexing, ``masked_select``, ``unique``) waits until the device has finished all queued work: the
launch pipeline drains and a launch-bound supernet runs at a fraction of its speed.

``HostSyncCounter`` finds them on any device, the CPU included, so a test on a machine without a GPU catches them:
the tensors a step starts from (the LightningModule's parameters and buffers, its optimizers' state, the batch)
are *device tensors*, and so is every tensor computed from one (followed through each aten op, the backward pass
included); a CPU tensor that never touched them (a seeded ``torch.Generator``'s draws, a schedule's step count)
stays on the host on a GPU too, and reading it is free. A read the algorithm needs is declared with
``lightning_nas.core.host_reads.host_read`` and recorded as such. On a CUDA device
``torch.cuda.set_sync_debug_mode`` says the same at run time; this counter also names the line.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from lightning_nas.core.host_reads import declared_reason

#: aten ops whose output size depends on the values of their input: the host must wait to allocate it
_DATA_DEPENDENT = ("aten::nonzero", "aten::masked_select", "aten::_unique", "aten::unique", "aten::_unique2",
                   "aten::unique_dim", "aten::unique_consecutive", "aten::repeat_interleave")
#: Python-level reads of a tensor's values (the scalar ones reach aten as ``_local_scalar_dense``)
_HOST_READS = ("tolist", "numpy", "cpu")
_COPIES = ("aten::_to_copy", "aten::copy_")
#: ops whose CPU kernel checks its input on the host where the CUDA kernel relies on a device assert
_CPU_ONLY_CHECKS = ("one_hot",)
#: frames of the package itself (not of a checkout or environment that happens to be named after it)
_PACKAGE = os.path.dirname(os.path.dirname(__file__)) + os.sep  # as the frames name it (no resolving)
_THIS_FILE = __file__


def _ours(filename: str) -> bool:
    return filename.startswith(_PACKAGE) and filename != _THIS_FILE


@dataclass
class SyncEvent:
    step: int      # the trainer's global step when it happened
    what: str      # the op or method
    where: str     # the innermost frame of lightning_nas (file:line function), else of the caller
    declared: Optional[str] = None  # the ``host_read`` reason when the method declared the read


@dataclass
class _Tracker:
    device_tensors: WeakIdKeyDictionary = field(default_factory=WeakIdKeyDictionary)
    events: list[SyncEvent] = field(default_factory=list)
    step: int = 0
    quiet: int = 0  # > 0 inside an op of _CPU_ONLY_CHECKS

    def is_device(self, t: Any) -> bool:
        return isinstance(t, torch.Tensor) and (t.device.type != "cpu" or t in self.device_tensors)

    def mark(self, tree: Any) -> None:
        for t in tree_flatten(tree)[0]:
            if isinstance(t, torch.Tensor):
                self.device_tensors[t] = True

    def record(self, what: str) -> None:
        frames = traceback.extract_stack()[:-3]
        ours = [f for f in frames if _ours(f.filename)]
        f = (ours or frames)[-1]
        inner = [g for g in frames[frames.index(f) + 1:]
                 if "torch/_compile.py" not in g.filename and g.filename != _THIS_FILE][-2:]
        where = f"{f.filename}:{f.lineno} {f.name}"
        if inner:
            where += " (in " + " > ".join(f"{g.filename.rsplit('site-packages/', 1)[-1]}:{g.lineno} {g.name}"
                                          for g in inner) + ")"
        self.events.append(SyncEvent(self.step, what, where, declared_reason()))


class _PropagateAndCatch(TorchDispatchMode):
    """Marks every output of an op with a device input as a device tensor; records the syncing ops."""

    def __init__(self, tracker: _Tracker):
        super().__init__()
        self.tracker = tracker

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        kwargs = kwargs or {}
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        on_device = any(self.tracker.is_device(t) for t in inputs)
        name = func.name()
        if on_device and not self.tracker.quiet:
            if name == "aten::_local_scalar_dense" or name.startswith(_DATA_DEPENDENT):
                self.tracker.record(name)
            elif name.startswith(("aten::index", "aten::index_put")) and any(
                    t.dtype == torch.bool and self.tracker.is_device(t) for t in tree_flatten(args[1:])[0]
                    if isinstance(t, torch.Tensor)):
                self.tracker.record(f"{name} with a boolean mask")
        out = func(*args, **kwargs)
        if name.startswith(_COPIES) and isinstance(out, torch.Tensor) and out.device.type == "cpu" and any(
                t.device.type != "cpu" for t in inputs):
            self.tracker.record(f"{name} to the host")
        if on_device:
            self.tracker.mark(out)
        return out


class _CatchHostReads(TorchFunctionMode):
    def __init__(self, tracker: _Tracker):
        super().__init__()
        self.tracker = tracker

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        name = getattr(func, "__name__", "")
        if args and self.tracker.is_device(args[0]):
            if name in _HOST_READS or (name == "to" and _to_host(args[1:], kwargs or {}) and _called_from_here()):
                self.tracker.record(f"Tensor.{name}")
        if name in _CPU_ONLY_CHECKS and args and args[0].device.type == "cpu":
            self.tracker.quiet += 1
            try:
                return func(*args, **(kwargs or {}))
            finally:
                self.tracker.quiet -= 1
        return func(*args, **(kwargs or {}))


def _to_host(args: tuple, kwargs: dict) -> bool:
    """Whether ``Tensor.to``'s arguments name the CPU (a host generator's device, say)."""
    return any((isinstance(a, str) and a.startswith("cpu")) or (isinstance(a, torch.device) and a.type == "cpu")
               for a in (*args, kwargs.get("device")))


def _called_from_here() -> bool:
    """Whether lightning_nas itself called: on the CPU a library's ``.to(device)`` names the CPU as the device,
    which on a GPU is the GPU; lightning_nas names the CPU only to reach the host."""
    frame = traceback.extract_stack(limit=3)[0]  # the caller of __torch_function__
    return _ours(frame.filename)


class HostSyncCounter(Callback):
    """Records every host synchronisation inside the training steps (``events``: step, op, line).

    Args:
        skip_steps: global steps not checked (a method's configured logging steps, say).
    """

    def __init__(self, skip_steps: tuple[int, ...] = ()):
        self.skip_steps = set(skip_steps)
        self.tracker = _Tracker()
        self.steps_checked = 0
        self._modes: list[Any] = []

    @property
    def events(self) -> list[SyncEvent]:
        return self.tracker.events

    @property
    def undeclared(self) -> list[SyncEvent]:
        """The defects: syncs outside any ``host_read`` block."""
        return [e for e in self.events if e.declared is None]

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """The window of a step: from the first callback's ``on_train_batch_start`` (this one goes first) to the
        LightningModule's ``on_train_batch_end``, which Lightning calls after every callback's."""
        trainer.callbacks.remove(self)
        trainer.callbacks.insert(0, self)
        module_hook = pl_module.on_train_batch_end

        def on_train_batch_end(*args: Any, **kwargs: Any) -> None:
            try:
                module_hook(*args, **kwargs)
            finally:
                self._exit()

        pl_module.on_train_batch_end = on_train_batch_end  # type: ignore[method-assign]

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if trainer.global_step in self.skip_steps:
            return
        self.tracker.step = trainer.global_step
        self.tracker.mark(batch)
        self.tracker.mark(list(pl_module.parameters()) + list(pl_module.buffers()))
        for opt in trainer.optimizers:  # a step count stays on the host unless the optimizer is capturable/fused
            on_device = any(g.get("capturable") or g.get("fused") for g in opt.param_groups)
            self.tracker.mark([[v for k, v in s.items() if k != "step" or on_device] for s in opt.state.values()])
        self._modes = [_CatchHostReads(self.tracker), _PropagateAndCatch(self.tracker)]
        for mode in self._modes:
            mode.__enter__()
        self.steps_checked += 1

    def _exit(self) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(None, None, None)
        self._modes = []

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._exit()

    def summary(self) -> str:
        """One line per distinct (op, line, declared reason), with its count."""
        counts: dict[tuple[str, str, str], int] = {}
        for e in self.events:
            key = (e.what, e.where, f" [declared: {e.declared}]" if e.declared else "")
            counts[key] = counts.get(key, 0) + 1
        return "\n".join(f"{n} x {what} at {where}{why}" for (what, where, why), n in sorted(counts.items()))
