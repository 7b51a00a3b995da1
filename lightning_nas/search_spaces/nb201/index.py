"""The NAS-Bench-201 architecture index: the benchmark's row order, read from the arch column of the table that
ships with the package (``lightning_nas/tabular/data/nb201_test_accuracy.csv.gz``).

Kept apart from ``lightning_nas.tabular.nb201`` (the accuracy lookups, which build on this space) so that the
space does not import the benchmark module: arch strings and indices convert here, accuracies live there.
"""

from __future__ import annotations

import csv
import gzip
import io
from functools import lru_cache
from importlib import resources

from lightning_nas.errors import GenotypeError

SHIPPED_TABLE = "tabular/data/nb201_test_accuracy.csv.gz"


@lru_cache(maxsize=1)
def arch_strings() -> tuple[str, ...]:
    """Every arch string of the space, in the benchmark's index order."""
    text = gzip.decompress(resources.files("lightning_nas").joinpath(SHIPPED_TABLE).read_bytes()).decode()
    rows = sorted((int(r["index"]), r["arch"]) for r in csv.DictReader(io.StringIO(text)))
    return tuple(arch for _, arch in rows)


@lru_cache(maxsize=1)
def _positions() -> dict[str, int]:
    return {arch: i for i, arch in enumerate(arch_strings())}


def arch_index(text: str) -> int:
    """The benchmark index of a canonical arch string."""
    if text not in _positions():
        raise GenotypeError(f"{text} is not in the benchmark (lightning_nas's NAS-Bench-201 table)")
    return _positions()[text]


def arch_string(index: int) -> str:
    """The arch string at a benchmark index."""
    archs = arch_strings()
    if not 0 <= int(index) < len(archs):
        raise GenotypeError(f"architecture index {index} is out of range [0, {len(archs) - 1}]")
    return archs[int(index)]
