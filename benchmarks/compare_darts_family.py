"""DARTS (first order), MiLeNAS, SDARTS-RS, SDARTS-ADV and NA-DARTS with the same seed and budget, through
the CLI, with the Hessian-eigenvalue and step-time callbacks attached. Prints one row per method: genotype,
final supernet validation accuracy, dominant-eigenvalue trajectory, skip connections in the normal cell, and
seconds per search step relative to DARTS (first order), measured in this session.

    python benchmarks/compare_darts_family.py --epochs 4 --train-samples 4000          # CPU, reduced
    python benchmarks/compare_darts_family.py --base experiments/darts/cifar10_first_order.yaml \
        --epochs 50 --train-samples 0 --image-size 32 --channels 16 --layers 8          # GPU, paper settings

The base config defaults to experiments/darts/cifar10_jpg_cpu.yaml (real CIFAR-10 JPEGs). SDARTS runs in the
space without `none`, as in its paper; the others in the full DARTS space.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NO_NONE = "[max_pool_3x3, avg_pool_3x3, skip_connect, sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5]"
METHODS = {
    "darts1": ["--model.class_path", "lightning_nas.methods.DARTS", "--model.init_args.order", "1"],
    "milenas": ["--model.class_path", "lightning_nas.methods.MiLeNAS", "--model.init_args.lambda_val", "1.0"],
    "sdarts_rs": ["--model.class_path", "lightning_nas.methods.SDARTS", "--model.init_args.perturbation", "random",
                  "--model.init_args.supernet.init_args.primitives", NO_NONE],
    "sdarts_adv": ["--model.class_path", "lightning_nas.methods.SDARTS", "--model.init_args.perturbation",
                   "adversarial", "--model.init_args.supernet.init_args.primitives", NO_NONE],
    "na_darts": ["--model.class_path", "lightning_nas.methods.NADARTS", "--model.init_args.neighbours", "2"],
}
CALLBACKS = json.dumps([{"class_path": "lightning_nas.callbacks.HessianEigenvalue",
                         "init_args": {"every_n_epochs": 1, "num_batches": 1, "iterations": 20}},
                        {"class_path": "lightning_nas.callbacks.StepTime"}])


def run(method: str, args: argparse.Namespace) -> Path:
    cmd = [sys.executable, "-m", "lightning_nas", "fit", "--config", args.base, *METHODS[method],
           "--trainer.max_epochs", str(args.epochs), "--trainer.callbacks", CALLBACKS,
           "--run.root", args.root, "--run.name", method, "--seed_everything", str(args.seed)]
    if args.train_samples:
        cmd += ["--data.init_args.max_train_samples", str(args.train_samples)]
    if args.image_size:
        cmd += ["--data.init_args.image_size", str(args.image_size)]
    if args.channels:
        cmd += ["--model.init_args.supernet.init_args.channels", str(args.channels)]
    if args.layers:
        cmd += ["--model.init_args.supernet.init_args.layers", str(args.layers)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"})
    if proc.returncode:
        sys.exit(f"{method} failed:\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def collect(run_dir: Path) -> dict:
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    eig = [round(float(r["landscape/hessian_eig"]), 4) for r in rows if r.get("landscape/hessian_eig")]
    step = [float(r["perf/step_time_s"]) for r in rows if r.get("perf/step_time_s")]
    summary = json.loads((run_dir / "summary.json").read_text())
    genotype = json.loads((run_dir / "genotype.json").read_text())
    return {"run_dir": str(run_dir), "val_acc": summary["metrics"].get("val/acc"), "hessian_eig": eig,
            "normal_skips": sum(op == "skip_connect" for op, _ in genotype["genotype"]["normal"]),
            "step_time_s": sum(step) / len(step), "genotype": genotype["text"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="experiments/darts/cifar10_jpg_cpu.yaml")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-samples", type=int, default=4000, help="0: the base config's value")
    parser.add_argument("--image-size", type=int, default=0, help="0: the base config's value")
    parser.add_argument("--channels", type=int, default=0)
    parser.add_argument("--layers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--root", default="ckpt/compare")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    results = {m: collect(run(m, args)) for m in args.methods}
    ref = results.get("darts1", next(iter(results.values())))["step_time_s"]
    for r in results.values():
        r["step_time_vs_darts1"] = round(r["step_time_s"] / ref, 2)
    text = json.dumps({"settings": vars(args), "results": results}, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
