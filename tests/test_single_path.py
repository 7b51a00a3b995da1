"""Single-path weight sharing: the supernets' sampling mode, SinglePathSearch (sampling, ranking, group and
prefix sharing, resume, DDP) and the weight-sharing-variance metrics, callback and report."""

from __future__ import annotations

import csv
import json
import math
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cli_utils import run_in_process, run_subprocess, weights
from conftest import REPO
from scipy.stats import kendalltau

from lightning_nas.analysis.ws_variance import kendall_tau, read_panel, run_report, s_tau_across, top_n_rank
from lightning_nas.cli import main
from lightning_nas.core.child_eval import child_accuracy
from lightning_nas.errors import ConfigError, GenotypeError
from lightning_nas.methods import SinglePathSearch
from lightning_nas.search_spaces.darts import PUBLISHED, DartsSupernet
from lightning_nas.search_spaces.nb201 import NB201Arch, NB201Supernet
from lightning_nas.tabular.nb201 import default_benchmark

TINY_SP = REPO / "experiments" / "tiny" / "single_path_nb201.yaml"
SPACES = {"nb201": partial(NB201Supernet, 10, 3, channels=4, cells_per_stage=1),
          "darts": partial(DartsSupernet, 10, 3, channels=4, layers=3)}


def _op_modules(net):
    """(cell key, edge, op index) -> the op module, for every cell of both spaces."""
    out = {}
    for block in net.blocks():
        key = "cell" if isinstance(net, NB201Supernet) else ("reduce" if block.reduction else "normal")
        for e, edge in enumerate(getattr(block, "edges", [])):
            for o, op in enumerate(edge.ops):  # every edge of both spaces is a MixedOp
                out.setdefault((key, e, o), []).append(op)
    return out


@pytest.mark.parametrize("space", sorted(SPACES))
def test_a_sampled_path_computes_only_its_ops_and_equals_the_one_hot_mixture(space):
    torch.manual_seed(0)
    net = SPACES[space]().double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    ops = _op_modules(net)
    calls: set = set()
    for _ in range(4):
        path = net.random_path(g)
        calls.clear()
        hooks = [m.register_forward_hook(lambda mod, i, o, k=k: calls.add(k)) for k, mods in ops.items() for m in mods]
        out = net(x, path=path)
        for h in hooks:
            h.remove()
        zero = {i for i, p in enumerate(net.primitives) if p == "none"}
        chosen = {(key, e, o) for key, row in path.items() for e, o in enumerate(row) if o >= 0 and o not in zero}
        assert set(calls) == chosen  # nothing else ran, every chosen op did
        assert torch.equal(out, net(x, mixing=net.path_mixing(path)))  # the exact one-hot relaxation
        net.zero_grad(set_to_none=True)
        F.cross_entropy(out, torch.zeros(4, dtype=torch.long)).backward()
        for k, mods in ops.items():
            grads = [p.grad for m in mods for p in m.parameters()]
            if k not in chosen:
                assert all(gr is None for gr in grads), k  # ops off the path get no gradient


def test_random_children_are_valid_and_round_trip():
    nb = SPACES["nb201"]()
    darts = SPACES["darts"]()
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(200):
        p = nb.random_path(g)
        arch = nb.path_genotype(p)
        assert nb.genotype_path(NB201Arch.from_string(arch.to_string())) == p
        seen.update(p["cell"])
        d = darts.random_path(g)
        genotype = darts.path_genotype(d)
        assert darts.genotype_path(genotype) == d
        for key in ("normal", "reduce"):  # two distinct inputs per node, never `none`
            offset = 0
            for node in range(darts.steps):
                row = d[key][offset:offset + 2 + node]
                assert sum(o >= 0 for o in row) == 2 and darts.primitives.index("none") not in row
                offset += 2 + node
    assert seen == set(range(5))
    assert darts.genotype_path(PUBLISHED["DARTS_V2"]) is not None
    with pytest.raises(GenotypeError, match="twice"):  # two ops on one edge cannot be one path
        darts.genotype_path(PUBLISHED["DARTS_V2"].__class__.from_dict({
            "normal": [["sep_conv_3x3", 0], ["sep_conv_5x5", 0]] * 1 + [["skip_connect", 0], ["skip_connect", 1]] * 3,
            "normal_concat": [2, 3, 4, 5], "reduce": PUBLISHED["DARTS_V2"].to_dict()["reduce"],
            "reduce_concat": [2, 3, 4, 5]}))
    no_pool = NB201Supernet(10, 3, channels=4, cells_per_stage=1, primitives=["none", "skip_connect", "nor_conv_3x3"])
    with pytest.raises(GenotypeError, match="avg_pool_3x3"):
        no_pool.genotype_path(NB201Arch.from_string("|avg_pool_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"))


