"""DI-NAS's orthogonal updates: cost of a single-path weight step (forward, backward, projection, SGD, memory
update) with ``OWMProjector`` and ``GradientSpaceProjector`` against the plain step, same supernet, batch, children
and optimizer, measured in this process; and the projector state each holds. Reported as ratios to the plain step.

    OMP_NUM_THREADS=1 python benchmarks/projection_step.py            # CPU-sized supernets
    python benchmarks/projection_step.py --nb201-channels 16 --nb201-cells 5 --darts-channels 16 --darts-layers 8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from step_setup import add_space_arguments, random_batch, space_builders  # noqa: E402

from lightning_nas.methods.single_path.projection import GradientProjector, GradientSpaceProjector, OWMProjector  # noqa: E402


def seconds_per_step(net: torch.nn.Module, projector: Optional[GradientProjector], x: torch.Tensor,
                     y: torch.Tensor, steps: int) -> float:
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    if projector is not None:
        projector.attach([net])
        projector.to(x.device)

    def step(i: int) -> None:
        opt.zero_grad(set_to_none=True)
        path = net.random_path(g)
        if projector is None:
            F.cross_entropy(net(x, path=path), y).backward()
            opt.step()
            return
        with projector.capture():
            logits = net(x, path=path)
        F.cross_entropy(logits, y).backward()
        projector.project(i / steps)
        opt.step()
        projector.commit()

    step(0)  # warm-up
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    if x.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_space_arguments(parser, steps=10, nb201_channels=8)
    parser.add_argument("--memory", type=int, default=10, help="GradientSpaceProjector directions per tensor")
    args = parser.parse_args()
    x, y = random_batch(args)
    spaces = space_builders(args)
    print(f"device {args.device}, batch {args.batch}, {torch.get_num_threads()} threads, {args.steps} steps")
    print("| space | update | s/step | x plain | projector state MB | weights MB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, build in spaces.items():
        plain = None
        for update, projector in (("plain", None), ("owm", OWMProjector()),
                                  (f"gradient (M={args.memory})", GradientSpaceProjector(memory=args.memory))):
            torch.manual_seed(0)
            net = build().to(args.device).train()
            t = seconds_per_step(net, projector, x, y, args.steps)
            plain = plain or t
            state = 0.0 if projector is None else projector.state_bytes() / 2**20
            weights = sum(p.numel() * p.element_size() for p in net.weight_parameters()) / 2**20
            print(f"| {name} | {update} | {t:.4f} | {t / plain:.2f} | {state:.1f} | {weights:.1f} |")


if __name__ == "__main__":
    main()
