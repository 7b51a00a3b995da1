"""MF-KD vs single-fidelity BO vs REA (and random search) on NAS-Bench-201 CIFAR-10 at the same budget in epochs
(Trofimov et al., arXiv 2006.08341, the search comparison). Every search runs through the CLI (its own run
directory, checkpoints, resume); per method the mean +- std over seeds of the chosen cell's 200-epoch CIFAR-10 test
accuracy (the shipped table), its regret to the best cell (94.37 %), and the evaluations it made, as a Markdown
table. A rerun reuses finished runs.

    python benchmarks/mfkd_search.py --data ../shared/data/cifar10-jpg.tar.gz                    # CPU, reduced
    python benchmarks/mfkd_search.py --data <cifar10> --full --parallel 1                        # GPU

The table methods (BO, REA, random search) get ``budget_epochs / 200`` queries, MF-KD the epochs themselves
(experiments/mf_kd/nb201_cifar10_cpu.yaml: 19 table queries + 26 two-epoch KD trainings at 4,000 epochs). MF-NST
and MF-CE are MF-KD with NST (beta 12.5) or cross-entropy low-fidelity trainings (the ablation of the
distillation). The teacher is experiments/mf_kd/teacher_nb201_cifar10_cpu.yaml's run (trained first if missing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from mfkd_correlation import teacher_checkpoint  # noqa: E402
from ws_variance import run_all  # noqa: E402

MF_CPU, MF_GPU = "experiments/mf_kd/nb201_cifar10_cpu.yaml", "experiments/mf_kd/nb201_cifar10.yaml"
LOSS = {"MF-CE": {"class_path": "lightning_nas.methods.training.distill_losses.CrossEntropy"},
        "MF-NST": {"class_path": "lightning_nas.methods.training.distill_losses.NST", "init_args": {"beta": 12.5}}}
METHODS = ["MF-KD", "MF-NST", "MF-CE", "BO", "REA", "random search"]
BEST = 94.37


def config(method: str, args: argparse.Namespace) -> str:
    if method.startswith("MF"):
        return MF_GPU if args.full else MF_CPU
    return {"BO": "experiments/bo/nb201_cifar10.yaml", "REA": "experiments/rea/nb201_cifar10.yaml",
            "random search": "experiments/random_search/nb201_cifar10.yaml"}[method]


def command(method: str, seed: int, args: argparse.Namespace) -> list[str]:
    """The search's command line; ``--config`` first, so the options after it override the config's."""
    cmd = [sys.executable, "-m", "lightning_nas", "fit", "--config", config(method, args), "--seed_everything",
           str(seed), "--run.root", args.root, "--run.name", method.replace(" ", "_"), "--run.version", f"seed{seed}",
           "--trainer.enable_progress_bar", "false"]
    if not method.startswith("MF"):
        return cmd + ["--model.init_args.budget", str(int(args.budget_epochs // 200))]
    cmd += ["--model.init_args.budget_epochs", str(args.budget_epochs), "--model.init_args.teacher", str(args.teacher)]
    if not args.full:
        cmd += ["--data.init_args.data_dir", args.data]
    return cmd + (["--model.init_args.loss", json.dumps(LOSS[method])] if method in LOSS else [])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--root", default="ckpt/mfkd_search")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--budget-epochs", type=float, default=4000.0)
    p.add_argument("--teacher", default=None)
    p.add_argument("--full", action="store_true")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    args.teacher = str(teacher_checkpoint(args)) if any(m.startswith("MF") for m in args.methods) else None
    jobs = [(m, s) for m in args.methods for s in args.seeds]
    runs = run_all(jobs, args, lambda m, s: command(m, s, args))
    lines = [f"NAS-Bench-201 CIFAR-10, budget {args.budget_epochs:g} epochs, seeds {args.seeds}", "",
             "| method | chosen cell's test acc (%) | regret (%) | table queries | low-fidelity trainings |",
             "| --- | --- | --- | --- | --- |"]
    result = {}
    for method in args.methods:
        accs, highs, lows = [], [], []
        for seed in args.seeds:
            summary = json.loads((runs[(method, seed)] / "summary.json").read_text())
            accs.append(summary["incumbent"]["cifar10_test"])
            highs.append(summary.get("high_fidelity_evaluations", summary["evaluated"]))
            lows.append(summary.get("low_fidelity_evaluations", 0))
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        result[method] = {"accuracy": accs, "high": highs, "low": lows}
        lines.append(f"| {method} | {statistics.fmean(accs):.2f} +- {sd:.2f} | {BEST - statistics.fmean(accs):.2f} | "
                     f"{statistics.fmean(highs):g} | {statistics.fmean(lows):g} |")
    text = "\n".join(lines)
    out = REPO / args.root
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text + "\n")
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