def test_child_accuracy_restores_bn_and_recalibration_matters():
    torch.manual_seed(0)
    net = SPACES["nb201"]()
    g = torch.Generator().manual_seed(0)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(8, 3, 8, 8) * 4 + 2, path=net.random_path(g))
    buffers = [b.clone() for b in net.buffers()]
    path = net.random_path(g)
    batches = [(torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))) for _ in range(2)]
    accs = {m: child_accuracy(net, path, batches, batches, m) for m in ("recalibrate", "batch", "running")}
    assert all(torch.equal(a, b) for a, b in zip(buffers, net.buffers())) and net.training
    assert 0 <= min(accs.values()) <= max(accs.values()) <= 1


def _module(**kwargs):
    torch.manual_seed(0)
    return SinglePathSearch(supernet=partial(NB201Supernet, channels=4, cells_per_stage=1), num_classes=10,
                            in_channels=3, candidates=4, **kwargs)


def test_groups_keep_separate_weights_and_prefix_sharing_ties_modules():
    m = _module(groups=4, grouping="similarity")
    nets = m.all_supernets()
    assert len(nets) == 4 and all(a is not b for a in nets for b in nets if a is not b)
    for net in nets[1:]:  # every group starts from the same weights
        assert all(torch.equal(a, b) for a, b in zip(nets[0].state_dict().values(), net.state_dict().values()))
    g = torch.Generator().manual_seed(0)
    paths = [nets[0].random_path(g) for _ in range(200)]
    groups = [m.group_of(p) for p in paths]
    assert set(groups) == {0, 1, 2, 3} and groups == [m.group_of(p) for p in paths]  # deterministic
    for p, grp in zip(paths[:20], groups[:20]):  # similarity: the nearest centroid (Hamming)
        code = tuple(p["cell"])
        d = [sum(a != b for a, b in zip(code, c)) for c in m.sharing.centroids]
        assert d[grp] == min(d)
    # a child trains its own group's copy only
    p = paths[0]
    net = m.supernet_for(p)
    F.cross_entropy(net(torch.randn(4, 3, 8, 8), path=p), torch.zeros(4, dtype=torch.long)).backward()
    for other in nets:
        has_grad = any(q.grad is not None for q in other.weight_parameters())
        assert has_grad == (other is net)
    shared = _module(groups=2, shared_prefix=2)
    a, b = shared.all_supernets()
    assert a.stem is b.stem and a.blocks()[0] is b.blocks()[0] and a.blocks()[1] is b.blocks()[1]
    assert a.blocks()[2] is not b.blocks()[2]
    unique = {id(q) for q in shared.weight_parameters()}
    assert len(unique) == len(shared.weight_parameters())  # the optimizer sees each shared tensor once
    with pytest.raises(ConfigError, match="shared_prefix"):
        _module(groups=2, shared_prefix=99)
    with pytest.raises(ConfigError, match="groups > 1"):
        _module(shared_prefix=1)
    assert _module(groups=4, grouping="random").group_of(p) in range(4)


