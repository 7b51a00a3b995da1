"""MF-KD's central claim (Trofimov et al., arXiv 2006.08341): low-fidelity accuracies of cells trained with knowledge
distillation rank cells more like their high-fidelity accuracy than cross-entropy-trained ones.

N random NAS-Bench-201 cells (seeded) are each trained at low fidelity with every loss (CE, Hinton KD T 32 alpha 1,
optionally NST beta 12.5) and every seed: the same seed gives the same initial weights, batches and augmentation
for every loss. Per seed and loss: Kendall tau and Pearson r (scipy) between the held-out low-fidelity accuracies
and the benchmark's 200-epoch CIFAR-10 test accuracy (the shipped table); mean +- std over seeds, and of the
seed-averaged scores. Writes results.jsonl (one line per training; a rerun skips finished ones), summary.json,
a Markdown table and a scatter plot under --out.

    python benchmarks/mfkd_correlation.py --data ../shared/data/cifar10-jpg.tar.gz                 # CPU, reduced
    python benchmarks/mfkd_correlation.py --data <cifar10> --full --cells 200 --workers 1           # GPU

The teacher is the checkpoint of experiments/mf_kd/teacher_nb201_cifar10_cpu.yaml (trained first if missing). The
CPU reduction: networks at C=8, one cell per stage, 16x16 images, 10,000 training and 2,000 held-out images (from
the first 12,000 of the training set, as the teacher), 2 epochs of NAS-Bench-201's recipe at batch 256.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lightning_nas.data.batches import mix_seed  # noqa: E402
from lightning_nas.data.datamodules import ClassificationDataModule  # noqa: E402
from lightning_nas.methods.discrete.low_fidelity import LowFidelityRecipe, LowFidelitySplit, train_low_fidelity  # noqa: E402
from lightning_nas.methods.training.cell_training import NetworkSpec, Teacher  # noqa: E402
from lightning_nas.methods.training.distill_losses import NST, CrossEntropy, DistillationLoss, HintonKD  # noqa: E402
from lightning_nas.search_spaces import get_space  # noqa: E402
from lightning_nas.tabular.nb201 import load_benchmark  # noqa: E402

TEACHER_CPU = "experiments/mf_kd/teacher_nb201_cifar10_cpu.yaml"
TEACHER_GPU = "experiments/mf_kd/teacher_nb201_cifar10.yaml"
LOSSES: dict[str, DistillationLoss] = {"ce": CrossEntropy(), "kd": HintonKD(32.0, 1.0), "nst": NST(12.5)}

_STATE: dict[str, Any] = {}


def teacher_checkpoint(args: argparse.Namespace, train_if_missing: bool = True) -> Path:
    """The teacher's last.ckpt: ``--teacher``, else its config's fixed run directory (trained first when it is not
    there and ``train_if_missing``)."""
    config = TEACHER_GPU if args.full else TEACHER_CPU
    run = yaml.safe_load((REPO / config).read_text())["run"]
    ckpt = REPO / "ckpt" / run["name"] / run["version"] / "checkpoints" / "last.ckpt"
    if args.teacher:
        return Path(args.teacher)
    if not ckpt.is_file() and train_if_missing:
        cmd = [sys.executable, "-m", "lightning_nas", "fit", "--config", config]
        if not args.full:
            cmd += ["--data.init_args.data_dir", args.data]
        print("training the teacher:", " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, cwd=REPO, check=True, env={**os.environ, "WANDB_MODE": "offline"})
    return ckpt


def data_module(args: argparse.Namespace) -> ClassificationDataModule:
    if args.full:
        return ClassificationDataModule("cifar10", args.data)
    return ClassificationDataModule("image_folder", args.data, max_train_samples=args.heldout + args.train_samples,
                                    image_size=16, crop_padding=2, hflip=True)


def _init_worker(args: argparse.Namespace, teacher: str, threads: int) -> None:
    torch.set_num_threads(threads)
    dm = data_module(args)
    _STATE["split"] = LowFidelitySplit.from_training_set(dm.data.train, dm.augment, args.heldout,
                                                         None if args.full else args.train_samples)
    _STATE["teacher"] = Teacher.from_checkpoint(teacher)
    _STATE["args"] = args
    _STATE["classes"], _STATE["channels"] = dm.data.num_classes, dm.data.in_channels


def _train(job: tuple[str, str, int]) -> dict[str, Any]:
    arch, loss, seed = job
    args = _STATE["args"]
    spec = NetworkSpec("nb201", arch, args.channels, args.cells_per_stage, _STATE["classes"], _STATE["channels"])
    recipe = LowFidelityRecipe(epochs=args.epochs, batch_size=args.batch_size)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loss_fn = LOSSES[loss]
    teacher = _STATE["teacher"] if loss_fn.needs_teacher else None
    result = train_low_fidelity(spec, loss_fn, teacher, _STATE["split"], recipe, seed, device)
    return {"arch": arch, "loss": loss, "seed": seed, **result}


def correlations(scores: list[float], truth: list[float]) -> dict[str, float]:
    from scipy.stats import kendalltau, pearsonr

    return {"kendall": float(kendalltau(scores, truth).statistic), "pearson": float(pearsonr(scores, truth).statistic)}


def stat(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def analyse(rows: list[dict[str, Any]], archs: list[str], losses: list[str], seeds: list[int]) -> dict[str, Any]:
    bench = load_benchmark(None)
    truth = [bench.accuracy(a, "cifar10") for a in archs]
    out: dict[str, Any] = {}
    table = {(r["arch"], r["loss"], r["seed"]): r["accuracy"] for r in rows}
    median = statistics.median(truth)
    top = [i for i, t in enumerate(truth) if t > median]  # what a search must order: the better half
    for loss in losses:
        per_seed = {s: correlations([table[(a, loss, s)] for a in archs], truth) for s in seeds}
        top_tau = [correlations([table[(archs[i], loss, s)] for i in top], [truth[i] for i in top])["kendall"]
                   for s in seeds]
        averaged = [statistics.fmean(table[(a, loss, s)] for s in seeds) for a in archs]
        out[loss] = {"per_seed": per_seed,
                     "kendall": stat([c["kendall"] for c in per_seed.values()]),
                     "pearson": stat([c["pearson"] for c in per_seed.values()]),
                     "seed_averaged": correlations(averaged, truth),
                     "kendall_top_half": stat(top_tau),
                     "mean_accuracy": statistics.fmean(table[(a, loss, s)] for a in archs for s in seeds)}
    if "ce" in losses:  # paired: the same cells and seeds, KD minus CE
        for loss in losses:
            if loss != "ce":
                out[loss]["kendall_minus_ce"] = stat([out[loss]["per_seed"][s]["kendall"] -
                                                      out["ce"]["per_seed"][s]["kendall"] for s in seeds])
    return out


def markdown(result: dict[str, Any], args: argparse.Namespace, n: int) -> str:
    lines = [f"{n} random NAS-Bench-201 cells, seeds {args.seeds}, {args.epochs} epochs at C={args.channels}, "
             f"N={args.cells_per_stage}; truth = the benchmark's 200-epoch CIFAR-10 test accuracy", "",
             "| loss | Kendall tau (mean +- std over seeds) | Pearson r | tau of seed-averaged scores | "
             "tau minus CE (paired) | tau, better half of the cells | mean low-fidelity acc (%) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for loss, r in result.items():
        diff = r.get("kendall_minus_ce")
        diff_text = "-" if diff is None else f"{diff['mean']:+.3f} +- {diff['std']:.3f}"
        lines.append(f"| {loss} | {r['kendall']['mean']:.3f} +- {r['kendall']['std']:.3f} | "
                     f"{r['pearson']['mean']:.3f} +- {r['pearson']['std']:.3f} | {r['seed_averaged']['kendall']:.3f} |"
                     f" {diff_text} | {r['kendall_top_half']['mean']:.3f} +- {r['kendall_top_half']['std']:.3f} | "
                     f"{r['mean_accuracy']:.2f} |")
    return "\n".join(lines)


def figure(rows: list[dict[str, Any]], archs: list[str], losses: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bench = load_benchmark(None)
    fig, axes = plt.subplots(1, len(losses), figsize=(4.5 * len(losses), 4), sharey=True)
    for ax, loss in zip(axes if len(losses) > 1 else [axes], losses):
        xs = [r["accuracy"] for r in rows if r["loss"] == loss]
        ys = [bench.accuracy(r["arch"], "cifar10") for r in rows if r["loss"] == loss]
        ax.scatter(xs, ys, s=10, alpha=0.6)
        ax.set_xlabel(f"low-fidelity held-out acc (%), {loss}")
        ax.set_title(loss)
    axes_list = axes if len(losses) > 1 else [axes]
    axes_list[0].set_ylabel("NAS-Bench-201 CIFAR-10 test acc (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def train_all(jobs: list[tuple[str, str, int]], args: argparse.Namespace, teacher: str, results_file: Path,
              rows: list[dict[str, Any]]) -> None:
    """Run the trainings ``args.workers`` at once (forked workers share the decoded images), appending each
    result to ``results_file`` as it arrives."""
    threads = 1 if args.workers > 1 else torch.get_num_threads()
    with mp.get_context("fork").Pool(args.workers, _init_worker, (args, teacher, threads)) as pool, \
            open(results_file, "a") as f:
        for k, row in enumerate(pool.imap_unordered(_train, jobs), 1):
            rows.append(row)
            f.write(json.dumps(row) + "\n")
            f.flush()
            if k % 10 == 0:
                print(f"{k}/{len(jobs)}", file=sys.stderr)


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="CIFAR-10 as an image folder / .tar.gz (or the python batches)")
    p.add_argument("--out", default="ckpt/mfkd_correlation")
    p.add_argument("--teacher", default=None, help="a TrainCell checkpoint (default: the teacher config's run)")
    p.add_argument("--cells", type=int, default=50)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--losses", nargs="+", default=["ce", "kd"], choices=sorted(LOSSES))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--cells-per-stage", type=int, default=1)
    p.add_argument("--train-samples", type=int, default=10000)
    p.add_argument("--heldout", type=int, default=2000)
    p.add_argument("--full", action="store_true", help="benchmark-size networks on the full training set (GPU)")
    p.add_argument("--workers", type=int, default=2, help="trainings at once (one torch thread each)")
    p.add_argument("--report-only", action="store_true", help="tabulate results.jsonl, train nothing")
    args = p.parse_args(argv)
    if args.full:
        args.channels, args.cells_per_stage, args.heldout = 16, 5, 5000
    out = REPO / args.out
    out.mkdir(parents=True, exist_ok=True)
    teacher = teacher_checkpoint(args, train_if_missing=not args.report_only)
    g = torch.Generator().manual_seed(mix_seed(0, 23))
    archs: list[str] = []
    while len(archs) < args.cells:  # distinct random cells, the same for every loss and seed
        a = get_space("nb201").sample(g).to_string()
        if a not in archs:
            archs.append(a)
    results_file = out / "results.jsonl"
    rows = [json.loads(line) for line in results_file.read_text().splitlines()] if results_file.is_file() else []
    done = {(r["arch"], r["loss"], r["seed"]) for r in rows}
    jobs = [(a, loss, s) for s in args.seeds for a in archs for loss in args.losses if (a, loss, s) not in done]
    print(f"{len(jobs)} trainings to run ({len(done)} done)", file=sys.stderr)
    if args.report_only and jobs:
        sys.exit(f"--report-only: {len(jobs)} trainings are missing from {results_file}")
    if jobs:
        train_all(jobs, args, str(teacher), results_file, rows)
    rows = [r for r in rows if r["arch"] in archs and r["loss"] in args.losses and r["seed"] in args.seeds]
    result = analyse(rows, archs, args.losses, args.seeds)
    (out / "summary.json").write_text(json.dumps({"args": vars(args), "teacher": str(teacher), "cells": archs,
                                                  "result": result}, indent=2) + "\n")
    text = markdown(result, args, len(archs))
    (out / "table.md").write_text(text + "\n")
    figure(rows, archs, args.losses, out / "correlation.png")
    print(text)


if __name__ == "__main__":
    main()
