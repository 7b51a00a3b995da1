"""What a new user meets first: the top-level help, every subcommand on every method family, the summary a run
ends with, clean output, the resolved config in every logger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_utils import TINY1, TINY_RETRAIN, run_subprocess
from conftest import REPO

from lightning_nas.cli import main

TINY_REA = REPO / "experiments" / "tiny" / "rea_nb201.yaml"


def _run(capsys, *args: str) -> tuple[Path, str]:
    assert main(list(args)) == 0
    out = capsys.readouterr().out
    return Path(out.strip().splitlines()[-1]), out


def test_top_level_help_lists_every_subcommand_and_no_predict(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for sub in ("fit", "validate", "test", "describe", "ws-variance"):
        assert f"  {sub} " in out
    assert "predict" not in out
    proc = run_subprocess("predict", "--config", str(TINY1))
    assert proc.returncode != 0 and "predict" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("family, config, describe", [
    ("bilevel", TINY1, ["describe", "--genotype"]),
    ("discrete", TINY_REA, ["describe", "--space", "nb201", "--arch"]),
    ("retrain", TINY_RETRAIN, ["describe", "--genotype"]),
    ("cell training", REPO / "experiments" / "tiny" / "teacher_nb201.yaml", ["describe", "--space", "nb201", "--arch"]),
], ids=["bilevel", "discrete", "retrain", "cell training"])
def test_every_subcommand_works_for_every_method_family(family, config, describe, tmp_path, capsys):
    epochs = "2" if family == "discrete" else "1"  # the tiny REA budget needs its 2 epochs
    run_dir, out = _run(capsys, "fit", "--config", str(config), "--run.root", str(tmp_path),
                        "--trainer.max_epochs", epochs)
    summary = json.loads((run_dir / "summary.json").read_text())
    # the run ends with a summary: method, space, data, epochs, wall time, result, genotype; then the directory
    tail = out.strip().splitlines()[-4:]
    assert tail[0].startswith(summary["method"].rsplit(".", 1)[-1] + " on ") and f"{epochs} epochs" in tail[0]
    assert tail[-2] == f"genotype: {summary['genotype']}" and tail[-1] == str(run_dir)
    ckpt = str(run_dir / "checkpoints" / "last.ckpt")
    for sub, stage in (("validate", "val"), ("test", "test")):
        done, _ = _run(capsys, sub, "--config", str(run_dir / "config.yaml"), "--ckpt_path", ckpt, "--run.root",
                       str(tmp_path))
        assert done.name.endswith(f"-{sub}") and not (done / "checkpoints").exists()
        metrics = json.loads((done / "summary.json").read_text())["metrics"]
        key = f"{stage}/cifar10_test" if family == "discrete" else f"{stage}/acc"
        assert metrics[key] is not None, metrics
        if family == "discrete":  # the incumbent's benchmark accuracy, as the search reported it
            assert metrics[key] == pytest.approx(summary["incumbent"]["cifar10_test"], abs=1e-4)
    assert main([*describe, str(run_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] > 0


def test_discrete_validate_without_a_checkpoint_says_what_to_pass(tmp_path):
    proc = run_subprocess("validate", "--config", str(TINY_REA), "--run.root", str(tmp_path))
    assert proc.returncode == 2 and "--ckpt_path" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("config, epochs, metric", [(TINY1, 2, "search/arch_loss"),
                                                    (REPO / "experiments" / "tiny" / "saep.yaml", 3, "val/acc")],
                         ids=["darts", "saep-fewer-batches-than-the-logging-interval"])
def test_a_run_prints_one_screen_without_lightning_noise(config, epochs, metric, tmp_path):
    proc = run_subprocess("fit", "--config", str(config), "--run.root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout + proc.stderr
    for noise in ("Tip:", "litlogger", "dirpath has changed", "Total Flops", "configure_optimizers", "Warning",
                  "warn(", "Seed set to", "GPU available", "TPU available", "logging interval"):
        assert noise not in text, noise
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) <= 12, text
    lines = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert [e.split(" |")[0] for e in lines] == [f"epoch {k}/{epochs}" for k in range(1, epochs + 1)]
    assert all("val/acc" in e and metric in e for e in lines)  # one progress line per epoch


def test_wandb_online_without_a_login_is_refused_before_anything_is_created(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc: no stored key
    logger = json.dumps({"class_path": "pytorch_lightning.loggers.WandbLogger", "init_args": {"project": "x"}})
    code = main(["fit", "--config", str(TINY1), "--run.root", str(tmp_path / "runs"), "--trainer.logger", logger])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "W&B online needs a login" in err[0] and "WANDB_MODE=offline" in err[0]
    assert not (tmp_path / "runs").exists()
