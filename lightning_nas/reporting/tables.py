"""The report's tables as plain data (``Table``: a caption, a header, rows of text) and the three forms a paper takes
them in: Markdown, LaTeX (booktabs, ready for ``\\input``) and CSV. ``report`` writes each table beside its HTML page
(``<page>.<table>.tex`` / ``.csv``).

Tables: ``groups`` (per group, mean ± std of the final metrics), ``benchmark`` (the NAS-Bench-201 paper's layout,
``benchmark_table``) and ``retrained`` (the DARTS paper's Table 1: per retrained architecture its test error,
parameters, the search's cost and method, for trainings in a space without a benchmark table, such as DARTS's).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from lightning_nas.reporting.runs import TABLE_METRICS, Run, fmt_mean_std, mean_std


@dataclass
class Table:
    name: str  # the file suffix: <page>.<name>.tex
    title: str  # the heading above it (Markdown, HTML)
    note: str  # the sentence beneath the heading: what the numbers are
    header: list[str]
    rows: list[list[str]]
    #: rows after a rule (published results beneath ours)
    after_rule: list[list[str]] = field(default_factory=list)

    @property
    def caption(self) -> str:
        return f"{self.title}. {self.note}"

    def markdown(self) -> list[str]:
        """A ``##`` heading, the note, the table."""
        def cell(text: str) -> str:
            return text.replace("|", "\\|")

        lines = [f"## {self.title}", "", self.note, "", "| " + " | ".join(map(cell, self.header)) + " |",
                 "|" + " --- |" * len(self.header)]
        lines += ["| " + " | ".join(map(cell, row)) + " |" for row in [*self.rows, *self.after_rule]]
        return [*lines, ""]

    def latex(self) -> str:
        """A booktabs ``table``: numbers right-aligned, ± as ``$\\pm$``, LaTeX's special characters escaped."""
        def tex(text: str) -> str:
            for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"),
                                  ("#", r"\#"), ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"),
                                  ("^", r"\textasciicircum{}")):
                text = text.replace(char, escaped)
            return text.replace("±", r"$\pm$").replace("−", "-")

        spec = "l" + "r" * (len(self.header) - 1)
        lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{tex(self.caption)}}}",
                 rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(map(tex, self.header)) + r" \\", r"\midrule"]
        lines += [" & ".join(map(tex, row)) + r" \\" for row in self.rows]
        if self.after_rule:
            lines.append(r"\midrule")
            lines += [" & ".join(map(tex, row)) + r" \\" for row in self.after_rule]
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
        return "\n".join(lines)

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows([*self.rows, *self.after_rule])
        return out.getvalue()


def groups_table(groups: dict[str, Sequence[Run]]) -> Optional[Table]:
    """Per group, mean ± sample std over its runs of every final metric some run has."""
    columns = [(label, key) for label, key in TABLE_METRICS
               if any(r.final(key) is not None for runs in groups.values() for r in runs)]
    if not groups or not columns:
        return None
    rows = []
    for name, runs in groups.items():
        stats = [mean_std([r.final(key) for r in runs]) for _, key in columns]
        rows.append([name, *(fmt_mean_std(s) for s in stats), str(len(runs))])
    return Table("groups", "Final metrics per group", "Mean ± sample std (n − 1) over the runs.",
                 ["group", *(label for label, _ in columns), "runs"], rows)


def benchmark_latex_table(table: dict[str, Any]) -> Table:
    """``benchmark_table``'s data as a ``Table`` (ours, then the published rows with their sources)."""
    header = ["method", *(f"{d} test (%)" for d in table["datasets"]), "search (h)", "runs / source"]
    rows = [[r["name"], *r["accuracy"].values(), r["cost_hours"], str(r["runs"])] for r in table["rows"]]
    published = [[f"{p['name']} (published)", *p["accuracy"].values(), "", p["source"]] for p in table["published"]]
    return Table("benchmark", f"{table['space']} benchmark: the final cells' test accuracy",
                 f"From {table['source']}; ours are mean ± std over the runs, published rows below with their sources.",
                 header, rows, published)


def _search_of(run: Run) -> Optional[dict[str, Any]]:
    """The summary of the search run whose cell a retraining trained (its ``genotype`` names a run directory)."""
    spec = ((run.config.get("model") or {}).get("init_args") or {}).get("genotype")
    path = Path(str(spec)) if spec else None
    if path is not None and path.is_file() and path.name == "genotype.json":
        path = path.parent
    try:
        return json.loads((path / "summary.json").read_text()) if path is not None and path.is_dir() else None
    except (OSError, ValueError):
        return None


def retrained_table(groups: dict[str, Sequence[Run]]) -> Optional[Table]:
    """The DARTS paper's Table 1 for the groups that retrain cells of a space evaluated by retraining (one without a
    benchmark table, such as DARTS's): test error (%, 100 − the final test accuracy, else the held-out accuracy,
    which a plain training measures on the test set), parameters (M), search cost (hours of the search that found
    the cell, where its run directory is known) and search method."""
    rows, labels = [], set()
    for name, runs in groups.items():
        trained = []
        for run in runs:
            space = run.final_space()
            if run.summary.get("num_parameters") is not None and space is not None and space.benchmark() is None:
                trained.append(run)
                labels.add(space.label)
        if not trained:
            continue
        accuracy = [r.final("test/acc") if r.final("test/acc") is not None else r.final("val/acc") for r in trained]
        error = mean_std([100.0 - a for a in accuracy if a is not None])
        params = mean_std([r.summary["num_parameters"] / 1e6 for r in trained])
        searches = [s for s in map(_search_of, trained) if s is not None]
        cost = mean_std([s["wall_time_s"] / 3600 for s in searches if s.get("wall_time_s")])
        methods = sorted({str(s.get("method", "")).rsplit(".", 1)[-1] for s in searches})
        rows.append([name, fmt_mean_std(error), fmt_mean_std(params), fmt_mean_std(cost),
                     ", ".join(methods) or "-", str(len(trained))])
    if not rows:
        return None
    title = f"Retrained {'/'.join(sorted(labels))}-space architectures, laid out as the DARTS paper's Table 1"
    return Table("retrained", title, "Mean ± std over the retrainings.", ["architecture", "test error (%)",
                                                                        "params (M)", "search cost (h)",
                                                                        "search method", "runs"], rows)
