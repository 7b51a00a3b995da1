"""Size and cost of a network, for any space: parameters and multiply-adds.

Multiply-adds are counted with PyTorch's own ``FlopCounterMode`` (convolutions and matmuls; MACs = FLOPs / 2) for
one image in eval mode, so an auxiliary head (training only) is not counted."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, include_auxiliary: bool = False) -> int:
    """Parameter count; by default without the auxiliary head, as the official DARTS code logs "param size"."""
    return sum(p.numel() for name, p in model.named_parameters()
               if include_auxiliary or not name.startswith("auxiliary_head"))


def count_macs(model: nn.Module, image_size: int, in_channels: int = 3) -> int:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, in_channels, image_size, image_size))
    return counter.get_total_flops() // 2
