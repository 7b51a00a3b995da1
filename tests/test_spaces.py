"""The search-space registry and interface, discrete searches on the DARTS space, declared capabilities, and
the layering of the package's imports."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from cli_utils import run_in_process, uninterrupted_and_resumed
from conftest import REPO

from lightning_nas.cli import main
from lightning_nas.errors import ConfigError
from lightning_nas.search_spaces import SearchSpace, get_space, space_names
from lightning_nas.search_spaces.darts import PUBLISHED, DartsSupernet, Genotype
from lightning_nas.search_spaces.nb201 import NB201Arch, NB201Supernet

TINY = REPO / "experiments" / "tiny"


def test_registry_names_both_spaces_and_refuses_an_unknown_one():
    assert {"darts", "nb201"} <= set(space_names())
    assert isinstance(get_space("darts"), SearchSpace)
    with pytest.raises(ConfigError, match="unknown search space 'nasbench101'.*darts"):
        get_space("nasbench101")


@pytest.mark.parametrize("name", space_names())  # every registered space
def test_sample_mutate_encode_parse_round_trip(name):
    space = get_space(name)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        cell = space.sample(g)
        assert space.parse(space.key(cell)) == cell  # the text a history stores reads back
        assert space.path_genotype(space.genotype_path(cell)) == cell
        child = space.mutate(cell, g)
        a, b = space.genotype_path(cell), space.genotype_path(child)
        changed = sum(x != y for k in a for x, y in zip(a[k], b[k]))
        # one op changed (one entry), or one input moved (DARTS: two entries of one node)
        assert child != cell and changed in (1, 2)
        enc = space.encode([cell, child])
        assert enc.dtype == torch.float64 and set(enc.unique().tolist()) <= {0.0, 1.0}
        edges_with_op = sum(op >= 0 for ops in a.values() for op in ops)
        assert enc[0].sum() == edges_with_op  # exactly one 1 per edge that has an op


def test_nb201_space_draws_what_the_supernet_and_the_benchmark_index_agree_on():
    space, net = get_space("nb201"), NB201Supernet(channels=2, cells_per_stage=1)
    assert space.size == 15_625
    for seed in range(5):
        path = net.random_path(torch.Generator().manual_seed(seed))
        assert space.sample(torch.Generator().manual_seed(seed)) == net.path_genotype(path)
    arch = NB201Arch.from_index(1462)
    assert space.parse(1462) == arch and space.encode([arch]).shape == (1, 30)


def test_darts_space_mutation_keeps_a_valid_cell_and_the_supernet_uses_the_space():
    space = get_space("darts")
    g = torch.Generator().manual_seed(3)
    cell = PUBLISHED["DARTS_V2"]
    for _ in range(100):
        cell = space.mutate(cell, g)
        for gene in (cell.normal, cell.reduce):  # two distinct inputs per node, no 'none'
            for node in range(4):
                (_, i), (_, j) = gene[2 * node:2 * node + 2]
                assert i != j
    net = DartsSupernet(channels=2, layers=3)
    assert net.space.steps == 4 and net.random_path(torch.Generator().manual_seed(1)) == \
        space.random_path(torch.Generator().manual_seed(1), net.primitives)
    assert space.encode([cell]).shape == (1, 2 * 14 * 8)


def test_networks_and_describe_come_from_the_space():
    darts, nb201 = get_space("darts"), get_space("nb201")
    net = darts.network(PUBLISHED["DARTS_V2"], num_classes=10, channels=4, layers=3)
    assert net(torch.zeros(2, 3, 16, 16))[0].shape == (2, 10)
    assert len(darts.stage_modules(net)) == 3
    assert darts.describe(PUBLISHED["DARTS_V2"], "cifar10")["params"] == 3_349_342
    assert nb201.describe(NB201Arch.from_index(1462), "cifar10")["macs"] == 220_119_680
    assert [g.title for g in darts.cell_graphs(PUBLISHED["DARTS_V2"].to_dict())] == ["normal cell", "reduce cell"]


@pytest.mark.parametrize("config, budget, fitness", [("rea_darts", 12, "proxy"), ("bo_darts", 8, "proxy"),
                                                     ("random_search_darts_trained", 4, "training")])
def test_discrete_searches_run_on_the_darts_space(config, budget, fitness, tmp_path, capsys):
    """REA, BO and random search on a space without a table: every cell scored by the proxy or by a short
    training, the incumbent a DARTS genotype, the same seed gives the same search."""
    runs = [run_in_process("fit", "--config", str(TINY / f"{config}.yaml"), "--run.root", str(tmp_path / str(k)),
                           capsys=capsys) for k in range(2)]
    states = [torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["lightning_nas"]["search_state"]
              for r in runs]
    history = states[0]["history"]
    assert len(history) == budget and history == states[1]["history"]
    assert all("index" not in rec and torch.isfinite(torch.tensor(rec["fitness"])) for rec in history)
    assert len({rec["arch"] for rec in history}) > budget // 2  # it explores
    summary = json.loads((runs[0] / "summary.json").read_text())
    best = max(history, key=lambda r: r["fitness"])
    assert summary["space"] == "DARTS (discrete)" and summary["fitness"] == fitness
    if fitness == "training":  # held-out accuracy (%) of trained cells: above chance (10 %) for the best one
        assert summary["training"]["epochs"] == 1 and 10 < best["fitness"] <= 100
    assert summary["incumbent"] == {"arch": best["arch"], "fitness": best["fitness"]}
    genotype = json.loads((runs[0] / "genotype.json").read_text())
    assert Genotype.from_dict(genotype["genotype"]).to_text() == best["arch"] == summary["genotype"]


def test_rea_on_darts_resumes_exactly(tmp_path, capsys):
    full, resumed, _ = uninterrupted_and_resumed(TINY / "rea_darts.yaml", 5, tmp_path, capsys)
    state = [torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["lightning_nas"]["search_state"]
             for r in (full, resumed)]
    assert state[0]["history"] == state[1]["history"] and state[0]["strategy"] == state[1]["strategy"]


def test_benchmark_fitness_on_a_space_without_a_table_is_refused(tmp_path, capsys):
    from lightning_nas.methods import REA

    with pytest.raises(ConfigError, match="darts space has no benchmark table.*fitness: proxy"):
        REA(space="darts", fitness="benchmark", budget=12)
    assert main(["fit", "--config", str(TINY / "rea_darts.yaml"), "--run.root", str(tmp_path),
                 "--trainer.callbacks+", "lightning_nas.callbacks.BenchmarkAccuracy"]) != 0
    assert "BenchmarkAccuracy callback needs" in capsys.readouterr().err


# ---- the import graph ------------------------------------------------------------------------------------------
#: each package layer may import only itself and the layers before it
LAYERS = [
    {"errors", "reproducibility", "safe_pickle", "run_lock"},
    {"search_spaces", "tabular", "proxies"},
    {"data"},
    {"core"},
    {"analysis"},
    {"methods"},
    {"callbacks", "reporting", "checkpointing", "describe"},
    {"cli", "protocol", "__main__"},
]


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    for k, names in enumerate(LAYERS):
        if top in names:
            return k
    return len(LAYERS)


def test_no_lower_layer_imports_a_higher_one():
    """search spaces and analysis never import methods; callbacks and reports use core's contracts, not methods."""
    package = REPO / "lightning_nas"
    bad = []
    for path in package.rglob("*.py"):
        module = ".".join(("lightning_nas", *path.relative_to(package).with_suffix("").parts))
        if module.endswith(".__init__") and module.count(".") == 1:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lightning_nas."):
                if _layer(node.module) > _layer(module):
                    bad.append(f"{module} imports {node.module}")
    assert not bad, "\n".join(bad)


