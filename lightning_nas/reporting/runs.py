"""Reading run directories (summary.json, config.yaml, metrics.csv, genotypes.jsonl) and grouping them."""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from lightning_nas.errors import ConfigError

#: the default grouping: one group per method variant x search space x dataset (``variant``: the options the method
#: declares make it another method, e.g. DARTS's order, a retraining's genotype; see ``NASModule.variant``)
DEFAULT_GROUP_BY = ("method", "variant", "space", "dataset")
#: final metrics of a group's table: (label, how to read it from a run)
TABLE_METRICS = (
    ("final held-out accuracy (%)", "val/acc"),
    ("NB201 CIFAR-10 test acc (%)", "benchmark/cifar10_test"),
    ("test acc (%)", "test/acc"),
    ("s per step", "s_per_step"),
    ("wall-clock hours", "wall_hours"),
    ("parameters", "num_parameters"),
)
#: curves drawn per group (metric, title), when the runs logged them
CURVES = (
    ("val/acc", "held-out accuracy"),
    ("search/arch_loss", "architecture loss"),
    ("search/weight_loss", "weight loss"),
    ("landscape/hessian_eig", "dominant Hessian eigenvalue (alpha)"),
    ("benchmark/cifar10_test", "anytime NB201 CIFAR-10 accuracy"),
    ("skip_connections", "skip connections in the normal cell"),
)


@dataclass
class Run:
    path: Path
    summary: dict[str, Any]
    config: dict[str, Any]
    config_text: str = ""
    rows: list[dict[str, str]] = field(default_factory=list)
    genotypes: list[dict[str, Any]] = field(default_factory=list)
    #: ``validate`` / ``test`` runs of this run's checkpoints, by subcommand: their final metrics (the latest)
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def subcommand(self) -> str:
        return str(self.summary.get("subcommand") or "fit")

    def evaluated_run(self) -> Optional[Path]:
        """For a ``validate`` / ``test`` run: the run directory whose checkpoint it evaluated, if it was one."""
        ckpt = self.config.get("ckpt_path")
        if not ckpt:
            return None
        path = Path(str(ckpt))
        return path.parent.parent.resolve() if path.parent.name == "checkpoints" else None

    @property
    def seed(self) -> Any:
        return self.summary.get("seed")

    @property
    def short_method(self) -> str:
        return str(self.summary.get("method", "")).rsplit(".", 1)[-1]

    def get(self, key: str) -> Any:
        """A summary field (``dataset`` from the data description), else a dotted key of the resolved config."""
        if key == "dataset":
            return (self.summary.get("data") or {}).get("dataset")
        if key == "method":
            return self.short_method
        if key == "variant":  # runs written before summary.json had it: "" (grouped by the other keys alone)
            return variant_label(self.summary.get("variant") or {})
        if key == "space":  # the supernet class, with the options that make another supernet (PC-DARTS's)
            space_id = str(self.summary.get("space"))
            options = re.findall(r"partial_channels=\d+|edge_normalization", space_id)
            return space_id.split("(")[0] + (f" ({', '.join(options)})" if options else "")
        if key in self.summary:
            return self.summary[key]
        node: Any = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def final(self, key: str) -> Optional[float]:
        """A final number of the run (percentages for accuracies in [0, 1])."""
        metrics = self.summary.get("metrics") or {}
        if key == "s_per_step":
            steps = self.summary.get("search_steps") or self.summary.get("global_step")
            return self.summary["wall_time_s"] / steps if steps and self.summary.get("wall_time_s") else None
        if key == "wall_hours":
            return self.summary["wall_time_s"] / 3600 if self.summary.get("wall_time_s") else None
        if key == "num_parameters":
            return self.summary.get("num_parameters")
        value = metrics.get(key)
        if value is None and key.startswith(("test/", "val/")):  # from a validate / test run of this run
            value = (self.evaluations.get("test" if key.startswith("test/") else "validate") or {}).get(key)
        if value is None:
            return None
        return 100 * value if key.endswith("/acc") else value

    def final_space(self) -> Optional[Any]:
        """The search space of the run's last genotype record (None: no record, or a cell of no known space)."""
        from lightning_nas.search_spaces.space import space_of_record

        return space_of_record(self.genotypes[-1].get("genotype") or {}) if self.genotypes else None

    def curve(self, key: str) -> dict[int, float]:
        """Per epoch, the last value of ``key`` in metrics.csv (or the normal cell's skip connections)."""
        if key == "skip_connections":  # a search's pick per epoch; a training's cell is fixed: no curve
            if self.summary.get("num_parameters") is not None:
                return {}
            return {r["epoch"]: float(skip_count(r["genotype"])) for r in self.genotypes
                    if skip_count(r["genotype"]) is not None}
        out: dict[int, float] = {}
        for r in self.rows:
            if r.get(key) not in (None, "") and r.get("epoch") not in (None, ""):
                out[int(r["epoch"])] = float(r[key])
        return out


