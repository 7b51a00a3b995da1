"""Training losses of a low-fidelity evaluation (MF-KD, Trofimov et al., arXiv 2006.08341): plain cross-entropy,
Hinton knowledge distillation and neuron selectivity transfer. Each is swappable by ``class_path`` in a config.

A loss sees the student's and the teacher's ``Outputs`` (logits, and the stage features when ``needs_features``);
the teacher's come from a frozen network in eval mode under ``torch.no_grad`` (``teacher.Teacher``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from lightning_nas.errors import ConfigError


@dataclass
class Outputs:
    """What a network produced on a batch: logits and, when a loss asks for them, one feature map per stage."""

    logits: torch.Tensor
    features: list[torch.Tensor] = field(default_factory=list)


class DistillationLoss:
    """Base: ``loss(student, teacher, y)``; ``teacher`` is None for a loss that needs none."""

    needs_teacher: bool = True
    needs_features: bool = False

    def __call__(self, student: Outputs, teacher: Optional[Outputs], y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__


class CrossEntropy(DistillationLoss):
    """Plain cross-entropy on the labels (the single-fidelity baseline's training)."""

    needs_teacher = False

    def __call__(self, student: Outputs, teacher: Optional[Outputs], y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(student.logits, y)


def hinton_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor, temperature: float,
              alpha: float) -> torch.Tensor:
    """Hinton et al., 2015, Eq. 2: ``(1 - alpha) CE(s, y) + alpha T^2 KL(softmax(t / T) || softmax(s / T))``,
    the KL averaged over the batch. The T^2 factor keeps the soft targets' gradient scale independent of T."""
    t = float(temperature)
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                  reduction="batchmean", log_target=True)
    soft = alpha * t * t * kl
    if alpha == 1.0:
        return soft
    return (1.0 - alpha) * F.cross_entropy(student_logits, y) + soft


class HintonKD(DistillationLoss):
    """Hinton knowledge distillation; MF-KD's port configures T = 32, alpha = 1 (soft targets only).

    Args:
        temperature: softmax temperature T (> 0).
        alpha: weight of the distillation term in [0, 1]; 0 gives plain cross-entropy.
    """

    def __init__(self, temperature: float = 32.0, alpha: float = 1.0):
        if temperature <= 0 or not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"HintonKD needs temperature > 0 and alpha in [0, 1], got {temperature}, {alpha}")
        self.temperature, self.alpha = float(temperature), float(alpha)
        self.needs_teacher = alpha > 0

    def __call__(self, student: Outputs, teacher: Optional[Outputs], y: torch.Tensor) -> torch.Tensor:
        if not self.needs_teacher:
            return F.cross_entropy(student.logits, y)
        assert teacher is not None
        return hinton_kd(student.logits, teacher.logits, y, self.temperature, self.alpha)

    def describe(self) -> str:
        return f"HintonKD(T={self.temperature:g}, alpha={self.alpha:g})"


def nst_mmd2(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """Huang & Wang, 2017 ("Like what you like", Eq. 4 with the polynomial kernel d = 2, c = 0): each channel's
    spatial map is one sample of a neuron's selectivity, l2-normalised; MMD^2 between the student's and the
    teacher's channel sets, averaged over the batch. Channel counts may differ; spatial sizes must match."""
    if student_features.shape[0] != teacher_features.shape[0] or \
            student_features.shape[2:] != teacher_features.shape[2:]:
        raise ConfigError(f"NST compares feature maps of the same spatial size: student {tuple(student_features.shape)}"
                          f" vs teacher {tuple(teacher_features.shape)}; train the teacher on the same image size and "
                          "macro skeleton (search space, cells per stage) as the student")
    s = F.normalize(student_features.flatten(2), dim=2)  # (B, C_s, HW)
    t = F.normalize(teacher_features.flatten(2), dim=2)

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # mean over channel pairs, per sample
        return torch.bmm(a, b.transpose(1, 2)).pow(2).mean(dim=(1, 2))

    return (kernel(s, s) + kernel(t, t) - 2.0 * kernel(s, t)).mean()


class NST(DistillationLoss):
    """Neuron selectivity transfer: ``CE(s, y) + beta * sum over stages of MMD^2`` (the paper's lambda / 2 is
    ``beta``; MF-KD's port: beta = 12.5). The stages are the macro network's (``cell_training.stage_modules``).

    Args:
        beta: weight of the MMD term (>= 0).
    """

    needs_features = True

    def __init__(self, beta: float = 12.5):
        if beta < 0:
            raise ConfigError(f"NST needs beta >= 0, got {beta}")
        self.beta = float(beta)

    def __call__(self, student: Outputs, teacher: Optional[Outputs], y: torch.Tensor) -> torch.Tensor:
        assert teacher is not None
        if len(student.features) != len(teacher.features):
            raise ConfigError(f"NST: the student has {len(student.features)} stages and the teacher "
                              f"{len(teacher.features)}; use a teacher of the same search space")
        mmd = sum(nst_mmd2(s, t) for s, t in zip(student.features, teacher.features))
        return F.cross_entropy(student.logits, y) + self.beta * mmd

    def describe(self) -> str:
        return f"NST(beta={self.beta:g})"