def test_callbacks_and_reports_declare_what_they_need_instead_of_probing():
    for folder in ("callbacks", "reporting"):
        for path in (REPO / "lightning_nas" / folder).glob("*.py"):
            text = path.read_text()
            assert "hasattr(pl_module" not in text and "getattr(pl_module" not in text, path.name


def test_no_branch_on_a_space_outside_the_spaces():
    needles = ('== "nb201"', "== 'nb201'", '== "darts"', 'startswith("NB201")', "isinstance(self.supernet, Darts",
               "isinstance(net, NB201", 'space == "')
    for path in (REPO / "lightning_nas").rglob("*.py"):
        rel = path.relative_to(REPO / "lightning_nas")
        if rel.parts[0] in ("search_spaces", "tabular"):
            continue
        text = path.read_text()
        assert not [n for n in needles if n in text], rel


def test_capability_refusals_name_the_fix(tmp_path, capsys):
    """A callback attached to a method without the capability it needs is refused before training."""
    assert main(["fit", "--config", str(TINY / "darts_nb201.yaml"), "--run.root", str(tmp_path),
                 "--trainer.callbacks+", "lightning_nas.callbacks.DisturbanceProbe"]) != 0
    assert "DisturbanceProbe needs the single-path search" in capsys.readouterr().err
    assert not list(Path(tmp_path).rglob("last.ckpt"))


