"""Losing at most a step: SIGTERM / SIGUSR1 / SIGINT save last.ckpt at the next step and exit 128 + signal with
the resume command; the resumed run equals the uninterrupted one; a kill -9 during a checkpoint write leaves the
previous checkpoint loadable; mid-epoch checkpoints every N steps."""

from __future__ import annotations

import json
import random
import re
import shutil
import signal

import pytest
import torch
from cli_utils import TINY1, TINY_RETRAIN, run_in_process, run_subprocess, weights
from conftest import REPO

from lightning_nas.cli import main

TINY_RS = REPO / "experiments" / "tiny" / "random_search_nb201.yaml"


def _same_run(a, b) -> None:
    wa, wb = weights(a / "checkpoints" / "last.ckpt"), weights(b / "checkpoints" / "last.ckpt")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    if (a / "genotype.json").exists():
        assert json.loads((a / "genotype.json").read_text()) == json.loads((b / "genotype.json").read_text())


def _without_times(path):
    return [{k: v for k, v in json.loads(line).items() if "time" not in k}
            for line in path.read_text().splitlines()] if path.exists() else None


FAMILIES = [(TINY1, signal.SIGUSR1, None), (TINY_RS, signal.SIGINT, None), (TINY_RETRAIN, signal.SIGTERM, 5),
            (REPO / "experiments" / "tiny" / "single_path_nb201.yaml", signal.SIGTERM, None),
            (REPO / "experiments" / "tiny" / "saep.yaml", signal.SIGTERM, None)]


@pytest.mark.parametrize("config, signum, batch", FAMILIES,
                         ids=["bilevel-sigusr1", "discrete-sigint", "training-sigterm-at-an-epochs-last-batch",
                              "single_path-sigterm", "ensemble-sigterm"])
def test_a_signal_at_any_step_then_resume_gives_the_uninterrupted_run(config, signum, batch, tmp_path, capsys):
    """One method per family, stopped by a real signal at a step drawn from the run's steps (seeded by the config's
    name, so a failure repeats), resumed in place: weights, summary metrics, every logged row of metrics.csv,
    genotypes.jsonl and the checkpoint files equal the uninterrupted run's. The retraining is stopped at an epoch's
    last batch: it stops after that epoch's validation, which the resumed run must not lose."""
    extra = ["--trainer.max_epochs", "3"] if config == TINY_RETRAIN else []
    run = ["fit", "--config", str(config), *extra, "--run.version", "v"]
    full = run_in_process(*run, "--run.root", str(tmp_path / "full"), capsys=capsys)
    steps = json.loads((full / "summary.json").read_text())["search_steps"]
    batch = batch or random.Random(config.stem).randrange(1, steps)
    probe = json.dumps([{"class_path": "tests.probes.SignalAt", "init_args": {"batch": batch, "signum": int(signum)}}])
    code = main([*run, "--run.root", str(tmp_path / "cut"), "--trainer.callbacks+", probe])
    err = capsys.readouterr().err
    name = signal.Signals(signum).name
    assert code == 128 + signum and f"stopped: stopped by {name} after search step {batch}" in err, err[-2000:]
    (ckpt,) = (tmp_path / "cut").glob("*/v/checkpoints/last.ckpt")
    assert f"--ckpt_path {ckpt}" in err and "Traceback" not in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    resumed = run_in_process(*run, "--run.root", str(tmp_path / "cut"), "--ckpt_path", str(ckpt), capsys=capsys)
    _same_run(full, resumed)
    assert (full / "metrics.csv").read_text() == (resumed / "metrics.csv").read_text()
    full_summary, resumed_summary = (json.loads((r / "summary.json").read_text()) for r in (full, resumed))
    assert full_summary["metrics"] == resumed_summary["metrics"]
    assert full_summary["best_val_acc"] == resumed_summary["best_val_acc"]
    assert _without_times(full / "genotypes.jsonl") == _without_times(resumed / "genotypes.jsonl")
    assert sorted(p.name for p in (full / "checkpoints").iterdir()) == \
        sorted(p.name for p in (resumed / "checkpoints").iterdir())