def variant_label(variant: dict[str, Any]) -> str:
    """``order=2``, ``projector=OWMProjector, groups=4``; a long value (a genotype) as a short digest of its text
    (the group's runs list the full genotype)."""
    import hashlib

    def short(value: Any) -> str:
        text = str(value)
        return text if len(text) <= 40 else "#" + hashlib.sha1(text.encode()).hexdigest()[:8]

    return ", ".join(f"{k}={short(v)}" for k, v in variant.items())


def skip_count(genotype: dict[str, Any]) -> Optional[int]:
    """Skip connections in a DARTS genotype's normal cell (the DARTS collapse measure); None for other cells."""
    if "normal" in genotype:
        return sum(1 for op, _ in genotype["normal"] if op == "skip_connect")
    return None


class DamagedRun(ValueError):
    """A run directory whose summary or config cannot be read: skipped by reports, named in a warning."""


def find_runs(paths: Iterable[Path]) -> list[Run]:
    """Every fit run directory (one with a summary.json) at or below ``paths``, in path order, with its evaluations
    attached. A damaged one (a truncated summary.json, a config.yaml that is not YAML, ...) is left out and named on
    stderr, so one broken directory never hides the others."""
    dirs: set[Path] = set()
    for p in paths:
        p = Path(p)
        if (p / "summary.json").is_file():
            dirs.add(p.resolve())
        dirs.update(s.parent.resolve() for s in p.rglob("summary.json"))
    loaded, notes = [], []
    for d in sorted(dirs):
        try:
            loaded.append(load_run(d))
        except DamagedRun as err:
            notes.append(f"skipped run {d}: {err}")
    runs = attach_evaluations(loaded, notes)
    for message in notes:
        print(f"lightning_nas report: {message}", file=sys.stderr)
    return runs


def unfinished_runs(paths: Iterable[Path]) -> list[dict[str, str]]:
    """Run directories at or below ``paths`` that were started and never finished (a config.yaml, no summary.json):
    each with its state, still running (its lock's live owner) or interrupted (how to resume it, or that it died
    before its first checkpoint). Reports list them apart, outside every statistic."""
    from lightning_nas.run_lock import RunLock

    dirs: set[Path] = set()
    for p in paths:
        p = Path(p)
        configs = [*([p / "config.yaml"] if (p / "config.yaml").is_file() else []), *p.rglob("config.yaml")]
        # a run directory has a config.yaml and what fit writes beside it (not a W&B run's files/config.yaml)
        dirs.update(c.parent.resolve() for c in configs if not (c.parent / "summary.json").is_file()
                    and any((c.parent / name).exists() for name in ("checkpoints", "metrics.csv", ".lock")))
    out = []
    for d in sorted(dirs):
        owner = RunLock(d).live_owner()
        last = d / "checkpoints" / "last.ckpt"
        if owner is not None:
            state = f"still running (process {owner.get('pid')} on {owner.get('host')})"
        elif last.is_file():
            state = ("interrupted; resume it with: python -m lightning_nas fit --config "
                     f"{d / 'config.yaml'} --ckpt_path {last}")
        else:
            state = "stopped before its first checkpoint; start it again"
        out.append({"path": str(d), "state": state})
    return out


