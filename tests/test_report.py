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


def test_epochs_are_numbered_from_1_in_every_output(runs, capsys):
    """The tiny DARTS search runs 2 epochs: console, summary, checkpoint names, metrics.csv, genotypes.jsonl and
    genotype.json all call them epochs 1 and 2."""
    import csv
    import json

    from lightning_nas.callbacks.run_artifacts import format_summary

    (run,) = [d for d in _fit_dirs(runs) if "darts1" in str(d)]
    summary = json.loads((run / "summary.json").read_text())
    best = summary["best_val_acc"]["epoch"]
    assert summary["epoch_numbering"] == "from 1" and summary["epochs"] == 2 and best in (1, 2)
    assert (run / "checkpoints" / f"best-epoch{best:03d}.ckpt").is_file()
    assert f"(epoch {best})" in format_summary(summary)
    with open(run / "metrics.csv", newline="") as f:
        assert {row["epoch"] for row in csv.DictReader(f)} == {"1", "2"}
    assert [json.loads(line)["epoch"] for line in (run / "genotypes.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((run / "genotype.json").read_text())["epoch"] == 2
    from lightning_nas.reporting.runs import load_run

    assert sorted(load_run(run).curve("val/acc")) == [1, 2]


def test_a_group_is_one_method_variant_and_unfinished_runs_are_listed_apart(runs, tmp_path):
    import json

    (darts,) = [d for d in _fit_dirs(runs) if "darts1" in str(d)]
    assert json.loads((darts / "summary.json").read_text())["variant"] == {"order": 1}
    root = tmp_path / "runs"
    for name, variant in (("order1", {"order": 1}), ("order2", {"order": 2}),
                          ("retrain_a", {"genotype": "a" * 80}), ("retrain_b", {"genotype": "b" * 80})):
        shutil.copytree(darts, root / name)
        summary = json.loads((root / name / "summary.json").read_text())
        (root / name / "summary.json").write_text(json.dumps({**summary, "variant": variant}))
    shutil.copytree(darts, root / "cut")
    (root / "cut" / "summary.json").unlink()  # interrupted: a checkpoint, no summary
    page = build([root])
    names = sorted(g["name"] for g in page["groups"] if g["name"] != "all groups")
    assert page["group_count"] == 4 and page["runs_count"] == 4
    assert names[0].startswith("DARTS | genotype=#") and names[2].startswith("DARTS | order=1 | ")
    assert page["unfinished"] == [{"path": str((root / "cut").resolve()), "state": (
        f"interrupted; resume it with: python -m lightning_nas fit --config {(root / 'cut').resolve()}/config.yaml "
        f"--ckpt_path {(root / 'cut').resolve()}/checkpoints/last.ckpt")}]
    from lightning_nas.reporting.report import render_html

    assert "Runs not finished (not in the numbers)" in render_html(page)


def test_cell_diagrams_are_drawn_like_the_darts_papers():
    """graphviz (Debian's package, which CI installs) draws the DARTS paper's left-to-right cells: inputs green,
    intermediate nodes blue, the output yellow, ops on the edges, skip / none in red; matplotlib where dot is
    missing."""
    from lightning_nas.reporting.figures import cell_diagram, cell_dot
    from lightning_nas.search_spaces.darts.resolve import load_genotype
    from lightning_nas.search_spaces.space import space_of_record

    genotype = load_genotype("DARTS_V2").to_dict()
    dot = cell_dot(space_of_record(genotype).cell_graphs(genotype))
    assert dot.count("subgraph cluster_") == 2 and 'label="normal cell"' in dot and "rankdir=LR" in dot
    assert dot.index('label="reduce cell"') < dot.index('label="normal cell"')  # dot stacks it last: on top
    assert dot.count('[label="skip_connect", color="#bb3333"') == 2 + 3  # DARTS_V2: 2 in normal, 3 in reduce
    assert dot.count("fillcolor=darkseagreen2") == 4 and dot.count("fillcolor=lightyellow2") == 2
    assert cell_diagram(genotype, "matplotlib").startswith(b"\x89PNG")
    if shutil.which("dot") is None:
        pytest.skip("graphviz's dot is not installed (apt-get install graphviz): the report draws cells with "
                    "matplotlib")
    image = cell_diagram(genotype)
    assert image.startswith(b"\x89PNG") and image != cell_diagram(genotype, "matplotlib")


def test_every_table_is_written_as_latex_and_csv_and_retrainings_get_the_darts_papers_table(runs, tmp_path, capsys):
    import csv
    import json

    (search,) = [d for d in _fit_dirs(runs) if "darts1" in str(d)]
    assert main(["fit", "--config", str(TINY / "retrain.yaml"), "--run.root", str(tmp_path / "retrain"),
                 "--model.init_args.genotype", str(search)]) == 0
    out = tmp_path / "report" / "page.html"
    assert main(["report", str(runs), str(tmp_path / "retrain"), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.parent.iterdir())
    assert names == ["page.benchmark.csv", "page.benchmark.tex", "page.groups.csv", "page.groups.tex", "page.html",
                     "page.md", "page.retrained.csv", "page.retrained.tex"]
    for table in ("groups", "benchmark", "retrained"):
        tex = out.with_suffix(f".{table}.tex").read_text()
        assert all(k in tex for k in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}"))
    assert r"$\pm$" in out.with_suffix(".groups.tex").read_text()
    assert "(published)" in out.with_suffix(".benchmark.tex").read_text()
    (row,) = list(csv.DictReader(out.with_suffix(".retrained.csv").open()))
    retrain = next((tmp_path / "retrain").rglob("summary.json"))
    summary, searched = json.loads(retrain.read_text()), json.loads((search / "summary.json").read_text())
    assert row["search method"] == "DARTS" and row["runs"] == "1"
    assert float(row["params (M)"]) == pytest.approx(summary["num_parameters"] / 1e6, abs=0.01)
    assert float(row["test error (%)"]) == pytest.approx(100 - 100 * summary["metrics"]["val/acc"], abs=0.01)
    assert float(row["search cost (h)"]) == pytest.approx(searched["wall_time_s"] / 3600, abs=1e-4)
    assert "Retrained DARTS-space architectures" in out.read_text() and "page.retrained.tex" in out.read_text()
