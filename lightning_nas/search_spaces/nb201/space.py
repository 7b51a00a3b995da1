"""The NAS-Bench-201 space behind the ``SearchSpace`` interface (Dong & Yang, ICLR 2020): 6 edges, 5 ops, 15,625
cells, the benchmark's macro network (C=16, N=5 cells per stage) and its table of trained accuracies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import nn

from lightning_nas.errors import GenotypeError
from lightning_nas.search_spaces.nb201.arch import EDGES, NB201Arch, load_arch
from lightning_nas.search_spaces.nb201.network import NB201Network
from lightning_nas.search_spaces.nb201.ops import PRIMITIVES
from lightning_nas.search_spaces.space import CellGraph, Path, SearchSpace, register_space, uniform_index

#: (classes, image size) of the benchmark's datasets
DATASETS = {"cifar10": (10, 32), "cifar100": (100, 32), "imagenet16_120": (120, 16)}


@register_space("nb201")
class NB201Space(SearchSpace):
    """NAS-Bench-201. A child is ``{"cell": 6 op indices}`` (every edge present); ``layers`` counts cells per
    stage."""

    label = "NB201"
    cell_types = ("cell",)
    primitives = PRIMITIVES
    network_defaults = search_network_defaults = (16, 5)
    min_layers = 1

    def parse(self, spec: Any) -> NB201Arch:
        """An arch string, a benchmark index, a genotype.json or a run directory."""
        return load_arch(spec)

    def from_dict(self, data: dict[str, Any]) -> NB201Arch:
        return NB201Arch.from_dict(data)

    def conv_ops(self, genotype: NB201Arch) -> dict[str, int]:
        return {"cell": genotype.num_conv_ops()}

    @property
    def size(self) -> int:
        return len(PRIMITIVES) ** len(EDGES)

    # ---- children ------------------------------------------------------------------------------------
    def random_path(self, generator: torch.Generator, primitives: Optional[Sequence[str]] = None) -> Path:
        ops = torch.randint(len(primitives or self.primitives), (len(EDGES),), generator=generator)
        return {"cell": tuple(int(o) for o in ops)}

    def path_genotype(self, path: Path, primitives: Optional[Sequence[str]] = None) -> NB201Arch:
        primitives = primitives or self.primitives
        return NB201Arch(tuple(primitives[o] for o in path["cell"]))

    def genotype_path(self, genotype: NB201Arch, primitives: Optional[Sequence[str]] = None) -> Path:
        primitives = tuple(primitives or self.primitives)
        missing = [op for op in genotype.ops if op not in primitives]
        if missing:
            raise GenotypeError(f"cell {genotype} uses {sorted(set(missing))}, which this supernet's primitives "
                                f"{list(primitives)} lack")
        return {"cell": tuple(primitives.index(op) for op in genotype.ops)}

    def mutate_path(self, path: Path, generator: torch.Generator,
                    primitives: Optional[Sequence[str]] = None) -> Path:
        """The benchmark's REA mutation: one edge chosen uniformly gets another op chosen uniformly."""
        ops = list(path["cell"])
        edge = uniform_index(len(ops), generator)
        others = [i for i in range(len(primitives or self.primitives)) if i != ops[edge]]
        ops[edge] = others[uniform_index(len(others), generator)]
        return {"cell": tuple(ops)}

    # ---- networks ------------------------------------------------------------------------------------
    def network(self, genotype: NB201Arch, num_classes: int, in_channels: int = 3, channels: Optional[int] = None,
                layers: Optional[int] = None) -> nn.Module:
        c, n = self.network_defaults
        return NB201Network(genotype, num_classes, in_channels, channels or c, layers or n)

    def stage_modules(self, network: nn.Module) -> list[nn.Module]:
        """The last cell of each stage (before each residual reduction, and the last)."""
        cells = network.layers
        n = (len(cells) - 2) // 3
        return [cells[i] for i in (n - 1, 2 * n, 3 * n + 1)]

    def describe(self, genotype: NB201Arch, dataset: str, benchmark_path: Optional[str] = None) -> dict[str, Any]:
        """The benchmark network's parameters and multiply-adds on ``dataset`` and the table's accuracies."""
        from lightning_nas.search_spaces.cost import count_macs, count_parameters
        from lightning_nas.tabular.nb201 import canonical_dataset

        dataset = canonical_dataset(dataset)
        bench = self.benchmark(benchmark_path)
        num_classes, size = DATASETS[dataset]
        net = self.network(genotype, num_classes)
        return {"dataset": dataset, "params": count_parameters(net), "macs": count_macs(net, size),
                "benchmark": bench.query(genotype), "benchmark_source": bench.source}

    def cell_graphs(self, record: dict[str, Any]) -> list[CellGraph]:
        if "ops" not in record:
            return []
        pairs = [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]  # the arch string's edge order
        edges = [(s, d, op) for (s, d), op in zip(pairs, record["ops"]) if op != "none"]
        return [CellGraph("NAS-Bench-201 cell", ["in", "1", "2", "out"], edges)]

    def benchmark(self, path: Optional[str] = None) -> Any:
        from lightning_nas.tabular.nb201 import load_benchmark

        return load_benchmark(path)

    def published_rows(self) -> list[Any]:
        from lightning_nas.tabular.published import published_nb201

        return published_nb201()
