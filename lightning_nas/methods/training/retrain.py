"""Train a genotype from scratch with the DARTS evaluation protocol (Liu et al., 2019, Sec. 3.2 / A.2).

CIFAR: C=36, 20 cells, auxiliary weight 0.4, drop path 0.2 * epoch / epochs (not on identity ops),
SGD 0.025 cosine to 0, momentum 0.9, wd 3e-4, grad clip 5, cutout 16 (set in the datamodule).
ImageNet: C=48, 14 cells, SGD 0.1 decayed x0.97 per epoch, wd 3e-5, label smoothing 0.1.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from lightning_nas.errors import ConfigError
from lightning_nas.methods.training.frame import NetworkTraining
from lightning_nas.search_spaces.cost import count_parameters
from lightning_nas.search_spaces.darts.eval_network import NetworkCIFAR, NetworkImageNet
from lightning_nas.search_spaces.darts.resolve import load_genotype
from lightning_nas.search_spaces.space import SearchSpace, get_space

RETRAIN_SGD = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.025, "momentum": 0.9, "weight_decay": 3e-4}}


class Retrain(NetworkTraining):
    def __init__(self, genotype: str = "DARTS_V2", network: Literal["cifar", "imagenet"] = "cifar",
                 channels: int = 36, layers: int = 20, auxiliary: bool = True, auxiliary_weight: float = 0.4,
                 drop_path_prob: float = 0.2, label_smoothing: float = 0.0, grad_clip: float = 5.0,
                 num_classes: int = 10, in_channels: int = 3, optimizer: OptimizerCallable = RETRAIN_SGD,
                 lr_scheduler: Optional[LRSchedulerCallable] = None):
        """
        Args:
            genotype: a published name (e.g. DARTS_V2), a genotype.json, a search run directory, or DARTS text.
            network: ``cifar`` (NetworkCIFAR) or ``imagenet`` (NetworkImageNet, mobile setting).
            lr_scheduler: default cosine annealing to 0 over max_epochs, stepped per epoch.
        """
        super().__init__(optimizer, lr_scheduler, grad_clip)
        if not 0 <= drop_path_prob < 1 or auxiliary_weight < 0 or grad_clip < 0:
            raise ConfigError("model.drop_path_prob must be in [0, 1); auxiliary_weight and grad_clip >= 0")
        self.genotype_spec = genotype
        self.arch = load_genotype(genotype)
        cls = NetworkCIFAR if network == "cifar" else NetworkImageNet
        self.network_kind = network
        self.net = cls(self.arch, channels=channels, num_classes=num_classes, layers=layers, auxiliary=auxiliary,
                       in_channels=in_channels)
        self.auxiliary_weight, self.drop_path_prob = auxiliary_weight, drop_path_prob
        self.label_smoothing = label_smoothing
        self.init_accuracy_metrics(num_classes)

    def space_id(self) -> str:
        return f"{type(self.net).__qualname__}({self.arch.to_text()})"

    def variant(self) -> dict[str, Any]:
        return {**super().variant(), "genotype": self.arch.to_text()}

    def genotype(self) -> Any:
        return self.arch

    def search_space(self) -> SearchSpace:
        return get_space("darts")

    @property
    def num_parameters(self) -> int:
        return count_parameters(self.net)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # schedule and drop-path rate follow the epoch at the point of use (see sync_lr_schedule)
        self.sync_lr_schedule()
        self.net.drop_path_prob = self.drop_path_prob * self.current_epoch / max(1, int(self.trainer.max_epochs))
        x, y = batch["train"]
        logits, logits_aux = self.net(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        if logits_aux is not None and self.auxiliary_weight > 0:
            loss = loss + self.auxiliary_weight * F.cross_entropy(logits_aux, y, label_smoothing=self.label_smoothing)
        self.log_training(loss, logits, y)
        return loss

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]

    def analysis_parameters(self, target: str) -> list[tuple[str, torch.nn.Parameter]]:
        """The network's weights without the auxiliary head (the analyses use the main logits only)."""
        if target != "weights":
            raise ConfigError(f"a retraining has no architecture parameters: set the analysis target to 'weights', "
                              f"not {target!r}")
        return [(n, p) for n, p in self.net.named_parameters() if not n.startswith("auxiliary_head")]

    def analysis_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The main logits without drop path (a deterministic function of the weights)."""
        rate, self.net.drop_path_prob = self.net.drop_path_prob, 0.0
        try:
            return self.net(x)[0]
        finally:
            self.net.drop_path_prob = rate
