"""Published NAS-Bench-201 rows: the anchors a comparison prints beside its own results
(``tabular/data/nb201_published.json``, each row with its source)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Optional

from lightning_nas.tabular.nb201 import canonical_dataset

#: the datasets of a row, as the benchmark table names them
DATASETS = ("cifar10", "cifar100", "imagenet16-120")


@dataclass(frozen=True)
class PublishedRow:
    """One method's published test accuracies (%): per dataset (the table's canonical name: ``cifar10``,
    ``cifar100``, ``imagenet16_120``) (mean, std or None)."""

    method: str
    accuracy: dict[str, tuple[float, Optional[float]]]
    source: str


def published_nb201() -> list[PublishedRow]:
    """The shipped anchors, in the file's order."""
    text = resources.files("lightning_nas.tabular").joinpath("data/nb201_published.json").read_text()
    rows = json.loads(text)["rows"]
    def stat(value: list) -> tuple[float, Optional[float]]:
        return float(value[0]), None if value[1] is None else float(value[1])

    return [PublishedRow(r["method"], {canonical_dataset(d): stat(r[d]) for d in DATASETS}, r["source"]) for r in rows]
