"""Operations of the NAS-Bench-201 cell (Dong & Yang, ICLR 2020, Sec. 2; AutoDL ``cell_operations.py``).

``PRIMITIVES`` keeps the benchmark's order (none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3): it is
the order of the benchmark's op encoding and decides argmax ties. As in the benchmark, a conv followed by a BN
without affine parameters carries a bias (``bias = not affine``); the evaluation network uses affine BN, so
its convs have none.
"""

from __future__ import annotations

import torch
from torch import nn

PRIMITIVES: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True,
                 track_running_stats: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=not affine),
            nn.BatchNorm2d(c_out, affine=affine, track_running_stats=track_running_stats),
        )


class AvgPool(nn.Module):
    """3x3 average pooling (padding not counted); a 1x1 ReLUConvBN first when the channel count changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        self.preprocess = None if c_in == c_out else ReLUConvBN(c_in, c_out, 1, 1, 0, affine, track_running_stats)
        self.pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x if self.preprocess is None else self.preprocess(x))


class Zero(nn.Module):
    """The ``none`` op: zeros of the output shape (kept in the graph as ``x * 0``, as the benchmark does)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.c_out, self.stride = c_out, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if x.shape[1] == self.c_out:
            return x.mul(0.0)
        return x.new_zeros(x.shape[0], self.c_out, x.shape[2], x.shape[3])


class FactorizedReduce(nn.Module):
    """Skip connection across a stride or channel change: two offset 1x1 convs (stride 2) or one (stride 1)."""

    def __init__(self, c_in: int, c_out: int, stride: int, affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.stride = stride
        if stride == 2:
            half = c_out // 2
            self.convs = nn.ModuleList([nn.Conv2d(c_in, half, 1, stride=2, bias=not affine),
                                        nn.Conv2d(c_in, c_out - half, 1, stride=2, bias=not affine)])
            self.pad = nn.ConstantPad2d((0, 1, 0, 1), 0)
        else:
            self.convs = nn.ModuleList([nn.Conv2d(c_in, c_out, 1, stride=1, bias=not affine)])
        self.bn = nn.BatchNorm2d(c_out, affine=affine, track_running_stats=track_running_stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        if self.stride == 2:
            y = self.pad(x)
            out = torch.cat([self.convs[0](x), self.convs[1](y[:, :, 1:, 1:])], dim=1)
        else:
            out = self.convs[0](x)
        return self.bn(out)


def make_op(name: str, c_in: int, c_out: int, stride: int, affine: bool = True,
            track_running_stats: bool = True) -> nn.Module:
    """Build one candidate operation of the cell."""
    if name == "none":
        return Zero(c_in, c_out, stride)
    if name == "skip_connect":
        if stride == 1 and c_in == c_out:
            return nn.Identity()
        return FactorizedReduce(c_in, c_out, stride, affine, track_running_stats)
    if name == "nor_conv_1x1":
        return ReLUConvBN(c_in, c_out, 1, stride, 0, affine, track_running_stats)
    if name == "nor_conv_3x3":
        return ReLUConvBN(c_in, c_out, 3, stride, 1, affine, track_running_stats)
    if name == "avg_pool_3x3":
        return AvgPool(c_in, c_out, stride, affine, track_running_stats)
    raise KeyError(name)


class ResidualReduction(nn.Module):
    """The benchmark's reduction block between stages (``ResNetBasicblock`` with stride 2): two 3x3
    ReLUConvBN (the first strided) plus a shortcut of 2x2 average pooling and a 1x1 conv."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1, affine, track_running_stats)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1, affine, track_running_stats)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))
