"""Orthogonal weight updates for single-path weight sharing: DI-NAS (Niu et al., arXiv 2003.13089, Neural Networks
2021), "disturbance-immune weight sharing".

Only the abstract could be read and no code exists: training a later architecture disturbs the earlier ones
through the shared weights, and DI-NAS trains later architectures in a space orthogonal to what earlier ones
learned. Two readings are implemented (methods.md 8), both documented interpretations, swappable through
``SinglePathSearch(projector=...)`` (a class with this module's ``GradientProjector`` interface):

- ``OWMProjector``: the input-space projector of orthogonal weight modification (OWM; Zeng, Chen, Cui, Yu,
  Nature Machine Intelligence 2019; official beijixiong3510/OWM, ``OWM_CNN/cnn_owm.py:116-165``): per shared weight
  tensor ``W`` (every Conv2d and Linear of the supernet) the correlation ``R = sum r r^T`` of the batch-mean inputs
  ``r`` children fed it (for a conv: the input patches of the batch-mean input at stride ``patch_stride``, default
  the conv's own stride, i.e. every patch the conv sees; the OWM code calls ``pro_weight(..., stride=2)`` on its
  stride-1 convs and so uses about a quarter of them: ``patch_stride: 2``); grouped and depthwise convs keep one
  block per group, so the projector is at most ``(C_in/groups kh kw)^2`` per group and the DARTS space's depthwise
  convs cost ``C`` blocks of ``k^2 x k^2``. The loss gradient is multiplied by the projector ``P`` before the step.
  OWM's recursion ``k = P r, P <- P - k k^T / (a + r^T k)``, started from ``P = I`` (the OWM code's start;
  methods.md writes ``I / a``, which would scale unexplored directions by ``1/a``), gives
  ``P = (I + sum_t R_t / a_t)^(-1)`` with ``R_t`` step t's patches and ``a_t`` its ``a`` (Sherman-Morrison), which
  ``recursion: official`` computes: each step's patches weighted by that step's ``1/a`` and the current batch
  folded in *before* its own gradient is projected, as ``pro_weight`` does. ``recursion: closed_form`` (default,
  the earlier reading) uses ``P = a (a I + R)^(-1)`` with the current ``a`` on the whole history of *earlier*
  children only; the two agree for a constant ``a`` without the current batch and differ once ``a`` follows its
  schedule ``alpha * (alpha_final / alpha) ** progress`` (OWM's convs: ``1e-5 ** progress``; its fully connected
  layers 1e-4, 1e-2 and 1e-1 for fc1-fc3: ``linear_alpha_final`` sets the supernet classifier's, default the
  convs'). As ``a -> 0``, ``P r -> 0`` for every stored ``r``: the update leaves the earlier children's layer outputs
  unchanged. ``R`` is kept in float64 (in float32 its rounding noise, ~1e-7 of its norm, would swamp a small ``a``
  and damp every direction). Both forms solve with a Cholesky factor rather than looping over patches.
- ``GradientSpaceProjector`` (OGD, Farajtabar et al. 2020 / GPM, Saha et al. 2021 style): per shared weight
  tensor an orthonormal basis of at most ``memory`` earlier children's gradient directions; the new gradient is
  projected onto the basis' orthogonal complement, and its new component joins the basis (the oldest direction
  leaves when the basis is full).

Both act on the loss gradient after the DDP all-reduce and before clipping; the optimizer's weight decay and
momentum come after them, so the applied update is exactly orthogonal only with plain SGD. Their state is
buffers of this module: it moves with the model, is saved in checkpoints (a resumed run continues exactly) and
is identical on every DDP rank (OWM averages the batch-mean inputs across ranks before storing them; the
gradients are already averaged). ``state_bytes()`` is the memory they hold; ``search/projector_mb`` logs it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Literal, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lightning_nas.errors import ConfigError


def projected_weights(nets: Sequence[nn.Module]) -> list[nn.Module]:
    """The shared weight tensors an orthogonal update projects: every Conv2d and Linear (once, in module order;
    modules tied across weight-sharing groups appear once)."""
    seen: set[int] = set()
    out = []
    for net in nets:
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in seen:
                seen.add(id(m))
                out.append(m)
    return out


class GradientProjector(nn.Module):
    """Interface of an orthogonal update: ``attach`` once, then per weight step ``capture()`` around the forward,
    ``project(progress)`` after the backward, ``commit()`` after the optimizer step."""

    def attach(self, nets: Sequence[nn.Module]) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Record what this step's children feed the weights (only inside the training forward)."""
        yield

    def project(self, progress: float) -> None:
        """Replace the loss gradient of every attached weight that has one by its projection."""
        raise NotImplementedError

    def commit(self) -> None:
        """Fold this step into the memory of earlier children."""
        raise NotImplementedError

    def state_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers())


