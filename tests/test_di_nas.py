"""DI-NAS's orthogonal updates (methods.projection), the disturbance probe, and NA-RS's neighbourhood scoring."""

from __future__ import annotations

import csv
import json
from functools import partial
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from cli_utils import run_in_process, weights
from conftest import REPO
from torch import nn

from lightning_nas.cli import main
from lightning_nas.core.child_eval import child_accuracy
from lightning_nas.methods import SinglePathSearch
from lightning_nas.methods.single_path.projection import GradientSpaceProjector, OWMProjector, projected_weights
from lightning_nas.search_spaces.darts import DartsSupernet
from lightning_nas.search_spaces.nb201 import NB201Supernet
from lightning_nas.search_spaces.neighbourhood import neighbour_path, path_distance


def _owm_recursion(rs: list[torch.Tensor], a: float) -> torch.Tensor:
    """OWM's official recursion (Zeng et al. 2019): P = I; k = P r, P <- P - k k^T / (a + r^T k)."""
    p = torch.eye(rs[0].numel(), dtype=torch.float64)
    for r in rs:
        r = r.reshape(-1, 1).double()
        k = p @ r
        p = p - k @ k.t() / (a + r.t() @ k)
    return p


def test_owm_closed_form_equals_the_recursion_and_annihilates_stored_inputs():
    torch.manual_seed(0)
    lin = nn.Linear(6, 3)
    proj = OWMProjector(alpha=0.5, alpha_final=0.5)
    proj.attach([lin])
    inputs = [torch.randn(4, 6) for _ in range(3)]
    for x in inputs:
        with proj.capture():
            lin(x)
        proj.commit()
    # the projector holds the batch-mean inputs, and equals the recursion over them for a constant a
    expected = _owm_recursion([x.mean(0) for x in inputs], 0.5)
    assert torch.allclose(proj.matrix(0, 0.3)[0], expected, atol=1e-10)
    # projecting a gradient multiplies it by P
    lin.weight.grad = torch.randn(3, 6)
    g = lin.weight.grad.double().clone()
    proj.project(0.3)
    assert torch.allclose(lin.weight.grad.double(), g @ expected, atol=1e-6)
    # OWM identity: as a -> 0, P r -> 0 for every stored r, and P v = v for v orthogonal to them all
    tight = OWMProjector(alpha=1e-9, alpha_final=1e-9)
    tight.attach([nn.Linear(6, 3)])
    tight.corr0.copy_(proj.corr0)
    p = tight.matrix(0, 0.0)[0]
    r = torch.stack([x.mean(0) for x in inputs]).double()
    assert (p @ r.t()).abs().max() < 1e-6
    basis = torch.linalg.qr(r.t(), mode="complete").Q[:, 3:]
    assert torch.allclose(p @ basis, basis, atol=1e-6)


def test_owm_conv_projector_holds_input_patches_per_group():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=2, bias=False)
    proj = OWMProjector(alpha=1e-9, alpha_final=1e-9)
    proj.attach([conv])
    assert proj.corr0.shape == (2, 2 * 9, 2 * 9)  # one block per group: (C_in / groups * kh * kw)^2
    x = torch.randn(8, 4, 5, 5)
    with proj.capture():
        out = conv(x)
    proj.commit()
    # the update leaves the layer's output on the batch-mean input unchanged: W' x_mean = W x_mean
    F.mse_loss(out, torch.randn_like(out)).backward()
    proj.project(0.0)
    xm = x.mean(0, keepdim=True)
    with torch.no_grad():
        before = conv(xm)
        conv.weight -= conv.weight.grad
        after = conv(xm)
    assert torch.allclose(before, after, atol=1e-4)
    assert conv.weight.grad.abs().sum() > 0  # and it still moves in other directions


def test_gradient_space_projector_is_orthogonal_to_stored_directions_and_bounded():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    proj = GradientSpaceProjector(memory=3)
    proj.attach([net])
    assert len(projected_weights([net])) == 2
    stored = []
    for _ in range(5):
        net.zero_grad()
        F.cross_entropy(net(torch.randn(8, 5)), torch.randint(0, 2, (8,))).backward()
        before = proj.basis(0).clone()
        proj.project(0.0)
        g = net[0].weight.grad.reshape(-1)
        if len(before):
            assert (before @ g).abs().max() < 1e-5  # the projected gradient is orthogonal to the memory
        proj.commit()
        stored.append(len(proj.basis(0)))
        b = proj.basis(0)
        assert torch.allclose(b @ b.t(), torch.eye(len(b)), atol=1e-5)  # orthonormal
    assert stored == [1, 2, 3, 3, 3]  # bounded by memory: the oldest direction leaves


def test_projector_state_is_in_the_module_state_dict():
    net = NB201Supernet(10, 3, channels=4, cells_per_stage=1)
    proj = OWMProjector()
    proj.attach([net])
    assert proj.state_bytes() > 0
    assert set(proj.state_dict()) == {f"corr{i}" for i in range(len(projected_weights([net])))}


