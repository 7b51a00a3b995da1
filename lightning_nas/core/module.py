"""Pieces every lightning_nas LightningModule shares: config-injected optimizers, checkpoint provenance,
the check that a checkpoint belongs to this method and search space, and the evaluation loop."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Optional, Union

import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lightning_nas.core.capabilities import TrainsArchitecture
from lightning_nas.errors import CheckpointError, ConfigError
from lightning_nas.reproducibility import mix_seed, rng_state, set_rng_state
from lightning_nas.search_spaces.base import Supernet
from lightning_nas.search_spaces.space import SearchSpace

#: DARTS's weight optimiser (Liu et al., 2019): the default of the supernet families (bilevel and single path)
DARTS_WEIGHT_SGD = {"class_path": "torch.optim.SGD",
                    "init_args": {"lr": 0.025, "momentum": 0.9, "weight_decay": 3e-4}}

ClassSpec = dict[str, Any]  # {"class_path": ..., "init_args": {...}} as written in a YAML config
CompileSpec = Union[bool, dict[str, Any]]  # a method's ``compile`` option
CallableOrSpec = Union[Callable[..., Any], ClassSpec]


def resolve_callable(spec: CallableOrSpec, what: str) -> Callable[..., Any]:
    """Accept what jsonargparse gives (a callable) or, from Python, a class_path/init_args dict."""
    if callable(spec):
        return spec
    if isinstance(spec, dict) and "class_path" in spec:
        module, _, name = spec["class_path"].rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"{what}: cannot import {spec['class_path']!r} ({err})") from err
        return partial(cls, **spec.get("init_args", {}))
    raise ConfigError(f"{what} must be a callable or a {{class_path, init_args}} mapping, got {spec!r}")


def build_optimizer(spec: CallableOrSpec, params: Iterable[torch.nn.Parameter], what: str) -> torch.optim.Optimizer:
    try:
        return resolve_callable(spec, what)(params)
    except ValueError as err:  # torch.optim's own checks: "Invalid learning rate: -1.0", ...
        raise ConfigError(f"{what}: {err} (set a valid value under {what}.init_args)") from None


def compile_options(spec: CompileSpec, device: torch.device) -> Optional[dict[str, Any]]:
    """``torch.compile``'s keyword arguments from a method's ``compile`` option: ``false`` (default): none, eager;
    ``true``: inductor, ``mode: reduce-overhead`` (CUDA graphs: one launch per graph) on a GPU, the default mode
    elsewhere; a mapping: exactly those arguments (``backend``, ``mode``, ``dynamic``, ``fullgraph``, ``options``)."""
    if spec is False or spec is None:
        return None
    if spec is True:
        return {"mode": "reduce-overhead"} if device.type == "cuda" else {}
    if isinstance(spec, dict):
        unknown = set(spec) - {"backend", "mode", "dynamic", "fullgraph", "options"}
        if unknown:
            raise ConfigError(f"model.compile: unknown torch.compile argument(s) {sorted(unknown)}; use backend, mode, "
                              "dynamic, fullgraph or options")
        return dict(spec)
    raise ConfigError(f"model.compile must be true, false or a mapping of torch.compile arguments, got {spec!r}")


def epoch_mean() -> MeanMetric:
    """The epoch mean of a per-step loss, updated without a host read: torchmetrics' default NaN check reads every
    value on the host to drop NaN; here a NaN stays in the mean, and FiniteCheck stops a diverged run."""
    return MeanMetric(nan_strategy="disable")


def log_replicated(module: pl.LightningModule, name: str, value: Any, **kwargs: Any) -> None:
    """Log a value that is identical on every DDP rank (derived from synchronised state: alphas, learning rates,
    benchmark lookups, evaluations of the same fixed batches with the same weights). It is reduced with ``max``,
    which leaves it exactly as it is, so Lightning's "use sync_dist=True" warning does not fire."""
    module.log(name, value, sync_dist=True, reduce_fx="max", **kwargs)