def _world_mean(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


class OWMProjector(GradientProjector):
    """Input-space projector (OWM reading of DI-NAS; see the module docstring)."""

    def __init__(self, alpha: float = 1.0, alpha_final: float = 1e-5,
                 recursion: Literal["closed_form", "official"] = "closed_form", patch_stride: Optional[int] = None,
                 linear_alpha_final: Optional[float] = None):
        """
        Args:
            alpha: ``a`` at the start of the search (OWM's code: 1.0).
            alpha_final: ``a`` at the end; geometric in between (OWM's convs: 1e-5, i.e. ``a = 1e-5 ** progress``).
            recursion: ``closed_form`` (current ``a`` on earlier children's inputs) or ``official`` (OWM's recursion:
                per-step ``a``, the current batch first).
            patch_stride: the stride of a conv's input patches (default: the conv's stride; OWM's code: 2).
            linear_alpha_final: ``alpha_final`` of Linear layers (default ``alpha_final``; OWM's last fc: 0.1).
        """
        super().__init__()
        if not (alpha > 0 and alpha_final > 0) or (linear_alpha_final is not None and linear_alpha_final <= 0):
            raise ConfigError(f"OWMProjector needs alpha, alpha_final and linear_alpha_final > 0, got {alpha}, "
                              f"{alpha_final}, {linear_alpha_final}")
        if recursion not in ("closed_form", "official") or (patch_stride is not None and patch_stride < 1):
            raise ConfigError(f"OWMProjector needs recursion 'closed_form' or 'official' and patch_stride >= 1, got "
                              f"{recursion!r}, {patch_stride}")
        self.alpha, self.alpha_final = alpha, alpha_final
        self.recursion, self.patch_stride, self.linear_alpha_final = recursion, patch_stride, linear_alpha_final
        self._last_progress = 0.0
        self._modules_list: list[nn.Module] = []
        self._pending: dict[int, torch.Tensor] = {}
        self._capturing = False

    @staticmethod
    def _blocks(m: nn.Module) -> tuple[int, int]:
        """(groups, input dimension per group) of a weight's projector."""
        if isinstance(m, nn.Conv2d):
            if isinstance(m.padding, str) or m.padding_mode != "zeros":
                raise ConfigError("OWMProjector supports convolutions with numeric zero padding only")
            return m.groups, m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        return 1, m.in_features

    def attach(self, nets: Sequence[nn.Module]) -> None:
        self._modules_list = projected_weights(nets)
        for i, m in enumerate(self._modules_list):
            groups, d = self._blocks(m)
            self.register_buffer(f"corr{i}", torch.zeros(groups, d, d, dtype=torch.float64, device=m.weight.device))
            m.register_forward_pre_hook(self._hook(i))

    def _hook(self, i: int):  # noqa: ANN202
        def record(module: nn.Module, args: tuple) -> None:
            if self._capturing:
                x = args[0].detach().mean(0, keepdim=True)  # OWM: the batch-mean input
                self._pending[i] = self._pending[i] + x if i in self._pending else x
        return record

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        self._capturing = True
        try:
            yield
        finally:
            self._capturing = False

    def a(self, progress: float, module: Optional[nn.Module] = None) -> float:
        """``a`` at ``progress`` (of ``module``: Linear layers may have their own final value)."""
        final = self.alpha_final
        if isinstance(module, nn.Linear) and self.linear_alpha_final is not None:
            final = self.linear_alpha_final
        return self.alpha * (final / self.alpha) ** min(max(progress, 0.0), 1.0)

    def matrix(self, i: int, progress: float) -> torch.Tensor:
        """The projector ``P`` of weight ``i``, per group (groups, d, d)."""
        corr = getattr(self, f"corr{i}")
        eye = torch.eye(corr.shape[-1], dtype=corr.dtype, device=corr.device)
        if self.recursion == "official":
            return torch.linalg.inv(eye + corr)
        a = self.a(progress, self._modules_list[i])
        return a * torch.linalg.inv(a * eye + corr)

    def project(self, progress: float) -> None:
        self._last_progress = progress
        if self.recursion == "official":  # pro_weight: the current batch's patches update P before projecting
            self._fold(progress)
        for i, m in enumerate(self._modules_list):
            g = m.weight.grad
            if g is None:
                continue
            corr = getattr(self, f"corr{i}")
            groups, d = corr.shape[0], corr.shape[-1]
            grad = g.reshape(groups, -1, d).double()  # (groups, out / groups, d)
            eye = torch.eye(d, dtype=corr.dtype, device=corr.device)
            # g P with P symmetric: closed form a * (solve(aI + R, g^T))^T; official (solve(I + sum R_t / a_t, g^T))^T
            a = 1.0 if self.recursion == "official" else self.a(progress, m)
            chol = torch.linalg.cholesky(a * eye + corr)
            projected = a * torch.cholesky_solve(grad.transpose(1, 2), chol).transpose(1, 2)
            m.weight.grad = projected.reshape(g.shape).to(g.dtype)

    def commit(self) -> None:
        self._fold(self._last_progress)

    def _fold(self, progress: float) -> None:
        """Add the pending batch-mean inputs' patches to each weight's correlation (weighted by ``1/a`` under the
        official recursion)."""
        for i, x in sorted(self._pending.items()):
            m = self._modules_list[i]
            x = _world_mean(x)
            corr = getattr(self, f"corr{i}")
            groups, d = corr.shape[0], corr.shape[-1]
            if isinstance(m, nn.Conv2d):
                stride = m.stride if self.patch_stride is None else self.patch_stride
                patches = F.unfold(x.to(corr.dtype), m.kernel_size, m.dilation, m.padding, stride)
                r = patches.reshape(groups, d, -1)  # channel-major, as the weight's (C_in / groups, kh, kw)
            else:
                r = x.reshape(1, d, -1).to(corr.dtype)
            weight = 1.0 / self.a(progress, m) if self.recursion == "official" else 1.0
            corr.add_(weight * (r @ r.transpose(1, 2)))
        self._pending.clear()


class GradientSpaceProjector(GradientProjector):
    """Gradient-space projector (OGD / GPM reading of DI-NAS; see the module docstring)."""

    def __init__(self, memory: int = 10, min_residual: float = 1e-3):
        """
        Args:
            memory: M, directions kept per weight tensor (memory is M x the weights' size).
            min_residual: a gradient joins the basis only if the part of it orthogonal to the basis has at
                least this fraction of its norm.
        """
        super().__init__()
        if memory < 1 or not 0 <= min_residual < 1:
            raise ConfigError(f"GradientSpaceProjector needs memory >= 1 and 0 <= min_residual < 1, got {memory}, "
                              f"{min_residual}")
        self.memory, self.min_residual = memory, min_residual
        self._modules_list: list[nn.Module] = []
        self._pending: dict[int, tuple[torch.Tensor, float]] = {}

    def attach(self, nets: Sequence[nn.Module]) -> None:
        self._modules_list = projected_weights(nets)
        for i, m in enumerate(self._modules_list):
            self.register_buffer(f"basis{i}", torch.zeros(self.memory, m.weight.numel(), device=m.weight.device))
            # [directions stored, next slot to overwrite]
            self.register_buffer(f"count{i}", torch.zeros(2, dtype=torch.long, device=m.weight.device))

    def basis(self, i: int) -> torch.Tensor:
        """The stored orthonormal directions of weight ``i`` (rows)."""
        return getattr(self, f"basis{i}")[: int(getattr(self, f"count{i}")[0])]

    def project(self, progress: float) -> None:
        for i, m in enumerate(self._modules_list):
            g = m.weight.grad
            if g is None:
                continue
            flat = g.reshape(-1)
            basis = self.basis(i)
            residual = flat - basis.t() @ (basis @ flat) if len(basis) else flat.clone()
            m.weight.grad = residual.reshape(g.shape)
            self._pending[i] = (residual, float(flat.norm()))

    def commit(self) -> None:
        for i, (residual, norm) in sorted(self._pending.items()):
            r = float(residual.norm())
            if norm == 0 or r <= self.min_residual * norm:
                continue
            count = getattr(self, f"count{i}")
            slot = int(count[1])
            getattr(self, f"basis{i}")[slot] = residual / r
            count[0] = min(int(count[0]) + 1, self.memory)
            count[1] = (slot + 1) % self.memory
        self._pending.clear()
