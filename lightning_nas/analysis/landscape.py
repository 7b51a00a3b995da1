"""Loss-landscape slices (Li, Xu, Taylor, Studer & Goldstein, "Visualizing the loss landscape of neural nets",
NeurIPS 2018) and mini-batch gradient variance (Shu, Wang & Cai, ICLR 2020, Sec. 4.2), as plain functions of a
parameter list, a logits function and fixed batches; the callbacks in ``lightning_nas.callbacks`` run them on a
method's network.

- Directions (Li et al., Sec. 4, "filter normalization"): d ~ N(0, I) of every tensor's shape, then every filter
  d_i (a slice along dim 0: a conv's output channel, a linear layer's output row, an edge of alpha) rescaled to
  the norm of the weights' filter, d_i <- d_i ||w_i|| / ||d_i||. One-dimensional tensors (biases, BN affine
  parameters) get a zero direction: the paper's setting (its code's ``--xignore biasbn``).
- A slice evaluates the mean loss and accuracy over fixed batches at w + x d1 (1-D) or w + x d1 + y d2 (2-D)
  on a grid, and restores w bit for bit afterwards.
- BN: ``eval`` (default) uses the running statistics and leaves them alone, as Li et al.'s evaluation
  (``net.eval()``); ``train`` uses the batch's statistics without updating the running ones.
- Gradient variance: mean over B fixed mini-batches of ||g_b - g_mean||^2 on the whole parameter vector, g_b the
  gradient of the mean loss of batch b. It is a mini-batch estimate (Shu et al. do not say whether theirs is per
  sample or per mini-batch): it scales with 1 / batch size, so compare values at one batch size only.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal, Optional

import torch
from torch import nn

from lightning_nas.core.child_eval import frozen_bn_stats

Batch = tuple[torch.Tensor, torch.Tensor]
LogitsFn = Callable[[torch.Tensor], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BNMode = Literal["eval", "train"]


def filter_normalized_direction(params: Sequence[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """A random direction with the weights' filter norms (Li et al., Sec. 4); zero on 1-D tensors."""
    direction = []
    for p in params:
        d = torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p)
        if d.dim() <= 1:
            d.zero_()
        else:
            w = p.detach().flatten(1)
            flat = d.flatten(1)
            flat.mul_(w.norm(dim=1, keepdim=True) / (flat.norm(dim=1, keepdim=True) + 1e-10))
            d = flat.view_as(p)
        direction.append(d)
    return direction


@contextlib.contextmanager
def displaced(params: Sequence[torch.Tensor], directions: Sequence[Sequence[torch.Tensor]],
              coords: Sequence[float]) -> Iterator[None]:
    """Within the block the parameters are w + sum_k coords[k] * directions[k]; w is restored exactly after."""
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for i, p in enumerate(params):
                value = saved[i].clone()
                for c, d in zip(coords, directions):
                    if c:
                        value.add_(d[i], alpha=float(c))
                p.copy_(value)
        yield
    finally:
        with torch.no_grad():
            for p, w in zip(params, saved):
                p.copy_(w)


@contextlib.contextmanager
def bn_mode(net: nn.Module, mode: BNMode) -> Iterator[None]:
    """``eval``: the whole network in eval mode (running BN statistics); ``train``: train mode with batch
    statistics, the running statistics left untouched (``frozen_bn_stats``)."""
    was_training = net.training
    net.train(mode == "train")
    try:
        with frozen_bn_stats(net):
            yield
    finally:
        net.train(was_training)


def evaluate(logits_fn: LogitsFn, loss_fn: LossFn, batches: Sequence[Batch]) -> tuple[float, float]:
    """(mean loss, accuracy) over the batches, weighted by batch size."""
    total_loss, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for x, y in batches:
            logits = logits_fn(x)
            total_loss += float(loss_fn(logits, y)) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            count += len(y)
    return total_loss / count, correct / count


def batch_gradients(logits_fn: LogitsFn, loss_fn: LossFn, params: Sequence[torch.Tensor],
                    batches: Sequence[Batch]) -> torch.Tensor:
    """One row per batch: the flattened gradient (float64) of the batch's mean loss w.r.t. ``params``."""
    rows = []
    with torch.enable_grad():
        for x, y in batches:
            grads = torch.autograd.grad(loss_fn(logits_fn(x), y), list(params), allow_unused=True)
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).double()
                                   for g, p in zip(grads, params)]))
    return torch.stack(rows)