def test_sigterm_to_a_subprocess_exits_143_with_a_checkpoint(tmp_path):
    probe = json.dumps([{"class_path": "tests.probes.SignalAt", "init_args": {"batch": 3}}])
    proc = run_subprocess("fit", "--config", str(TINY1), "--run.root", str(tmp_path), "--trainer.callbacks", probe,
                          "--trainer.max_epochs", "1")
    assert proc.returncode == 143, proc.stderr[-2000:]
    (ckpt,) = tmp_path.glob("*/*/checkpoints/last.ckpt")
    assert torch.load(ckpt, weights_only=True)["global_step"] == 6  # 3 search steps x 2 optimizer steps
    assert "Resume it with: python -m lightning_nas fit --config" in proc.stderr


def test_kill_during_a_checkpoint_write_leaves_the_previous_one(tmp_path):
    proc = run_subprocess("fit", "--config", str(TINY1), "--run.root", str(tmp_path), "--trainer.plugins",
                          "tests.probes.DyingCheckpointIO", "--run.checkpoint_every_n_steps", "2",
                          "--run.monitor", "null")
    assert proc.returncode == -signal.SIGKILL
    (ckpt,) = tmp_path.glob("*/*/checkpoints/last.ckpt")
    # the first write: the mid-epoch checkpoint after 2 search steps (4 optimizer steps)
    assert torch.load(ckpt, weights_only=True)["global_step"] == 4
    assert ckpt.with_name("last.ckpt.tmp").read_bytes().startswith(b"PK\x03\x04 half")  # the killed write


def test_mid_epoch_checkpoint_options_are_checked(tmp_path, capsys):
    for option, value in (("--run.checkpoint_every_n_steps", "0"), ("--run.checkpoint_every_minutes", "-1")):
        code = main(["fit", "--config", str(TINY1), "--run.root", str(tmp_path), option, value])
        assert code == 2 and option[2:] in capsys.readouterr().err


