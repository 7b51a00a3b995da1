"""Train one discrete network (a NAS-Bench-201 cell network or a DARTS evaluation network) with a configurable
loss: cross-entropy, Hinton KD or NST from a trained teacher (MF-KD's low-fidelity training, Trofimov et al.,
arXiv 2006.08341, Sec. 3). The same LightningModule trains the teacher first (``loss`` cross-entropy, more epochs);
its ``checkpoints/last.ckpt`` is then the ``teacher`` of a distilled training or of the MF-KD search.

Optimiser defaults are NAS-Bench-201's training recipe (Dong & Yang, ICLR 2020, Sec. 2.3): SGD with Nesterov
momentum 0.9, lr 0.1, weight decay 5e-4, cosine to 0, no gradient clipping.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lightning_nas.errors import CheckpointError, ConfigError
from lightning_nas.methods.training.distill_losses import CrossEntropy, DistillationLoss, Outputs
from lightning_nas.methods.training.frame import NetworkTraining
from lightning_nas.reproducibility import seeded
from lightning_nas.search_spaces.cost import count_parameters
from lightning_nas.search_spaces.space import SearchSpace, get_space

NB201_SGD = {"class_path": "torch.optim.SGD",
             "init_args": {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True}}


def resolve_arch(space: str, spec: Any) -> Any:
    """A cell of the registered space ``space`` in any form its ``parse`` reads (NB201: arch string, index,
    genotype.json, run dir; DARTS: published name, genotype.json, run dir, text)."""
    return get_space(space).parse(spec)


@dataclass(frozen=True)
class NetworkSpec:
    """Everything that builds a trained network again (stored in the checkpoint: a teacher is rebuilt from it).

    ``space``: a registered space name; ``layers`` as the space counts them (NB201: cells per stage, the
    benchmark's 5; DARTS: cells in all, the paper's 20)."""

    space: str
    arch: str
    channels: int
    layers: int
    num_classes: int
    in_channels: int

    def __post_init__(self) -> None:
        min_layers = get_space(self.space).min_layers
        if self.channels < 1 or self.layers < min_layers:
            raise ConfigError(f"model.channels must be >= 1 and model.layers >= {min_layers} in the {self.space} "
                              f"space (NB201: cells per stage; DARTS: cells in all, >= 3), got {self.channels}, "
                              f"{self.layers}")

    def build(self) -> CellNetwork:
        return CellNetwork(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CellNetwork(nn.Module):
    """The space's discrete network (``SearchSpace.network``; DARTS: no auxiliary head); ``forward(x,
    features=True)`` also returns the output of each stage (``SearchSpace.stage_modules``: the last cell before each
    reduction and the last cell), which NST compares."""

    def __init__(self, spec: NetworkSpec):
        super().__init__()
        self.spec = spec
        space = get_space(spec.space)
        self.net: nn.Module = space.network(space.parse(spec.arch), spec.num_classes, spec.in_channels,
                                            spec.channels, spec.layers)
        stage_ends = space.stage_modules(self.net)
        self._captured: Optional[list[torch.Tensor]] = None
        for module in stage_ends:
            module.register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        if self._captured is not None:
            self._captured.append(output)

    def forward(self, x: torch.Tensor, features: bool = False) -> Outputs:
        self._captured = [] if features else None
        try:
            out = self.net(x)
            logits = out[0] if isinstance(out, tuple) else out
            return Outputs(logits, self._captured or [])
        finally:
            self._captured = None

    @property
    def num_parameters(self) -> int:
        return count_parameters(self.net)


class Teacher:
    """A trained network, frozen: eval mode, no gradients, never a submodule of the student's LightningModule (so
    it is neither trained, checkpointed nor switched to train mode by Lightning)."""

    def __init__(self, network: CellNetwork, source: str):
        self.network, self.source = network.eval(), source
        for p in self.network.parameters():
            p.requires_grad_(False)

    @staticmethod
    def resolve(path: Union[str, Path]) -> Optional[Path]:
        """The checkpoint ``model.teacher`` names: a checkpoint file; a run directory (its
        ``checkpoints/last.ckpt``); or a run name's directory (``<run.root>/<run.name>``) holding exactly one finished
        run (one with a summary.json), so that a config can name a teacher without pinning its ``run.version``. Two
        finished runs there are refused: the config must say which (a resumed search must not switch teachers); None
        when it holds none."""
        path = Path(path)
        if not path.is_dir():
            return path
        if (path / "checkpoints").is_dir():
            return path / "checkpoints" / "last.ckpt"
        finished = sorted(run for run in path.iterdir() if (run / "summary.json").is_file()
                          and (run / "checkpoints" / "last.ckpt").is_file())
        if len(finished) > 1:
            raise ConfigError(f"model.teacher {path} holds {len(finished)} finished teacher runs "
                              f"({', '.join(r.name for r in finished)}): name one, e.g. model.teacher {finished[-1]}")
        return finished[0] / "checkpoints" / "last.ckpt" if finished else None

    @classmethod
    def from_checkpoint(cls, path: Union[str, Path]) -> Teacher:
        """The network of a ``TrainCell`` run's checkpoint (``<run>/checkpoints/last.ckpt``; see ``resolve`` for the
        directories ``path`` may name)."""
        named, path = path, cls.resolve(path)
        fix = ("train the teacher first with `python -m lightning_nas fit --config experiments/mf_kd/"
               "teacher_nb201_cifar10.yaml` (or its _cpu variant) and pass its run directory (or its run name's "
               "directory, or <run dir>/checkpoints/last.ckpt) as model.teacher")
        if path is None:
            raise CheckpointError(f"teacher directory {named} holds no finished run: {fix}")
        if not path.is_file():
            raise CheckpointError(f"teacher checkpoint {path} does not exist: {fix}")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated, corrupt, or not a PyTorch file
            raise CheckpointError(f"teacher checkpoint {path} cannot be read ({type(err).__name__}): {fix}") from None
        meta = ckpt.get("lightning_nas", {}) if isinstance(ckpt, dict) else {}
        if "network" not in meta:
            method = meta.get("method", "not lightning_nas")
            raise CheckpointError(f"teacher checkpoint {path} was written by {method}, which stores no trained network "
                                  f"a teacher can be rebuilt from: {fix}")
        try:
            network = NetworkSpec(**meta["network"]).build()
            state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
            network.load_state_dict(state)
        except (TypeError, KeyError, RuntimeError) as err:  # another version's description, or missing weights
            raise CheckpointError(f"teacher checkpoint {path} does not rebuild its network ({err}): {fix}") from None
        return cls(network, str(path))

    @property
    def spec(self) -> NetworkSpec:
        return self.network.spec

    def check_student(self, space: str, num_classes: Optional[int], needs_features: bool) -> None:
        """Refuse a teacher whose outputs the student's loss cannot be compared with."""
        t = self.spec
        if num_classes is not None and t.num_classes != num_classes:
            raise ConfigError(f"the teacher ({self.source}) has {t.num_classes} classes and the student "
                              f"{num_classes}: train the teacher on the student's dataset")
        if needs_features and t.space != space:
            raise ConfigError(f"NST compares stage features: the teacher is a {t.space} network and the student a "
                              f"{space} one; train a teacher in the student's space")

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, features: bool = False) -> Outputs:
        first = next(self.network.parameters())
        if first.device != x.device:
            self.network.to(x.device)
        self.network.eval()
        return self.network(x, features=features)


