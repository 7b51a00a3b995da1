"""The report's figures, drawn with matplotlib's object API (no pyplot state) as PNG bytes, which ``data_uri``
inlines so the HTML opens offline and ``write_run_figures`` writes as files: curves over epochs (mean with a
min-max band over a group's runs), alpha heatmaps (softmax per edge and op at the last epoch) and cell diagrams
(a DARTS cell pair or a NAS-Bench-201 cell).

Cell diagrams are drawn with matplotlib too: graphviz is the usual tool but needs a system binary that pip cannot
install, and a cell has at most seven nodes, which a fixed left-to-right layout draws legibly.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from matplotlib.figure import Figure

from lightning_nas.reporting.runs import CURVES, Run, load_run
from lightning_nas.search_spaces.space import space_of_record


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def data_uri(png_bytes: bytes) -> str:
    """A PNG inlined in HTML (no file, no network)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode()


def curve_figure(groups: dict[str, list[Run]], key: str, title: str) -> Optional[bytes]:
    """Mean over each group's runs per epoch, with the min-max band; None when no run logged ``key``."""
    fig = Figure(figsize=(5.2, 3.2))
    ax = fig.add_subplot()
    drawn = False
    for name, runs in groups.items():
        curves = [c for c in (r.curve(key) for r in runs) if c]
        if not curves:
            continue
        epochs = sorted(set().union(*curves))
        values = [[c[e] for c in curves if e in c] for e in epochs]
        x = [e + 1 for e in epochs]
        mean = [sum(v) / len(v) for v in values]
        line, = ax.plot(x, mean, marker=".", label=f"{name} ({len(curves)})")
        if len(curves) > 1:
            ax.fill_between(x, [min(v) for v in values], [max(v) for v in values], alpha=0.2,
                            color=line.get_color())
        drawn = True
    if not drawn:
        return None
    ax.set(xlabel="epoch", title=title)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return png(fig)


def alpha_heatmap(record: dict[str, Any]) -> Optional[bytes]:
    """softmax(alpha) per edge (rows) and op (columns) of every cell type, from a genotypes.jsonl record."""
    alphas = record.get("alpha_softmax")
    if not alphas:
        return None
    ops = record.get("primitives") or []
    fig = Figure(figsize=(2.2 + 0.45 * len(ops) * len(alphas), 3.4))
    for k, (cell, rows) in enumerate(alphas.items()):
        ax = fig.add_subplot(1, len(alphas), k + 1)
        im = ax.imshow(rows, cmap="viridis", vmin=0.0, vmax=max(max(r) for r in rows), aspect="auto")
        ax.set_xticks(range(len(ops)), ops, rotation=60, ha="right", fontsize=6)
        ax.set_yticks(range(len(rows)), [f"e{e}" for e in range(len(rows))], fontsize=6)
        ax.set_title(f"{cell} (epoch {record.get('epoch', 0) + 1})", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    return png(fig)


def _draw_dag(ax: Any, nodes: Sequence[str], edges: Sequence[tuple[int, int, str]], title: str) -> None:
    """Nodes left to right; an arc above them per edge, labelled with its op at the arc's top (skip and none in
    red); the title below the nodes."""
    top = 0.5
    for k, (src, dst, op) in enumerate(edges):
        height = 0.2 + 0.16 * (dst - src) + 0.07 * (k % 3)  # parabolic arcs in data units, labels at their tops
        top = max(top, height)
        colour = "#b33" if op in ("skip_connect", "none") else "#444"
        t = [i / 40 for i in range(41)]
        xs = [src + 0.12 + (dst - src - 0.24) * u for u in t]
        ys = [0.08 + 4 * height * u * (1 - u) for u in t]
        ax.plot(xs, ys, color=colour, lw=0.8)
        ax.annotate("", xy=(xs[-1], ys[-1]), xytext=(xs[-3], ys[-3]),
                    arrowprops={"arrowstyle": "->", "color": colour, "lw": 0.8})
        if op:
            ax.text((src + dst) / 2, 0.08 + height, op, ha="center", va="bottom", fontsize=6, color=colour)
    for i, name in enumerate(nodes):
        ax.text(i, 0, name, ha="center", va="center", fontsize=7,
                bbox={"boxstyle": "round", "fc": "#dde8f5" if i < len(nodes) - 1 else "#f5e6cc", "ec": "#555"})
    ax.text((len(nodes) - 1) / 2, -0.35, title, ha="center", va="top", fontsize=8)
    ax.set_xlim(-0.6, len(nodes) - 0.4)
    ax.set_ylim(-0.6, top + 0.35)
    ax.axis("off")


def cell_diagram(genotype: dict[str, Any]) -> Optional[bytes]:
    """The cells of a genotype record as its space describes them (``SearchSpace.cell_graphs``: a DARTS
    genotype's normal and reduction cells, a NAS-Bench-201 cell); None where there are none."""
    space = space_of_record(genotype)
    graphs = space.cell_graphs(genotype) if space is not None else []
    if not graphs:
        return None
    wide = max(len(g.nodes) for g in graphs) > 4
    fig = Figure(figsize=(5.5 * len(graphs), 3.8) if wide else (5 * len(graphs), 2.8))
    for k, graph in enumerate(graphs):
        _draw_dag(fig.add_subplot(1, len(graphs), k + 1), graph.nodes, graph.edges, graph.title)
    fig.tight_layout()
    return png(fig)


def write_run_figures(run_dir: Path) -> dict[str, Path]:
    """One run's figures as PNG files in ``<run_dir>/figures/`` (what ``report`` shows for it): name -> path."""
    run = load_run(run_dir)
    figures: dict[str, Optional[bytes]] = {}
    last = run.genotypes[-1] if run.genotypes else {}
    if last:
        figures["cells"] = cell_diagram(last.get("genotype", {}))
        figures["alpha"] = alpha_heatmap(last)
    for key, title in CURVES:
        figures[key.replace("/", "_")] = curve_figure({run.short_method: [run]}, key, title)
    out: dict[str, Path] = {}
    for name, image in figures.items():
        if image is not None:
            path = run_dir / "figures" / f"{name}.png"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(image)
            out[name] = path
    return out
