"""``python -m lightning_nas describe --genotype G``: size, cost and shape of an evaluation network.

Multiply-adds are counted with PyTorch's own ``FlopCounterMode`` (convolutions and matmuls; MACs =
FLOPs / 2) for one image in eval mode, so the auxiliary head is not counted.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

from lightning_nas.errors import LightningNASError
from lightning_nas.search_spaces.darts.cell_shape import cell_depth, cell_width
from lightning_nas.search_spaces.darts.eval_network import NetworkCIFAR, NetworkImageNet, count_parameters
from lightning_nas.search_spaces.darts.genotype import Genotype, load_genotype

DATASETS = {"cifar10": (10, 32), "cifar100": (100, 32), "imagenet": (1000, 224)}


def count_macs(model: torch.nn.Module, image_size: int, in_channels: int = 3) -> int:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, in_channels, image_size, image_size))
    return counter.get_total_flops() // 2


def describe(genotype: Genotype, dataset: str = "cifar10") -> dict[str, int]:
    num_classes, size = DATASETS[dataset]
    net = NetworkImageNet(genotype, num_classes=num_classes) if dataset == "imagenet" else \
        NetworkCIFAR(genotype, num_classes=num_classes)
    return {
        "params": count_parameters(net),
        "params_with_aux": count_parameters(net, include_auxiliary=True),
        "macs": count_macs(net, size),
        "normal_depth": cell_depth(genotype.normal, genotype.normal_concat),
        "normal_width": cell_width(genotype.normal),
        "reduce_depth": cell_depth(genotype.reduce, genotype.reduce_concat),
        "reduce_width": cell_width(genotype.reduce),
    }


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightning_nas describe",
                                     description="Parameters, multiply-adds and cell depth/width of a genotype's "
                                                 "evaluation network (DARTS protocol: CIFAR C=36 x 20 cells, "
                                                 "ImageNet C=48 x 14 cells).")
    parser.add_argument("--genotype", required=True,
                        help="published name (e.g. DARTS_V2), genotype.json, run directory, or DARTS text")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="cifar10")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        g = load_genotype(args.genotype)
        info = describe(g, args.dataset)
    except LightningNASError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"genotype: {g.to_text()}")
    if g.source:
        print(f"source:   {g.source}")
    print(f"dataset:  {args.dataset}")
    print(f"params:   {info['params']:,} ({info['params'] / 1e6:.2f}M; {info['params_with_aux']:,} with the "
          "auxiliary head)")
    print(f"MACs:     {info['macs']:,} ({info['macs'] / 1e6:.1f}M multiply-adds per image)")
    print(f"normal cell: depth {info['normal_depth']}, width {info['normal_width']}c")
    print(f"reduce cell: depth {info['reduce_depth']}, width {info['reduce_width']}c")
    return 0