class NASModule(pl.LightningModule):
    """Base of every lightning_nas LightningModule.

    Stores method id, space id, resolved config, versions, seed and RNG state in every checkpoint, refuses a
    checkpoint written by another method or for another search space, and runs validation/test as
    classification of ``batch["eval"]`` with ``eval_logits`` (logged as ``val/*`` and ``test/*``).
    """

    #: set by the CLI: {"config": yaml text, "seed": int, "versions": {...}, "git": str | None}
    run_metadata: dict[str, Any]
    #: Lightning's ``global_step`` counts optimizer steps: how many one search step takes (a bilevel search: 2).
    #: The CLI makes ``trainer.max_steps`` count search steps with it; ``search_steps`` reports them.
    optimizer_steps_per_search_step: int = 1

    @property
    def search_steps(self) -> int:
        """Training steps (batches) taken, whatever the optimizers per step."""
        return self.global_step // self.optimizer_steps_per_search_step

    def method_id(self) -> str:
        return f"{type(self).__module__}.{type(self).__qualname__}"

    def is_method(self, method_id: Any) -> bool:
        """Whether a checkpoint's method id names this method's class: its id, or the id it had before the
        methods moved into family folders (``lightning_nas.methods`` still imports the old module names, so the
        old id resolves to the same class). Only ids under ``lightning_nas.methods`` are resolved."""
        if method_id == self.method_id():
            return True
        if not isinstance(method_id, str) or not method_id.startswith("lightning_nas.methods."):
            return False
        module, _, name = method_id.rpartition(".")
        try:
            return getattr(importlib.import_module(module), name, None) is type(self)
        except ImportError:
            return False

    # ---- what every method declares (callbacks and reports use these and the capabilities only) ------------
    def space_id(self) -> str:
        """Identifies what the method builds (space and shape) in checkpoints: another one's is refused."""
        raise NotImplementedError

    def genotype(self) -> Optional[Any]:
        """The method's current pick (``to_dict()`` / ``to_text()``), recorded after every epoch; None: none."""
        return None

    def search_space(self) -> Optional[SearchSpace]:
        """The space whose cells ``genotype()`` returns (its benchmark, networks, figures); None: none."""
        return None

    def summary_extras(self) -> dict[str, Any]:
        """Method-specific entries of the run's summary.json."""
        return {}

    def variant(self) -> dict[str, Any]:
        """The options that make this run another method than its class alone says (DARTS's order, a single-path
        search's projector or neighbours, a retraining's genotype): summary.json's ``variant``, by which ``report``
        groups runs, so that one group is one method variant. Options that only tune a method are left out."""
        return {}

    @property
    def num_parameters(self) -> Optional[int]:
        """Parameters of the trained network, where the method trains one; None for a search."""
        return None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lightning_nas"] = {
            **getattr(self, "run_metadata", {}),
            "method": self.method_id(),
            "space": self.space_id(),
            "rng": rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get("lightning_nas")
        if meta is None:
            raise CheckpointError("the checkpoint was not written by lightning_nas (no 'lightning_nas' entry); "
                                  "resume only from checkpoints/last.ckpt of a lightning_nas run")
        if not self.is_method(meta.get("method")):
            raise CheckpointError(
                f"the checkpoint was written by method {meta.get('method')}, but this run is {self.method_id()}: "
                "resume it with the config it was written with (config.yaml in its run directory)")
        if meta.get("space") != self.space_id():
            raise CheckpointError(
                f"the checkpoint's search space is {meta.get('space')}, but this run builds {self.space_id()}: "
                "resume it with the config it was written with (config.yaml in its run directory)")
        if "rng" in meta:
            set_rng_state(meta["rng"])

    def log_replicated(self, name: str, value: Any, **kwargs: Any) -> None:
        log_replicated(self, name, value, **kwargs)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)

    def weight_step(self, opt: Any, logits_fn: Callable[[], torch.Tensor], y: torch.Tensor, grad_clip: float) -> None:
        """One step of a search's supernet weights: forward (``logits_fn``), ``loss``, then ``weight_update``
        (backward, ``transform_weight_grads``, grad-norm clipping of the weights, step, ``after_weight_step``);
        logs the epoch means of the loss (``search/weight_loss``) and accuracy (``train/acc``). Needs
        ``self.weight_loss_mean`` (a MeanMetric) and the accuracy metrics."""
        opt.zero_grad(set_to_none=True)
        logits = logits_fn()
        loss = self.loss(logits, y)
        self.weight_update(opt, loss, grad_clip)
        self.weight_loss_mean.update(loss.detach())
        self.train_acc.update(logits.detach(), y)
        self.log("search/weight_loss", self.weight_loss_mean, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)

    def weight_update(self, opt: Any, loss: torch.Tensor, grad_clip: float,
                      sandbox: Optional[list[nn.Parameter]] = None) -> None:
        """The update rule of a weight step, from the loss on: gradients, ``transform_weight_grads``, grad-norm
        clipping at ``grad_clip`` (0: none), the optimizer step, ``after_weight_step``. In the training loop the
        gradients come from ``manual_backward`` (DDP all-reduces them); with ``sandbox`` (the parameters to
        differentiate) they come from ``torch.autograd.grad``, without DDP's reduction or hooks: one step outside
        the loop, as the disturbance probe takes (``UpdatesChildren.child_update``)."""
        if sandbox is None:
            self.manual_backward(loss)
        else:
            for p, g in zip(sandbox, torch.autograd.grad(loss, sandbox, allow_unused=True)):
                p.grad = g
        self.transform_weight_grads()
        if grad_clip > 0:
            if sandbox is None:
                self.clip_gradients(opt, gradient_clip_val=grad_clip, gradient_clip_algorithm="norm")
            else:
                nn.utils.clip_grad_norm_([p for p in sandbox if p.grad is not None], grad_clip)
        opt.step()
        self.after_weight_step()

    def transform_weight_grads(self) -> None:
        """Called by ``weight_step`` between the backward (gradients all-reduced) and clipping; a no-op here
        (the single-path search projects the gradients for DI-NAS)."""

    def after_weight_step(self) -> None:
        """Called by ``weight_step`` after the optimizer step; a no-op here."""

    def step_generator(self, stream: int = 0, device: Optional[torch.device] = None) -> torch.Generator:
        """A generator seeded by (``self.seed``, global step, stream): every rank draws the same perturbations,
        neighbours and sampled children at the same step, and a resumed run draws what the uninterrupted one
        would have. On the CPU by default (the same draws on every machine); ``device``: on that device, for draws
        that depend on device values (a GPU's generator gives other numbers than the CPU's for the same seed)."""
        seed = mix_seed(getattr(self, "seed", 0), self.global_step, stream)
        return torch.Generator(device=device or "cpu").manual_seed(seed)

    def weight_schedule(self, opt: torch.optim.Optimizer, factory: Any, eta_min: float) -> Any:
        """The weight-LR schedule: ``factory(opt)`` from the config, else cosine to ``eta_min`` over max_epochs
        (DARTS), stepped per epoch by ``sync_lr_schedule``."""
        if factory is not None:
            return resolve_callable(factory, "model.lr_scheduler")(opt)
        epochs = max(1, int(self.trainer.max_epochs or 1)) if self._trainer is not None else 1
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=float(epochs), eta_min=eta_min)

    def sync_lr_schedule(self) -> None:
        """Bring the (per-epoch) LR schedule to the current epoch; call it at the top of ``training_step``.

        Catching up at the point of use keeps resume exact: checkpoints are written at validation end, before
        the end-of-epoch hooks, and a resumed run skips ``on_train_epoch_start`` of the epoch it restarts in."""
        sched = self.lr_schedulers()
        while sched.last_epoch < self.current_epoch:
            sched.step()

    # ---- evaluation ------------------------------------------------------------------------------------
    def init_accuracy_metrics(self, num_classes: int) -> None:
        acc = dict(num_classes=num_classes, average="micro")
        self.train_acc, self.val_acc, self.test_acc = (MulticlassAccuracy(**acc) for _ in range(3))

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ---- what the analysis callbacks (landscape, gradient variance, Hessian) act on ------------------------
    def analysis_network(self) -> nn.Module:
        """The network the analysis callbacks evaluate (its train/eval mode is set around each analysis): the
        supernet of a search that trains alpha; a training method returns its network."""
        if not isinstance(self, TrainsArchitecture):
            raise ConfigError(f"{type(self).__name__} has no network for the analysis callbacks (landscape, gradient "
                              "variance, Hessian): use them with a differentiable search or a retraining")
        return self.supernet

    def analysis_parameters(self, target: str) -> list[tuple[str, nn.Parameter]]:
        """The named parameters an analysis perturbs or differentiates: ``weights`` or ``alpha`` (the
        architecture parameters of a supernet)."""
        net = self.analysis_network()
        if target == "alpha":
            return list(zip(net.ARCH_NAMES, net.arch_parameters())) if isinstance(net, Supernet) else []
        if target == "weights":
            return list(net.named_weight_parameters() if isinstance(net, Supernet) else net.named_parameters())
        raise ConfigError(f"unknown analysis target {target!r}: use 'weights' or 'alpha'")

    def analysis_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logits the analyses differentiate: the method's evaluation forward."""
        return self.eval_logits(x)

    def on_validation_start(self) -> None:
        self.evaluate_rank0_buffers()

    def on_test_start(self) -> None:
        self.evaluate_rank0_buffers()

    def evaluate_rank0_buffers(self) -> None:
        """Under DDP each rank's BatchNorm statistics follow its own batches (and DDP's own buffer broadcast depends
        on state a checkpoint does not hold): before an evaluation every rank takes rank 0's, so all ranks evaluate
        the network the checkpoint holds and a resumed run evaluates what the uninterrupted one did. Not in
        Lightning's sanity check, which logs nothing (a resumed rank keeps its own statistics through it)."""
        if self._trainer is not None and self.trainer.sanity_checking:
            return
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for buffer in self.buffers():
                dist.broadcast(buffer, src=0)

    def _eval_step(self, batch: dict, stage: str, metric: MulticlassAccuracy) -> None:
        x, y = batch["eval"]
        logits = self.eval_logits(x)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), on_epoch=True, sync_dist=True, batch_size=len(y))
        metric.update(logits, y)
        self.log(f"{stage}/acc", metric, on_epoch=True, prog_bar=True)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_acc)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_acc)
