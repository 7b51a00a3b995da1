"""NASWOT on NAS-Bench-201 CIFAR-10: Kendall tau of the score against the benchmark's accuracy, and repeated
NASWOT searches, against the paper (Mellor et al., ICML 2021: tau 0.574; N=10 92.44 +- 1.13, N=100
92.81 +- 0.99 test accuracy over 500 runs; random cells 86.61 +- 13.46).

- correlation: ``--archs`` distinct cells drawn uniformly from the 15,625, each scored (v2 score, untrained
  C=16 N=5 network with 1 output, train-mode BN) on one batch of ``--batch-size`` CIFAR-10 training images
  without augmentation; Kendall tau (scipy) against the table's 200-epoch test accuracy.
- searches: ``--runs`` repetitions of NASWOT for each N in ``--n``: each run draws its own batch and N cells
  (uniform, with replacement, as the official search), keeps the best score and reports the benchmark test
  accuracy of that cell; mean +- std over runs.
It uses the library's own pieces (``ProxyDataModule.proxy_batch``, ``score_cell``), i.e. what
``python -m lightning_nas fit --config experiments/naswot/nb201_cifar10.yaml`` runs.

    python benchmarks/naswot_correlation.py --data ../shared/data/cifar10-jpg.tar.gz --archs 1000 --runs 100
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_nas.data.batches import mix_seed  # noqa: E402
from lightning_nas.data.datamodules import ProxyDataModule  # noqa: E402
from lightning_nas.methods.discrete import score_cell  # noqa: E402
from lightning_nas.search_spaces import get_space  # noqa: E402
from lightning_nas.tabular.nb201 import default_benchmark  # noqa: E402


def proxy_batch(data: str, seed: int, batch_size: int, device: torch.device) -> torch.Tensor:
    dataset = "cifar10" if Path(data).is_dir() and (Path(data) / "cifar-10-batches-py").exists() else "image_folder"
    dm = ProxyDataModule(dataset, data_dir=data, batch_size=batch_size, seed=seed)
    x, _ = dm.proxy_batch()
    return dm.augment.normalize(x.to(device))


def correlation(args: argparse.Namespace, device: torch.device) -> dict:
    bench = default_benchmark()
    acc = bench.column("cifar10")
    g = torch.Generator().manual_seed(mix_seed(args.seed, 1))
    indices = torch.randperm(len(bench), generator=g)[: args.archs].tolist()
    x = proxy_batch(args.data, args.seed, args.batch_size, device)
    scores, start = [], time.time()
    for k, i in enumerate(indices):
        scores.append(score_cell(bench.arch(i), x, None, mix_seed(args.seed, 2, i)))
        if (k + 1) % 200 == 0:
            print(f"  scored {k + 1}/{len(indices)} ({time.time() - start:.0f} s)", flush=True)
    finite = np.array([s if math.isfinite(s) else -1e300 for s in scores])  # -inf: singular kernel, ranks last
    tau = kendalltau(finite, acc[indices]).statistic
    return {"archs": len(indices), "kendall_tau": float(tau), "singular_kernels": int(sum(not math.isfinite(s)
                                                                                        for s in scores)),
            "seconds_per_score": (time.time() - start) / len(indices),
            "indices": indices, "scores": scores}


def searches(args: argparse.Namespace, device: torch.device, n: int, result: dict) -> dict:
    """Runs NASWOT ``args.runs`` times; ``result[f"naswot_n{n}"]`` holds the runs so far (saved every 5)."""
    bench = default_benchmark()
    chosen: list[float] = []
    for run in range(args.run_offset, args.run_offset + args.runs):
        seed = mix_seed(args.seed, 3, n, run)
        x = proxy_batch(args.data, seed % 2**31, args.batch_size, device)
        g = torch.Generator().manual_seed(seed)
        best, best_score = None, -math.inf
        for _ in range(n):
            arch = get_space("nb201").sample(g)
            s = score_cell(arch, x, None, int(torch.randint(2**62, (1,), generator=g)))
            if best is None or s > best_score:
                best, best_score = arch, s
        chosen.append(bench.accuracy(best, "cifar10"))
        a = np.array(chosen)
        result[f"naswot_n{n}"] = {"n": n, "runs": len(chosen), "run_offset": args.run_offset,
                                  "mean": float(a.mean()), "std": float(a.std()), "accuracies": chosen}
        if len(chosen) % 5 == 0:
            save(args, result)
    return result[f"naswot_n{n}"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="CIFAR-10: the JPEG tar.gz / folder, or the official python folder")
    p.add_argument("--archs", type=int, default=1000)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--n", type=int, nargs="+", default=[10, 100])
    p.add_argument("--run-offset", type=int, default=0, help="first run number (to split runs across processes)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None, help="write the full results (JSON) here")
    args = p.parse_args()
    device = torch.device(args.device)
    bench = default_benchmark()
    random_acc = bench.column("cifar10")
    result: dict = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                    "random_cell_cifar10": {"mean": float(random_acc.mean()), "std": float(random_acc.std())}}
    t0 = time.time()
    if args.archs > 0:
        result["correlation"] = correlation(args, device)
        print(f"Kendall tau (NASWOT score vs CIFAR-10 test accuracy, {args.archs} cells): "
              f"{result['correlation']['kendall_tau']:.3f}  [paper 0.574]", flush=True)
        save(args, result)
    paper = {10: "92.44 +- 1.13", 100: "92.81 +- 0.99", 1000: "92.96 +- 0.81"}
    for n in args.n:
        r = searches(args, device, n, result)
        print(f"NASWOT N={n}: {r['mean']:.2f} +- {r['std']:.2f} over {r['runs']} runs  "
              f"[paper {paper.get(n, '-')}]", flush=True)
        save(args, result)
    rc = result["random_cell_cifar10"]
    print(f"random cell: {rc['mean']:.2f} +- {rc['std']:.2f} (all 15,625)  [paper 86.61 +- 13.46]")
    result["wall_s"] = time.time() - t0
    print(f"{result['wall_s']:.0f} s on {result['device']}")
    save(args, result)


def save(args: argparse.Namespace, result: dict) -> None:
    if args.out:
        Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
