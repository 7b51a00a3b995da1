"""End-to-end runs through the CLI: run directory, configs, reproducibility, resume, DDP, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from cli_utils import (
    TINY1,
    TINY2,
    TINY_RETRAIN,
    alphas,
    assert_same_weights,
    run_in_process,
    run_subprocess,
    run_two_process_ddp,
    uninterrupted_and_resumed,
    weights,
)
from conftest import REPO

from lightning_nas.callbacks.run_artifacts import format_summary
from lightning_nas.cli import main

CONFIGS = sorted(c for c in (REPO / "experiments").rglob("*.yaml")
                 if c.parent.name != "protocols" and "blocks" not in c.parts)  # fit configs (blocks are parts of them)
# the discrete searches (no supernet, no validation loop) have their own end-to-end tests in test_nb201_cli.py and
# test_spaces.py (the DARTS-space ones)
DISCRETE_TINY = {"naswot_nb201", "rea_nb201", "random_search_nb201", "area_nb201", "rea_darts", "bo_darts",
                 "random_search_darts_trained"}
# run in their own tests, with their outputs checked: tests/test_landscape.py; tests/test_mfkd.py (the distillation
# and MF-KD configs need the teacher that teacher_nb201 trains first)
OWN_TEST_TINY = {"landscape_retrain", "teacher_nb201", "distill_nb201", "mfkd_nb201", "bo_nb201", "beta_darts_nb201",
                 "gdas_nb201", "gdas", "drnas_nb201", "drnas", "snas_nb201", "snas", "pc_darts", "pc_darts_nb201",
                 "darts_pt_nb201", "drnas_progressive"}
TINY = sorted(c for c in (REPO / "experiments" / "tiny").glob("*.yaml") if c.stem not in DISCRETE_TINY | OWN_TEST_TINY)


def test_quickstart_end_to_end(tmp_path):
    """The README's first command: the real quickstart config, as a user runs it."""
    proc = run_subprocess("fit", "--config", "experiments/quickstart.yaml", "--run.root", str(tmp_path), timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    assert run_dir.parent.parent == tmp_path
    for name in ("config.yaml", "metrics.csv", "genotype.json", "genotypes.jsonl", "summary.json",
                 "checkpoints/last.ckpt"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "checkpoints").glob("best-*.ckpt"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == "lightning_nas.methods.bilevel.darts.DARTS" and summary["seed"] == 2
    assert summary["data"]["dataset"] == "digits" and summary["versions"]["torch"]
    # a real search on real data learns: held-out supernet accuracy far above chance (10 %)
    assert summary["metrics"]["val/acc"] > 0.8
    lines = (run_dir / "genotypes.jsonl").read_text().splitlines()
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert len(lines) == config["trainer"]["max_epochs"]
    genotype = json.loads((run_dir / "genotype.json").read_text())
    assert genotype["text"] == summary["genotype"] == json.loads(lines[-1])["text"]
    # the search finds something: the strongest op of an edge averages well above uniform (5 ops: 0.2; measured
    # 0.351 with 2 threads, 0.330 with 1, as this test runs under xdist; asserted >= 0.28), every edge's is above
    # uniform (measured >= 0.288 / 0.234; asserted >= 0.22), and the decided edges (the strongest op >= 0.1 above
    # the second at the end: measured 2 with 1 thread, 4 with 2; asserted >= 2) keep their op over the last three
    # epochs. Near-tie edges may
    # flip between epochs, and which way they end differs with the CPU's floating-point kernels and thread count
    # (measured: the whole cell unchanged over the last six epochs on one machine, two near-tie edges flipping in
    # the last three on another), so the test does not ask more of them.
    records = [json.loads(line) for line in lines]
    (weights_,) = records[-1]["alpha_softmax"].values()
    strongest = [max(row) for row in weights_]
    assert sum(strongest) / len(strongest) >= 0.28 and min(strongest) >= 0.22
    decided = [e for e, row in enumerate(weights_) if sorted(row)[-1] - sorted(row)[-2] >= 0.1]
    assert len(decided) >= 2
    for e in decided:
        ops = {max(range(len(row)), key=row.__getitem__) for r in records[-3:]
               for row in [next(iter(r["alpha_softmax"].values()))[e]]}
        assert len(ops) == 1, e
    # progress and a final summary on screen, the run directory last
    out = proc.stdout.strip().splitlines()
    assert sum(line.startswith("epoch ") for line in out) == config["trainer"]["max_epochs"]
    assert out[-2] == f"genotype: {summary['genotype']}" and "best val/acc" in out[-3]
    assert "benchmark/cifar10_test" in out[-3]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    meta = ckpt["lightning_nas"]
    assert meta["seed"] == 2 and "SearchDataModule" in meta["config"] and meta["versions"]["pytorch-lightning"]


@pytest.mark.parametrize("config", CONFIGS, ids=[str(c.relative_to(REPO)) for c in CONFIGS])
def test_every_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith("lightning_nas.methods.")


@pytest.mark.parametrize("config", TINY, ids=[c.stem for c in TINY])
def test_tiny_configs_run(config, tmp_path, capsys):
    run_dir = run_in_process("fit", "--config", str(config), "--run.root", str(tmp_path), capsys=capsys)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["metrics"]["val/acc"] is not None and summary["global_step"] > 0
    assert (run_dir / "genotype.json").is_file()


def test_same_seed_same_alpha_and_genotype(tmp_path, capsys):
    runs = [run_in_process("fit", "--config", str(TINY1), "--run.root", str(tmp_path / str(k)), capsys=capsys)
            for k in range(2)]
    a, b = (alphas(r / "checkpoints" / "last.ckpt") for r in runs)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert (runs[0] / "genotype.json").read_text() == (runs[1] / "genotype.json").read_text()
    other = run_in_process("fit", "--config", str(TINY1), "--seed_everything", "3", "--run.root",
                           str(tmp_path / "seed3"), capsys=capsys)
    assert not torch.equal(alphas(other / "checkpoints" / "last.ckpt")[0], a[0])


@pytest.mark.parametrize("config, stop_after", [(TINY1, 7), (TINY2, 5)], ids=["order1-mid-epoch", "order2-epoch-end"])
def test_resume_equals_uninterrupted(config, stop_after, tmp_path, capsys):
    """5 steps per epoch: 7 interrupts in the middle of the second epoch, 5 at the first epoch's end."""
    full, resumed, mid = uninterrupted_and_resumed(config, stop_after, tmp_path, capsys)
    assert_same_weights(full / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt")
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["resumed_from"] == str(mid)
    # the wall time adds up over the segments: the checkpoint's time so far plus the resumed segment's
    earlier = torch.load(mid, weights_only=True)["callbacks"]["RunArtifacts"]["wall_time_s"]
    assert earlier > 0 and summary["wall_time_s"] == pytest.approx(earlier + summary["segment_wall_time_s"], abs=0.01)


@pytest.mark.parametrize("config, optimizer_steps", [(TINY1, 2), (REPO / "experiments" / "tiny" /
                                                                     "single_path_nb201.yaml", 1)])
def test_max_steps_counts_search_steps(config, optimizer_steps, tmp_path, capsys):
    run = run_in_process("fit", "--config", str(config), "--run.root", str(tmp_path), "--trainer.max_steps", "3",
                         "--trainer.max_epochs", "50", "--trainer.callbacks", "[]", capsys=capsys)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["search_steps"] == 3 and summary["global_step"] == 3 * optimizer_steps
    assert "3 steps" in format_summary(summary)


def test_divergence_stops_the_run_and_keeps_the_last_finite_checkpoint(tmp_path, capsys):
    poison = json.dumps([{"class_path": "tests.probes.PoisonWeights", "init_args": {"epoch": 1}}])
    code = main(["fit", "--config", str(TINY1), "--run.root", str(tmp_path / "poisoned"), "--trainer.max_epochs", "3",
                 "--trainer.callbacks", poison])
    err = capsys.readouterr().err
    assert code == 2 and "training diverged" in err and "between search step 5 and step 10" in err
    (last,) = (tmp_path / "poisoned").glob("*/*/checkpoints/last.ckpt")
    assert f"{last}, was written before and holds finite values" in err and "Traceback" not in err
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["epoch"] == 0 and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values()
                                      if v.is_floating_point())
    assert not list(tmp_path.glob("poisoned/*/*/summary.json"))  # no summary of a diverged run
    # a learning rate of 1e6 overflows within the first epoch, before any checkpoint
    code = main(["fit", "--config", str(TINY1), "--run.root", str(tmp_path / "lr"), "--trainer.max_epochs", "2",
                 "--model.init_args.weight_optimizer.init_args.lr", "1e6", "--model.init_args.grad_clip", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "training diverged" in err and "no checkpoint was written before it" in err


def test_limit_train_batches_1_is_one_batch(tmp_path, capsys):
    run = run_in_process("fit", "--config", str(TINY1), "--run.root", str(tmp_path), "--trainer.max_epochs", "2",
                         "--trainer.limit_train_batches", "1", "--trainer.callbacks", "[]", capsys=capsys)
    assert json.loads((run / "summary.json").read_text())["search_steps"] == 2  # one per epoch, not all 5


def test_retrain_resume_equals_uninterrupted(tmp_path, capsys):
    """Drop path draws from the global RNG: resume must restore it, the LR schedule and the data position."""
    common = ("--config", str(TINY_RETRAIN), "--trainer.max_epochs", "3", "--model.init_args.drop_path_prob", "0.3")
    full = run_in_process("fit", *common, "--run.root", str(tmp_path / "full"), capsys=capsys)
    mid = tmp_path / "interrupted.ckpt"
    probe = json.dumps([{"class_path": "tests.probes.StopAfterBatches",
                         "init_args": {"batches": 7, "checkpoint": str(mid)}}])
    run_in_process("fit", *common, "--run.root", str(tmp_path / "cut"), "--trainer.callbacks", probe, capsys=capsys)
    resumed = run_in_process("fit", *common, "--run.root", str(tmp_path / "resumed"), "--ckpt_path", str(mid),
                             capsys=capsys)
    a, b = weights(full / "checkpoints" / "last.ckpt"), weights(resumed / "checkpoints" / "last.ckpt")
    for key in a:
        assert torch.equal(a[key], b[key]), key


DDP_CONFIGS = [TINY1, TINY2, REPO / "experiments" / "tiny" / "na_darts.yaml",
               REPO / "experiments" / "tiny" / "sdarts_adv.yaml", REPO / "experiments" / "tiny" / "darts_nb201.yaml"]


@pytest.mark.parametrize("config", DDP_CONFIGS, ids=["darts-order1", "darts-order2", "na_darts", "sdarts_adv",
                                                     "darts-nb201"])
def test_ddp_two_cpu_processes_keep_identical_alphas(config, tmp_path):
    proc, prefix = run_two_process_ddp(config, tmp_path, "AlphaRecorder")
    assert "sync_dist" not in proc.stderr  # values identical on every rank are logged without the warning
    rank0 = [json.loads(line) for line in Path(f"{prefix}.rank0.jsonl").read_text().splitlines()]
    rank1 = [json.loads(line) for line in Path(f"{prefix}.rank1.jsonl").read_text().splitlines()]
    assert len(rank0) == len(rank1) > 0
    for r0, r1 in zip(rank0, rank1):
        assert r0 == r1
    assert rank0[0]["alphas"] != rank0[-1]["alphas"]  # the alphas did move
    # one explicit all-reduce per training step (the alpha gradient); DDP's reducer leaves the alphas alone (the
    # ranks' agreement on a stop signal, one boolean all-reduce, comes after the step's callbacks)
    assert {r["all_reduce_calls"] for r in rank0 + rank1} == {1}
    ignored = json.loads(Path(f"{prefix}.ddp.json").read_text())["ignored"]
    expected = ["supernet.alpha"] if "nb201" in config.stem else ["supernet.alpha_normal", "supernet.alpha_reduce"]
    assert ignored == expected
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    assert (run_dir / "summary.json").is_file() and len(list((tmp_path / "runs").rglob("summary.json"))) == 1


def test_retrain_from_a_search_run_directory(tmp_path, capsys):
    search = run_in_process("fit", "--config", str(TINY1), "--run.root", str(tmp_path), capsys=capsys)
    retrain = run_in_process("fit", "--config", str(TINY_RETRAIN), "--run.root", str(tmp_path),
                             "--model.init_args.genotype", str(search), capsys=capsys)
    assert json.loads((retrain / "summary.json").read_text())["genotype"] == \
        json.loads((search / "genotype.json").read_text())["text"]


def _fails(proc, *needles):
    assert proc.returncode != 0
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr[-2000:])


def test_bad_input_missing_data_dir(tmp_path):
    _fails(run_subprocess("fit", "--config", str(TINY1), "--run.root", str(tmp_path), "--data.init_args.dataset",
                          "cifar10", "--data.init_args.data_dir", str(tmp_path / "nowhere")),
           "CIFAR-10 not found", "cifar-10-python.tar.gz")


def test_bad_input_corrupt_archive(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b broken" * 50)
    _fails(run_subprocess("fit", "--config", str(TINY1), "--run.root", str(tmp_path / "runs"),
                          "--data.init_args.dataset", "cifar10", "--data.init_args.data_dir", str(tmp_path)),
           "is corrupt")


def test_bad_input_unknown_genotype_op(tmp_path):
    from lightning_nas.search_spaces.darts import PUBLISHED

    text = PUBLISHED["DARTS_V2"].to_text().replace("sep_conv_3x3", "sep_conv_11x11")
    _fails(run_subprocess("describe", "--genotype", text), "sep_conv_11x11")
    _fails(run_subprocess("fit", "--config", str(TINY_RETRAIN), "--run.root", str(tmp_path),
                          "--model.init_args.genotype", text), "sep_conv_11x11")


def test_ddp_on_a_discrete_search_is_refused_cleanly(tmp_path):
    proc = run_subprocess("fit", "--config", str(REPO / "experiments" / "tiny" / "random_search_nb201.yaml"),
                          "--run.root", str(tmp_path), "--trainer.strategy", "ddp", "--trainer.devices", "2",
                          "--trainer.accelerator", "cpu")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "run in one process" in proc.stderr and "terminate called" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_checkpoint_of_another_method_is_refused(tmp_path, capsys):
    retrain = run_in_process("fit", "--config", str(TINY_RETRAIN), "--run.root", str(tmp_path), capsys=capsys)
    ckpt = retrain / "checkpoints" / "last.ckpt"
    proc = run_subprocess("fit", "--config", str(TINY1), "--run.root", str(tmp_path), "--ckpt_path", str(ckpt))
    _fails(proc, "written by method lightning_nas.methods.training.retrain.Retrain")
    assert ckpt.is_file()  # nothing already written is lost


def test_describe_json(capsys):
    assert main(["describe", "--genotype", "DARTS_V2", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info) == {"params", "params_with_aux", "macs", "normal_depth", "normal_width", "reduce_depth",
                         "reduce_width"}
    assert info["params"] == 3_349_342 and info["params_with_aux"] > info["params"]
    assert info["normal_depth"] == 3 and info["normal_width"] == 3.5  # Shu et al., ICLR 2020, Fig. 1


def test_wandb_logger_from_the_config_runs_offline(tmp_path, capsys, monkeypatch):
    """The README's wandb recipe: a WandbLogger next to the run's CSV logger, offline, no API key."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    from pytorch_lightning.loggers import WandbLogger

    seen: dict = {}
    original = WandbLogger.log_hyperparams

    def recording(self, params, *args, **kwargs):
        original(self, params, *args, **kwargs)
        seen.update(dict(self.experiment.config))  # what the wandb run holds

    monkeypatch.setattr(WandbLogger, "log_hyperparams", recording)
    logger = json.dumps([{"class_path": "pytorch_lightning.loggers.WandbLogger",
                          "init_args": {"project": "lightning_nas_tests", "save_dir": str(tmp_path / "wb")}}])
    slice_cb = json.dumps([{"class_path": "lightning_nas.callbacks.LossLandscapeSlice",
                            "init_args": {"target": "alpha", "points": 3, "num_batches": 1}}])
    run_dir = run_in_process("fit", "--config", str(TINY1), "--run.root", str(tmp_path), "--trainer.logger", logger,
                             "--trainer.max_epochs", "1", "--trainer.callbacks", slice_cb,
                             capsys=capsys)  # the run directory stays the last line
    assert (run_dir / "metrics.csv").is_file()
    assert list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    # the alpha slice's PNG is in the run directory and went to the wandb run as an image
    assert (run_dir / "landscape" / "slice_alpha_1d_epoch1.png").is_file()
    assert list((tmp_path / "wb" / "wandb").glob("offline-run-*/files/media/images/landscape/slice_alpha_1d*.png"))
    # the report's figures of the run (cells, alpha heatmap; curves from two epochs on: one epoch is no curve) in
    # the run directory and on the wandb run
    figures = {p.name for p in (run_dir / "figures").iterdir()}
    assert {"cells.png", "alpha.png"} <= figures and "val_acc.png" not in figures
    assert list((tmp_path / "wb" / "wandb").glob("offline-run-*/files/media/images/figures/cells*.png"))
    # the resolved config reached wandb, one key per field, so runs can be grouped by any of them
    assert seen["model.class_path"] == "lightning_nas.methods.DARTS" and seen["model.init_args.order"] == 1
    assert seen["seed_everything"] == 2 and seen["trainer.max_epochs"] == 1 and seen["run.dir"] == str(run_dir)
    assert seen["data.init_args.dataset"] == "digits"


def test_a_composed_config_runs_from_one_file_and_its_run_keeps_the_whole_config(tmp_path, capsys):
    """Configs name shared blocks (experiments/blocks/, paths relative to the config); the run directory's
    config.yaml is the resolved whole, so the run repeats from that one file."""
    config = REPO / "experiments" / "tiny" / "darts_nb201.yaml"
    assert "../blocks/data/digits_320_search.yaml" in config.read_text()
    run_dir = run_in_process("fit", "--config", str(config), "--run.root", str(tmp_path / "a"), capsys=capsys)
    saved = (run_dir / "config.yaml").read_text()
    assert "blocks/" not in saved
    resolved = yaml.safe_load(saved)
    assert resolved["data"]["init_args"]["max_train_samples"] == 320
    assert resolved["model"]["init_args"]["supernet"]["init_args"]["channels"] == 4
    again = run_in_process("fit", "--config", str(run_dir / "config.yaml"), "--run.root", str(tmp_path / "b"),
                           capsys=capsys)
    assert (again / "genotype.json").read_text() == (run_dir / "genotype.json").read_text()
    assert_same_weights(run_dir / "checkpoints" / "last.ckpt", again / "checkpoints" / "last.ckpt")