# ---- neighbourhoods and NA-RS ------------------------------------------------------------------------------
@pytest.mark.parametrize("space", ["nb201", "darts"])
@pytest.mark.parametrize("distance", [1, 2])
def test_a_neighbour_is_at_the_stated_distance(space, distance):
    net = (NB201Supernet(10, 3, channels=4, cells_per_stage=1) if space == "nb201"
           else DartsSupernet(10, 3, channels=4, layers=3))
    g = torch.Generator().manual_seed(0)
    none = list(net.primitives).index("none") if "none" in net.primitives else None
    for _ in range(50):
        path = net.random_path(g)
        n = neighbour_path(path, net.primitives, distance, g)
        assert path_distance(path, n) == {cell: distance for cell in path}  # d edges per cell type
        for cell in path:
            for old, new in zip(path[cell], n[cell]):
                assert (old < 0) == (new < 0)  # the same edges: only ops change
                assert new != none or old == new  # never switched to none
        net.path_genotype(n)  # a valid child of the space


def _sp_module(**kwargs) -> SinglePathSearch:
    torch.manual_seed(0)
    m = SinglePathSearch(supernet=partial(NB201Supernet, channels=4, cells_per_stage=1), num_classes=10,
                         in_channels=3, candidates=6, bn_mode="batch", calib_batches=0, **kwargs)
    m._trainer = SimpleNamespace(global_step=0)  # rank_candidates only needs the step and the probe batches
    batches = [(torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 10)]
    m._probe_batches = lambda: (batches, [])
    return m


@pytest.mark.parametrize("aggregation", ["mean", "min"])
def test_na_rs_scores_a_candidate_by_its_neighbours_and_zero_neighbours_is_rsps(aggregation):
    na, rs = _sp_module(neighbours=3, aggregation=aggregation), _sp_module()
    batches, _ = na._probe_batches()
    ranking, plain = na.rank_candidates(), rs.rank_candidates()
    assert [r["acc"] for r in ranking] == [r["acc"] for r in plain]  # same candidates, same weights
    combine = {"mean": lambda v: sum(v) / len(v), "min": min}[aggregation]
    for k, r in enumerate(ranking):
        neighbours = na.candidate_neighbours[k]
        assert len(neighbours) == 3
        assert all(path_distance(n, na.candidates[k]) == {"cell": 1} for n in neighbours)
        accs = [child_accuracy(na.supernet, n, batches, [], "batch") for n in neighbours]
        assert r["neighbour_accs"] == accs and r["score"] == pytest.approx(combine([r["acc"], *accs]))
    best = max(range(6), key=lambda k: (ranking[k]["score"], -k))
    assert na.best_path() == na.candidates[best]
    # K = 0: the score is the child's own accuracy, the pick is RSPS's
    assert all(r["score"] == r["acc"] and "neighbour_accs" not in r for r in plain)
    assert rs.best_path() == rs.candidates[max(range(6), key=lambda k: (plain[k]["acc"], -k))]
    # a ranking is reused only for the same scoring
    na.neighbours = 0
    assert all("neighbour_accs" not in r for r in na.rank_candidates())


# ---- through the CLI: the sandbox leaves no trace, the plumbing alone changes nothing -----------------------
TINY_SP = REPO / "experiments" / "tiny" / "single_path_nb201.yaml"
TINY_DI = REPO / "experiments" / "tiny" / "di_nas_nb201.yaml"


def test_probe_and_identity_projector_leave_training_exactly_plain(tmp_path, capsys):
    probe = {"class_path": "lightning_nas.callbacks.DisturbanceProbe",
             "init_args": {"children": 2, "steps": [1, 3], "eval_batches": 1, "calib_batches": 1}}
    identity = json.dumps({"class_path": "tests.probes.IdentityProjector"})
    runs = {name: run_in_process("fit", "--config", str(TINY_SP), "--run.root", str(tmp_path / name),
                                 "--trainer.max_epochs", "1", "--trainer.callbacks", json.dumps(cbs), *extra,
                                 capsys=capsys)
            for name, cbs, extra in (("plain", [], []), ("probe", [probe], []),
                                     ("identity", [], ["--model.init_args.projector", identity]))}
    ref = weights(runs["plain"] / "checkpoints" / "last.ckpt")
    for name in ("probe", "identity"):
        other = weights(runs[name] / "checkpoints" / "last.ckpt")
        assert ref.keys() == other.keys() and all(torch.equal(ref[k], other[k]) for k in ref), name
    rows = list(csv.DictReader(open(runs["probe"] / "disturbance.csv")))
    assert [int(r["k"]) for r in rows] == [1, 3, 1, 3]
    for r in rows:
        assert float(r["drop"]) == pytest.approx(float(r["acc_before"]) - float(r["acc_after"]), abs=1e-5)
    # a checkpoint trained with plain updates does not resume with a projector
    owm = json.dumps({"class_path": "lightning_nas.methods.single_path.projection.OWMProjector"})
    code = main(["fit", "--config", str(TINY_SP), "--run.root", str(tmp_path / "mismatch"),
                 "--model.init_args.projector", owm, "--ckpt_path",
                 str(runs["plain"] / "checkpoints" / "last.ckpt")])
    err = capsys.readouterr().err  # resumed into its run directory: the config comparison names the key
    assert code == 2 and "a resume cannot change model.init_args.projector" in err