def attach_evaluations(runs: Sequence[Run], notes: list[str]) -> list[Run]:
    """The fit runs, each with the ``validate`` / ``test`` runs of its checkpoints attached (``evaluations``: the
    latest of each subcommand): an evaluation is a column of the run it evaluated, never a run of its own. One whose
    run is not among ``runs`` is left out and named in ``notes``."""
    fits = [r for r in runs if r.subcommand == "fit"]
    by_path = {r.path.resolve(): r for r in fits}
    for run in sorted((r for r in runs if r.subcommand != "fit"), key=lambda r: r.path.stat().st_mtime):
        target = by_path.get(run.evaluated_run())
        if target is None:
            notes.append(f"left out {run.subcommand} run {run.path}: the run it evaluated "
                         f"({run.config.get('ckpt_path')}) is not among the reported ones; pass its folder too")
            continue
        target.evaluations[run.subcommand] = run.summary.get("metrics") or {}
    return fits


def load_run(path: Path) -> Run:
    """The run in ``path``; ``DamagedRun`` names what cannot be read. A partial last line of genotypes.jsonl (a
    run killed while appending) is dropped; metrics.csv rows are read as far as they go."""
    try:
        summary = json.loads((path / "summary.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedRun(f"summary.json cannot be read ({err}); rerun or resume the run to rewrite it") from None
    if not isinstance(summary, dict):
        raise DamagedRun(f"summary.json holds a {type(summary).__name__}, not a run summary (a JSON object)")
    config_file = path / "config.yaml"
    try:
        config_text = config_file.read_text() if config_file.is_file() else ""
        config = yaml.safe_load(config_text) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise DamagedRun(f"config.yaml cannot be read ({str(err).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise DamagedRun(f"config.yaml holds a {type(config).__name__}, not a run config (a mapping)")
    rows: list[dict[str, str]] = []
    if (path / "metrics.csv").is_file():
        try:
            with (path / "metrics.csv").open() as f:
                rows = [r for r in csv.DictReader(f) if None not in r]  # a row wider than the header is damaged
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise DamagedRun(f"metrics.csv cannot be read ({err})") from None
    genotypes: list[dict[str, Any]] = []
    if (path / "genotypes.jsonl").is_file():
        lines = [line for line in (path / "genotypes.jsonl").read_text(errors="replace").splitlines() if line]
        for k, line in enumerate(lines):
            try:
                genotypes.append(json.loads(line))
            except json.JSONDecodeError:
                if k < len(lines) - 1:
                    raise DamagedRun(f"genotypes.jsonl line {k + 1} is not JSON") from None
                # the last line, cut by a kill while it was appended: the epochs before it stand
    if "epoch_numbering" not in summary:  # a run from before epochs were numbered from 1 in every output
        for record in rows:
            if record.get("epoch") not in (None, ""):
                record["epoch"] = str(int(record["epoch"]) + 1)
        for record in genotypes:
            if isinstance(record.get("epoch"), int):
                record["epoch"] += 1
    return Run(path, summary, config, config_text, rows, genotypes)


def group_runs(runs: Sequence[Run], keys: Sequence[str] = DEFAULT_GROUP_BY) -> dict[str, list[Run]]:
    """Runs by their values of ``keys``; a key no run has is refused (it would silently make one group)."""
    for key in keys:
        if runs and all(run.get(key) is None for run in runs):
            raise ConfigError(f"--group-by {key}: no run has it; use summary fields (method, space, dataset, seed) or "
                              "a dotted key of the runs' config.yaml (e.g. model.init_args.order)")
    groups: dict[str, list[Run]] = {}
    for run in runs:
        name = " | ".join(f"{value}" for value in (run.get(k) for k in keys) if value != "")  # "": no variant
        groups.setdefault(name, []).append(run)
    return groups


def mean_std(values: Sequence[float]) -> Optional[tuple[float, float, int]]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def fmt_mean_std(stat: Optional[tuple[float, float, int]]) -> str:
    if stat is None:
        return "-"
    mean, std, n = stat
    digits = 0 if abs(mean) >= 1000 else (2 if abs(mean) >= 1 else 4)
    return f"{mean:,.{digits}f}" if n == 1 else f"{mean:,.{digits}f} ± {std:,.{digits}f}"


def best_run(runs: Sequence[Run], key: str = "val/acc") -> Optional[Run]:
    """The run with the highest final ``key``; a run without it, or with NaN (diverged), is never the best."""
    scored = [r for r in runs if r.final(key) is not None and not math.isnan(r.final(key))]
    return max(scored, key=lambda r: r.final(key)) if scored else None
