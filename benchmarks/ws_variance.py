"""The weight-sharing-variance experiment (Zhang et al., arXiv 2001.01431, Tables 1-4, on NAS-Bench-201):
full sharing vs 4 similarity groups vs 4 random groups, the same seeds and budget, single-path uniform sampling
with the WeightSharingVariance callback. Reports per variant GT-Tau (final evaluation; mean and std over the last
K mini-batches), S-Tau across seeds (all pairs), TnR, and the anytime benchmark accuracy of the search's pick,
as a Markdown table.

    python benchmarks/ws_variance.py --data ../shared/data/cifar10-jpg.tar.gz                    # CPU, reduced
    python benchmarks/ws_variance.py --data <cifar10 dir or JPEG tar> --full --parallel 1        # GPU, full

The full protocol is experiments/single_path/nb201_cifar10.yaml (C=16, N=5, 50 epochs, 25k/25k split, panel 64,
last 64 mini-batches). The CPU default shrinks it (C=8, N=1, 10,000 training images, 8 epochs, panel 64 on 512
held-out images, last 4 mini-batches) and runs ``--parallel`` searches at once, one thread each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lightning_nas.analysis.ws_variance import compare_runs  # noqa: E402

CONFIG = "experiments/single_path/nb201_cifar10.yaml"
VARIANTS = {
    "full sharing": [],
    "4 similarity groups": ["--model.init_args.groups", "4", "--model.init_args.grouping", "similarity"],
    "4 random groups": ["--model.init_args.groups", "4", "--model.init_args.grouping", "random"],
}
PAPER = {"full sharing": "GT-Tau 0.4567 +- 0.1478, S-Tau 0.5415", "4 similarity groups": "GT-Tau-mean 0.7075"}


def command(variant: str, seed: int, args: argparse.Namespace, variants: dict[str, list[str]] = VARIANTS,
            extra_callbacks: tuple[dict, ...] = ()) -> list[str]:
    """The search of ``variant`` with ``seed``: the full protocol, or its CPU reduction with ``args``' budget."""
    cmd = [sys.executable, "-m", "lightning_nas", "fit", "--config", CONFIG, *variants[variant],
           "--seed_everything", str(seed), "--run.root", args.root,
           "--run.name", variant.replace(" ", "_"), "--run.version", f"seed{seed}",
           "--data.init_args.dataset", "image_folder", "--data.init_args.data_dir", args.data,
           "--trainer.enable_progress_bar", "false"]
    if not args.full:
        callbacks = [{"class_path": "lightning_nas.callbacks.BenchmarkAccuracy",
                      "init_args": {"datasets": ["cifar10"]}},
                     {"class_path": "lightning_nas.callbacks.WeightSharingVariance",
                      "init_args": {"panel_size": args.panel, "every_n_epochs": args.epochs, "eval_batches": 2,
                                    "calib_batches": 1, "last_k_batches": args.last_k}}, *extra_callbacks]
        cmd += ["--trainer.max_epochs", str(args.epochs), "--trainer.callbacks", json.dumps(callbacks),
                "--model.init_args.supernet.init_args.channels", str(args.channels),
                "--model.init_args.supernet.init_args.cells_per_stage", str(args.cells_per_stage),
                "--data.init_args.max_train_samples", str(args.train_samples),
                "--model.init_args.candidates", "16", "--model.init_args.rank_batches", "1",
                "--model.init_args.calib_batches", "1", "--trainer.limit_val_batches", "4"]
    return cmd


def run(cmd: list[str], variant: str, seed: int, args: argparse.Namespace) -> Path:
    """Run one search (``args.threads`` torch threads) and return its run directory."""
    threads = str(args.threads)
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"{variant} seed {seed} failed:\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def fmt(stat: dict | None, digits: int = 3) -> str:
    return "-" if stat is None else f"{stat['mean']:.{digits}f} +- {stat['std']:.{digits}f}"


