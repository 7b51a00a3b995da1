"""Fingerprints of every tiny config's run, to check that a refactoring leaves behaviour identical.

``record OUT.json`` runs each ``experiments/tiny/*.yaml`` (the distillation and MF-KD ones with the teacher that
``teacher_nb201`` trains first) in its own process, one torch thread each, and stores per config: the final
genotype text, every final metric of ``summary.json`` (timings left out), the ``genotypes.jsonl`` texts, and a
SHA-256 of every tensor of ``checkpoints/last.ckpt``'s state_dict (bit-exact final weights). ``compare A.json
B.json`` prints every difference and exits 1 if there is one.

    python tools/tiny_fingerprints.py record /tmp/before.json
    python tools/tiny_fingerprints.py compare /tmp/before.json /tmp/after.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "experiments" / "tiny"
NEEDS_TEACHER = {"distill_nb201", "mfkd_nb201"}
#: summary metrics that measure the machine, not the method
TIMING = ("time", "seconds", "wall")


def run(config: Path, root: Path, *extra: str) -> Path:
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("LIGHTNING_NAS_RUN_DIR", None)
    proc = subprocess.run([sys.executable, "-m", "lightning_nas", "fit", "--config", str(config), "--run.root",
                           str(root), *extra], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{config.name} failed:\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def fingerprint(run_dir: Path) -> dict[str, Any]:
    import torch

    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = {k: v for k, v in (summary.get("metrics") or {}).items() if not any(t in k for t in TIMING)}
    out: dict[str, Any] = {"genotype": summary.get("genotype"), "metrics": metrics,
                           "extras": {k: v for k, v in summary.items()
                                      if k not in ("metrics", "versions", "git_revision", "wall_time_s",
                                                   "segment_wall_time_s", "resumed_from", "genotype")}}
    lines = run_dir / "genotypes.jsonl"
    if lines.is_file():
        out["genotypes"] = [json.loads(line)["text"] for line in lines.read_text().splitlines()]
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=True, map_location="cpu")["state_dict"]
        out["weights"] = {k: hashlib.sha256(v.contiguous().cpu().numpy().tobytes()).hexdigest()[:16]
                          for k, v in sorted(state.items())}
    return out


def record(out: Path, jobs: int) -> None:
    configs = sorted(TINY.glob("*.yaml"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        teacher = run(TINY / "teacher_nb201.yaml", root / "teacher")
        results: dict[str, Any] = {"teacher_nb201": fingerprint(teacher)}

        def one(config: Path) -> tuple[str, dict[str, Any]]:
            extra = ("--model.init_args.teacher", str(teacher / "checkpoints" / "last.ckpt")) \
                if config.stem in NEEDS_TEACHER else ()
            try:
                return config.stem, fingerprint(run(config, root / config.stem, *extra))
            except RuntimeError as err:  # recorded, so that a compare shows it; the other configs still run
                return config.stem, {"error": str(err)[-500:]}

        with ThreadPoolExecutor(jobs) as pool:
            for name, fp in pool.map(one, [c for c in configs if c.stem != "teacher_nb201"]):
                print(name, fp.get("genotype"), flush=True)
                results[name] = fp
    out.write_text(json.dumps(dict(sorted(results.items())), indent=1, sort_keys=True))


def compare(a: Path, b: Path) -> int:
    before, after = json.loads(a.read_text()), json.loads(b.read_text())
    bad = 0
    for name in sorted(set(before) | set(after)):
        if name not in before or name not in after:
            print(f"{name}: only in {'after' if name in after else 'before'}")
            bad += 1
            continue
        x, y = before[name], after[name]
        for key in sorted(set(x) | set(y)):
            if x.get(key) != y.get(key):
                bad += 1
                if isinstance(x.get(key), dict) and isinstance(y.get(key), dict):
                    diff = sorted(k for k in set(x[key]) | set(y[key]) if x[key].get(k) != y[key].get(k))
                    print(f"{name}.{key}: {len(diff)} entries differ, e.g. {diff[:5]}")
                else:
                    print(f"{name}.{key}: {x.get(key)!r} != {y.get(key)!r}")
    print(f"{len(set(before) & set(after))} configs compared, {bad} differences")
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("out", type=Path)
    rec.add_argument("--jobs", type=int, default=2)
    cmp = sub.add_parser("compare")
    cmp.add_argument("before", type=Path)
    cmp.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.cmd == "record":
        record(args.out, args.jobs)
        return 0
    return compare(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())
