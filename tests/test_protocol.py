"""``protocol``: the tiny protocol end to end through submitit's local executor (a real one), its selection, the
report at the end, and a rerun that resumes the interrupted run without redoing finished ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from lightning_nas.cli import main

TINY_PROTOCOL = REPO / "experiments" / "protocols" / "tiny.yaml"


@pytest.fixture(scope="module")
def protocol_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("protocol")
    spec = yaml.safe_load(TINY_PROTOCOL.read_text())
    spec["executor"]["kind"] = "submitit-local"
    for s in spec["searches"]:
        s["config"] = str(REPO / s["config"])
    spec["selection"]["config"] = spec["final"]["config"] = str(REPO / "experiments" / "tiny" / "retrain.yaml")
    path = tmp / "protocol.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["protocol", "--config", str(path), "--root", str(tmp / "runs")]) == 0
    return path, tmp / "runs" / "tiny_protocol"


def test_tiny_protocol_runs_every_stage_and_picks_by_the_selection(protocol_run):
    _, root = protocol_run
    result = json.loads((root / "protocol.json").read_text())["methods"]["darts"]
    assert [s["seed"] for s in result["searches"]] == [1, 2]
    selects = [json.loads((root / "select" / "darts" / f"search_seed{k}" / "summary.json").read_text())
               for k in (1, 2)]
    scores = [s["metrics"]["val/acc"] for s in selects]
    assert [s["score"] for s in result["searches"]] == scores
    assert result["picked"]["seed"] == (1 if scores[0] >= scores[1] else 2)
    final = json.loads((root / "final" / "darts" / "seed0" / "summary.json").read_text())
    assert final["genotype"] == result["picked"]["genotype"]  # the final retraining trains the picked cell
    assert len(result["final"]["test_acc"]) == 1
    html = (root / "report.html").read_text()
    assert "data:image/png;base64," in html
    assert all(f"<h2>{stage}/darts | digits</h2>" in html for stage in ("search", "select", "final"))
    assert list((root / "submitit").glob("*")), "the stages went through submitit"


def test_rerun_resumes_the_interrupted_run_and_keeps_finished_ones(protocol_run, tmp_path):
    path, root = protocol_run
    search_summaries = sorted((root / "search").rglob("summary.json"))
    before = {p: p.stat().st_mtime_ns for p in search_summaries}
    final = root / "final" / "darts" / "seed0"
    picked = json.loads((root / "protocol.json").read_text())["methods"]["darts"]["picked"]["run"]
    shutil.rmtree(final)  # the final retraining stopped by SIGTERM after 2 of its 5 steps (last.ckpt, no summary)
    stop = json.dumps([{"class_path": "tests.probes.SignalAt", "init_args": {"batch": 2}}])
    assert main(["fit", "--config", str(REPO / "experiments" / "tiny" / "retrain.yaml"), "--seed_everything", "0",
                 "--run.root", str(root), "--run.name", "final/darts", "--run.version", "seed0",
                 "--model.init_args.genotype", picked, "--trainer.callbacks", stop]) == 143
    assert (final / "checkpoints" / "last.ckpt").is_file() and not (final / "summary.json").exists()
    spec = yaml.safe_load(path.read_text())
    spec["executor"]["kind"] = "local"
    local = tmp_path / "local.yaml"
    local.write_text(yaml.safe_dump(spec))
    assert main(["protocol", "--config", str(local), "--root", str(root.parent)]) == 0
    assert {p: p.stat().st_mtime_ns for p in search_summaries} == before  # finished runs not redone
    summary = json.loads((final / "summary.json").read_text())
    assert summary["resumed_from"] == str(final / "checkpoints" / "last.ckpt")
    assert summary["global_step"] == 5 and summary["metrics"]["val/acc"] is not None


def test_bad_protocol_is_refused_with_the_fix(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"searches": [{"name": "x", "config": "nope.yaml"}]}))
    assert main(["protocol", "--config", str(bad)]) == 2
    assert "search config nope.yaml does not exist" in capsys.readouterr().err
    shutil.rmtree(tmp_path, ignore_errors=True)


TINY_SEARCH = str(REPO / "experiments" / "tiny" / "darts_nb201.yaml")


@pytest.mark.parametrize("text, message", [
    ("searches: [ {name: x\n", "is not valid YAML (line"),
    ("- a\n- b\n", "the file must be a mapping of keys"),
    (f"searches: [{{name: x, config: {TINY_SEARCH}}}]\nsearch_seeds: [one]\n", "search_seeds must be a list of int"),
    (f"searches: [{{name: x, config: {TINY_SEARCH}}}]\nsearch_seeds: 3\n", "search_seeds must be a list of int"),
    (f"searches: [{{name: x, config: {TINY_SEARCH}}}]\nselection: benchmark\n", "selection must be a mapping"),
    (f"searches: [{{name: x, config: {TINY_SEARCH}}}, {{name: x, config: {TINY_SEARCH}}}]\n",
     "two searches are named x"),
    (f"searches: [{{name: x, config: {TINY_SEARCH}, args: --trainer.max_epochs 1}}]\n", "`args` must be a list"),
], ids=["yaml-error", "top-level-list", "seed-word", "seeds-not-list", "selection-string", "same-name", "args-string"])
def test_a_damaged_protocol_file_is_refused_with_the_key(text, message, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert main(["protocol", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("path", sorted((REPO / "experiments" / "protocols").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_protocol_loads(path, monkeypatch):
    from lightning_nas.protocol import load_protocol, search_jobs

    monkeypatch.chdir(REPO)  # config paths in protocol files are relative to the repository
    protocol = load_protocol(path)
    assert search_jobs(protocol) and protocol.selection["rule"] in ("benchmark", "retrain")


def test_local_executor_pins_one_fit_per_gpu(monkeypatch, tmp_path):
    """With ``gpus``, every fit gets its own CUDA_VISIBLE_DEVICES and no GPU runs two fits at once."""
    import threading
    import time

    import lightning_nas.protocol as protocol

    running: dict[str, int] = {}
    seen: list[str] = []
    lock = threading.Lock()

    def fake_run_fit(argv, log, threads, gpu=None, **options):  # records the pinning instead of training
        with lock:
            running[gpu] = running.get(gpu, 0) + 1
            assert running[gpu] == 1, f"GPU {gpu} got two fits"
            seen.append(gpu)
        time.sleep(0.05)
        with lock:
            running[gpu] -= 1
        def value(flag: str) -> str:
            return argv[argv.index(flag) + 1]

        run_dir = Path(value("--run.root")) / value("--run.name") / value("--run.version")
        run_dir.mkdir(parents=True)
        (run_dir / "summary.json").write_text("{}")
        return 0

    monkeypatch.setattr(protocol, "run_fit", fake_run_fit)
    p = protocol.Protocol("p", tmp_path, [{"name": "a", "config": "x.yaml"}], [1, 2, 3, 4, 5], {"rule": "benchmark"},
                          None, {"kind": "local", "gpus": [0, 1]})
    protocol.run_stage(protocol.search_jobs(p), p)
    assert len(seen) == 5 and set(seen) <= {"0", "1"}
