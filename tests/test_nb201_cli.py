"""NAS-Bench-201 through the CLI: anytime benchmark accuracy, the discrete searches end to end (determinism,
resume, what they report), describe, and clear errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from cli_utils import TINY1, run_in_process, run_subprocess
from conftest import REPO

from lightning_nas.cli import main
from lightning_nas.tabular.nb201 import default_benchmark

TINY = REPO / "experiments" / "tiny"


def _metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _search_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["lightning_nas"]["search_state"]


def test_anytime_benchmark_accuracy_is_the_epochs_genotype(tmp_path, capsys):
    run_dir = run_in_process("fit", "--config", str(TINY / "darts_nb201.yaml"), "--run.root", str(tmp_path),
                             capsys=capsys)
    bench = default_benchmark()
    logged = [r for r in _metrics(run_dir) if r.get("benchmark/cifar10_test")]
    genotypes = [json.loads(line) for line in (run_dir / "genotypes.jsonl").read_text().splitlines()]
    assert len(logged) == len(genotypes) == 2
    for row, g in zip(logged, genotypes):
        arch = g["genotype"]["arch"]
        assert g["genotype"]["index"] == bench.index(arch) == int(float(row["benchmark/arch_index"]))
        for d in ("cifar10", "cifar100", "imagenet16_120"):
            assert float(row[f"benchmark/{d}_test"]) == pytest.approx(bench.accuracy(arch, d), abs=1e-4)


def test_naswot_search_end_to_end(tmp_path, capsys):
    cfg = str(TINY / "naswot_nb201.yaml")
    runs = [run_in_process("fit", "--config", cfg, "--run.root", str(tmp_path / str(k)), capsys=capsys)
            for k in range(2)]
    history = _search_state(runs[0])["history"]
    assert len(history) == 6 and history == _search_state(runs[1])["history"]  # same seed, same search
    summary = _summary(runs[0])
    best = max(history, key=lambda r: r["fitness"])
    bench = default_benchmark()
    assert summary["incumbent"]["arch"] == best["arch"] == json.loads((runs[0] / "genotype.json").read_text())[
        "genotype"]["arch"]
    assert summary["incumbent"]["cifar10_test"] == bench.accuracy(best["arch"])
    assert summary["metrics"]["benchmark/cifar10_test"] == pytest.approx(bench.accuracy(best["arch"]), abs=1e-4)
    other = run_in_process("fit", "--config", cfg, "--seed_everything", "3", "--run.root", str(tmp_path / "s3"),
                           capsys=capsys)
    assert _search_state(other)["history"] != history


def test_area_starts_rea_from_the_best_proxy_scores(tmp_path, capsys):
    run_dir = run_in_process("fit", "--config", str(TINY / "area_nb201.yaml"), "--run.root", str(tmp_path),
                             capsys=capsys)
    summary, state = _summary(run_dir), _search_state(run_dir)
    candidates = summary["proxy_candidates"]
    assert len(candidates) == 12
    top5 = [a for a, _ in sorted(candidates, key=lambda c: -c[1])[:5]]
    assert state["strategy"]["initial"] == top5
    assert [r["arch"] for r in state["history"][:5]] == top5  # the initial population is evaluated first
    assert summary["evaluated"] == 20


@pytest.mark.parametrize("config", ["rea_nb201", "random_search_nb201"])
def test_table_searches_resume_exactly(config, tmp_path, capsys):
    """Interrupted after 13 of 40 evaluations (mid-epoch), then resumed: the same search as uninterrupted."""
    cfg = str(TINY / f"{config}.yaml")
    full = run_in_process("fit", "--config", cfg, "--run.root", str(tmp_path / "full"), capsys=capsys)
    mid = tmp_path / "interrupted.ckpt"
    probe = json.dumps([{"class_path": "tests.probes.StopAfterBatches",
                         "init_args": {"batches": 13, "checkpoint": str(mid)}}])
    run_in_process("fit", "--config", cfg, "--run.root", str(tmp_path / "cut"), "--trainer.callbacks", probe,
                   capsys=capsys)
    assert len(torch.load(mid, weights_only=False)["lightning_nas"]["search_state"]["history"]) == 13
    resumed = run_in_process("fit", "--config", cfg, "--run.root", str(tmp_path / "resumed"), "--ckpt_path",
                             str(mid), capsys=capsys)
    assert _search_state(resumed) == _search_state(full)
    assert _summary(resumed)["incumbent"] == _summary(full)["incumbent"]
    trajectory = _summary(full)["incumbent_cifar10_test_by_evaluation"]
    assert len(trajectory) == 40 and trajectory == sorted(trajectory)  # the oracle's incumbent only improves


def test_budget_larger_than_the_epochs_allow_is_refused(tmp_path, capsys):
    assert main(["fit", "--config", str(TINY / "rea_nb201.yaml"), "--run.root", str(tmp_path),
                 "--trainer.max_epochs", "1"]) == 2
    assert "set trainer.max_epochs >= 2" in capsys.readouterr().err


def test_benchmark_callback_on_the_darts_space_is_refused(tmp_path):
    cb = json.dumps([{"class_path": "lightning_nas.callbacks.BenchmarkAccuracy"}])
    proc = run_subprocess("fit", "--config", str(TINY1), "--run.root", str(tmp_path), "--trainer.callbacks", cb)
    assert proc.returncode != 0 and "needs a search on the NAS-Bench-201 space" in proc.stderr


def test_missing_benchmark_file_is_reported(tmp_path):
    proc = run_subprocess("fit", "--config", str(TINY / "rea_nb201.yaml"), "--run.root", str(tmp_path),
                          "--model.init_args.benchmark_path", str(tmp_path / "NATS-tss-v1_0-3ffb9-simple"))
    assert proc.returncode != 0 and "download NATS-tss-v1_0-3ffb9-simple.tar" in proc.stderr


def test_describe_nb201(capsys):
    assert main(["describe", "--space", "nb201", "--arch", "1462", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 1_531_546 and info["macs"] == 220_119_680  # the benchmark's 1.53 MB, 220.11 M
    assert info["benchmark"]["cifar10_test"] == pytest.approx(93.76)
    assert main(["describe", "--space", "nb201", "--arch", "|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|"
                 "none~2|"]) == 2
    assert "unknown operation 'nor_conv_5x5'" in capsys.readouterr().err


def test_discrete_search_refuses_ddp(tmp_path):
    proc = run_subprocess("fit", "--config", str(TINY / "rea_nb201.yaml"), "--run.root", str(tmp_path),
                          "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu")
    assert proc.returncode != 0 and "run in one process" in proc.stderr
