"""``python -m lightning_nas describe --genotype G`` (DARTS space) or ``describe --space nb201 --arch A``:
size, cost and shape of an evaluation network; on NAS-Bench-201 also the benchmark's accuracies.

Multiply-adds are counted with PyTorch's own ``FlopCounterMode`` (convolutions and matmuls; MACs =
FLOPs / 2) for one image in eval mode, so the auxiliary head is not counted. Cell width and depth follow the
rule that reproduces Shu et al.'s published values (``search_spaces/darts/cell_shape.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

from lightning_nas.errors import ConfigError, LightningNASError
from lightning_nas.search_spaces.darts.cell_shape import cell_depth, cell_width
from lightning_nas.search_spaces.darts.eval_network import NetworkCIFAR, NetworkImageNet, count_parameters
from lightning_nas.search_spaces.darts.genotype import Genotype
from lightning_nas.search_spaces.darts.resolve import load_genotype

DATASETS = {"cifar10": (10, 32), "cifar100": (100, 32), "imagenet": (1000, 224)}
NB201_DATASETS = {"cifar10": (10, 32), "cifar100": (100, 32), "imagenet16_120": (120, 16)}


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
        "normal_depth": cell_depth(genotype.normal),
        "normal_width": cell_width(genotype.normal),
        "reduce_depth": cell_depth(genotype.reduce),
        "reduce_width": cell_width(genotype.reduce),
    }


def describe_nb201(arch_spec: str, dataset: str = "cifar10", benchmark_path: Optional[str] = None) -> dict:
    """The benchmark network's size and cost on ``dataset`` and the benchmark's accuracies of the cell."""
    from lightning_nas.search_spaces.nb201 import NB201Network, count_parameters, load_arch
    from lightning_nas.tabular.nb201 import canonical_dataset, load_benchmark

    dataset = canonical_dataset(dataset)
    bench = load_benchmark(benchmark_path)
    arch = bench.arch(int(arch_spec)) if str(arch_spec).strip().isdigit() else load_arch(arch_spec)
    num_classes, size = NB201_DATASETS[dataset]
    net = NB201Network(arch, num_classes=num_classes)
    return {"dataset": dataset, "params": count_parameters(net), "macs": count_macs(net, size),
            "benchmark": bench.query(arch), "benchmark_source": bench.source}


def _main_nb201(args: argparse.Namespace) -> int:
    dataset = args.dataset or "cifar10"
    if args.arch is None:
        raise ConfigError("--space nb201 needs --arch: an arch string, a benchmark index, a genotype.json or "
                          "a run directory")
    info = describe_nb201(args.arch, dataset, args.benchmark_path)
    if args.json:
        print(json.dumps(info))
        return 0
    b = info["benchmark"]
    print(f"arch:     {b['arch']}")
    print(f"index:    {b['index']}")
    print(f"dataset:  {dataset}")
    print(f"params:   {info['params']:,} ({info['params'] / 1e6:.6f}M, the benchmark's MB)")
    print(f"MACs:     {info['macs']:,} ({info['macs'] / 1e6:.2f}M multiply-adds per image)")
    for key, value in b.items():
        if key not in ("index", "arch"):
            print(f"{key + ':':<22}{value:.2f} %")
    print(f"source:   {info['benchmark_source']}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightning_nas describe",
                                     description="Parameters, multiply-adds and cell shape of an architecture's "
                                                 "evaluation network. DARTS space (--genotype; DARTS protocol: "
                                                 "CIFAR C=36 x 20 cells, ImageNet C=48 x 14 cells) or "
                                                 "NAS-Bench-201 (--space nb201 --arch; the benchmark's network and "
                                                 "its trained accuracies).")
    parser.add_argument("--space", choices=["darts", "nb201"], default="darts")
    parser.add_argument("--genotype", help="DARTS space: published name (e.g. DARTS_V2), genotype.json, run "
                                           "directory, or DARTS text")
    parser.add_argument("--arch", help="NAS-Bench-201: arch string, benchmark index, genotype.json or run directory")
    parser.add_argument("--dataset", default=None,
                        help="darts: cifar10, cifar100, imagenet; nb201: cifar10, cifar100, imagenet16_120 "
                             "(or ImageNet16-120) (default cifar10)")
    parser.add_argument("--benchmark-path", default=None,
                        help="nb201: official NAS-Bench-201 / NATS-Bench files (default: the shipped table)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        return _main_nb201(args) if args.space == "nb201" else _main_darts(args)
    except LightningNASError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _main_darts(args: argparse.Namespace) -> int:
    args.dataset = args.dataset or "cifar10"
    if args.genotype is None:
        raise ConfigError("describe needs --genotype (DARTS space) or --space nb201 --arch A")
    if args.dataset not in DATASETS:
        raise ConfigError(f"--dataset for the DARTS space must be one of {sorted(DATASETS)}")
    g = load_genotype(args.genotype)
    info = describe(g, args.dataset)
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
    print(f"normal cell: depth {info['normal_depth']}, width {info['normal_width']:g}c (Shu et al., ICLR 2020)")
    print(f"reduce cell: depth {info['reduce_depth']}, width {info['reduce_width']:g}c")
    return 0