def add_budget_arguments(parser: argparse.ArgumentParser, root: str) -> None:
    """The options every study on this protocol shares: data, seeds, budget, parallelism."""
    parser.add_argument("--data", required=True, help="CIFAR-10 as an image folder or its .tar.gz")
    parser.add_argument("--root", default=root)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--full", action="store_true", help="the full protocol of the config (use a GPU)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--cells-per-stage", type=int, default=1)
    parser.add_argument("--train-samples", type=int, default=10000)
    parser.add_argument("--panel", type=int, default=64)
    parser.add_argument("--last-k", type=int, default=4)
    parser.add_argument("--parallel", type=int, default=2, help="searches at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per search")
    parser.add_argument("--report-only", action="store_true", help="tabulate the runs already under --root")


def run_all(jobs: list[tuple[str, int]], args: argparse.Namespace,
            build: Callable[[str, int], list[str]]) -> dict[tuple[str, int], Path]:
    """Run every (variant, seed) search (``args.parallel`` at once) or, with ``--report-only``, find them. Runs
    that finished before (their summary.json exists) are reused, so an interrupted study continues."""
    if args.report_only:
        return {job: Path(args.root) / job[0].replace(" ", "_") / f"seed{job[1]}" for job in jobs}
    from lightning_nas.data.sources import load_dataset

    load_dataset("image_folder", args.data)  # decode and cache once, before the searches start in parallel
    done = {job: Path(args.root) / job[0].replace(" ", "_") / f"seed{job[1]}" for job in jobs}
    done = {job: d for job, d in done.items() if (d / "summary.json").is_file()}
    for job in jobs:  # a run this script started and that did not finish is started again
        unfinished = Path(args.root) / job[0].replace(" ", "_") / f"seed{job[1]}"
        if job not in done and unfinished.exists():
            print(f"removing the unfinished run {unfinished}", file=sys.stderr)
            shutil.rmtree(unfinished)
    todo = [job for job in jobs if job not in done]
    with ThreadPoolExecutor(args.parallel) as pool:
        return {**done, **dict(zip(todo, pool.map(lambda job: run(build(*job), *job, args), todo)))}


def budget_text(args: argparse.Namespace) -> str:
    return ("full protocol" if args.full else
            f"C={args.channels}, N={args.cells_per_stage}, {args.train_samples} train images, {args.epochs} epochs, "
            f"panel {args.panel}, last {args.last_k} batches")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_budget_arguments(parser, "ckpt/ws_variance")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    jobs = [(v, s) for v in args.variants for s in args.seeds]
    dirs = run_all(jobs, args, lambda variant, seed: command(variant, seed, args))
    print("| sharing | GT-Tau (final) | GT-Tau over last K batches (mean of per-run mean +- std) | S-Tau across "
          "seeds | T1R | T10R | benchmark acc. of the pick (CIFAR-10) | paper (its own 64-child space) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for variant in args.variants:
        runs = [dirs[(variant, s)] for s in args.seeds]
        report = compare_runs(runs, top_n=(1, 10))
        over = report.get("over_runs", {})
        per_run_std = [r.get("gt_tau_last_std") for r in report["runs"].values()]
        last_std = sum(per_run_std) / len(per_run_std) if all(v is not None for v in per_run_std) else None
        across = report.get("across_runs")
        picks = [json.loads((r / "summary.json").read_text())["metrics"].get("benchmark/cifar10_test") for r in runs]
        picks = [p for p in picks if p is not None]
        pick_stat = None if not picks else {"mean": sum(picks) / len(picks),
                                            "std": (sum((p - sum(picks) / len(picks)) ** 2 for p in picks)
                                                    / len(picks)) ** 0.5}
        last = over.get("gt_tau_last_mean")
        last_txt = "-" if last is None else f"{last['mean']:.3f} (+- {last_std:.3f} within runs)"
        print(f"| {variant} | {fmt(over.get('gt_tau'))} | {last_txt} | "
              f"{'-' if across is None else format(across['s_tau_mean'], '.3f')} | {fmt(over.get('t1r'), 1)} | "
              f"{fmt(over.get('t10r'), 1)} | {fmt(pick_stat, 2)} | {PAPER.get(variant, '-')} |")
    print(f"\nruns under {args.root}; seeds {args.seeds}; {budget_text(args)}")


if __name__ == "__main__":
    main()
