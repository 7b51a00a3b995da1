"""Widening a mixed op's candidate ops for DrNAS's progressive search (Chen et al., ICLR 2021; official
xiangning-chen/DrNAS ``net2wider.py``, ``DARTS-space/operations.py`` ``wider``): when partial channels go from K1 to
K2 < K1, each op grows from C/K1 to C/K2 channels by copying randomly chosen existing channels (net2net's widening
without rescaling, as the official code): a conv's new input channels copy the weights of random old ones, its new
output channels copy random old filters, and the BN that follows copies those channels' statistics; a depthwise conv
and the BN after it follow the channels of their input. Parameters are widened in place (the same ``Parameter``
objects, so the optimizer keeps them) and every change is logged as ``(parameter, dim, index)`` with
``new = old.index_select(dim, index)``, which ``remap_momentum`` applies to the SGD momentum buffers (the official
``configure_optimizer``). The random channels come from a seeded generator (the official code draws from the global
RNG).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from lightning_nas.search_spaces.darts.ops import FactorizedReduce

WideningLog = list[tuple[torch.Tensor, int, torch.Tensor]]


def _grow(old: int, new: int, g: torch.Generator) -> torch.Tensor:
    """Full index of a widening: the old channels, then ``new - old`` random copies of them."""
    return torch.cat([torch.arange(old), torch.randint(old, (new - old,), generator=g)])


def _select(t: torch.Tensor, dim: int, index: torch.Tensor, log: Optional[WideningLog]) -> None:
    """``t.data = t.index_select(dim, index)`` in place (logged for parameters)."""
    t.data = t.data.index_select(dim, index.to(t.device))
    if log is not None and isinstance(t, nn.Parameter):
        log.append((t, dim, index))


def _widen_bn(bn: nn.BatchNorm2d, index: torch.Tensor, log: WideningLog) -> None:
    for name in ("running_mean", "running_var"):
        buf = getattr(bn, name)
        if buf is not None:
            setattr(bn, name, buf.index_select(0, index.to(buf.device)))
    for p in (bn.weight, bn.bias):
        if p is not None:
            _select(p, 0, index, log)
    bn.num_features = len(index)


def _visit(m: nn.Module, index: Optional[torch.Tensor], new: int, g: torch.Generator,
           log: WideningLog) -> Optional[torch.Tensor]:
    """Widen ``m`` whose input channels follow ``index`` (None: fresh random copies); returns its output's index."""
    if isinstance(m, FactorizedReduce):
        half_old = m.conv_1.out_channels
        index = index if index is not None else _grow(m.conv_1.in_channels, new, g)
        outs = []
        for conv in (m.conv_1, m.conv_2):
            _select(conv.weight, 1, index, log)
            out = _grow(half_old, new // 2, g)
            _select(conv.weight, 0, out, log)
            conv.in_channels, conv.out_channels = new, new // 2
            outs.append(out)
        full = torch.cat([outs[0], half_old + outs[1]])  # the BN sees cat(conv_1, conv_2)
        _widen_bn(m.bn, full, log)
        return full
    if isinstance(m, nn.Conv2d):
        if m.groups > 1:  # depthwise: each filter follows its input channel
            index = index if index is not None else _grow(m.in_channels, new, g)
            _select(m.weight, 0, index, log)
            if m.bias is not None:
                _select(m.bias, 0, index, log)
            m.in_channels = m.out_channels = m.groups = new
            return index
        index = index if index is not None else _grow(m.in_channels, new, g)
        _select(m.weight, 1, index, log)
        out = _grow(m.out_channels, new, g)
        _select(m.weight, 0, out, log)
        if m.bias is not None:  # NAS-Bench-201's convs without affine BN carry one
            _select(m.bias, 0, out, log)
        m.in_channels, m.out_channels = new, new
        return out
    if isinstance(m, nn.BatchNorm2d):
        index = index if index is not None else _grow(m.num_features, new, g)
        _widen_bn(m, index, log)
        return index
    for child in m.children():  # containers (and ReLU, pools, identities: channels pass through)
        index = _visit(child, index, new, g, log)
    return index


def widen_op(op: nn.Module, new_channels: int, g: torch.Generator, log: WideningLog) -> None:
    """Widen one candidate op to ``new_channels`` (its input is a new, wider slice: fresh random copies)."""
    _visit(op, None, new_channels, g, log)


def remap_momentum(opt: torch.optim.Optimizer, log: WideningLog) -> None:
    """Apply the logged widenings to the optimizer's momentum buffers (and drop state it cannot remap)."""
    for p, dim, index in log:
        state = opt.state.get(p)
        if not state:
            continue
        buf = state.get("momentum_buffer")
        if buf is not None:
            state["momentum_buffer"] = buf.index_select(dim, index.to(buf.device))
