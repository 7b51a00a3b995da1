"""``python -m lightning_nas report RUN_DIR... [--out report.html] [--group-by KEY ...]``: one self-contained HTML
page (jinja2; figures inlined as PNG data URIs, no CDN, so it opens offline) and a Markdown summary beside it.

Per group (default: method x space x dataset; ``--group-by`` takes summary fields or dotted config keys such as
``model.init_args.order``): a table of mean ± std over the group's runs of the final metrics, the number of runs
and the best run with its seed named as such; curves over epochs (mean and min-max band); per run the final cells
as diagrams, the alpha heatmap at the last epoch, and its provenance (config, seed, versions, git revision)
behind a click.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from jinja2 import Environment, select_autoescape

from lightning_nas.errors import LightningNASError, OutputError
from lightning_nas.reporting.benchmark_table import benchmark_table
from lightning_nas.reporting.figures import alpha_heatmap, cell_diagram, curve_figure, data_uri
from lightning_nas.reporting.runs import (
    CURVES,
    DEFAULT_GROUP_BY,
    TABLE_METRICS,
    Run,
    best_run,
    find_runs,
    fmt_mean_std,
    group_runs,
    mean_std,
    unfinished_runs,
)
from lightning_nas.reporting.tables import benchmark_latex_table, groups_table, retrained_table

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: sans-serif; margin: 1.5em; max-width: 1200px; }
table { border-collapse: collapse; margin: 0.5em 0 1em; } td, th { border: 1px solid #bbb; padding: 3px 8px; }
th { background: #eef; } td.num { text-align: right; } .run { border-top: 1px solid #ccc; padding-top: 0.5em; }
pre { background: #f6f6f6; padding: 0.5em; overflow-x: auto; font-size: 11px; } img { max-width: 100%; }
.figs img { display: inline-block; vertical-align: top; max-width: 49%; }
</style></head><body>
<h1>{{ title }}</h1>
<p>{{ runs_count }} runs in {{ group_count }} groups (grouped by {{ group_by|join(" × ") }}
{%- if "variant" in group_by %}; a variant is the options that make a method another one, e.g. DARTS's order or a
retraining's genotype{% endif %}).
Numbers are mean ± sample std (n − 1)
over a group's runs; the best run is named with its seed and directory, not reported as the group's result. Epochs
are numbered from 1.</p>
{% if unfinished %}<section id="unfinished"><h2>Runs not finished (not in the numbers)</h2><ul>
{% for u in unfinished %}<li><code>{{ u.path }}</code>: {{ u.state }}</li>{% endfor %}</ul></section>{% endif %}
{% if benchmark %}<section id="benchmark"><h2>{{ benchmark.space }} benchmark: the final cells' test accuracy</h2>
<p>From {{ benchmark.source }}; ours are mean ± std over the runs, published rows below with their sources.</p>
<table class="benchmark"><tr><th>method</th>{% for d in benchmark.datasets %}<th>{{ d }} test (%)</th>{% endfor %}
<th>search (h)</th><th>runs / source</th></tr>
{% for r in benchmark.rows %}<tr><td>{{ r.name }}</td>{% for d in benchmark.datasets %}
<td class="num">{{ r.accuracy[d] }}</td>{% endfor %}<td class="num">{{ r.cost_hours }}</td>
<td class="num">{{ r.runs }}</td></tr>
{% endfor %}{% for p in benchmark.published %}<tr><td>{{ p.name }} (published)</td>{% for d in benchmark.datasets %}
<td class="num">{{ p.accuracy[d] }}</td>{% endfor %}<td></td><td>{{ p.source }}</td></tr>
{% endfor %}</table></section>{% endif %}
{% if retrained %}<section id="retrained"><h2>{{ retrained.title }}</h2><p>{{ retrained.note }}</p>
<table class="retrained"><tr>{% for h in retrained.header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in retrained.rows %}<tr><td>{{ row[0] }}</td>
{%- for c in row[1:] %}<td class="num">{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table></section>{% endif %}
{% if files %}<p>Every table for a paper, as LaTeX (booktabs) and CSV beside this page:
{% for f in files %}<a href="{{ f }}">{{ f }}</a>{% if not loop.last %}, {% endif %}{% endfor %}.</p>{% endif %}
{% for g in groups %}
<section class="group" id="group-{{ loop.index }}">
<h2>{{ g.name }}</h2>
{% if g.metrics %}<table class="metrics"><tr><th>metric</th><th>mean ± std</th><th>runs</th></tr>
{% for m in g.metrics %}<tr><td>{{ m.label }}</td><td class="num">{{ m.value }}</td><td class="num">{{ m.n }}</td></tr>
{% endfor %}</table>{% endif %}
{% if g.best %}<p>Best run by final held-out accuracy: seed {{ g.best.seed }} ({{ g.best.value }}),
<code>{{ g.best.path }}</code>.</p>{% endif %}
<div class="figs">{% for c in g.curves %}<img alt="{{ c.title }}" src="{{ c.uri }}">{% endfor %}</div>
{% for r in g.runs %}
<div class="run"><h3>seed {{ r.seed }}: <code>{{ r.path }}</code></h3>
<p>genotype: <code>{{ r.genotype }}</code></p>
<div class="figs">{% if r.cells %}<img alt="cells of seed {{ r.seed }}" src="{{ r.cells }}">{% endif %}
{% if r.alpha %}<img alt="alpha heatmap of seed {{ r.seed }}" src="{{ r.alpha }}">{% endif %}</div>
<details><summary>provenance: seed {{ r.seed }}, git {{ r.git }}</summary>
<p>versions: {{ r.versions }}</p><pre>{{ r.config }}</pre></details></div>
{% endfor %}
</section>
{% endfor %}
</body></html>
"""


