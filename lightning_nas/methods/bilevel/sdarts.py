"""SDARTS: smooth DARTS by random smoothing or adversarial training (Chen & Hsieh, ICML 2020, Alg. 1-2;
official code xiangning-chen/SmoothDARTS).

The architecture step is first-order DARTS. Only the weight step changes: the supernet weights are trained
under perturbed mixing weights ``P(softmax(alpha) + delta)``, where P projects each edge row back onto the
simplex, and the forward uses those weights directly (no second softmax). alpha itself is never modified.
epsilon grows linearly from ``epsilon_min`` to ``epsilon_max`` over the epochs.
- ``random`` (SDARTS-RS): delta ~ U(-eps, eps) elementwise.
- ``adversarial`` (SDARTS-ADV): PGD on the train batch, ``attack_steps`` signed-gradient ascent steps of size
  2 eps / steps from a random start, delta clipped to [-eps, eps] and projected after each step, BN in eval
  mode during the attack; if the attack does not raise the loss above the unperturbed one, the weight step
  uses the unperturbed weights.
The perturbations come from ``step_generator``: identical on all ranks and across resume.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from lightning_nas.errors import ConfigError
from lightning_nas.methods.bilevel.frame import BilevelSearch


def project_to_simplex(w: torch.Tensor) -> torch.Tensor:
    """SDARTS's projection of each row: clamp to [0, 1]; an all-zero row puts 1 on its argmax; divide by the sum.
    (No data-dependent branch: the host never waits for the device.)"""
    clamped = w.clamp(0.0, 1.0)
    dead = clamped.sum(-1, keepdim=True) == 0
    onehot = F.one_hot(w.argmax(-1), w.shape[-1]).to(w.dtype)
    clamped = torch.where(dead, onehot, clamped)
    return clamped / clamped.sum(-1, keepdim=True)


class SDARTS(BilevelSearch):
    def __init__(self, *args: Any, perturbation: Literal["random", "adversarial"] = "random",
                 epsilon_min: float = 0.03, epsilon_max: float = 0.3, attack_steps: int = 7, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if perturbation not in ("random", "adversarial"):
            raise ConfigError(f"model.perturbation must be 'random' or 'adversarial', got {perturbation!r}")
        if not 0 <= epsilon_min <= epsilon_max or attack_steps < 1:
            raise ConfigError("need 0 <= model.epsilon_min <= model.epsilon_max and model.attack_steps >= 1")
        self.perturbation, self.attack_steps = perturbation, attack_steps
        self.epsilon_min, self.epsilon_max = epsilon_min, epsilon_max
        self.attack_fallbacks = 0

    def variant(self) -> dict[str, Any]:
        return {**super().variant(), "perturbation": self.perturbation}

    def epsilon(self) -> float:
        epochs = max(1, int(self.trainer.max_epochs or 1)) if self._trainer is not None else 1
        return self.epsilon_min + (self.epsilon_max - self.epsilon_min) * self.current_epoch / epochs

    def _random_delta(self, base: dict[str, torch.Tensor], eps: float, stream: int) -> dict[str, torch.Tensor]:
        g = self.step_generator(stream)
        return {k: ((torch.rand(v.shape, generator=g, dtype=torch.float64) * 2 - 1) * eps).to(v)
                for k, v in base.items()}

    def perturbed_mixing(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The mixing weights the weight step trains under (detached)."""
        eps = self.epsilon()
        base = {k: v.detach() for k, v in self.supernet.mixing_weights().items()}
        delta = self._random_delta(base, eps, stream=1)
        if self.perturbation == "random":
            return {k: project_to_simplex(base[k] + delta[k]) for k in base}
        return self._attack(x, y, base, delta, eps)

    def _attack(self, x: torch.Tensor, y: torch.Tensor, base: dict[str, torch.Tensor],
                delta: dict[str, torch.Tensor], eps: float) -> dict[str, torch.Tensor]:
        net = self.supernet
        step = 2 * eps / self.attack_steps
        was_training = net.training
        net.eval()  # BN uses running statistics during the attack
        try:
            with torch.no_grad():
                clean = self.loss(net(x, mixing=base), y)
            mixing = {k: project_to_simplex(base[k] + delta[k]) for k in base}
            for _ in range(self.attack_steps):
                d = {k: (mixing[k] - base[k]).requires_grad_(True) for k in base}
                loss = self.loss(net(x, mixing={k: base[k] + d[k] for k in base}), y)
                grads = torch.autograd.grad(loss, list(d.values()))
                with torch.no_grad():
                    mixing = {k: project_to_simplex(base[k] + (d[k] + step * g.sign()).clamp(-eps, eps))
                              for (k, g) in zip(d, grads)}
            with torch.no_grad():
                attacked = self.loss(net(x, mixing=mixing), y)
        finally:
            net.train(was_training)
        failed = attacked <= clean  # the attack did not raise the loss: train on the clean weights (on the device)
        self.attack_fallbacks = self.attack_fallbacks + failed.to(torch.int64)
        return {k: torch.where(failed, base[k], mixing[k]) for k in base}

    def weight_logits(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # the attack runs in eval mode, so BN running statistics see only this training forward
        return self.supernet(x, mixing=self.perturbed_mixing(x, y))

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.log_replicated("sdarts/epsilon", self.epsilon())
        if self.perturbation == "adversarial":
            fallbacks = torch.as_tensor(self.attack_fallbacks, dtype=torch.float32, device=self.device)
            self.log("sdarts/attack_fallbacks", fallbacks, sync_dist=True, reduce_fx="sum")
            self.attack_fallbacks = 0
