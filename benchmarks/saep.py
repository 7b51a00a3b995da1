"""SAEP's comparison (Bian et al., IEEE TNNLS 2021): the unpruned AdaNet ensemble vs PRS vs PAP vs PIE with the
same seeds and budget on real CIFAR-10. Per criterion, mean +- std over seeds of the final ensemble size, test
accuracy, diversity (pairwise disagreement, VI, MI with the labels) and parameters, as a Markdown table.

    python benchmarks/saep.py --data ../shared/data/cifar10-jpg.tar.gz              # CPU, reduced
    python benchmarks/saep.py --data <cifar10> --full --parallel 1    # GPU: experiments/saep/cifar10.yaml

The CPU reduction: 16x16 images, 10,000 training and 2,000 test images, 8 channels, 6 iterations of 60 steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from ws_variance import run_all  # noqa: E402

CONFIG = "experiments/saep/cifar10.yaml"
CRITERIA = ["none", "prs", "pap", "pie"]


def command(criterion: str, seed: int, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "lightning_nas", "fit", "--config", CONFIG, "--model.init_args.pruning", criterion,
           "--seed_everything", str(seed), "--run.root", args.root, "--run.name", criterion,
           "--run.version", f"seed{seed}", "--data.init_args.dataset", "image_folder",
           "--data.init_args.data_dir", args.data, "--data.init_args.download", "false",
           "--trainer.enable_progress_bar", "false"]
    if not args.full:
        cmd += ["--trainer.max_epochs", str(args.iterations), "--trainer.limit_train_batches", str(args.steps),
                "--model.init_args.channels", str(args.channels), "--data.init_args.image_size", "16",
                "--data.init_args.crop_padding", "2", "--data.init_args.max_train_samples", str(args.train_samples),
                "--data.init_args.max_test_samples", "2000"]
    return cmd


def stat(values: list[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} +- {statistics.stdev(values):.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="CIFAR-10 as an image folder or its .tar.gz")
    parser.add_argument("--root", default="ckpt/saep")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--criteria", nargs="+", default=CRITERIA, choices=CRITERIA)
    parser.add_argument("--full", action="store_true", help="the config's full budget (use a GPU)")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--steps", type=int, default=60, help="training steps per iteration")
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--train-samples", type=int, default=10000)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()

    jobs = [(c, s) for s in args.seeds for c in args.criteria]
    runs = run_all(jobs, args, lambda c, s: command(c, s, args))
    budget = "full config" if args.full else \
        f"{args.iterations} iterations x {args.steps} steps, C={args.channels}, 16x16 images"
    print(f"SAEP on CIFAR-10, seeds {args.seeds}, {budget}\n")
    print("| pruning | ensemble size | test acc (%) | disagreement | VI | MI(h, y) | parameters | members pruned |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for crit in args.criteria:
        sums = [json.loads((runs[(crit, s)] / "summary.json").read_text()) for s in args.seeds]
        div = [s["iterations"][-1]["diversity"] for s in sums]
        print(f"| {crit} | {stat([s['ensemble_size'] for s in sums], 1)} | "
              f"{stat([100 * s['metrics']['val/acc'] for s in sums])} | "
              f"{stat([d['disagreement'] for d in div], 3)} | {stat([d['vi'] for d in div], 3)} | "
              f"{stat([d['mi_label'] for d in div], 3)} | {stat([s['num_parameters'] for s in sums], 0)} | "
              f"{stat([sum(len(it['pruned']) for it in s['iterations']) for s in sums], 1)} |")


if __name__ == "__main__":
    main()
