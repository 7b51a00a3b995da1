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

from step_setup import add_space_arguments, random_batch, space_builders  # noqa: E402


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
    add_space_arguments(parser, steps=5, nb201_channels=16)
    args = parser.parse_args()
    x, y = random_batch(args)
    nets = {name: build() for name, build in space_builders(args).items()}
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
