"""Ranking-stability metrics of weight sharing (Zhang et al., "Deeper Insights into Weight Sharing in NAS",
arXiv 2001.01431, Sec. 3-4) and the cross-run report.

- S-Tau: Kendall tau between two rankings of the same children by shared-weight accuracy (consecutive
  evaluations of one run, or two runs with different seeds);
- GT-Tau: Kendall tau between the shared-weight ranking and the ground truth (on NAS-Bench-201: the benchmark's
  200-epoch accuracy);
- TnR: the best ground-truth rank (1 = the panel's best) among the top n children of the shared-weight ranking.
  Ties in either ranking go to the earlier child (a stable order, our choice): the official script's ``argsort``
  is not stable, so on tied accuracies its TnR can differ from ours and between its own runs.

Kendall tau is scipy's tau-b (ties counted as in scipy); a constant ranking gives nan.

``python -m lightning_nas ws-variance RUN_DIR...`` reads the ``ws_variance.csv`` the ``WeightSharingVariance``
callback writes in each run directory and reports S-Tau across the runs (all pairs), and per run GT-Tau, its
mean and std over the last evaluated mini-batches, and TnR.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import yaml
from scipy.stats import kendalltau

from lightning_nas.errors import ConfigError

CSV_NAME = "ws_variance.csv"
CSV_FIELDS = ("epoch", "step", "point", "child", "genotype", "group", "shared_acc", "benchmark_acc")


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b of two score lists over the same children (scipy)."""
    if len(a) != len(b):
        raise ValueError(f"rankings of different lengths: {len(a)} and {len(b)}")
    if len(a) < 2:
        return math.nan
    return float(kendalltau(a, b).statistic)


def top_n_rank(shared: Sequence[float], truth: Sequence[float], n: int) -> int:
    """TnR: the best true rank (1-based, 1 = highest ``truth``) among the ``n`` children with the highest
    ``shared`` accuracy. Ties in either list go to the earlier child."""
    true_order = sorted(range(len(truth)), key=lambda i: (-truth[i], i))
    true_rank = {child: r + 1 for r, child in enumerate(true_order)}
    top = sorted(range(len(shared)), key=lambda i: (-shared[i], i))[:n]
    return min(true_rank[i] for i in top)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (n - 1, as ``report``'s; 0 for one value) of the finite values (nan, nan when there are
    none)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


# ---- the run directories' panel accuracies -----------------------------------------------------------
def read_panel(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / CSV_NAME
    if Path(run_dir).is_file() and Path(run_dir).name == CSV_NAME:
        path = Path(run_dir)
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no {CSV_NAME}: attach lightning_nas.callbacks.WeightSharingVariance to "
                          "the run (trainer.callbacks) to record its panel")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["epoch"], r["step"], r["child"] = int(r["epoch"]), int(r["step"]), int(r["child"])
        r["shared_acc"] = float(r["shared_acc"])
        r["benchmark_acc"] = float(r["benchmark_acc"]) if r["benchmark_acc"] not in ("", None) else math.nan
    return rows


def _evaluations(rows: list[dict[str, Any]], point: str) -> dict[int, list[dict[str, Any]]]:
    by_step: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        if r["point"] == point:
            by_step.setdefault(r["step"], []).append(r)
    return {s: sorted(v, key=lambda r: r["child"]) for s, v in sorted(by_step.items())}


def run_report(rows: list[dict[str, Any]], top_n: Sequence[int] = (1, 5, 10), epoch: Optional[int] = None
               ) -> dict[str, Any]:
    """GT-Tau, TnR and the last-batches statistics of one run's panel (its last epoch evaluation, or ``epoch``)."""
    epochs = _evaluations(rows, "epoch")
    if epoch is not None:
        epochs = {s: v for s, v in epochs.items() if v[0]["epoch"] == epoch}
    if not epochs:
        raise ConfigError(f"no epoch evaluation{'' if epoch is None else f' at epoch {epoch}'} in the panel file")
    step, final = list(epochs.items())[-1]
    shared = [r["shared_acc"] for r in final]
    truth = [r["benchmark_acc"] for r in final]
    report: dict[str, Any] = {"epoch": final[0]["epoch"], "step": step, "panel": len(final),
                              "accuracy": {r["genotype"]: r["shared_acc"] for r in final}}
    has_truth = all(math.isfinite(t) for t in truth)
    if has_truth:
        report["gt_tau"] = kendall_tau(shared, truth)
        report.update({f"t{n}r": top_n_rank(shared, truth, n) for n in top_n})
    batches = [v for v in _evaluations(rows, "batch").values() if v[0]["epoch"] == final[0]["epoch"]]
    if batches:
        report["last_batches"] = len(batches)
        if has_truth:
            taus = [kendall_tau([r["shared_acc"] for r in b], truth) for b in batches]
            report["gt_tau_last_mean"], report["gt_tau_last_std"] = mean_std(taus)
        s = [kendall_tau([r["shared_acc"] for r in a], [r["shared_acc"] for r in b])
             for a, b in zip(batches, batches[1:])]
        report["s_tau_consecutive_batches_mean"], report["s_tau_consecutive_batches_std"] = mean_std(s)
    return report


