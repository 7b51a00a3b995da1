"""One writer per run directory (issue 27): a lock that live processes respect and dead ones do not keep."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from cli_utils import TINY1
from conftest import REPO

from lightning_nas.cli import _version_name, main
from lightning_nas.run_lock import LOCK_NAME, RunLock, RunLocked, _process_start


def _lock_of(run_dir, pid, host=None):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK_NAME).write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid,
                                                 "start": _process_start(pid), "since": "earlier"}))


def test_a_live_owner_keeps_its_run_and_a_dead_one_does_not(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock_of(tmp_path / "live", sleeper.pid)
        with pytest.raises(RunLocked, match=f"being written by process {sleeper.pid}"):
            RunLock(tmp_path / "live").acquire()
        _lock_of(tmp_path / "elsewhere", 1, host="another-node")
        with pytest.raises(RunLocked, match=r"if that process is gone, delete .*\.lock"):
            RunLock(tmp_path / "elsewhere").acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    _lock_of(tmp_path / "live", sleeper.pid)  # now dead (kill -9): the lock is stale and taken over
    lock = RunLock(tmp_path / "live")
    lock.acquire()
    assert json.loads((tmp_path / "live" / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / "live" / LOCK_NAME).exists()


def test_fit_and_resume_wait_for_the_process_that_writes_the_run(tmp_path, capsys):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run_dir = tmp_path / "tiny_darts" / "v1"
        _lock_of(run_dir, sleeper.pid)
        code = main(["fit", "--config", str(TINY1), "--run.root", str(tmp_path), "--run.name", "tiny_darts",
                     "--run.version", "v1"])
        assert code == 2 and f"is being written by process {sleeper.pid}" in capsys.readouterr().err
        assert [p.name for p in run_dir.iterdir()] == [LOCK_NAME]  # nothing of the owner's touched
    finally:
        sleeper.kill()
        sleeper.wait()


def test_two_fits_of_one_version_started_together_give_one_run(tmp_path):
    """Both pass the "already holds a run" check at the same moment: the lock lets exactly one write the run."""
    args = ["fit", "--config", str(TINY1), "--run.root", str(tmp_path), "--run.version", "same",
            "--trainer.max_epochs", "1"]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "lightning_nas", *args], cwd=REPO, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "being written by process" in refused or "already holds a run" in refused or "opened by another" in refused
    run_dir = next(tmp_path.glob("*/same"))
    assert json.loads((run_dir / "summary.json").read_text())["epochs"] == 1 and not (run_dir / LOCK_NAME).exists()
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert len({len(r.split(",")) for r in rows}) == 1  # one writer: every row as wide as the header


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path):
    assert len({_version_name(tmp_path, "x", claim=True) for _ in range(3)}) == 3


def _running(pid: int) -> bool:
    """Whether the process exists and is not a zombie waiting for a parent to reap it."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_protocol_killed_with_sigkill_leaves_no_fit_running_and_its_rerun_finishes(tmp_path):
    """``kill -9`` of ``protocol``: its fit gets SIGTERM (the parent-death signal), saves its step and stops, so the
    rerun resumes it instead of meeting an orphan that still writes the run."""
    import signal
    import time

    import yaml

    spec = {"name": "p", "searches": [{"name": "darts", "config": str(REPO / "experiments" / "tiny" /
                                                                        "darts_nb201.yaml"),
                                       "args": ["--run.checkpoint_every_n_steps", "1", "--trainer.max_epochs", "4"]}],
            "search_seeds": [0], "selection": {"rule": "benchmark"}, "executor": {"kind": "local"}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    argv = [sys.executable, "-m", "lightning_nas", "protocol", "--config", str(tmp_path / "p.yaml"), "--root",
            str(tmp_path / "runs")]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "runs" / "p" / "search" / "darts" / "seed0"
    protocol = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (run_dir / "checkpoints" / "last.ckpt").is_file():  # the fit took its first step
            assert time.time() < deadline and protocol.poll() is None
            time.sleep(0.02)
        owner = json.loads((run_dir / LOCK_NAME).read_text())["pid"]
        protocol.send_signal(signal.SIGKILL)
        protocol.wait()
        deadline = time.time() + 60
        while (run_dir / LOCK_NAME).exists():  # the fit stops at its next step and gives the run back
            assert time.time() < deadline, "the fit outlived its protocol"
            time.sleep(0.05)
    finally:
        protocol.kill()
    deadline = time.time() + 30
    while _running(owner):  # the fit ends (its lock goes at exit)
        assert time.time() < deadline, "the fit outlived its protocol"
        time.sleep(0.05)
    (log,) = (tmp_path / "runs" / "p" / "logs").glob("*.log")
    assert "stopped: stopped by SIGTERM" in log.read_text()
    assert not (run_dir / "summary.json").exists()
    rerun = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt") and summary["epochs"] == 4
