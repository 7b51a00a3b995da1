"""The shared mixed op against the per-space code it replaced: seconds per weight step (forward, backward, SGD) of
the softmax(alpha)-weighted sum (every op) and of a sampled child (one op per edge) on both spaces' supernets,
measured for this tree and for a reference revision (a temporary git worktree) in alternating subprocesses of one
run, with one torch thread each. Reported per case as the ratio this tree / reference (1.0: as fast).

    python benchmarks/mixed_op.py --reference 7d98817          # the last revision with the per-space mixed ops
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MEASURE = """
import json, sys, time, torch
torch.set_num_threads(1)
from lightning_nas.search_spaces.darts import DartsSupernet
from lightning_nas.search_spaces.nb201 import NB201Supernet
torch.manual_seed(0)
nets = {"nb201": NB201Supernet(10, 3, channels=8, cells_per_stage=2),
        "darts": DartsSupernet(10, 3, channels=8, layers=5)}
x, y = torch.randn(32, 3, 16, 16), torch.randint(10, (32,))
out = {}
for name, net in nets.items():
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9)
    path = net.random_path(torch.Generator().manual_seed(0))
    for mode in ("mixed", "sampled"):
        def step():
            opt.zero_grad(set_to_none=True)
            logits = net(x) if mode == "mixed" else net(x, path=path)
            torch.nn.functional.cross_entropy(logits, y).backward()
            opt.step()
        step()
        start = time.perf_counter()
        for _ in range(int(sys.argv[1])):
            step()
        out[f"{name}/{mode}"] = (time.perf_counter() - start) / int(sys.argv[1])
print(json.dumps(out))
"""


def measure(tree: Path, steps: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(steps)], cwd=tree, env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="git revision of the reference code")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "reference"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(ref), args.reference], cwd=REPO, check=True)
        try:
            runs: dict[str, list[dict[str, float]]] = {"this": [], "reference": []}
            for _ in range(args.repeats):  # alternating, so drift of the machine hits both alike
                runs["this"].append(measure(REPO, args.steps))
                runs["reference"].append(measure(ref, args.steps))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(ref)], cwd=REPO, check=True)
    print(f"{'case':<16}{'this s/step':>14}{'reference s/step':>18}{'ratio':>8}   (best of {args.repeats})")
    for case in runs["this"][0]:
        this = min(r[case] for r in runs["this"])
        ref_s = min(r[case] for r in runs["reference"])
        print(f"{case:<16}{this:>14.4f}{ref_s:>18.4f}{this / ref_s:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