def s_tau_across(accuracies: Sequence[dict[str, float]]) -> dict[str, Any]:
    """S-Tau between every pair of runs over the children all of them evaluated."""
    common = sorted(set.intersection(*(set(a) for a in accuracies))) if accuracies else []
    if len(accuracies) < 2 or len(common) < 2:
        raise ConfigError("S-Tau across runs needs at least two runs whose panels share at least two children "
                          "(use the same WeightSharingVariance panel_seed and panel_size in every run)")
    taus = [kendall_tau([a[c] for c in common], [b[c] for c in common])
            for a, b in itertools.combinations(accuracies, 2)]
    mean, std = mean_std(taus)
    return {"s_tau_mean": mean, "s_tau_std": std, "pairs": len(taus), "children": len(common)}


#: config keys that differ between runs of one variant (the seeds) or do not change what is searched (paths)
_SAME_VARIANT = re.compile(r"(^|\.)(seed\w*|data_dir|root|cache_dir|resident)$")


def _leaves(node: Any, prefix: str) -> dict[str, Any]:
    """A config section as dotted keys, seeds and paths left out."""
    if isinstance(node, dict):
        return {k: v for key, child in node.items() for k, v in _leaves(child, f"{prefix}.{key}").items()}
    return {} if _SAME_VARIANT.search(prefix) else {prefix: node}


def config_differences(run_dirs: Sequence[Path]) -> list[str]:
    """The model / data / trainer.max_epochs settings in which the runs' config.yaml differ (seeds and paths
    aside), as ``key: value, value, ...``: statistics over such runs mix different searches."""
    flat: list[dict[str, Any]] = []
    for d in run_dirs:
        path = (Path(d).parent if Path(d).is_file() else Path(d)) / "config.yaml"  # a run or its ws_variance.csv
        try:
            config = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
        except (OSError, yaml.YAMLError):
            config = {}
        values: dict[str, Any] = {"trainer.max_epochs": (config.get("trainer") or {}).get("max_epochs")}
        for section in ("model", "data"):
            values.update(_leaves(config.get(section), section))
        flat.append(values)
    keys = sorted(set().union(*flat)) if flat else []
    return [f"{k}: {', '.join(str(f.get(k)) for f in flat)}" for k in keys if len({str(f.get(k)) for f in flat}) > 1]


def compare_runs(run_dirs: Sequence[Path], top_n: Sequence[int] = (1, 5, 10), epoch: Optional[int] = None
                 ) -> dict[str, Any]:
    runs = {str(d): run_report(read_panel(Path(d)), top_n, epoch) for d in run_dirs}
    out: dict[str, Any] = {"runs": {d: {k: v for k, v in r.items() if k != "accuracy"} for d, r in runs.items()},
                           "config_differences": config_differences(list(run_dirs))}
    if len(runs) >= 2:
        out["across_runs"] = s_tau_across([r["accuracy"] for r in runs.values()])
    for key in ("gt_tau", "gt_tau_last_mean", *(f"t{n}r" for n in top_n)):
        values = [float(r[key]) for r in runs.values() if key in r]
        if values:
            mean, std = mean_std(values)
            out.setdefault("over_runs", {})[key] = {"mean": mean, "std": std}
    return out


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_nas ws-variance",
        description="Weight-sharing variance across runs (Zhang et al. 2020): S-Tau between the runs' panel "
                    "rankings, and per run GT-Tau (NAS-Bench-201), its mean/std over the last mini-batches, TnR. "
                    "Reads ws_variance.csv of each run directory (the WeightSharingVariance callback).")
    parser.add_argument("runs", nargs="+", help="run directories (or their ws_variance.csv)")
    parser.add_argument("--epoch", type=int, default=None,
                        help="compare this epoch's evaluation, numbered as in ws_variance.csv (from 1) (default: last)")
    parser.add_argument("--top-n", type=int, nargs="+", default=[1, 5, 10], help="n of TnR")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    try:
        report = compare_runs([Path(r) for r in args.runs], args.top_n, args.epoch)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    if report["config_differences"]:
        print("warning: the runs differ in more than their seeds, so the numbers across them mix different searches: "
              + "; ".join(report["config_differences"]), file=sys.stderr)
    for d, r in report["runs"].items():
        print(d)
        print("  " + ", ".join(f"{k} {_fmt(v)}" for k, v in r.items()))
    if "across_runs" in report:
        a = report["across_runs"]
        print(f"S-Tau across runs: {a['s_tau_mean']:.4f} +- {a['s_tau_std']:.4f} ({a['pairs']} pairs, "
              f"{a['children']} children)")
    for key, v in report.get("over_runs", {}).items():
        print(f"{key} over runs: {v['mean']:.4f} +- {v['std']:.4f}")
    return 0