def test_one_group_is_full_sharing_exactly(tmp_path, capsys):
    runs = [run_in_process("fit", "--config", str(TINY_SP), "--run.root", str(tmp_path / name), *extra,
                           "--trainer.max_epochs", "1", capsys=capsys)
            for name, extra in (("full", []), ("m1", ["--model.init_args.groups", "1",
                                                      "--model.init_args.grouping", "random"]))]
    a, b = (weights(r / "checkpoints" / "last.ckpt") for r in runs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (runs[0] / "ws_variance.csv").read_text() == (runs[1] / "ws_variance.csv").read_text()


@pytest.mark.parametrize("projector", [None, "OWMProjector"])
def test_resumed_single_path_search_samples_what_the_uninterrupted_one_would(tmp_path, capsys, projector):
    """5 steps per epoch; stop after 7 (mid second epoch), resume, compare children and weights (with DI-NAS's OWM
    update: its projector state resumes too)."""
    update = [] if projector is None else [
        "--model.init_args.projector",
        json.dumps({"class_path": f"lightning_nas.methods.single_path.projection.{projector}"})]

    def run(name, *extra):
        prefix = tmp_path / name
        probes = [{"class_path": "tests.probes.PathRecorder", "init_args": {"prefix": str(prefix)}}]
        if name == "cut":
            probes.append({"class_path": "tests.probes.StopAfterBatches",
                           "init_args": {"batches": 7, "checkpoint": str(tmp_path / "mid.ckpt")}})
        run_dir = run_in_process("fit", "--config", str(TINY_SP), "--run.root", str(tmp_path / name),
                                 "--trainer.callbacks", json.dumps(probes), *update, *extra, capsys=capsys)
        steps = [json.loads(line) for line in Path(f"{prefix}.rank0.jsonl").read_text().splitlines()]
        return run_dir, steps

    full, full_steps = run("full")
    _, cut_steps = run("cut")
    resumed, resumed_steps = run("resumed", "--ckpt_path", str(tmp_path / "mid.ckpt"))
    assert len(full_steps) == 10 and len({json.dumps(s["path"]) for s in full_steps}) > 5
    assert [s["path"] for s in cut_steps + resumed_steps] == [s["path"] for s in full_steps]
    a, b = weights(full / "checkpoints" / "last.ckpt"), weights(resumed / "checkpoints" / "last.ckpt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((full / "genotype.json").read_text()) == json.loads((resumed / "genotype.json").read_text())


def test_ddp_two_cpu_processes_train_the_same_child(tmp_path):
    """With group sharing, a shared prefix and DI-NAS's OWM update (whose input memory is averaged across ranks)."""
    prefix = tmp_path / "paths"
    probe = json.dumps([{"class_path": "tests.probes.PathRecorder", "init_args": {"prefix": str(prefix)}}])
    proc = run_subprocess("fit", "--config", str(TINY_SP), "--run.root", str(tmp_path / "runs"),
                          "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
                          "--trainer.callbacks", probe, "--model.init_args.groups", "2",
                          "--model.init_args.shared_prefix", "1", "--model.init_args.projector",
                          json.dumps({"class_path": "lightning_nas.methods.single_path.projection.OWMProjector"}),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [[json.loads(line) for line in Path(f"{prefix}.rank{r}.jsonl").read_text().splitlines()]
             for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) > 0
    for r0, r1 in zip(*ranks):  # same child, same updated weights, identical weights on both ranks
        assert r0 == r1
    # weights of ops off the step's path (and of the other group's copy) never change
    model = SinglePathSearch(supernet=partial(NB201Supernet, channels=4, cells_per_stage=1), num_classes=10,
                             in_channels=1, candidates=8, groups=2, shared_prefix=1)
    for step in ranks[0]:
        path = {k: tuple(v) for k, v in step["path"].items()}
        group = model.group_of(path)
        for name in step["changed"]:
            parts = name.split(".")
            own = "supernet" if group == 0 else f"group_supernets.{group - 1}"
            shared = parts[0] == "supernet" and (parts[1] == "stem" or (parts[1] == "layers" and parts[2] == "0"))
            assert name.startswith(own + ".") or shared, name
            if "edges" in parts:
                e = parts.index("edges")
                assert parts[e + 2] == "ops" and int(parts[e + 3]) == path["cell"][int(parts[e + 1])], name


# ---- the metrics -----------------------------------------------------------------------------------------
def test_tau_metrics_equal_scipy_on_hand_made_rankings():
    shared = [0.9, 0.5, 0.7, 0.1, 0.3]
    truth = [94.0, 90.0, 91.0, 85.0, 93.0]
    assert kendall_tau(shared, truth) == pytest.approx(kendalltau(shared, truth).statistic, abs=1e-15)
    # by hand: pairs (i<j) concordant - discordant over 10 pairs: 8 concordant, 2 discordant
    assert kendall_tau(shared, truth) == pytest.approx((8 - 2) / 10)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0 and kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    assert top_n_rank(shared, truth, 1) == 1  # the shared-weight best is the true best
    assert top_n_rank([0.1, 0.9, 0.8, 0.2, 0.3], truth, 1) == 4  # child 1 is 4th by truth
    assert top_n_rank([0.1, 0.9, 0.8, 0.2, 0.3], truth, 2) == 3  # child 2 is 3rd
    across = s_tau_across([{"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 3, "c": 2}, {"a": 3, "b": 2, "c": 1, "d": 0}])
    expected = [kendalltau([1, 2, 3], [1, 3, 2]).statistic, kendalltau([1, 2, 3], [3, 2, 1]).statistic,
                kendalltau([1, 3, 2], [3, 2, 1]).statistic]
    assert across["pairs"] == 3 and across["children"] == 3
    assert across["s_tau_mean"] == pytest.approx(sum(expected) / 3)


def test_callback_and_report_across_seeds(tmp_path, capsys):
    runs = [run_in_process("fit", "--config", str(TINY_SP), "--run.root", str(tmp_path / str(seed)),
                           "--seed_everything", str(seed), capsys=capsys) for seed in (1, 2)]
    bench = default_benchmark()
    panels = [read_panel(r) for r in runs]
    for rows in panels:
        epochs = [r for r in rows if r["point"] == "epoch"]
        assert len(epochs) == 2 * 12 and len([r for r in rows if r["point"] == "batch"]) == 2 * 2 * 12
        for r in epochs:  # the ground truth is the benchmark's accuracy of the child
            assert r["benchmark_acc"] == pytest.approx(bench.accuracy(r["genotype"]))
    assert [r["genotype"] for r in panels[0]] == [r["genotype"] for r in panels[1]]  # panel independent of seed
    final = [[r for r in rows if r["point"] == "epoch" and r["epoch"] == 2] for rows in panels]  # epochs from 1
    report = run_report(panels[0])
    shared, truth = [r["shared_acc"] for r in final[0]], [r["benchmark_acc"] for r in final[0]]
    assert report["gt_tau"] == pytest.approx(kendalltau(shared, truth).statistic)
    with open(runs[0] / "metrics.csv") as f:
        logged = [row for row in csv.DictReader(f) if row.get("wsv/gt_tau")]
    assert float(logged[-1]["wsv/gt_tau"]) == pytest.approx(report["gt_tau"], abs=1e-6)
    assert float(logged[-1]["wsv/t1r"]) == report["t1r"]
    assert main(["ws-variance", *map(str, runs), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    other = [r["shared_acc"] for r in final[1]]
    assert printed["across_runs"]["s_tau_mean"] == pytest.approx(kendalltau(shared, other).statistic)
    assert main(["ws-variance", str(tmp_path)]) == 2  # not a run directory: a clear error
    assert "ws_variance.csv" in capsys.readouterr().err


def test_callback_on_a_bilevel_method(tmp_path, capsys):
    cb = json.dumps([{"class_path": "lightning_nas.callbacks.WeightSharingVariance",
                      "init_args": {"panel_size": 6, "eval_batches": 1, "calib_batches": 1}}])
    run_dir = run_in_process("fit", "--config", str(REPO / "experiments" / "tiny" / "darts_first_order.yaml"),
                             "--run.root", str(tmp_path), "--trainer.callbacks", cb, "--trainer.max_epochs", "1",
                             capsys=capsys)
    rows = read_panel(run_dir)
    assert len(rows) == 6 and all(math.isnan(r["benchmark_acc"]) for r in rows)  # no benchmark on DARTS
    assert all(r["genotype"].startswith("Genotype(") for r in rows)


def test_validation_accuracy_is_the_picked_childs_held_out_accuracy(tmp_path, capsys):
    """The ranking's probe batches and the validation loop see the same (once-normalised) images: with the
    ranking on the whole held-out split (160 images, 3 batches), val/acc is the best candidate's accuracy."""
    run_dir = run_in_process("fit", "--config", str(TINY_SP), "--run.root", str(tmp_path), "--trainer.max_epochs",
                             "1", "--model.init_args.rank_batches", "3", "--trainer.limit_val_batches", "3",
                             "--trainer.callbacks", "[]", capsys=capsys)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["metrics"]["val/acc"] == pytest.approx(summary["top_candidates"][0]["acc"], abs=1e-6)
    assert summary["top_candidates"][0]["genotype"] == summary["genotype"]
