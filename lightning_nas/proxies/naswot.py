"""NASWOT, the v2 score of "Neural Architecture Search without Training" (Mellor et al., ICML 2021, Sec. 3;
official code BayesWatch/nas-without-training, ``hooklogdet``).

Each ReLU's input is binarised per sample (x > 0, flattened) into a code c; the kernel K = sum over ReLUs of
c c^T + (1 - c)(1 - c)^T (the number of units minus the Hamming distance between two samples' codes); the
score is log|det K|. Only ReLUs on the backward path count: a forward and a backward pass of ones on the output
mark them, then a second forward of the same batch accumulates K. The network is scored as it is (untrained,
in train mode so BN uses batch statistics); its parameters, gradients, BN statistics and training flag are left
as they were and no hook stays behind. ReLUs are ``nn.ReLU`` modules; functional relu calls are not seen.
The v1 score (Jacobian covariance) is a different method and is not this one.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from lightning_nas.proxies.registry import register_proxy

_EXACT_FP32 = 2**24  # integer sums below this are exact in float32


def _code_gram(x: torch.Tensor) -> torch.Tensor:
    """c c^T + (1 - c)(1 - c)^T for the codes c = (x > 0) of one layer, computed with one matmul as
    2 c c^T - r 1^T - 1 r^T + n (r: ones per sample, n: units), exact in integers."""
    c = (x.detach().flatten(1) > 0)
    n = c.shape[1]
    cf = c.to(torch.float32 if n < _EXACT_FP32 else torch.float64)
    r = cf.sum(1, dtype=torch.float64)
    gram = (cf @ cf.T).to(torch.float64)
    return 2 * gram - r[:, None] - r[None, :] + n


def naswot_kernel(network: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The NASWOT kernel K (batch x batch, float64) and the number of counted units per sample."""
    relus = [m for m in network.modules() if isinstance(m, nn.ReLU)]
    on_path: set[int] = set()
    buffers = {k: v.detach().clone() for k, v in network.named_buffers()}
    grads = {k: None if p.grad is None else p.grad.detach().clone() for k, p in network.named_parameters()}
    was_training = network.training
    handles: list[torch.utils.hooks.RemovableHandle] = []
    state = {"K": None, "units": 0}

    def mark(pos: int):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            if out.requires_grad:
                out.register_hook(lambda g: on_path.add(pos))
        return hook

    def accumulate(pos: int):
        def hook(module: nn.Module, args: tuple) -> None:
            if pos in on_path:
                gram = _code_gram(args[0])
                state["K"] = gram if state["K"] is None else state["K"] + gram
                state["units"] += args[0][0].numel()
        return hook

    try:
        network.train()
        x = inputs.detach().clone().requires_grad_(True)
        handles = [m.register_forward_hook(mark(i)) for i, m in enumerate(relus)]
        with torch.enable_grad():
            out = network(x)
            out = out[0] if isinstance(out, (tuple, list)) else out
            torch.autograd.grad(out, x, grad_outputs=torch.ones_like(out), allow_unused=True)
        for h in handles:
            h.remove()
        handles = [m.register_forward_pre_hook(accumulate(i)) for i, m in enumerate(relus)]
        with torch.no_grad():
            network(inputs)
    finally:
        for h in handles:
            h.remove()
        network.train(was_training)
        with torch.no_grad():
            for k, v in network.named_buffers():
                v.copy_(buffers[k])
            for k, p in network.named_parameters():
                p.grad = grads[k]
    n = inputs.shape[0]
    K = state["K"] if state["K"] is not None else torch.zeros(n, n, dtype=torch.float64, device=inputs.device)
    return K, int(state["units"])


def naswot_score(network: nn.Module, inputs: torch.Tensor) -> float:
    """The NASWOT (v2) score: log|det K| of ``naswot_kernel`` (-inf when K is singular)."""
    K, _ = naswot_kernel(network, inputs)
    return float(torch.linalg.slogdet(K.cpu())[1])


@register_proxy("naswot")
def _naswot(network: nn.Module, inputs: torch.Tensor, targets: Optional[torch.Tensor] = None) -> float:
    return naswot_score(network, inputs)