def test_di_nas_tiny_config_logs_the_disturbance_and_projector_memory(tmp_path, capsys):
    run = run_in_process("fit", "--config", str(TINY_DI), "--run.root", str(tmp_path), capsys=capsys)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["projector"]["class"] == "OWMProjector" and summary["projector"]["state_mb"] > 0
    assert {"disturbance/drop_k1", "disturbance/acc_before", "search/projector_mb"} <= set(summary["metrics"])
    state = weights(run / "checkpoints" / "last.ckpt")
    corr = [v for k, v in state.items() if k.startswith("projector.corr")]
    assert corr and all(c.dtype == torch.float64 for c in corr) and any(c.abs().sum() > 0 for c in corr)


def _pro_weight(p, x, w_grad, alpha, cnn=True, stride=1):
    """OWM's pro_weight (beijixiong3510/OWM, OWM_CNN/cnn_owm.py:126-145) restated line by line, returning the new
    gradient instead of writing w.grad; ``x`` is the (padded) batch-mean input."""
    if cnn:
        _, _, H, W = x.shape
        F_, _, HH, WW = w_grad.shape
        S = stride
        Ho = int(1 + (H - HH) / S)
        Wo = int(1 + (W - WW) / S)
        for i in range(Ho):
            for j in range(Wo):
                r = x[:, :, i * S: i * S + HH, j * S: j * S + WW].contiguous().view(1, -1)
                k = torch.mm(p, torch.t(r))
                p.sub_(torch.mm(k, torch.t(k)) / (alpha + torch.mm(r, k)))
        return torch.mm(w_grad.view(F_, -1), torch.t(p)).view_as(w_grad)
    r = x
    k = torch.mm(p, torch.t(r))
    p.sub_(torch.mm(k, torch.t(k)) / (alpha + torch.mm(r, k)))
    return torch.mm(w_grad, torch.t(p))


@pytest.mark.parametrize("layer", ["conv3x3", "depthwise3x3", "conv1x1", "linear"])
def test_owm_official_recursion_equals_pro_weight(layer):
    """recursion: official = OWM's pro_weight step by step: each step's own a (a schedule over progress), the
    current batch's patches folded in before its gradient is projected, conv patches at stride 2 (OWM's call)."""
    torch.manual_seed(0)
    module = {"conv3x3": nn.Conv2d(3, 4, 3, padding=1, bias=False),
              "depthwise3x3": nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False),
              "conv1x1": nn.Conv2d(3, 4, 1, bias=False), "linear": nn.Linear(5, 4)}[layer].double()
    conv = isinstance(module, nn.Conv2d)
    proj = OWMProjector(alpha=1.0, alpha_final=1e-2, recursion="official", patch_stride=2 if conv else None)
    proj.attach([module])
    groups = module.groups if conv else 1
    d = proj.corr0.shape[-1]
    ps = [torch.eye(d, dtype=torch.float64) for _ in range(groups)]
    for progress in (0.0, 0.4, 0.9):
        x = torch.randn(6, 3, 6, 6, dtype=torch.float64) if conv else torch.randn(6, 5, dtype=torch.float64)
        with proj.capture():
            module(x)
        g = torch.randn_like(module.weight)
        module.weight.grad = g.clone()
        proj.project(progress)
        a = proj.a(progress, module)
        xm = x.mean(0, keepdim=True)
        if conv:
            pad = module.padding[0]
            xm = F.pad(xm, (pad, pad, pad, pad))
            per = module.in_channels // groups
            expect = torch.cat([_pro_weight(ps[c], xm[:, c * per:(c + 1) * per], g[c * (g.shape[0] // groups):
                                                                                   (c + 1) * (g.shape[0] // groups)],
                                            a, stride=2) for c in range(groups)])
        else:
            expect = _pro_weight(ps[0], xm, g, a, cnn=False)
        torch.testing.assert_close(module.weight.grad, expect, rtol=1e-8, atol=1e-10)
        proj.commit()


def test_owm_recursions_differ_once_alpha_moves_and_linear_layers_take_their_own_schedule():
    torch.manual_seed(0)
    lin = nn.Linear(5, 3).double()
    grads = {}
    for recursion in ("closed_form", "official"):
        torch.manual_seed(1)
        proj = OWMProjector(alpha=1.0, alpha_final=1e-3, recursion=recursion)
        proj.attach([lin])
        for progress in (0.0, 0.5, 1.0):
            with proj.capture():
                lin(torch.randn(4, 5, dtype=torch.float64))
            lin.weight.grad = torch.ones_like(lin.weight)
            proj.project(progress)
            proj.commit()
        grads[recursion] = lin.weight.grad.clone()
    assert not torch.allclose(grads["closed_form"], grads["official"], rtol=1e-3)
    own = OWMProjector(alpha=1.0, alpha_final=1e-5, linear_alpha_final=0.1)
    assert own.a(1.0, nn.Linear(2, 2)) == pytest.approx(0.1) and own.a(1.0, nn.Conv2d(1, 1, 1)) == pytest.approx(1e-5)
