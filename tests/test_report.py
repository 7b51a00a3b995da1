"""``report``: an offline HTML page and a Markdown summary over run directories, grouped, with mean ± std."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from conftest import REPO

from lightning_nas.cli import main
from lightning_nas.reporting.report import build

TINY = REPO / "experiments" / "tiny"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for seed in (0, 1):
        assert main(["fit", "--config", str(TINY / "darts_nb201.yaml"), "--run.root", str(root / "nb201"),
                     "--seed_everything", str(seed)]) == 0
    assert main(["fit", "--config", str(TINY / "darts_first_order.yaml"), "--run.root", str(root / "darts")]) == 0
    # a test and a validate of one NB201 run's checkpoint: columns of that run, never runs of their own
    first = sorted(p.parent for p in (root / "nb201").rglob("summary.json"))[0]
    for subcommand in ("test", "validate"):
        assert main([subcommand, "--config", str(first / "config.yaml"), "--ckpt_path",
                     str(first / "checkpoints" / "last.ckpt")]) == 0
    return root


def _fit_dirs(root):
    """The fit runs below ``root`` (not the validate / test runs of their checkpoints), in path order."""
    import json

    return sorted(p.parent for p in root.rglob("summary.json") if json.loads(p.read_text())["subcommand"] == "fit")


def test_report_groups_runs_and_writes_an_offline_page(runs, tmp_path, capsys):
    out = tmp_path / "report" / "index.html"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    html = out.read_text()
    md = out.with_suffix(".md").read_text()
    page = build([runs])
    names = [g["name"] for g in page["groups"]]
    assert page["runs_count"] == 3 and "all groups" in names and page["group_count"] == 2  # the overlay is no group
    assert "3 runs in 2 groups" in html
    nb201 = next(g for g in page["groups"] if "NB201Supernet" in g["name"])
    held_out = next(m for m in nb201["metrics"] if m["label"].startswith("final held-out"))
    assert held_out["n"] == 2 and "±" in held_out["value"] and nb201["best"]["seed"] in (0, 1)
    assert any(m["label"].startswith("NB201 CIFAR-10") for m in nb201["metrics"])
    test_acc = next(m for m in nb201["metrics"] if m["label"] == "test acc (%)")  # from the attached test run
    assert test_acc["n"] == 1 and len(list(runs.rglob("*-test/summary.json"))) == 1
    # figures inline (curves, cell diagrams, alpha heatmaps), provenance behind a click, nothing fetched online
    assert html.count("data:image/png;base64,") >= 3 + 2 * 3
    assert html.count("<details>") == 3 and "seed_everything" in html
    assert not re.search(r"(src|href)=\"https?://", html)
    assert "| final held-out accuracy (%) |" in md and "Best run: seed" in md


def test_report_groups_by_a_config_key_and_refuses_an_empty_folder(runs, tmp_path, capsys):
    page = build([runs], ["method", "seed_everything"])
    assert {g["name"] for g in page["groups"]} >= {"DARTS | 0", "DARTS | 1", "DARTS | 2"}
    assert main(["report", str(tmp_path / "nothing_here"), "--out", str(tmp_path / "r.html")]) == 2
    assert "no run directories" in capsys.readouterr().err
    # a key no run has is an error, not one group "None"
    assert main(["report", str(runs), "--group-by", "model.init_args.nonexistent", "--out",
                 str(tmp_path / "r.html")]) == 2
    assert "--group-by model.init_args.nonexistent: no run has it" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_report_renders_in_headless_chromium(runs, tmp_path):
    """The page loads from a file:// URL with no network, and the rendered screenshot shows the tables and
    figures (far from a blank page); the DOM after rendering holds every table and image."""
    from PIL import Image

    out = tmp_path / "report.html"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,3000"]
    proc = subprocess.run(["chromium", *flags, f"--screenshot={shot}", out.as_uri()], capture_output=True,
                          text=True, timeout=120)
    assert shot.is_file(), proc.stderr[-2000:]
    image = Image.open(shot).convert("L")
    dark = sum(1 for p in image.getdata() if p < 200) / (image.width * image.height)
    assert dark > 0.02  # text, tables and plots, not an empty page
    dom = subprocess.run(["chromium", *flags, "--dump-dom", out.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert dom.count("<table") >= 2 and dom.count("<img") >= 9 and "lightning_nas comparison report" in dom


def test_wandb_report_offline_says_it_needs_a_login(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert main(["report", str(runs), "--wandb", "lightning_nas_tests", "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "needs W&B online" in err and "wandb login" in err and not (tmp_path / "r.html").exists()


def test_report_lays_out_the_benchmark_table_with_the_published_rows(runs, tmp_path):
    """NB201 cells: one row per group with the shipped table's test accuracy of the final cells on every dataset
    (mean ± std), the search cost, then the published rows; the DARTS-space group has no row."""
    import json
    import statistics

    from lightning_nas.tabular import default_benchmark

    page = build([runs])
    table = page["benchmark"]
    assert table["datasets"] == ["cifar10", "cifar100", "imagenet16_120"] and len(table["rows"]) == 1
    row = table["rows"][0]
    assert "NB201Supernet" in row["name"] and row["runs"] == 2
    bench = default_benchmark()
    archs = [json.loads((d / "genotype.json").read_text())["genotype"]["arch"] for d in _fit_dirs(runs / "nb201")]
    values = [bench.accuracy(a, "cifar100") for a in archs]
    assert row["accuracy"]["cifar100"] == f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"
    published = {p["name"]: p for p in table["published"]}
    assert published["GDAS"]["accuracy"]["imagenet16_120"] == "41.71 ± 0.98"
    assert published["optimum of the table"]["accuracy"]["cifar10"] == "94.37"
    out = tmp_path / "r.html"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    md = out.with_suffix(".md").read_text()
    assert "## NB201 benchmark" in md and "| GDAS (published) | 93.61 ± 0.09 |" in md
    assert 'class="benchmark"' in out.read_text()


def test_pc_darts_supernets_group_apart_from_plain_ones():
    from pathlib import Path

    from lightning_nas.reporting.runs import Run

    pc = Run(Path("a"), {"space": "NB201Supernet(primitives=['none', 'skip_connect'], partial_channels=4, "
                                  "edge_normalization)"}, {})
    plain = Run(Path("b"), {"space": "NB201Supernet(primitives=['none', 'skip_connect'])"}, {})
    assert pc.get("space") == "NB201Supernet (partial_channels=4, edge_normalization)"
    assert plain.get("space") == "NB201Supernet"


def test_damaged_runs_are_skipped_by_name_and_a_nan_run_is_never_the_best(runs, tmp_path, capsys):
    """A truncated or non-object summary.json, a config.yaml that is not YAML: skipped with a named line, the others
    reported; a partial last line of genotypes.jsonl is dropped; a NaN accuracy never makes a group's best run."""
    import json

    work = tmp_path / "runs"
    shutil.copytree(runs / "nb201", work)
    good, bad = _fit_dirs(work)
    (bad / "summary.json").write_text('{"method": "lightning_nas.methods.DARTS", "metri')
    out = tmp_path / "r.html"
    assert main(["report", str(work), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"skipped run {bad}: summary.json cannot be read" in err and out.is_file()
    (bad / "summary.json").write_text("[1, 2]")
    (good / "config.yaml").write_text("model: {class_path: [")
    assert main(["report", str(work), "--out", str(out)]) == 2  # nothing left to report
    err = capsys.readouterr().err
    assert "holds a list, not a run summary" in err and "config.yaml cannot be read" in err
    shutil.rmtree(work)
    shutil.copytree(runs / "nb201", work)
    good, other = _fit_dirs(work)
    with (good / "genotypes.jsonl").open("a") as f:
        f.write('{"epoch": 3, "genot')  # killed while appending
    summary = json.loads((other / "summary.json").read_text())
    summary["metrics"]["val/acc"] = float("nan")
    (other / "summary.json").write_text(json.dumps(summary))
    page = build([work])
    group = next(g for g in page["groups"] if "NB201Supernet" in g["name"])
    assert group["best"]["path"] == str(good.resolve())


def test_a_report_that_cannot_be_written_is_refused_before_the_work(runs, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["report", str(runs), "--out", str(blocker / "report.html")]) == 2
    err = capsys.readouterr().err
    assert "cannot write the report to" in err and "pass --out in a folder you can write" in err
