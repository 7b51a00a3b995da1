"""Losing at most a step: SIGTERM / SIGUSR1 / SIGINT save last.ckpt at the next step and exit 128 + signal with
the resume command; the resumed run equals the uninterrupted one; a kill -9 during a checkpoint write leaves the
previous checkpoint loadable; mid-epoch checkpoints every N steps."""

from __future__ import annotations

import json
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


@pytest.mark.parametrize("config, batch, signum", [(TINY1, 3, signal.SIGUSR1), (TINY_RS, 25, signal.SIGINT),
                                                   (TINY_RETRAIN, 2, signal.SIGTERM)],
                         ids=["darts-sigusr1", "random_search-sigint", "retrain-sigterm"])
def test_a_signal_saves_the_step_and_the_resumed_run_equals_the_uninterrupted_one(config, batch, signum, tmp_path,
                                                                                   capsys):
    short = ["--trainer.max_epochs", "1"] if config == TINY1 else []  # the signal comes mid-epoch either way
    full = run_in_process("fit", "--config", str(config), "--run.root", str(tmp_path / "full"), *short,
                          capsys=capsys)
    probe = json.dumps([{"class_path": "tests.probes.SignalAt", "init_args": {"batch": batch, "signum": int(signum)}}])
    code = main(["fit", "--config", str(config), "--run.root", str(tmp_path / "cut"), "--trainer.callbacks", probe,
                 *short])
    err = capsys.readouterr().err
    name = signal.Signals(signum).name
    # the probe signals at the end of batch `batch`, before the stop check of that step boundary
    assert code == 128 + signum and f"stopped: stopped by {name} after search step {batch}" in err
    (ckpt,) = (tmp_path / "cut").glob("*/*/checkpoints/last.ckpt")
    assert f"--ckpt_path {ckpt}" in err and "Traceback" not in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    resumed = run_in_process("fit", "--config", str(config), "--run.root", str(tmp_path / "resumed"),
                             "--ckpt_path", str(ckpt), *short, capsys=capsys)
    _same_run(full, resumed)


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
        writes["n"] += 1
        if writes["n"] == 2:  # the second checkpoint: the disk is full
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
