"""DARTS genotypes: the discrete cell, its derivation from alpha, and its text / JSON forms.

Derivation follows Liu et al. (2019), Sec. 2.4 and the official ``model_search.genotype``: softmax of
alpha per edge; each intermediate node keeps the two incoming edges with the largest
max-over-non-``none`` weight, and each kept edge takes its strongest non-``none`` op.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lightning_nas.errors import GenotypeError
from lightning_nas.search_spaces.darts.ops import OPS

Gene = list[tuple[str, int]]


@dataclass(frozen=True)
class Genotype:
    """A DARTS cell pair: ``normal``/``reduce`` list (op, input node) pairs, two per intermediate node."""

    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for cell in ("normal", "reduce"):
            gene = getattr(self, cell)
            object.__setattr__(self, cell, tuple((str(op), int(i)) for op, i in gene))
            object.__setattr__(self, f"{cell}_concat", tuple(int(i) for i in getattr(self, f"{cell}_concat")))
            self._validate(cell)

    def _validate(self, cell: str) -> None:
        gene = getattr(self, cell)
        if len(gene) % 2:
            raise GenotypeError(f"{cell} cell has {len(gene)} (op, input) pairs; DARTS cells need two per node")
        for pos, (op, inp) in enumerate(gene):
            if op not in OPS or op == "none":
                known = sorted(k for k in OPS if k != "none")
                raise GenotypeError(f"unknown operation {op!r} in the {cell} cell; use one of {known}")
            node = 2 + pos // 2
            if not 0 <= inp < node:
                raise GenotypeError(f"{cell} cell: node {node} takes input {inp}, which must be in [0, {node - 1}]")
        n_nodes = 2 + len(gene) // 2
        for c in getattr(self, f"{cell}_concat"):
            if not 0 <= c < n_nodes:
                raise GenotypeError(f"{cell}_concat names node {c}; the cell has nodes 0..{n_nodes - 1}")

    # ---- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "normal": [list(g) for g in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [list(g) for g in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> Genotype:
        if "genotype" in data and isinstance(data["genotype"], dict):  # a genotype.json written by a run
            data = data["genotype"]
        if data.get("space") not in (None, "darts"):  # another space's cell (a NAS-Bench-201 run, say)
            arch = f" --model.init_args.arch '{data['arch']}'" if "arch" in data else ""
            raise GenotypeError(
                f"{source or 'the genotype'} is a {data['space']} cell, not a DARTS-space genotype: train it with "
                f"TrainCell, e.g. python -m lightning_nas fit --config experiments/mf_kd/teacher_nb201_cifar10_cpu.yaml"
                f"{arch}")
        missing = {"normal", "normal_concat", "reduce", "reduce_concat"} - set(data)
        if missing:
            raise GenotypeError(f"genotype is missing the keys {sorted(missing)}")
        try:
            return cls(
                normal=tuple(tuple(g) for g in data["normal"]),  # type: ignore[arg-type]
                normal_concat=tuple(data["normal_concat"]),
                reduce=tuple(tuple(g) for g in data["reduce"]),  # type: ignore[arg-type]
                reduce_concat=tuple(data["reduce_concat"]),
                source=source,
            )
        except (TypeError, ValueError) as err:
            if isinstance(err, GenotypeError):
                raise
            raise GenotypeError(f"malformed genotype: {err}") from err

    def to_text(self) -> str:
        """The DARTS text form, as ``repr`` of the official namedtuple."""
        def gene(g: Sequence[tuple[str, int]]) -> str:
            return "[" + ", ".join(f"({op!r}, {i})" for op, i in g) + "]"

        return (f"Genotype(normal={gene(self.normal)}, normal_concat={list(self.normal_concat)}, "
                f"reduce={gene(self.reduce)}, reduce_concat={list(self.reduce_concat)})")

    __str__ = to_text

    @classmethod
    def from_text(cls, text: str, source: str = "") -> Genotype:
        """Parse ``Genotype(normal=[...], normal_concat=[...] | range(a, b), reduce=..., reduce_concat=...)``."""
        stripped = text.strip()
        match = re.fullmatch(r"(?:\w+\s*=\s*)?Genotype\s*\((.*)\)", stripped, flags=re.S)
        if not match:
            raise GenotypeError("genotype text must look like Genotype(normal=[...], normal_concat=[...], "
                                f"reduce=[...], reduce_concat=[...]); got {stripped[:80]!r}")
        try:
            call = ast.parse(f"f({match.group(1)})", mode="eval").body
        except SyntaxError as err:
            raise GenotypeError(f"cannot parse genotype text: {err.msg}") from err
        assert isinstance(call, ast.Call)
        fields: dict[str, Any] = {}
        for kw in call.keywords:
            value = kw.value
            if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "range":
                fields[kw.arg or ""] = list(range(*[ast.literal_eval(a) for a in value.args]))
            else:
                try:
                    fields[kw.arg or ""] = ast.literal_eval(value)
                except ValueError as err:
                    raise GenotypeError(f"genotype field {kw.arg!r} is not a literal: {err}") from err
        return cls.from_dict(fields, source=source)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str, source: str = "") -> Genotype:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise GenotypeError(f"genotype JSON is not valid JSON: {err}") from err
        return cls.from_dict(data, source=source)


def derive_cell(weights: torch.Tensor, primitives: Sequence[str], steps: int = 4) -> Gene:
    """Discretise one cell from its mixing weights (``softmax(alpha)``, shape edges x ops)."""
    gene: Gene = []
    names = list(primitives)
    none_idx = names.index("none") if "none" in names else None
    w = weights.detach().double().cpu()
    start, n = 0, 2
    for _ in range(steps):
        block = w[start:start + n].clone()
        if none_idx is not None:
            block[:, none_idx] = float("-inf")
        strength = block.max(dim=1).values
        # stable sort on -strength keeps the lower input index first on ties, as the official code does
        order = sorted(range(n), key=lambda j: -strength[j].item())[:2]
        for j in order:
            gene.append((names[int(block[j].argmax())], j))
        start += n
        n += 1
    return gene


def derive_cell_pooled(weights: torch.Tensor, primitives: Sequence[str], steps: int = 4) -> Gene:
    """GDAS's DARTS-space rule (AutoDL ``search_model_gdas_nasnet.py:128-143``): per node, every (op other than
    ``none``, input) pair of all its incoming edges pooled and the two heaviest kept, so both may come from one
    input. The stable sort keeps the lower input, then the lower op index, first on ties, as the official one."""
    gene: Gene = []
    names = list(primitives)
    w = weights.detach().double().cpu()
    start = 0
    for node in range(steps):
        pairs = [(names[k], j, float(w[start + j, k])) for j in range(2 + node) for k in range(len(names))
                 if names[k] != "none"]
        gene.extend((op, j) for op, j, _ in sorted(pairs, key=lambda t: -t[2])[:2])
        start += 2 + node
    return gene


def derive_genotype(normal_weights: torch.Tensor, reduce_weights: torch.Tensor, primitives: Sequence[str],
                    steps: int = 4, multiplier: int = 4, rule: str = "darts") -> Genotype:
    """A genotype from the two cells' mixing weights: ``darts`` (top-2 inputs, then each one's best op) or
    ``pooled`` (GDAS: the two best (op, input) pairs per node)."""
    if rule not in ("darts", "pooled"):
        raise ValueError(f"unknown derivation rule {rule!r}: 'darts' or 'pooled'")
    derive = derive_cell if rule == "darts" else derive_cell_pooled
    concat = tuple(range(2 + steps - multiplier, steps + 2))
    return Genotype(
        normal=tuple(derive(normal_weights, primitives, steps)),
        normal_concat=concat,
        reduce=tuple(derive(reduce_weights, primitives, steps)),
        reduce_concat=concat,
    )