def _run_view(run: Run) -> dict[str, Any]:
    last = run.genotypes[-1] if run.genotypes else {}
    cells = cell_diagram(last.get("genotype", {})) if last else None
    alpha = alpha_heatmap(last) if last else None
    return {"seed": run.seed, "path": str(run.path), "genotype": run.summary.get("genotype") or "-",
            "cells": cells and data_uri(cells), "alpha": alpha and data_uri(alpha),
            "git": run.summary.get("git_revision"),
            "versions": ", ".join(f"{k} {v}" for k, v in (run.summary.get("versions") or {}).items()),
            "config": run.config_text}


def _reference(key: str, runs: Sequence[Run]) -> Optional[tuple[float, str]]:
    """The line a curve is read against: for the anytime benchmark accuracy, the benchmark table's optimum (from the
    space's published rows) when the runs' cells are of one space."""
    if key != "benchmark/cifar10_test":
        return None
    spaces = [r.final_space() for r in runs if r.genotypes]
    if not spaces or None in spaces or len({s.name for s in spaces}) != 1:
        return None
    for row in spaces[0].published_rows():
        value = row.accuracy.get("cifar10")
        if row.method.startswith("optimum") and value:
            return float(value[0]), f"{row.method} ({value[0]:.2f})"
    return None


def build(paths: Sequence[Path], group_by: Sequence[str] = DEFAULT_GROUP_BY) -> dict[str, Any]:
    """What the page shows, as plain data (the tests read it too)."""
    runs = find_runs(paths)
    if not runs:
        raise FileNotFoundError(f"no run directories (folders with a summary.json) under {[str(p) for p in paths]}")
    groups = group_runs(runs, group_by)
    views = []
    for name, members in groups.items():
        metrics = []
        for label, key in TABLE_METRICS:
            stat = mean_std([r.final(key) for r in members])
            if stat is not None:
                metrics.append({"label": label, "value": fmt_mean_std(stat), "n": stat[2]})
        best = best_run(members)
        curves = [{"title": title, "uri": data_uri(image)} for key, title in CURVES
                  if (image := curve_figure({name: members}, key, title, _reference(key, members))) is not None]
        views.append({"name": name, "metrics": metrics, "curves": curves, "runs": [_run_view(r) for r in members],
                      "best": None if best is None else {"seed": best.seed, "path": str(best.path),
                                                         "value": f"{best.final('val/acc'):.2f} %"}})
    overlays = [{"title": title, "uri": data_uri(image)} for key, title in CURVES if len(groups) > 1 and
                (image := curve_figure(groups, key, title, _reference(key, runs))) is not None]
    if overlays:
        views.insert(0, {"name": "all groups", "metrics": [], "curves": overlays, "runs": [], "best": None})
    benchmark = benchmark_table(groups)
    retrained = retrained_table(groups)
    tables = [t for t in (groups_table(groups), benchmark and benchmark_latex_table(benchmark), retrained)
              if t is not None]
    return {"title": "lightning_nas comparison report", "runs_count": len(runs), "group_by": list(group_by),
            "group_count": len(groups), "unfinished": unfinished_runs(paths),
            "groups": views, "run_dirs": [str(r.path) for r in runs], "benchmark": benchmark,
            "retrained": retrained, "tables": tables}


