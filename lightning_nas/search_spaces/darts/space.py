"""The DARTS CNN space behind the ``SearchSpace`` interface (Liu et al., ICLR 2019): a normal and a reduction
cell, each of ``steps`` (4) intermediate nodes with two inputs among the earlier nodes, each input one of the 7
non-``none`` ops; the evaluation network is ``NetworkCIFAR`` (no auxiliary head when built from here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import nn

from lightning_nas.errors import ConfigError, GenotypeError
from lightning_nas.search_spaces.darts.cell_shape import cell_depth, cell_width
from lightning_nas.search_spaces.darts.eval_network import NetworkCIFAR, NetworkImageNet
from lightning_nas.search_spaces.darts.genotype import Genotype
from lightning_nas.search_spaces.darts.ops import PRIMITIVES
from lightning_nas.search_spaces.darts.resolve import load_genotype
from lightning_nas.search_spaces.space import CellGraph, Path, SearchSpace, register_space, uniform_index

CELLS = ("normal", "reduce")
CONV_OPS = ("sep_conv", "dil_conv", "conv_7x1")
#: (classes, image size) of the datasets the DARTS protocol evaluates on
DATASETS = {"cifar10": (10, 32), "cifar100": (100, 32), "imagenet": (1000, 224)}


def num_edges(steps: int) -> int:
    return sum(2 + i for i in range(steps))


@register_space("darts")
class DartsSpace(SearchSpace):
    """The DARTS space with ``steps`` intermediate nodes per cell. A child is ``{"normal": ..., "reduce": ...}``,
    ``num_edges(steps)`` (14) entries each, exactly two inputs per node with an op; ``layers`` counts cells in
    all (the DARTS protocol: 20, C=36)."""

    label = "DARTS"
    cell_types = CELLS
    primitives = PRIMITIVES
    network_defaults = (36, 20)
    search_network_defaults = (16, 8)
    min_layers = 3

    def __init__(self, steps: int = 4, multiplier: int = 4):
        """``steps`` intermediate nodes per cell, the last ``multiplier`` of them concatenated as its output."""
        if steps < 1 or not 1 <= multiplier <= steps:
            raise ConfigError(f"a DARTS cell needs steps >= 1 and 1 <= multiplier <= steps, got {steps}, {multiplier}")
        self.steps, self.multiplier = steps, multiplier

    def input_choices(self) -> list[tuple[int, ...]]:
        """Nodes 1.. (0-based) have 3, 4, ... inputs and keep two (node 0 keeps both of its own)."""
        out, start = [], 2
        for node in range(1, self.steps):
            out.append(tuple(range(start, start + node + 2)))
            start += node + 2
        return out

    def __repr__(self) -> str:
        return f"DartsSpace(steps={self.steps}, multiplier={self.multiplier})"

    def parse(self, spec: Any) -> Genotype:
        """A published name (DARTS_V2, ...), a genotype.json, a run directory, or the DARTS text form."""
        return spec if isinstance(spec, Genotype) else load_genotype(str(spec))

    def from_dict(self, data: dict[str, Any]) -> Genotype:
        return Genotype.from_dict(data)

    def conv_ops(self, genotype: Genotype) -> dict[str, int]:
        """Separable, dilated and factorised convolutions per cell."""
        return {cell: sum(1 for op, _ in getattr(genotype, cell) if op.startswith(CONV_OPS)) for cell in CELLS}

    def _ops(self, primitives: Sequence[str]) -> list[int]:
        return [i for i, p in enumerate(primitives) if p != "none"]

    # ---- children ------------------------------------------------------------------------------------
    def random_path(self, generator: torch.Generator, primitives: Optional[Sequence[str]] = None) -> Path:
        """Per cell and node, two distinct inputs uniformly, each with an op other than ``none`` uniformly."""
        ops = self._ops(primitives or self.primitives)
        path = {}
        for key in CELLS:
            cell = [-1] * num_edges(self.steps)
            offset = 0
            for node in range(self.steps):
                inputs = torch.randperm(2 + node, generator=generator)[:2].tolist()
                for j in sorted(inputs):
                    cell[offset + j] = ops[uniform_index(len(ops), generator)]
                offset += 2 + node
            path[key] = tuple(cell)
        return path

    def path_genotype(self, path: Path, primitives: Optional[Sequence[str]] = None) -> Genotype:
        """The child as a genotype; every node must have exactly two input edges with an op other than none."""
        primitives = primitives or self.primitives
        genes = {}
        for key in CELLS:
            gene, offset = [], 0
            for node in range(self.steps):
                chosen = [(primitives[op], j) for j, op in enumerate(path[key][offset:offset + 2 + node]) if op >= 0]
                if len(chosen) != 2:
                    raise GenotypeError(f"node {node + 2} of the {key} cell has {len(chosen)} input edges; a DARTS "
                                        "genotype needs exactly two")
                gene.extend(chosen)
                offset += 2 + node
            genes[key] = tuple(gene)
        concat = tuple(range(2 + self.steps - self.multiplier, self.steps + 2))
        return Genotype(normal=genes["normal"], normal_concat=concat, reduce=genes["reduce"], reduce_concat=concat)

    def genotype_path(self, genotype: Genotype, primitives: Optional[Sequence[str]] = None) -> Path:
        primitives = tuple(primitives or self.primitives)
        path = {}
        for key in CELLS:
            gene = getattr(genotype, key)
            if len(gene) != 2 * self.steps:
                raise GenotypeError(f"the {key} cell has {len(gene) // 2} nodes; this space has {self.steps}")
            cell = [-1] * num_edges(self.steps)
            offset = 0
            for node in range(self.steps):
                for op, j in gene[2 * node:2 * node + 2]:
                    if op not in primitives:
                        raise GenotypeError(f"op {op!r} of the {key} cell is not among this supernet's primitives "
                                            f"{list(primitives)}")
                    if cell[offset + j] != -1:
                        raise GenotypeError(f"node {node + 2} of the {key} cell takes input {j} twice; a single-path "
                                            "child has one op per edge")
                    cell[offset + j] = primitives.index(op)
                offset += 2 + node
            path[key] = tuple(cell)
        return path

    def mutate_path(self, path: Path, generator: torch.Generator,
                    primitives: Optional[Sequence[str]] = None) -> Path:
        """One random change (NASLib's DARTS mutation): a cell type, a node and one of its two inputs uniformly;
        then, with probability 1/2 (always where the node has no other input to move to), that input's op becomes
        another non-``none`` op, else the input moves to another predecessor the node does not use, keeping its
        op."""
        ops = self._ops(primitives or self.primitives)
        key = CELLS[uniform_index(len(CELLS), generator)]
        node = uniform_index(self.steps, generator)
        offset = num_edges(node)
        cell = list(path[key])
        used = [j for j in range(2 + node) if cell[offset + j] >= 0]
        j = used[uniform_index(len(used), generator)]
        free = [k for k in range(2 + node) if cell[offset + k] < 0]
        if uniform_index(2, generator) == 0 or not free:
            others = [o for o in ops if o != cell[offset + j]]
            if others:
                cell[offset + j] = others[uniform_index(len(others), generator)]
        else:
            k = free[uniform_index(len(free), generator)]
            cell[offset + k], cell[offset + j] = cell[offset + j], -1
        return {**path, key: tuple(cell)}

    # ---- networks ------------------------------------------------------------------------------------
    def network(self, genotype: Genotype, num_classes: int, in_channels: int = 3, channels: Optional[int] = None,
                layers: Optional[int] = None) -> nn.Module:
        c, n = self.network_defaults
        return NetworkCIFAR(genotype, channels or c, num_classes, layers or n, auxiliary=False,
                            in_channels=in_channels)

    def stage_modules(self, network: nn.Module) -> list[nn.Module]:
        """The last cell before each reduction cell, and the last cell."""
        cells = network.cells
        k = len(cells)
        return [cells[i] for i in (k // 3 - 1, 2 * k // 3 - 1, k - 1)]

    def describe(self, genotype: Genotype, dataset: str, benchmark_path: Optional[str] = None) -> dict[str, Any]:
        """The DARTS protocol's evaluation network (CIFAR: C=36 x 20 cells; ImageNet: C=48 x 14 cells): parameters
        (with and without the auxiliary head), multiply-adds and the cells' depth and width (Shu et al., ICLR
        2020)."""
        from lightning_nas.search_spaces.cost import count_macs, count_parameters

        if dataset not in DATASETS:
            raise ConfigError(f"--dataset for the DARTS space must be one of {sorted(DATASETS)}")
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

    def cell_graphs(self, record: dict[str, Any]) -> list[CellGraph]:
        graphs = []
        for cell in CELLS:
            gene = record.get(cell)
            if gene is None:
                return []
            steps = len(gene) // 2
            nodes = ["c_{k-2}", "c_{k-1}", *[str(i) for i in range(steps)], "c_{k}"]
            edges = [(src, 2 + i // 2, op) for i, (op, src) in enumerate(gene)]
            edges += [(c, len(nodes) - 1, "") for c in record.get(f"{cell}_concat", [])]
            graphs.append(CellGraph(f"{cell} cell", nodes, edges))
        return graphs
