"""The report's figures, drawn with matplotlib's object API (no pyplot state) as PNG bytes, which ``data_uri``
inlines so the HTML opens offline and ``write_run_figures`` writes as files: curves over epochs (mean with a
min-max band over a group's runs), alpha heatmaps (softmax per edge and op at the last epoch) and cell diagrams
(a DARTS cell pair or a NAS-Bench-201 cell).

Cell diagrams are drawn as the DARTS paper draws them, with graphviz's ``dot`` where it is installed (Debian's
``graphviz`` package; CI installs it), else with matplotlib in a fixed left-to-right layout (a cell has at most seven
nodes), labels legible at page width either way.
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


def curve_figure(groups: dict[str, list[Run]], key: str, title: str,
                 reference: Optional[tuple[float, str]] = None) -> Optional[bytes]:
    """Mean over each group's runs per epoch (epochs from 1, integer ticks), with the min-max band, the legend outside
    the axes; ``reference``: a horizontal line (value, label), e.g. the benchmark's optimum. None when no group has
    ``key`` at two epochs or more: a single dot is no curve."""
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 3.2))
    ax = fig.add_subplot()
    drawn = False
    for name, runs in groups.items():
        curves = [c for c in (r.curve(key) for r in runs) if c]
        epochs = sorted(set().union(*curves)) if curves else []
        if len(epochs) < 2:
            continue
        values = [[c[e] for c in curves if e in c] for e in epochs]
        mean = [sum(v) / len(v) for v in values]
        line, = ax.plot(epochs, mean, marker=".", label=f"{name} ({len(curves)})")
        if len(curves) > 1:
            ax.fill_between(epochs, [min(v) for v in values], [max(v) for v in values], alpha=0.2,
                            color=line.get_color())
        drawn = True
    if not drawn:
        return None
    if reference is not None:
        ax.axhline(reference[0], ls="--", lw=0.8, color="#777", label=reference[1])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", title=title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    fig.tight_layout()
    return png(fig)


def alpha_heatmap(record: dict[str, Any]) -> Optional[bytes]:
    """softmax(alpha) per edge (rows) and op (columns) of every cell type, from a genotypes.jsonl record, each
    cell on a colour scale from its smallest to its largest value."""
    alphas = record.get("alpha_softmax")
    if not alphas:
        return None
    ops = record.get("primitives") or []
    fig = Figure(figsize=(2.2 + 0.45 * len(ops) * len(alphas), 3.4))
    for k, (cell, rows) in enumerate(alphas.items()):
        ax = fig.add_subplot(1, len(alphas), k + 1)
        # the colour scale spans this cell's values: a near-uniform softmax still shows which op leads
        im = ax.imshow(rows, cmap="viridis", vmin=min(min(r) for r in rows), vmax=max(max(r) for r in rows),
                       aspect="auto")
        ax.set_xticks(range(len(ops)), ops, rotation=60, ha="right", fontsize=6)
        ax.set_yticks(range(len(rows)), [f"e{e}" for e in range(len(rows))], fontsize=6)
        ax.set_title(f"{cell} (epoch {record.get('epoch')})", fontsize=8)
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
            ax.text((src + dst) / 2, 0.08 + height, op, ha="center", va="bottom", fontsize=9, color=colour)
    for i, name in enumerate(nodes):
        ax.text(i, 0, name, ha="center", va="center", fontsize=10,
                bbox={"boxstyle": "round", "fc": "#dde8f5" if i < len(nodes) - 1 else "#f5e6cc", "ec": "#555"})
    ax.text((len(nodes) - 1) / 2, -0.35, title, ha="center", va="top", fontsize=11)
    ax.set_xlim(-0.6, len(nodes) - 0.4)
    ax.set_ylim(-0.6, top + 0.35)
    ax.axis("off")


def cell_dot(graphs: Sequence[Any]) -> str:
    """The cells as one graphviz graph drawn like the DARTS paper's figures: left to right, inputs green,
    intermediate nodes blue, the output yellow, each edge labelled with its op; one cluster per cell."""
    def quote(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["digraph cells {", "  rankdir=LR; newrank=true; fontname=Helvetica; fontsize=22;",
             '  node [shape=box, style="rounded,filled", fontname=Helvetica, fontsize=20, height=0.5, penwidth=1.5];',
             "  edge [fontname=Helvetica, fontsize=18, penwidth=1.5];"]
    for k, graph in reversed(list(enumerate(graphs))):  # dot stacks later clusters above: the first cell on top
        targets = {dst for _, dst, _ in graph.edges}
        lines.append(f"  subgraph cluster_{k} {{ label={quote(graph.title)}; color=white;")
        for i, name in enumerate(graph.nodes):
            colour = ("lightyellow2" if i == len(graph.nodes) - 1 else "lightblue" if i in targets
                      else "darkseagreen2")
            lines.append(f"    c{k}_{i} [label={quote(name)}, fillcolor={colour}];")
        for src, dst, op in graph.edges:
            red = ', color="#bb3333", fontcolor="#bb3333"' if op in ("skip_connect", "none") else ""
            lines.append(f"    c{k}_{src} -> c{k}_{dst} [label={quote(op)}{red}];" if op else
                         f"    c{k}_{src} -> c{k}_{dst} [color=gray50];")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines)


def _graphviz_png(dot_text: str) -> Optional[bytes]:
    """``dot -Tpng`` of the graph, None where graphviz is not installed or fails (the matplotlib drawing is used)."""
    import shutil
    import subprocess

    dot = shutil.which("dot")
    if dot is None:
        return None
    try:
        out = subprocess.run([dot, "-Tpng", "-Gdpi=80"], input=dot_text.encode(), capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 and out.stdout.startswith(b"\x89PNG") else None


def cell_diagram(genotype: dict[str, Any], engine: str = "auto") -> Optional[bytes]:
    """The cells of a genotype record as its space describes them (``SearchSpace.cell_graphs``: a DARTS
    genotype's normal and reduction cells, a NAS-Bench-201 cell); None where there are none. ``engine``: ``auto``
    (graphviz's ``dot`` where it is installed, else matplotlib), ``graphviz`` or ``matplotlib``."""
    space = space_of_record(genotype)
    graphs = space.cell_graphs(genotype) if space is not None else []
    if not graphs:
        return None
    if engine in ("auto", "graphviz"):
        image = _graphviz_png(cell_dot(graphs))
        if image is not None or engine == "graphviz":
            return image
    wide = max(len(g.nodes) for g in graphs) > 4
    fig = Figure(figsize=(7.5 * len(graphs), 4.6) if wide else (6 * len(graphs), 3.2))
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