def test_class_paths_and_checkpoints_from_before_the_family_folders_still_work(tmp_path, capsys):
    """Modules moved into family folders import under their old names, and a checkpoint whose method id is the
    old one resumes."""
    import importlib

    from lightning_nas.methods import SAEP, BayesOpt, SinglePathSearch
    from lightning_nas.methods.single_path.projection import OWMProjector

    assert importlib.import_module("lightning_nas.methods.projection").OWMProjector is OWMProjector
    assert importlib.import_module("lightning_nas.methods.mf_kd").BayesOpt is BayesOpt
    assert importlib.import_module("lightning_nas.methods.saep").SAEP is SAEP
    assert importlib.import_module("lightning_nas.methods.single_path").SinglePathSearch is SinglePathSearch
    config = str(TINY / "darts_nb201.yaml")
    run = run_in_process("fit", "--config", config, "--run.root", str(tmp_path / "a"), "--trainer.max_epochs", "1",
                         capsys=capsys)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["lightning_nas"]["method"] == "lightning_nas.methods.bilevel.darts.DARTS"
    ckpt["lightning_nas"]["method"] = "lightning_nas.methods.darts.DARTS"  # as written before the move
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    run_in_process("fit", "--config", config, "--run.root", str(tmp_path / "b"), "--ckpt_path", str(old),
                   capsys=capsys)
    ckpt["lightning_nas"]["method"] = "lightning_nas.methods.darts.MiLeNAS"  # another method is still refused
    torch.save(ckpt, old)
    assert main(["fit", "--config", config, "--run.root", str(tmp_path / "c"), "--ckpt_path", str(old)]) != 0
    assert "written by method lightning_nas.methods.darts.MiLeNAS" in capsys.readouterr().err


def test_one_mixed_op_serves_both_spaces_and_old_nb201_checkpoints_load():
    from lightning_nas.search_spaces.mixed_op import MixedOp

    nb, darts = NB201Supernet(channels=2, cells_per_stage=1), DartsSupernet(channels=2, layers=3)
    assert isinstance(nb.layers[0].edges[0], MixedOp) and isinstance(darts.cells[0].edges[0], MixedOp)
    state = nb.state_dict()
    old = {k.replace(".ops.", ".", 1) if ".edges." in k else k: v for k, v in state.items()}  # keys before MixedOp
    assert old.keys() != state.keys()
    fresh = NB201Supernet(channels=2, cells_per_stage=1, alpha_init_std=1.0)
    fresh.load_state_dict(old)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())
