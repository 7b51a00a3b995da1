"""A report's benchmark table, laid out as the NAS-Bench-201 paper's (Dong & Yang, ICLR 2020, Table 5): one row per
group, the benchmark's test accuracy of the group's final cells on every dataset of the table (mean ± std over the
runs), the search cost, and the space's published rows beneath (each with its source). Only runs whose final
genotype belongs to a space with a benchmark table count; a cell searched on one dataset is looked up on all."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from lightning_nas.reporting.runs import Run, fmt_mean_std, mean_std


def _final_cell(run: Run) -> Optional[tuple[Any, dict[str, Any]]]:
    """(space, genotype record) of the run's last genotype, when its space has a benchmark table."""
    space = run.final_space()
    return (space, run.genotypes[-1]["genotype"]) if space is not None and space.benchmark() is not None else None


def benchmark_table(groups: dict[str, Sequence[Run]]) -> Optional[dict[str, Any]]:
    """The table as plain data (None when no run has a cell of a benchmarked space)."""
    rows, space, bench = [], None, None
    for name, members in groups.items():
        cells = [(r, c) for r in members if (c := _final_cell(r)) is not None]
        if not cells:
            continue
        space = cells[0][1][0]
        bench = space.benchmark()
        datasets = [k.removesuffix("_test") for k in bench.columns if k.endswith("_test")]
        accuracy = {d: mean_std([bench.accuracy(space.from_dict(rec), d) for _, (_, rec) in cells]) for d in datasets}
        cost = mean_std([r.final("wall_hours") for r, _ in cells])
        rows.append({"name": name, "runs": len(cells), "cost_hours": fmt_mean_std(cost),
                     "accuracy": {d: fmt_mean_std(s) for d, s in accuracy.items()}})
    if not rows or space is None or bench is None:
        return None
    datasets = list(rows[0]["accuracy"])
    published = [{"name": p.method, "source": p.source,
                  "accuracy": {d: _fmt_published(p.accuracy.get(d)) for d in datasets}}
                 for p in space.published_rows()]
    return {"space": space.label, "source": bench.source, "datasets": datasets, "rows": rows, "published": published}


def _fmt_published(value: Optional[tuple[float, Optional[float]]]) -> str:
    if value is None:
        return "-"
    mean, std = value
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"
