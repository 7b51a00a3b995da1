"""``python -m lightning_nas describe --genotype G`` (DARTS space) or ``describe --space nb201 --arch A``: size,
cost and shape of a cell's evaluation network, as its space describes it (``SearchSpace.describe``); where the
space has a benchmark, also the benchmark's accuracies.

DARTS: the protocol's network (CIFAR C=36 x 20 cells, ImageNet C=48 x 14 cells), parameters with and without the
auxiliary head, multiply-adds (``search_spaces.cost``) and the cells' width and depth (Shu et al., ICLR 2020).
NAS-Bench-201: the benchmark's network (C=16, N=5) and the table's accuracies.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional

from lightning_nas.errors import ConfigError, LightningNASError
from lightning_nas.search_spaces.space import get_space, space_names


def _print(genotype: Any, dataset: str, info: dict[str, Any]) -> None:
    """The human-readable form: what every space reports, then what only some do."""
    bench = info.get("benchmark")
    if bench is not None:
        print(f"arch:     {bench['arch']}")
        print(f"index:    {bench['index']}")
    else:
        print(f"genotype: {genotype.to_text()}")
        if getattr(genotype, "source", ""):
            print(f"source:   {genotype.source}")
    print(f"dataset:  {dataset}")
    params = info["params"]
    if "params_with_aux" in info:
        print(f"params:   {params:,} ({params / 1e6:.2f}M; {info['params_with_aux']:,} with the auxiliary head)")
    else:
        print(f"params:   {params:,} ({params / 1e6:.6f}M, the benchmark's MB)")
    print(f"MACs:     {info['macs']:,} ({info['macs'] / 1e6:.2f}M multiply-adds per image)")
    for cell in ("normal", "reduce"):
        if f"{cell}_depth" in info:
            print(f"{cell} cell: depth {info[f'{cell}_depth']}, width {info[f'{cell}_width']:g}c (Shu et al., "
                  "ICLR 2020)")
    if bench is not None:
        for key, value in bench.items():
            if key not in ("index", "arch"):
                print(f"{key + ':':<22}{value:.2f} %")
        print(f"source:   {info['benchmark_source']}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightning_nas describe",
                                     description="Parameters, multiply-adds and cell shape of an architecture's "
                                                 "evaluation network. DARTS space (--genotype; DARTS protocol: "
                                                 "CIFAR C=36 x 20 cells, ImageNet C=48 x 14 cells) or "
                                                 "NAS-Bench-201 (--space nb201 --arch; the benchmark's network and "
                                                 "its trained accuracies).")
    parser.add_argument("--space", choices=space_names(), default="darts")
    parser.add_argument("--genotype", help="the cell in the space's forms: DARTS: published name (e.g. DARTS_V2), "
                                           "genotype.json, run directory, or DARTS text")
    parser.add_argument("--arch", help="the same as --genotype; NAS-Bench-201: arch string, benchmark index, "
                                       "genotype.json or run directory")
    parser.add_argument("--dataset", default=None,
                        help="darts: cifar10, cifar100, imagenet; nb201: cifar10, cifar100, imagenet16_120 "
                             "(or ImageNet16-120) (default cifar10)")
    parser.add_argument("--benchmark-path", default=None,
                        help="nb201: official NAS-Bench-201 / NATS-Bench files (default: the shipped table)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        spec = args.genotype if args.genotype is not None else args.arch
        if spec is None:
            raise ConfigError(f"describe needs the cell: --genotype G (or --arch A) for the {args.space} space")
        space = get_space(args.space)
        genotype = space.parse(spec)
        dataset = args.dataset or "cifar10"
        info = space.describe(genotype, dataset, args.benchmark_path)
        if args.json:
            print(json.dumps(info))
        else:
            _print(genotype, info.get("dataset", dataset), info)
        return 0
    except LightningNASError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
