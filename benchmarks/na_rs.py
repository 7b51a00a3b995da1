"""NA-RS vs random search with weight sharing (RSPS) on the same trained supernets: each finished single-path run
(default: the plain-update runs of ``benchmarks/di_nas.py``, i.e. the ws-variance budget on real CIFAR-10) is
re-ranked by ``python -m lightning_nas validate`` from its last checkpoint with ``neighbours`` K = 0 (RSPS) and
K > 0 (NA-RS, ``aggregation`` over the candidate and K neighbours at distance 1), the same candidates and held-out
batches. Reported per K: the NAS-Bench-201 CIFAR-10 accuracy of the pick (mean +- std over runs), Kendall tau of
the candidates' scores with their benchmark accuracies, and the candidates' mean and best benchmark accuracy.

    python benchmarks/na_rs.py --runs ckpt/di_nas/plain/seed*
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lightning_nas.analysis.ws_variance import kendall_tau  # noqa: E402
from lightning_nas.search_spaces.nb201.arch import load_arch  # noqa: E402
from lightning_nas.tabular.nb201 import load_benchmark  # noqa: E402


def rerank(run: Path, k: int, args: argparse.Namespace) -> dict:
    out = Path(args.root)
    cmd = [sys.executable, "-m", "lightning_nas", "validate", "--config", str(run / "config.yaml"),
           "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--run.root", str(out),
           "--run.name", run.parent.name + "_" + run.name, "--run.version", f"K{k}_{args.aggregation}",
           "--model.init_args.neighbours", str(k), "--model.init_args.distance", str(args.distance),
           "--model.init_args.aggregation", args.aggregation,
           "--model.init_args.candidates", str(args.candidates),
           "--model.init_args.rank_batches", str(args.rank_batches), "--trainer.callbacks", "[]",
           "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"{run} K={k} failed:\n{proc.stderr[-3000:]}")
    return json.loads((Path(proc.stdout.strip().splitlines()[-1]) / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="single-path run directories (RSPS training)")
    parser.add_argument("--neighbours", type=int, nargs="+", default=[0, 4, 8])
    parser.add_argument("--distance", type=int, default=1)
    parser.add_argument("--aggregation", default="mean", choices=["mean", "max", "min"])
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--rank-batches", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--root", default="ckpt/na_rs")
    args = parser.parse_args()
    bench = load_benchmark()
    rows = {}
    for k in args.neighbours:
        picks, taus, means, bests = [], [], [], []
        for run in map(Path, args.runs):
            summary = rerank(run, k, args)
            truth = [bench.accuracy(load_arch(r["genotype"]), "cifar10") for r in summary["ranking"]]
            picks.append(bench.accuracy(load_arch(summary["genotype"]), "cifar10"))
            taus.append(kendall_tau([r["score"] for r in summary["ranking"]], truth))
            means.append(statistics.fmean(truth))
            bests.append(max(truth))
        rows[k] = (picks, taus, means, bests)

    def ms(v: list[float], digits: int = 2) -> str:
        return f"{statistics.fmean(v):.{digits}f} +- {statistics.pstdev(v):.{digits}f}"

    print("| scoring | benchmark acc. of the pick (CIFAR-10) | per run | Kendall tau(score, benchmark) "
          "| candidates' mean acc. | best candidate |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k, (picks, taus, means, bests) in rows.items():
        name = "RSPS (K=0)" if k == 0 else f"NA-RS K={k}, d={args.distance}, {args.aggregation}"
        print(f"| {name} | {ms(picks)} | {', '.join(f'{p:.2f}' for p in picks)} | {ms(taus, 3)} | {ms(means)} | "
              f"{ms(bests)} |")
    print(f"\n{len(args.runs)} supernets ({', '.join(args.runs)}); {args.candidates} candidates ranked on "
          f"{args.rank_batches} held-out batches, BN re-calibrated per child")


if __name__ == "__main__":
    main()
