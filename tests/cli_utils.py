"""Running the CLI from tests, in-process or as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from conftest import REPO

from lightning_nas.cli import main

TINY1 = REPO / "experiments" / "tiny" / "darts_first_order.yaml"
TINY2 = REPO / "experiments" / "tiny" / "darts_second_order.yaml"
TINY_RETRAIN = REPO / "experiments" / "tiny" / "retrain.yaml"


def run_in_process(*args: str, capsys=None) -> Path:
    """``python -m lightning_nas fit ...`` in this process; returns the run directory it printed last."""
    assert main(list(args)) == 0
    out = capsys.readouterr().out.strip().splitlines()
    return Path(out[-1])


def run_subprocess(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    env.pop("LIGHTNING_NAS_RUN_DIR", None)
    return subprocess.run([sys.executable, "-m", "lightning_nas", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def alphas(ckpt: Path) -> list[torch.Tensor]:
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    return [state["supernet.alpha_normal"], state["supernet.alpha_reduce"]]


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, weights_only=True)["state_dict"]


def uninterrupted_and_resumed(config: Path, stop_after: int, tmp_path: Path, capsys, *args: str
                              ) -> tuple[Path, Path, Path]:
    """Runs ``config`` uninterrupted, then cut after ``stop_after`` training batches (a checkpoint written there)
    and resumed from that checkpoint; returns (full run dir, resumed run dir, the mid-run checkpoint)."""
    import json

    full = run_in_process("fit", "--config", str(config), "--run.root", str(tmp_path / "full"), *args, capsys=capsys)
    mid = tmp_path / "interrupted.ckpt"
    probe = json.dumps([{"class_path": "tests.probes.StopAfterBatches",
                         "init_args": {"batches": stop_after, "checkpoint": str(mid)}}])
    run_in_process("fit", "--config", str(config), "--run.root", str(tmp_path / "cut"), *args, "--trainer.callbacks",
                   probe, capsys=capsys)
    resumed = run_in_process("fit", "--config", str(config), "--run.root", str(tmp_path / "resumed"), *args,
                             "--ckpt_path", str(mid), capsys=capsys)
    return full, resumed, mid


def assert_same_weights(a_ckpt: Path, b_ckpt: Path) -> None:
    a, b = weights(a_ckpt), weights(b_ckpt)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def run_two_process_ddp(config: Path, tmp_path: Path, probe: str, *args: str
                        ) -> tuple[subprocess.CompletedProcess, Path]:
    """``fit`` with 2 CPU DDP processes and the recorder callback ``tests.probes.<probe>`` writing under a prefix;
    returns (the finished process, the prefix)."""
    import json

    prefix = tmp_path / "probe"
    callbacks = json.dumps([{"class_path": f"tests.probes.{probe}", "init_args": {"prefix": str(prefix)}}])
    proc = run_subprocess("fit", "--config", str(config), "--run.root", str(tmp_path / "runs"), "--trainer.strategy",
                          "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu", "--trainer.callbacks",
                          callbacks, *args, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, prefix