def gradient_variance(grads: torch.Tensor) -> tuple[float, float]:
    """(mean_b ||g_b - g_mean||^2, ||g_mean||^2) of per-batch gradients ``grads`` (one row per batch)."""
    mean = grads.mean(0)
    return float(((grads - mean) ** 2).sum(1).mean()), float((mean * mean).sum())


def grid(points: int, span: tuple[float, float], dims: int) -> list[tuple[float, ...]]:
    """The slice's coordinates: ``points`` evenly spaced values of ``span`` per axis (0 included when the
    span is symmetric and ``points`` odd)."""
    if points < 2:
        raise ValueError("a landscape slice needs at least 2 points per axis")
    lo, hi = span
    axis = [lo + (hi - lo) * i / (points - 1) for i in range(points)]
    if dims == 1:
        return [(a,) for a in axis]
    return [(a, b) for b in axis for a in axis]


def landscape_slice(logits_fn: LogitsFn, loss_fn: LossFn, params: Sequence[torch.Tensor],
                    directions: Sequence[Sequence[torch.Tensor]], coords: Sequence[Sequence[float]],
                    batches: Sequence[Batch], with_gradient_variance: bool = False) -> list[dict[str, float]]:
    """Loss and accuracy (and optionally the gradient variance) at every point of ``coords``."""
    rows = []
    for point in coords:
        with displaced(params, directions, point):
            loss, acc = evaluate(logits_fn, loss_fn, batches)
            row = {f"x{k + 1}": float(c) for k, c in enumerate(point)}
            row.update(loss=loss, acc=acc)
            if with_gradient_variance:
                row["grad_variance"], row["grad_mean_sq_norm"] = gradient_variance(
                    batch_gradients(logits_fn, loss_fn, params, batches))
            rows.append(row)
    return rows


def centre_loss(rows: Sequence[dict[str, float]]) -> float:
    """The loss at the slice's origin (it must be on the grid: an odd number of points over a symmetric span)."""
    centre = [r["loss"] for r in rows if all(abs(v) < 1e-12 for k, v in r.items() if k.startswith("x"))]
    if not centre:
        raise ValueError("the slice's grid does not contain the origin (use an odd number of points)")
    return centre[0]


def sharpness(rows: Sequence[dict[str, float]]) -> float:
    """The largest rise of the loss over the slice's centre (a scale-free sharpness of a filter-normalised
    slice: Li et al. compare landscapes by eye; this number lets a table do it). Needs the origin on the grid."""
    centre = centre_loss(rows)
    return max(r["loss"] - centre for r in rows if math.isfinite(r["loss"]))


def plot_slice(rows: Sequence[dict[str, float]], path: Path, title: str = "",
               value: str = "loss") -> Path:
    """The slice as a PNG: a curve of ``value`` (1-D) or its contour plot (2-D). Matplotlib's object API, no
    pyplot state (safe in threads and on headless machines)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4), dpi=100)
    ax = fig.add_subplot()
    if "x2" not in rows[0]:
        ax.plot([r["x1"] for r in rows], [r[value] for r in rows], marker=".")
        ax.set_xlabel("step along direction 1")
        ax.set_ylabel(value)
    else:
        xs = sorted({r["x1"] for r in rows})
        ys = sorted({r["x2"] for r in rows})
        z = torch.full((len(ys), len(xs)), float("nan"), dtype=torch.float64)
        for r in rows:
            z[ys.index(r["x2"]), xs.index(r["x1"])] = r[value]
        finite = z[torch.isfinite(z)]
        levels = torch.linspace(float(finite.min()), float(finite.max()), 16).tolist() if len(finite) else 16
        cs = ax.contour(xs, ys, z.numpy(), levels=levels)
        ax.clabel(cs, inline=True, fontsize=7, fmt="%.2f")
        ax.set_xlabel("direction 1")
        ax.set_ylabel("direction 2")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def write_csv(rows: Sequence[dict[str, float]], path: Path, extra: Optional[dict[str, object]] = None) -> Path:
    """The slice's values, one row per grid point (``extra`` columns repeated on every row)."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list((extra or {}).keys()) + list(rows[0].keys())
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({**(extra or {}), **r})
    return path
