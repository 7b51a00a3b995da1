"""The DI-NAS experiment: performance disturbance and ranking quality of single-path weight sharing with plain updates
vs DI-NAS's two orthogonal updates (``OWMProjector``, ``GradientSpaceProjector``; documented interpretations, see
``lightning_nas/methods/single_path/projection.py``), on NAS-Bench-201 with the real CIFAR-10 images and the budget
and seeds of the weight-sharing-variance experiment (``benchmarks/ws_variance.py``). Every run carries the
``DisturbanceProbe`` callback; the table gives per update the disturbance (held-out accuracy of a just-trained child
before minus after k steps on other children; mean +- std over seeds), GT-Tau, S-Tau across seeds, the benchmark
accuracy of the pick and the run time relative to plain updates.

    python benchmarks/di_nas.py --data ../shared/data/cifar10-jpg.tar.gz                 # CPU, reduced budget
    python benchmarks/di_nas.py --data <cifar10 dir or JPEG tar> --full --parallel 1     # GPU, full protocol
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

from ws_variance import add_budget_arguments, budget_text, command, fmt, run_all

from lightning_nas.analysis.ws_variance import compare_runs

PROJECTION = "lightning_nas.methods.single_path.projection"
UPDATES = {
    "plain": [],
    "owm": ["--model.init_args.projector", json.dumps({"class_path": f"{PROJECTION}.OWMProjector"})],
    "gradient": ["--model.init_args.projector",
                 json.dumps({"class_path": f"{PROJECTION}.GradientSpaceProjector", "init_args": {"memory": 10}})],
}
STEPS = (1, 5, 20)


def stat(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0}


def disturbance(run: Path) -> dict[tuple[int, int], float]:
    """Mean drop over the probed children per (epoch, k) of one run."""
    rows = list(csv.DictReader(open(run / "disturbance.csv")))
    out: dict[tuple[int, int], list[float]] = {}
    for r in rows:
        out.setdefault((int(r["epoch"]), int(r["k"])), []).append(float(r["drop"]))
    return {key: statistics.fmean(v) for key, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_budget_arguments(parser, "ckpt/di_nas")
    parser.add_argument("--updates", nargs="+", default=list(UPDATES), choices=list(UPDATES))
    parser.add_argument("--probe-children", type=int, default=4)
    args = parser.parse_args()
    probe = {"class_path": "lightning_nas.callbacks.DisturbanceProbe",
             "init_args": {"children": args.probe_children, "steps": list(STEPS), "prime_steps": 1,
                           "every_n_epochs": max(1, args.epochs // 2), "eval_batches": 2, "calib_batches": 1}}
    jobs = [(u, s) for u in args.updates for s in args.seeds]
    dirs = run_all(jobs, args, lambda update, seed: command(update, seed, args, UPDATES, (probe,)))

    print("| update | probe epoch | " + " | ".join(f"disturbance k={k} (pp)" for k in STEPS)
          + " | GT-Tau (final) | S-Tau across seeds | benchmark acc. of the pick | time vs plain |")
    print("| --- | --- | " + " | ".join("---" for _ in STEPS) + " | --- | --- | --- | --- |")
    times = {u: statistics.fmean(json.loads((dirs[(u, s)] / "summary.json").read_text())["wall_time_s"]
                                 for s in args.seeds) for u in args.updates}
    for update in args.updates:
        runs = [dirs[(update, s)] for s in args.seeds]
        drops = [disturbance(r) for r in runs]
        epochs = sorted({e for d in drops for e, _ in d})
        report = compare_runs(runs, top_n=(1, 10))
        over, across = report.get("over_runs", {}), report.get("across_runs")
        picks = stat([json.loads((r / "summary.json").read_text())["metrics"]["benchmark/cifar10_test"]
                      for r in runs])
        for i, epoch in enumerate(epochs):
            cells = [fmt(stat([100 * d[(epoch, k)] for d in drops if (epoch, k) in d]), 2) for k in STEPS]
            tail = (f"{fmt(over.get('gt_tau'))} | {'-' if across is None else format(across['s_tau_mean'], '.3f')} | "
                    f"{fmt(picks, 2)} | {times[update] / times.get('plain', times[update]):.2f}x"
                    if i == len(epochs) - 1 else " | | | ")
            print(f"| {update} | {epoch + 1} | " + " | ".join(cells) + f" | {tail} |")
    print(f"\nruns under {args.root}; seeds {args.seeds}; {budget_text(args)}; probe: {args.probe_children} children, "
          f"1 priming step, k in {list(STEPS)}, 2 held-out batches of 256 images, BN re-calibrated")


if __name__ == "__main__":
    main()
