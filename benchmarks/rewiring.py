"""The rewiring study (Shu, Wang & Cai, "Understanding architectures learnt by cell-based NAS", ICLR 2020, Sec. 4):
do wider, shallower cells converge faster? DARTS_V2, ``--per-bucket`` random_conn variants (the official rewiring:
same ops, random sources) per normal-cell width bucket, and the widest variant (every edge from a cell input),
each trained from scratch with the same seed and budget (experiments/rewiring/cifar10_cpu.yaml: a reduced network on
real CIFAR-10 for 2 CPU cores; ``--full`` trains the DARTS evaluation network instead, for a GPU).

Per variant: normal-cell width and depth, the training-loss curve (area under it = the mean of the per-epoch
losses, and the first epoch whose loss is below ``--threshold``), final test accuracy, mini-batch gradient variance
of the training loss (mean over epochs and at the end), the dominant Hessian eigenvalue of the training loss w.r.t.
the weights, and the sharpness of a 1-D filter-normalised slice of the test loss; Kendall tau of each against
width over all variants; a Markdown table and one figure (loss curves coloured by width, gradient variance per
epoch) in ``--root``.

    python benchmarks/rewiring.py --data ../shared/data/cifar10-jpg.tar.gz               # CPU, reduced
    python benchmarks/rewiring.py --data <cifar10> --full --epochs 20 --parallel 1        # GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from ws_variance import run_all  # noqa: E402

from lightning_nas.reporting.runs import load_run  # noqa: E402
from lightning_nas.search_spaces.darts import PUBLISHED  # noqa: E402
from lightning_nas.search_spaces.darts.cell_shape import cell_depth, cell_width  # noqa: E402
from lightning_nas.search_spaces.darts.genotype import Genotype  # noqa: E402
from lightning_nas.search_spaces.darts.rewire import widest, width_buckets  # noqa: E402

CONFIG = "experiments/rewiring/cifar10_cpu.yaml"
FULL = ["--model.init_args.channels", "36", "--model.init_args.layers", "20", "--model.init_args.auxiliary", "true",
        "--model.init_args.drop_path_prob", "0.2", "--data.init_args.image_size", "32",
        "--data.init_args.crop_padding", "4", "--data.init_args.max_train_samples", "50000",
        "--data.init_args.max_test_samples", "10000", "--data.init_args.batch_size", "96",
        "--data.init_args.cutout_length", "16"]


def variants(base: str, widths: list[float], per_bucket: int) -> dict[str, tuple[Genotype, str]]:
    """name -> (genotype, provenance): the base cell, the random_conn variants per width, the widest variant."""
    g = PUBLISHED[base]
    out = {base: (g, "published")}
    for width, picks in width_buckets(g, widths, per_bucket).items():
        for k, (seed, variant) in enumerate(picks, 1):
            out[f"w{width:g}c_{k}"] = (variant, f"random_conn seed {seed}")
    out["widest"] = (widest(g), "every edge from a cell input")
    return out


def command(genotype: Genotype, name: str, seed: int, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "lightning_nas", "fit", "--config", CONFIG,
           "--model.init_args.genotype", genotype.to_text(), "--seed_everything", str(seed),
           "--trainer.max_epochs", str(args.epochs), "--run.root", args.root, "--run.name", name,
           "--run.version", f"seed{seed}", "--data.init_args.dataset", "image_folder",
           "--data.init_args.data_dir", args.data]
    return cmd + (FULL if args.full else [])


def read_run(run: Path, threshold: float) -> dict[str, Any]:
    r = load_run(run)

    def series(key: str) -> list[float]:
        by_epoch = r.curve(key)  # the last value logged in each epoch
        return [by_epoch[e] for e in sorted(by_epoch)]

    loss = series("train/loss")
    variance = series("landscape/grad_variance_weights")
    summary = r.summary["metrics"]
    below = [e + 1 for e, v in enumerate(loss) if v <= threshold]
    return {"loss": loss, "variance": variance, "auc": statistics.fmean(loss), "final_loss": loss[-1],
            "epochs_to_threshold": below[0] if below else None, "test_acc": 100 * summary["val/acc"],
            "variance_mean": statistics.fmean(variance), "variance_final": variance[-1],
            "hessian": summary.get("landscape/hessian_eig_weights"),
            "sharpness": summary.get("landscape/slice_weights_sharpness")}


def kendall(xs: list[float], ys: list[float]) -> str:
    from scipy.stats import kendalltau

    pairs = [(x, y) for x, y in zip(xs, ys) if y is not None]
    tau, p = kendalltau([x for x, _ in pairs], [y for _, y in pairs])
    return f"{tau:+.2f} (p={p:.2f})"


def figure(results: dict[str, dict], widths: dict[str, float], path: Path, title: str) -> None:
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), dpi=110)
    ax_loss, ax_var = fig.subplots(1, 2)
    lo, hi = min(widths.values()), max(widths.values())
    cmap = colormaps["viridis"]
    for name in sorted(results, key=lambda n: widths[n]):
        r = results[name]
        colour = cmap((widths[name] - lo) / max(hi - lo, 1e-9))
        style = "--" if name in ("DARTS_V2", "widest") else "-"
        label = f"{name} ({widths[name]:g}c)"
        epochs = range(1, len(r["loss"]) + 1)
        ax_loss.plot(epochs, r["loss"], style, color=colour, label=label, lw=1.4, marker=".")
        ax_var.plot(range(1, len(r["variance"]) + 1), r["variance"], style, color=colour, lw=1.4, marker=".")
    ax_loss.set(xlabel="epoch", ylabel="training loss (epoch mean)", title="training loss")
    ax_var.set(xlabel="epoch", ylabel="gradient variance (mini-batch)", title="gradient variance", yscale="log")
    ax_loss.legend(fontsize=6, ncol=2)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="CIFAR-10 as an image folder or its .tar.gz")
    parser.add_argument("--root", default="ckpt/rewiring")
    parser.add_argument("--base", default="DARTS_V2", help="published cell to rewire")
    parser.add_argument("--widths", type=float, nargs="+", default=[2.0, 2.5, 3.0, 3.5])
    parser.add_argument("--per-bucket", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threshold", type=float, default=1.4, help="training-loss level for 'epochs to reach'")
    parser.add_argument("--full", action="store_true", help="the DARTS evaluation network on full CIFAR-10 (GPU)")
    parser.add_argument("--parallel", type=int, default=2, help="trainings at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training")
    parser.add_argument("--report-only", action="store_true", help="tabulate the runs already under --root")
    args = parser.parse_args()

    cells = variants(args.base, args.widths, args.per_bucket)
    jobs = [(name, seed) for seed in args.seeds for name in cells]
    runs = run_all(jobs, args, lambda name, seed: command(cells[name][0], name, seed, args))
    per_seed = {job: read_run(run, args.threshold) for job, run in runs.items()}
    results: dict[str, dict] = {}
    for name in cells:  # mean over seeds per variant (curves averaged epoch by epoch)
        rs = [per_seed[(name, s)] for s in args.seeds]
        merged: dict[str, Any] = {}
        for key in rs[0]:
            values = [r[key] for r in rs]
            if isinstance(values[0], list):
                merged[key] = [statistics.fmean(v) for v in zip(*values)]
            elif all(v is not None for v in values):
                merged[key] = statistics.fmean(values)
            else:
                merged[key] = None
        results[name] = merged
    widths = {n: cell_width(g.normal) for n, (g, _) in cells.items()}
    depths = {n: cell_depth(g.normal) for n, (g, _) in cells.items()}

    print(f"Rewiring study: {args.base}, {args.per_bucket} random_conn variants per width {args.widths} + widest; "
          f"seeds {args.seeds}; {'full' if args.full else 'reduced (' + CONFIG + ')'}, {args.epochs} epochs\n")
    print("| variant | source | width | depth | loss AUC | final loss | epochs to loss <= "
          f"{args.threshold:g} | test acc (%) | grad var (mean) | grad var (final) | Hessian eig | slice sharpness |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in sorted(cells, key=lambda n: (widths[n], n)):
        r = results[name]
        print(f"| {name} | {cells[name][1]} | {widths[name]:g}c | {depths[name]} | {r['auc']:.3f} | "
              f"{r['final_loss']:.3f} | {fmt(r['epochs_to_threshold'], 1)} | {r['test_acc']:.2f} | "
              f"{r['variance_mean']:.3f} | {r['variance_final']:.3f} | {fmt(r['hessian'], 2)} | "
              f"{fmt(r['sharpness'])} |")
    names = list(cells)
    w = [widths[n] for n in names]
    print("\nKendall tau against normal-cell width over all variants (the paper's claim: wider -> faster "
          "convergence, i.e. negative tau for loss AUC, gradient variance and sharpness):")
    for key, label in (("auc", "training-loss AUC"), ("final_loss", "final training loss"),
                       ("test_acc", "test accuracy"), ("variance_mean", "gradient variance (mean)"),
                       ("hessian", "Hessian eigenvalue"), ("sharpness", "slice sharpness")):
        print(f"- {label}: {kendall(w, [results[n][key] for n in names])}")
    print("\nPer width bucket (mean over its variants):")
    for width in sorted(set(w)):
        members = [n for n in names if widths[n] == width]
        print(f"- {width:g}c ({len(members)}): loss AUC {statistics.fmean(results[n]['auc'] for n in members):.3f}, "
              f"test acc {statistics.fmean(results[n]['test_acc'] for n in members):.2f} %, grad var "
              f"{statistics.fmean(results[n]['variance_mean'] for n in members):.3f}")
    out = Path(args.root)
    figure(results, widths, out / "rewiring.png",
           f"{args.base} and rewired variants, CIFAR-10, {args.epochs} epochs, seeds {args.seeds}")
    (out / "rewiring.json").write_text(json.dumps(
        {"cells": {n: {"genotype": g.to_text(), "source": src, "width": widths[n], "depth": depths[n]}
                   for n, (g, src) in cells.items()}, "results": results, "seeds": args.seeds}, indent=1))
    print(f"\nfigure: {out / 'rewiring.png'}")


if __name__ == "__main__":
    main()
