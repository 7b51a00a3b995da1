"""One interface for everything specific to a cell space, and the registry that names the spaces.

A ``SearchSpace`` holds no weights: it reads and writes genotypes, samples, mutates and encodes cells (the
neighbours NA-DARTS and NA-RS use are generic over children: ``search_spaces.neighbourhood``), builds the discrete
network of a cell, describes it, and gives the space's benchmark table where one exists. Methods, callbacks and
reports ask the space (``get_space(name)`` or a supernet's ``space``) and never branch on a space's name or class.
Children of a supernet are ``Path`` s (per cell type, one op index per edge, -1 for an edge the child does not
have); genotypes are the space's own cell type (``NB201Arch``, ``Genotype``), both with ``to_dict()`` /
``to_text()``.

Adding a space: subclass ``SearchSpace`` in ``search_spaces/<name>/space.py``, decorate it with
``@register_space("<name>")`` and list the module in ``BUILTIN`` (or import it before use); see
docs/extending.md.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from lightning_nas.errors import ConfigError

#: a child of a supernet: per cell type, one entry per edge, the op index in ``primitives`` or -1 (no edge)
Path = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class CellGraph:
    """A cell as a left-to-right DAG: node labels, ``(source, target, op)`` edges (indices into nodes)."""

    title: str
    nodes: list[str]
    edges: list[tuple[int, int, str]]


def uniform_index(n: int, generator: torch.Generator) -> int:
    """An index drawn uniformly from ``range(n)`` with ``generator`` (the one draw every sampler and mutation
    makes, so that a seeded caller reproduces a search)."""
    return int(torch.randint(n, (1,), generator=generator))


class SearchSpace(ABC):
    """A cell search space without weights (see the module docstring)."""

    #: the registry name, stored in genotype records (``genotype.json``'s ``space``)
    name: ClassVar[str]
    #: the space's name as runs and reports show it
    label: ClassVar[str]
    #: the op set of the space (a supernet may search a subset of it)
    primitives: tuple[str, ...]
    #: the keys of a ``Path`` (and of a supernet's mixing weights): the cell types of a genotype
    cell_types: ClassVar[tuple[str, ...]]

    # ---- genotypes -----------------------------------------------------------------------------------
    @abstractmethod
    def parse(self, spec: Any) -> Any:
        """A genotype from what a user writes: its text form, a genotype.json, a run directory, or a
        space-specific name (a benchmark index, a published cell)."""

    @abstractmethod
    def from_dict(self, data: dict[str, Any]) -> Any:
        """The genotype of a ``to_dict()`` record (or of a genotype.json written by a run)."""

    def key(self, genotype: Any) -> str:
        """The canonical text of a genotype (what search histories store)."""
        return genotype.to_text()

    # ---- children of a supernet ---------------------------------------------------------------------
    @abstractmethod
    def random_path(self, generator: torch.Generator, primitives: Optional[Sequence[str]] = None) -> Path:
        """A child drawn uniformly from the space (ops from ``primitives``, default all) with ``generator``."""

    @abstractmethod
    def path_genotype(self, path: Path, primitives: Optional[Sequence[str]] = None) -> Any:
        """The genotype of a child whose op indices refer to ``primitives`` (default the space's)."""

    @abstractmethod
    def genotype_path(self, genotype: Any, primitives: Optional[Sequence[str]] = None) -> Path:
        """The child of a genotype (inverse of ``path_genotype``); refuses ops outside ``primitives``."""

    @abstractmethod
    def mutate_path(self, path: Path, generator: torch.Generator,
                    primitives: Optional[Sequence[str]] = None) -> Path:
        """Regularised evolution's mutation: one random change of the child (a different op, or input)."""

    # ---- discrete search over genotypes -------------------------------------------------------------
    def sample(self, generator: torch.Generator) -> Any:
        """A uniformly random cell of the space."""
        return self.path_genotype(self.random_path(generator))

    def mutate(self, genotype: Any, generator: torch.Generator) -> Any:
        return self.path_genotype(self.mutate_path(self.genotype_path(genotype), generator))

    def encode(self, genotypes: Sequence[Any]) -> torch.Tensor:
        """One-hot encodings (n, cells x edges x ops) float64: each edge's op, zeros for an absent edge."""
        rows = []
        for g in genotypes:
            path = self.genotype_path(g)
            idx = torch.tensor([op for cell in sorted(path) for op in path[cell]], dtype=torch.long)
            rows.append(torch.nn.functional.one_hot(idx.clamp(min=0), len(self.primitives))
                        * (idx >= 0).unsqueeze(1))
        return torch.stack(rows).reshape(len(rows), -1).to(torch.float64)

    @abstractmethod
    def conv_ops(self, genotype: Any) -> dict[str, int]:
        """Convolutions per cell type of a genotype (MiLeNAS's model size)."""

    @property
    def size(self) -> Optional[int]:
        """The number of distinct cells where it is small enough to enumerate, else None."""
        return None

    def input_choices(self) -> list[tuple[int, ...]]:
        """The edges (indices into a cell's edge list) of each node that keeps only ``inputs_kept`` of its incoming
        edges in a genotype (DARTS: every node with more than two inputs); empty where every edge stays (NB201)."""
        return []

    #: how many incoming edges a node of ``input_choices`` keeps
    inputs_kept: ClassVar[int] = 2

    # ---- networks -----------------------------------------------------------------------------------
    #: the discrete network's defaults: (channels, layers) and the fewest layers it accepts
    network_defaults: ClassVar[tuple[int, int]]
    #: (channels, layers) of the networks a search scores or trains cells at (the supernet's size)
    search_network_defaults: ClassVar[tuple[int, int]]
    min_layers: ClassVar[int] = 1

    @abstractmethod
    def network(self, genotype: Any, num_classes: int, in_channels: int = 3, channels: Optional[int] = None,
                layers: Optional[int] = None) -> nn.Module:
        """The discrete network of a cell (the space's evaluation network); ``layers`` as the space counts
        them (NAS-Bench-201: cells per stage; DARTS: cells in all)."""

    def stage_modules(self, network: nn.Module) -> list[nn.Module]:
        """The last module of each stage of ``network`` (NST's feature maps); default: none."""
        raise ConfigError(f"the {self.name} space does not name the stages of its network")

    def describe(self, genotype: Any, dataset: str, benchmark_path: Optional[str] = None) -> dict[str, Any]:
        """Size and cost of the cell's evaluation network on ``dataset`` (and what else the space knows: its
        benchmark's accuracies, read from ``benchmark_path`` or the shipped table)."""
        raise ConfigError(f"the {self.name} space has no describe()")

    def cell_graphs(self, record: dict[str, Any]) -> list[CellGraph]:
        """The cells of a ``to_dict()`` genotype as graphs the report draws (none by default)."""
        return []

    # ---- benchmark ----------------------------------------------------------------------------------
    def benchmark(self, path: Optional[str] = None) -> Any:
        """The space's benchmark table (``tabular``), or None where the space has none."""
        return None

    def published_rows(self) -> list[Any]:
        """Published results on the space's benchmark (``tabular.published.PublishedRow`` s) that comparisons
        print beside their own; none by default."""
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


_REGISTRY: dict[str, Callable[[], SearchSpace]] = {}
#: the shipped spaces, imported on first use (so that ``search_spaces`` imports nothing heavy)
BUILTIN = {"nb201": "lightning_nas.search_spaces.nb201.space", "darts": "lightning_nas.search_spaces.darts.space"}


def register_space(name: str) -> Callable[[type[SearchSpace]], type[SearchSpace]]:
    """Class decorator: make a space available as ``get_space(name)`` (and ``space: name`` in configs)."""

    def add(cls: type[SearchSpace]) -> type[SearchSpace]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return add


def space_names() -> list[str]:
    for module in BUILTIN.values():
        importlib.import_module(module)
    return sorted(_REGISTRY)


def get_space(space: str | SearchSpace) -> SearchSpace:
    """The registered space called ``space`` (a ``SearchSpace`` is returned as it is)."""
    if isinstance(space, SearchSpace):
        return space
    if space not in _REGISTRY and space in BUILTIN:
        importlib.import_module(BUILTIN[space])
    if space not in _REGISTRY:
        raise ConfigError(f"unknown search space {space!r}: use one of {space_names()}")
    return _REGISTRY[space]()


def space_of_record(record: dict[str, Any]) -> Optional[SearchSpace]:
    """The space of a ``to_dict()`` genotype record (None for a record without a known space)."""
    name = record.get("space")
    if name is None:  # records written before genotypes named their space: DARTS cells
        name = "darts" if "normal" in record else None
    if name is None:
        return None
    try:
        return get_space(name)
    except ConfigError:
        return None
