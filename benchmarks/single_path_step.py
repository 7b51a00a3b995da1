"""Sampling mode vs continuous relaxation: seconds per weight step (forward, backward, SGD) of a single-path
child (``forward(x, path=...)``, one op per edge) against the softmax(alpha)-weighted sum of every op on the same
supernet, batch and optimizer, measured in this process. Reported as the ratio mixed / single path.

    python benchmarks/single_path_step.py                       # both spaces, CPU-sized supernets
    python benchmarks/single_path_step.py --nb201-channels 16 --nb201-cells 5 --darts-channels 16 --darts-layers 8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lightning_nas.search_spaces.darts import DartsSupernet  # noqa: E402
from lightning_nas.search_spaces.nb201 import NB201Supernet  # noqa: E402


def seconds_per_step(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, sampled: bool, steps: int) -> float:
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if sampled:
            logits = net(x, path=net.random_path(g))
        else:
            logits = net(x, mixing={k: v.detach() for k, v in net.mixing_weights().items()})
        F.cross_entropy(logits, y).backward()
        opt.step()

    step()  # warm-up
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--nb201-channels", type=int, default=16)
    parser.add_argument("--nb201-cells", type=int, default=1)
    parser.add_argument("--darts-channels", type=int, default=8)
    parser.add_argument("--darts-layers", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, device=args.device)
    y = torch.randint(0, 10, (args.batch,), device=args.device)
    nets = {f"NAS-Bench-201 (C={args.nb201_channels}, N={args.nb201_cells})":
            NB201Supernet(10, 3, channels=args.nb201_channels, cells_per_stage=args.nb201_cells),
            f"DARTS (C={args.darts_channels}, {args.darts_layers} cells)":
            DartsSupernet(10, 3, channels=args.darts_channels, layers=args.darts_layers)}
    print(f"device {args.device}, batch {args.batch}, {torch.get_num_threads()} threads")
    print("| space | single path s/step | weighted sum s/step | weighted sum / single path |")
    print("| --- | --- | --- | --- |")
    for name, net in nets.items():
        net.to(args.device).train()
        single = seconds_per_step(net, x, y, True, args.steps)
        mixed = seconds_per_step(net, x, y, False, args.steps)
        print(f"| {name} | {single:.4f} | {mixed:.4f} | {mixed / single:.2f} |")


if __name__ == "__main__":
    main()
