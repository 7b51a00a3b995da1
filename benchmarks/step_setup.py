"""What the per-step benchmark scripts share: the options that size the two supernets and the device, one random
batch, and builders of the NAS-Bench-201 and DARTS supernets named for the tables."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from lightning_nas.search_spaces.base import Supernet
from lightning_nas.search_spaces.darts import DartsSupernet
from lightning_nas.search_spaces.nb201 import NB201Supernet


def add_space_arguments(parser: argparse.ArgumentParser, steps: int, nb201_channels: int) -> None:
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--nb201-channels", type=int, default=nb201_channels)
    parser.add_argument("--nb201-cells", type=int, default=1)
    parser.add_argument("--darts-channels", type=int, default=8)
    parser.add_argument("--darts-layers", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def random_batch(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded CIFAR-sized batch on ``args.device``."""
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, device=args.device)
    return x, torch.randint(0, 10, (args.batch,), device=args.device)


def space_builders(args: argparse.Namespace) -> dict[str, Callable[[], Supernet]]:
    return {f"NAS-Bench-201 (C={args.nb201_channels}, N={args.nb201_cells})":
            lambda: NB201Supernet(10, 3, channels=args.nb201_channels, cells_per_stage=args.nb201_cells),
            f"DARTS (C={args.darts_channels}, {args.darts_layers} cells)":
            lambda: DartsSupernet(10, 3, channels=args.darts_channels, layers=args.darts_layers)}