def test_resume_continues_in_the_run_directory_and_never_clobbers_a_run(tmp_path, capsys):
    first = run_in_process("fit", "--config", str(TINY1), "--run.root", str(tmp_path), "--run.version", "v1",
                           "--trainer.max_epochs", "1", capsys=capsys)
    metrics_before = (first / "metrics.csv").read_text()
    # the same run.version again: refused, nothing of the first run touched
    code = main(["fit", "--config", str(TINY1), "--run.root", str(tmp_path), "--run.version", "v1"])
    err = capsys.readouterr().err
    assert code == 2 and "already holds a run" in err and f"--ckpt_path {first / 'checkpoints' / 'last.ckpt'}" in err
    assert (first / "metrics.csv").read_text() == metrics_before
    # a resume that changes what the run trains (here its epochs: the cosine period of its schedule) is refused
    config_before = (first / "config.yaml").read_text()
    code = main(["fit", "--config", str(first / "config.yaml"), "--trainer.max_epochs", "2", "--ckpt_path",
                 str(first / "checkpoints" / "last.ckpt")])
    err = capsys.readouterr().err
    assert code == 2 and "a resume cannot change trainer.max_epochs (1 -> 2)" in err
    assert (first / "config.yaml").read_text() == config_before
    assert (first / "metrics.csv").read_text() == metrics_before
    code = main(["fit", "--config", str(first / "config.yaml"), "--seed_everything", "5", "--ckpt_path",
                 str(first / "checkpoints" / "last.ckpt")])
    err = capsys.readouterr().err
    assert code == 2 and "a resume cannot change" in err and "seed_everything (2 -> 5)" in err
    # a checkpoint taken elsewhere, for another network shape: one line, not the state_dict's differences
    elsewhere = tmp_path / "copied.ckpt"
    shutil.copy(first / "checkpoints" / "last.ckpt", elsewhere)
    code = main(["fit", "--config", str(TINY1), "--run.root", str(tmp_path / "other"), "--trainer.max_epochs", "2",
                 "--model.init_args.supernet.init_args.channels", "6", "--ckpt_path", str(elsewhere)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "the checkpoint holds another network" in err[0], err
    # an interrupted run resumed from its checkpoint continues in its directory, appending to its logs
    cut_dir = tmp_path / "cut" / "v1"
    probe = json.dumps([{"class_path": "tests.probes.StopAfterBatches",
                         "init_args": {"batches": 3, "checkpoint": str(cut_dir / "checkpoints" / "last.ckpt")}}])
    cut = run_in_process("fit", "--config", str(TINY1), "--run.root", str(tmp_path), "--run.name", "cut",
                         "--run.version", "v1", "--trainer.callbacks", probe, capsys=capsys)
    assert cut == cut_dir
    metrics_before = (cut / "metrics.csv").read_text()
    summary_before = (cut / "summary.json").read_text()
    config_before = (cut / "config.yaml").read_text()
    resumed = run_in_process("fit", "--config", str(cut / "config.yaml"), "--run.root", str(tmp_path / "elsewhere"),
                             "--trainer.enable_progress_bar", "false", "--ckpt_path",
                             str(cut / "checkpoints" / "last.ckpt"), capsys=capsys)
    assert resumed == cut and not (tmp_path / "elsewhere").exists()
    metrics = (cut / "metrics.csv").read_text()
    assert metrics.startswith(metrics_before.splitlines()[0]) and len(metrics) > len(metrics_before)
    summary = json.loads((cut / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["metrics"]["val/acc"] is not None
    assert (cut / "summary.before-resume-1.json").read_text() == summary_before  # the first part's, kept
    # the run's config stays as written; the resumed segment's (with what it may change) goes beside it
    assert (cut / "config.yaml").read_text() == config_before and (cut / "config.resume-1.yaml").is_file()
    # the same resume command again (a requeued job): nothing to do, exit 0, the summary untouched
    finished = (cut / "summary.json").read_text()
    code = main(["fit", "--config", str(cut / "config.yaml"), "--ckpt_path", str(cut / "checkpoints" / "last.ckpt")])
    err = capsys.readouterr().err
    assert code == 0 and f"the run in {cut} already finished its 2 epochs" in err
    assert (cut / "summary.json").read_text() == finished and not (cut / "summary.before-resume-2.json").exists()
    # a command that fails before writing anything leaves no directory behind
    code = main(["fit", "--config", str(TINY1), "--run.root", str(tmp_path / "failed"),
                 "--model.init_args.hvp_epsilon", "-1"])
    assert code == 2 and "hvp_epsilon" in capsys.readouterr().err
    assert not (tmp_path / "failed").exists() or not any((tmp_path / "failed").rglob("*"))


def test_a_bad_checkpoint_path_is_refused_before_anything_is_written(tmp_path, capsys):
    good = run_in_process("fit", "--config", str(TINY1), "--run.root", str(tmp_path / "good"),
                          "--trainer.max_epochs", "1", capsys=capsys) / "checkpoints" / "last.ckpt"
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    (tmp_path / "truncated.ckpt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    torch.save({"weights": torch.ones(3)}, tmp_path / "plain.ckpt")
    for name, message in (("missing.ckpt", "does not exist"), ("text.ckpt", "truncated or corrupt"),
                          ("truncated.ckpt", "truncated or corrupt"), ("plain.ckpt", "not a lightning_nas checkpoint")):
        code = main(["fit", "--config", str(TINY1), "--run.root", str(tmp_path / "runs"),
                     "--ckpt_path", str(tmp_path / name)])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "weights_only" not in err and "Traceback" not in err, name
    assert not (tmp_path / "runs").exists()


def test_a_full_disk_at_a_checkpoint_write_stops_with_one_line_and_keeps_the_last_good_one(tmp_path, capsys,
                                                                                            monkeypatch):
    import errno

    from lightning_nas.checkpointing import AtomicCheckpointIO

    writes = {"n": 0}
    original = AtomicCheckpointIO.write

    def filling_disk(self, checkpoint, path, storage_options=None):
        writes["n"] += path.name == "last.ckpt.tmp"
        if writes["n"] == 2:  # the second last.ckpt: the disk is full
            path.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        original(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "write", filling_disk)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "no_such_tmp"))  # checkpoints never go through TMPDIR
    code = main(["fit", "--config", str(TINY1), "--run.root", str(tmp_path), "--run.version", "v"])
    err = capsys.readouterr().err.strip().splitlines()
    run = next(tmp_path.glob("*/v"))
    last = run / "checkpoints" / "last.ckpt"
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    written = rf"cannot write the checkpoint {run}/checkpoints/\S+\.ckpt \(No space left on device\)"
    assert re.search(written, err[0]), err
    assert f"the last good checkpoint, {last}, is intact" in err[0] and f"--ckpt_path {last}" in err[0]
    assert torch.load(last, weights_only=True)["state_dict"]  # the first checkpoint, whole
    assert not list(run.rglob("*.tmp")) and not (run / ".lock").exists()


DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu", "--trainer.max_epochs",
       "1", "--data.init_args.batch_size", "4", "--run.version", "v"]  # 20 steps per rank
TINY_NB201 = REPO / "experiments" / "tiny" / "darts_nb201.yaml"


def test_two_ddp_processes_stopped_mid_epoch_resume_to_the_uninterrupted_run(tmp_path):
    """The ranks agree on the stop at step 10 of 20, every rank's metric sums and buffers go into the checkpoint:
    the resumed run logs every row the uninterrupted one logs (val/loss included: every rank evaluates rank 0's BN
    statistics) and ends with the same weights."""
    full = run_subprocess("fit", "--config", str(TINY_NB201), *DDP, "--run.root", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-2000:]
    probe = json.dumps([{"class_path": "tests.probes.SignalAt", "init_args": {"batch": 3}}])
    cut = run_subprocess("fit", "--config", str(TINY_NB201), *DDP, "--run.root", str(tmp_path / "cut"),
                         "--trainer.callbacks+", probe)
    assert cut.returncode == 143 and "after search step 10 (epoch 1)" in cut.stderr, cut.stderr[-2000:]
    (ckpt,) = (tmp_path / "cut").glob("*/v/checkpoints/last.ckpt")
    resumed = run_subprocess("fit", "--config", str(TINY_NB201), *DDP, "--run.root", str(tmp_path / "cut"),
                             "--ckpt_path", str(ckpt))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    (a,), (b,) = (tmp_path / "full").glob("*/v"), (tmp_path / "cut").glob("*/v")
    _same_run(a, b)
    assert (a / "metrics.csv").read_text() == (b / "metrics.csv").read_text()


def test_a_ddp_rank_killed_stops_the_other_with_one_line_naming_it(tmp_path):
    probe = json.dumps([{"class_path": "tests.probes.KillRankAt", "init_args": {"rank": 1, "batch": 13}}])
    proc = run_subprocess("fit", "--config", str(TINY_NB201), *DDP, "--run.root", str(tmp_path), "--trainer.callbacks+",
                          probe, "--run.checkpoint_every_n_steps", "10", timeout=120)
    (run,) = tmp_path.glob("*/v")
    last = run / "checkpoints" / "last.ckpt"
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert re.match(r"error: rank 0 stopped: rank 1 \(pid \d+, killed by SIGKILL \(what the out-of-memory killer "
                    r"sends\)\) of this multi-process run ended; resume with: python -m lightning_nas fit --config "
                    rf"{run}/config.yaml --ckpt_path {last}$", line), line
    assert torch.load(last, weights_only=True)["global_step"] == 2 * 10 and not (run / ".lock").exists()


@pytest.mark.parametrize("where", ["checkpoint", "metrics.csv"])
def test_a_run_root_turned_read_only_mid_run_stops_with_one_line(where, tmp_path, capsys, monkeypatch):
    """The file system goes read-only (EROFS) in the second epoch, at a checkpoint write or at a metrics.csv write
    (a remount cannot be made here: the writes are patched): one line naming the file and the resume command, the
    last good checkpoint intact."""
    import errno

    from lightning_nas.checkpointing import AtomicCheckpointIO
    from lightning_nas.cli import _AppendingWriter

    calls = {"n": 0}

    def read_only(path):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    if where == "checkpoint":
        original = AtomicCheckpointIO.write

        def write(self, checkpoint, path, storage_options=None):
            calls["n"] += path.name == "last.ckpt.tmp"
            if calls["n"] == 2:
                read_only(path)
            original(self, checkpoint, path, storage_options)

        monkeypatch.setattr(AtomicCheckpointIO, "write", write)
    else:
        original = _AppendingWriter.save

        def save(self):
            calls["n"] += bool(self.metrics)
            if calls["n"] == 2:
                read_only(self.metrics_file_path)
            original(self)

        monkeypatch.setattr(_AppendingWriter, "save", save)
    code = main(["fit", "--config", str(TINY1), "--run.root", str(tmp_path), "--run.version", "v"])
    err = capsys.readouterr().err.strip().splitlines()
    run = next(tmp_path.glob("*/v"))
    last = run / "checkpoints" / "last.ckpt"
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    assert "(Read-only file system)" in err[0] and f"--ckpt_path {last}" in err[0], err
    assert (f"{run}/checkpoints/last.ckpt" if where == "checkpoint" else f"{run}/metrics.csv") in err[0]
    assert torch.load(last, weights_only=True)["epoch"] == 0 and not (run / ".lock").exists()