def render_html(page: dict[str, Any]) -> str:
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    return env.from_string(TEMPLATE).render(**page)


def render_markdown(page: dict[str, Any]) -> str:
    lines = [f"# {page['title']}", "", f"{page['runs_count']} runs, grouped by {' x '.join(page['group_by'])}; "
             "mean ± sample std (n − 1) over each group's runs; epochs numbered from 1.", ""]
    if page.get("unfinished"):
        lines += ["Not finished (not in the numbers):", ""] + [f"- `{u['path']}`: {u['state']}"
                                                                for u in page["unfinished"]] + [""]
    for table in page["tables"]:
        if table.name != "groups":  # the groups' numbers follow, group by group
            lines += table.markdown()
    for g in page["groups"]:
        if not g["metrics"]:
            continue
        lines += [f"## {g['name']}", "", "| metric | mean ± std | runs |", "| --- | --- | --- |"]
        lines += [f"| {m['label']} | {m['value']} | {m['n']} |" for m in g["metrics"]]
        if g["best"]:
            lines += ["", f"Best run: seed {g['best']['seed']} ({g['best']['value']}), `{g['best']['path']}`"]
        lines.append("")
    return "\n".join(lines)


def write_report(paths: Sequence[Path], out: Path, group_by: Sequence[str] = DEFAULT_GROUP_BY
                 ) -> tuple[dict[str, Any], str]:
    """Build the page, write the HTML to ``out`` and the Markdown beside it; returns (page, Markdown)."""
    check_writable(out)  # before the work: a report that cannot be written is refused first
    page = build(paths, group_by)
    markdown = render_markdown(page)
    files = {out.with_suffix(f".{t.name}{ext}"): text for t in page["tables"]
             for ext, text in ((".tex", t.latex()), (".csv", t.csv()))}
    page["files"] = [f.name for f in files]
    try:
        out.write_text(render_html(page))
        out.with_suffix(".md").write_text(markdown)
        for path, text in files.items():
            path.write_text(text)
    except OSError as err:
        raise OutputError(f"cannot write the report to {out} ({err.strerror or err}): free space there or pass "
                          "--out in another folder") from None
    return page, markdown


def check_writable(out: Path) -> None:
    """Refuse an ``--out`` whose folder cannot be created or written, naming it and the fix."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".write-check-"):
            pass
    except OSError as err:
        raise OutputError(f"cannot write the report to {out}: {out.parent} is not writable ({err.strerror or err}); "
                          "pass --out in a folder you can write") from None


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightning_nas report",
                                     description="Compare run directories: an offline HTML report and a Markdown "
                                                 "summary, grouped by method x space x dataset.")
    parser.add_argument("runs", nargs="+", type=Path, help="run directories or folders holding them")
    parser.add_argument("--out", type=Path, default=Path("report.html"), help="the HTML file (default report.html;"
                                                                               " the Markdown goes beside it)")
    parser.add_argument("--group-by", nargs="+", default=list(DEFAULT_GROUP_BY),
                        help="summary fields (method, space, dataset, seed) or dotted config keys")
    parser.add_argument("--wandb", metavar="PROJECT", default=None,
                        help="also create a W&B Report in PROJECT comparing the groups (needs a W&B login)")
    parser.add_argument("--wandb-entity", default=None, help="the W&B entity of --wandb (default: yours)")
    args = parser.parse_args(argv)
    try:
        if args.wandb:
            from lightning_nas.reporting.wandb_report import check_login

            check_login()  # before any work: offline or logged out, say so and write nothing
        page, markdown = write_report(args.runs, args.out, args.group_by)
        print(args.out)
        if args.wandb:
            from lightning_nas.reporting.wandb_report import create_report

            print(create_report(page["run_dirs"], args.group_by, markdown, args.wandb, args.wandb_entity))
    except (FileNotFoundError, LightningNASError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
