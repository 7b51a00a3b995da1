"""NAS-Bench-201 architectures: one cell of 4 nodes and 6 edges, each edge one of ``PRIMITIVES``.

The text form is the benchmark's arch string, nodes separated by ``+``, each input written ``|op~j|``:
``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|``.
Edges are ordered (1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2), the order of the string and of the
benchmark's (and the supernet's) alpha rows. The architecture index is the benchmark's row order, looked up in
the shipped table (:mod:`lightning_nas.search_spaces.nb201.index`; the accuracies are in
:mod:`lightning_nas.tabular.nb201`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from lightning_nas.errors import GenotypeError
from lightning_nas.search_spaces.nb201.index import arch_index, arch_string
from lightning_nas.search_spaces.nb201.ops import PRIMITIVES

NUM_NODES = 4
#: (to, from) of each edge, in the benchmark's order
EDGES: tuple[tuple[int, int], ...] = tuple((i, j) for i in range(1, NUM_NODES) for j in range(i))
FORMAT_HINT = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2| (the NAS-Bench-201 arch string)"


@dataclass(frozen=True)
class NB201Arch:
    """One NAS-Bench-201 cell: ``ops[k]`` is the operation on edge ``EDGES[k]``."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        ops = tuple(str(o) for o in self.ops)
        object.__setattr__(self, "ops", ops)
        if len(ops) != len(EDGES):
            raise GenotypeError(f"a NAS-Bench-201 cell has {len(EDGES)} edges, got {len(ops)} ops")
        for (to, frm), op in zip(EDGES, ops):
            if op not in PRIMITIVES:
                raise GenotypeError(f"unknown operation {op!r} on edge {frm}->{to}; NAS-Bench-201 ops are "
                                    f"{list(PRIMITIVES)}")

    # ---- text form ---------------------------------------------------------------------------------
    @classmethod
    def from_string(cls, text: str) -> NB201Arch:
        text = text.strip()
        nodes = text.split("+")
        if len(nodes) != NUM_NODES - 1:
            raise GenotypeError(f"cannot read {text!r} as a NAS-Bench-201 architecture: expected {FORMAT_HINT}")
        ops: list[str] = []
        for to, node in enumerate(nodes, start=1):
            inputs = [tok for tok in node.strip().split("|") if tok]
            if len(inputs) != to or not (node.startswith("|") and node.endswith("|")):
                raise GenotypeError(f"node {to} of {text!r} must list {to} input(s); expected {FORMAT_HINT}")
            for frm, token in enumerate(inputs):
                op, sep, src = token.partition("~")
                if not sep or src != str(frm):
                    raise GenotypeError(f"{token!r} in {text!r} should read 'op~{frm}'; expected {FORMAT_HINT}")
                ops.append(op)
        return cls(tuple(ops))

    def to_string(self) -> str:
        nodes, k = [], 0
        for to in range(1, NUM_NODES):
            nodes.append("|" + "|".join(f"{self.ops[k + j]}~{j}" for j in range(to)) + "|")
            k += to
        return "+".join(nodes)

    to_text = to_string

    def __str__(self) -> str:
        return self.to_string()

    # ---- encodings ----------------------------------------------------------------------------------
    @classmethod
    def from_op_indices(cls, indices: Sequence[int]) -> NB201Arch:
        return cls(tuple(PRIMITIVES[int(i)] for i in indices))

    def op_indices(self) -> tuple[int, ...]:
        return tuple(PRIMITIVES.index(op) for op in self.ops)

    def num_conv_ops(self) -> int:
        return sum(op.startswith("nor_conv") for op in self.ops)

    @property
    def index(self) -> int:
        """The benchmark's architecture index."""
        return arch_index(self.to_string())

    @classmethod
    def from_index(cls, index: int) -> NB201Arch:
        return cls.from_string(arch_string(index))

    def to_dict(self) -> dict[str, Any]:
        return {"space": "nb201", "arch": self.to_string(), "index": self.index, "ops": list(self.ops)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NB201Arch:
        if isinstance(data.get("genotype"), dict):  # a genotype.json written by a run
            data = data["genotype"]
        if "arch" in data:
            return cls.from_string(str(data["arch"]))
        if "ops" in data:
            return cls(tuple(data["ops"]))
        raise GenotypeError("a NAS-Bench-201 genotype needs an 'arch' string or an 'ops' list")


def load_arch(spec: Union[str, int, NB201Arch]) -> NB201Arch:
    """An architecture from an arch string, a benchmark index, a genotype.json or a run directory."""
    if isinstance(spec, NB201Arch):
        return spec
    if isinstance(spec, int) or str(spec).strip().isdigit():
        return NB201Arch.from_index(int(spec))
    text = str(spec).strip()
    if text.startswith("|"):
        return NB201Arch.from_string(text)
    path = Path(text)
    if path.is_dir():
        path = path / "genotype.json"
    if path.is_file():
        try:
            return NB201Arch.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as err:
            raise GenotypeError(f"{path} is not valid JSON ({err})") from err
    raise GenotypeError(f"cannot read {text!r} as a NAS-Bench-201 architecture: give an arch string "
                        f"{FORMAT_HINT}, an index in [0, 15624], a genotype.json or a run directory")


def arch_from_mixing(weights: Any, primitives: Sequence[str] = PRIMITIVES,
                     exclude: Optional[Sequence[str]] = None) -> NB201Arch:
    """Discretise mixing weights (6 x ops): the strongest op per edge, ``none`` included, as the benchmark's
    DARTS baseline derives its cell (ties go to the earlier op in ``primitives``)."""
    ops = []
    for row in weights:
        order = sorted(range(len(primitives)), key=lambda i: (-float(row[i]), i))
        ops.append(next(primitives[i] for i in order if not exclude or primitives[i] not in exclude))
    return NB201Arch(tuple(ops))