def distillation_loss(student: CellNetwork, teacher: Optional[Teacher], loss_fn: DistillationLoss,
                      x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One training forward: the student's outputs, the teacher's (no grad, eval mode) when the loss needs them,
    the loss. Returns (loss, student logits). Shared by ``TrainCell`` and the search's low-fidelity loop."""
    out = student(x, features=loss_fn.needs_features)
    t_out = teacher(x, features=loss_fn.needs_features) if loss_fn.needs_teacher and teacher is not None else None
    return loss_fn(out, t_out, y), out.logits


def load_teacher(path: Optional[str], loss_fn: DistillationLoss, space: str,
                 num_classes: Optional[int]) -> Optional[Teacher]:
    """The teacher a loss needs (None when it needs none); refuses a missing one."""
    if not loss_fn.needs_teacher:
        return None
    if not path:
        raise ConfigError(f"model.loss {loss_fn.describe()} distils from a teacher: set model.teacher to a trained "
                          "network's checkpoint (fit a teacher first: experiments/tiny/teacher_nb201.yaml for the "
                          "tiny configs, experiments/mf_kd/teacher_nb201_cifar10_cpu.yaml on a CPU, "
                          "experiments/mf_kd/teacher_nb201_cifar10.yaml on a GPU), or use "
                          "lightning_nas.methods.training.distill_losses.CrossEntropy")
    teacher = Teacher.from_checkpoint(path)
    teacher.check_student(space, num_classes, loss_fn.needs_features)
    return teacher


class TrainCell(NetworkTraining):
    """Train one network with cross-entropy or distillation (MF-KD's low-fidelity training; also the teacher)."""

    def __init__(self, arch: str = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
                                   "nor_conv_3x3~2|",
                 space: str = "nb201", channels: int = 16, layers: int = 5,
                 loss: Optional[DistillationLoss] = None, teacher: Optional[str] = None,
                 optimizer: OptimizerCallable = NB201_SGD, lr_scheduler: Optional[LRSchedulerCallable] = None,
                 grad_clip: float = 0.0, num_classes: int = 10, in_channels: int = 3, seed: int = 2):
        """
        Args:
            arch: NB201: an arch string, benchmark index, genotype.json or run dir (default: index 9930, one of
                the benchmark's best CIFAR-10 cells, 94.36 %); DARTS: a published name (DARTS_V2), genotype.json,
                run dir or genotype text.
            space: a registered space: ``nb201`` (the benchmark's macro network) or ``darts`` (NetworkCIFAR, no
                auxiliary head).
            channels, layers: initial channels; NB201 cells per stage (benchmark: 16, 5) / DARTS cells in all.
            loss: ``CrossEntropy`` (default), ``HintonKD`` (T 32, alpha 1) or ``NST`` (beta 12.5).
            teacher: a TrainCell run's checkpoint, run directory, or run name's directory holding one finished run
                (``Teacher.resolve``), required by HintonKD (alpha > 0) and NST.
            optimizer, lr_scheduler: default NAS-Bench-201's SGD (lr 0.1, Nesterov) with cosine to 0 per epoch.
            grad_clip: max gradient norm, 0 (default, NAS-Bench-201) for none.
            seed: initialises the network (the CLI sets it from seed_everything).
        """
        super().__init__(optimizer, lr_scheduler, grad_clip)
        if grad_clip < 0:
            raise ConfigError(f"model.grad_clip must be >= 0, got {grad_clip}")
        self.loss_fn = loss if loss is not None else CrossEntropy()
        text = resolve_arch(space, arch).to_text()
        self.spec = NetworkSpec(space, text, channels, layers, num_classes, in_channels)
        with seeded(seed):
            self.net = self.spec.build()
        self.teacher = load_teacher(teacher, self.loss_fn, space, num_classes)
        self.init_accuracy_metrics(num_classes)

    def space_id(self) -> str:
        return f"{self.spec.space} network ({self.spec.arch}, C={self.spec.channels}, layers={self.spec.layers})"

    def variant(self) -> dict[str, Any]:
        return {**super().variant(), "arch": self.spec.arch, "loss": self.loss_fn.describe()}

    def genotype(self) -> Any:
        return resolve_arch(self.spec.space, self.spec.arch)

    def search_space(self) -> SearchSpace:
        return get_space(self.spec.space)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.sync_lr_schedule()
        x, y = batch["train"]
        loss, logits = distillation_loss(self.net, self.teacher, self.loss_fn, x, y)
        self.log_training(loss, logits, y)
        return loss

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).logits

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lightning_nas"]["network"] = self.spec.to_dict()

    def summary_extras(self) -> dict[str, Any]:
        return {"parameters": self.net.num_parameters, "loss": self.loss_fn.describe(),
                "teacher": None if self.teacher is None else self.teacher.source}
