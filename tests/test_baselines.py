"""The baselines on the bilevel frame (issue 23), checked against plain restatements of their official code."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from cli_utils import run_in_process
from conftest import REPO

from lightning_nas.methods import DARTS, BetaDARTS
from lightning_nas.methods.bilevel.beta_darts import beta_decay_loss
from lightning_nas.search_spaces.darts import DartsSupernet
from lightning_nas.search_spaces.nb201 import NB201Supernet

SPACES = {"nb201": partial(NB201Supernet, channels=2, cells_per_stage=1, alpha_init_std=1.0),
          "darts": partial(DartsSupernet, channels=2, layers=3, alpha_init_std=1.0)}


def _pair(space: str, **kwargs):
    """A BetaDARTS and a DARTS with the same weights and alphas, in float64."""
    torch.manual_seed(0)
    beta = BetaDARTS(supernet=SPACES[space], num_classes=10, in_channels=3, **kwargs).double()
    darts = DARTS(supernet=SPACES[space], num_classes=10, in_channels=3, order=kwargs.get("order", 1)).double()
    darts.load_state_dict(beta.state_dict())
    return beta, darts


@pytest.mark.parametrize("space", sorted(SPACES))
def test_beta_darts_first_order_gradient_is_the_official_loss(space):
    """Official first order: loss = CE_val + lambda * mean_edges(logsumexp(alpha)), one backward; its gradient
    is DARTS's plus lambda * softmax(alpha_edge) / |E|."""
    beta, darts = _pair(space, lambda_start=3.0)
    x, y = torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.randint(10, (4,))
    grads, _ = beta.architecture_gradient(x, y, x, y)
    alphas = beta.supernet.arch_parameters()
    official = torch.autograd.grad(F.cross_entropy(beta.supernet(x), y) + 3.0 * beta_decay_loss(alphas), alphas)
    plain, _ = darts.architecture_gradient(x, y, x, y)
    edges = sum(a.shape[0] for a in alphas)
    for g, o, p, a in zip(grads, official, plain, alphas):
        torch.testing.assert_close(g, o, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(g, p + 3.0 * torch.softmax(a, -1) / edges, rtol=1e-12, atol=1e-14)
    assert beta.beta_weight() == 3.0  # lambda_start + lambda_step * epoch, epoch 0 outside a run


@pytest.mark.parametrize("in_unrolled", [False, True])
def test_beta_darts_second_order_leaves_the_unrolled_gradient_alone_as_official(in_unrolled):
    beta, darts = _pair("nb201", order=2, lambda_start=2.0, beta_in_unrolled=in_unrolled)
    for m in (beta, darts):  # the SGD step the unroll follows, without a trainer
        opt = torch.optim.SGD(m.supernet.weight_parameters(), lr=0.1, momentum=0.9)
        m._weight_opt = lambda opt=opt: opt
    x, y = torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.randint(10, (4,))
    got, _ = beta.architecture_gradient(x, y, x, y)
    ref, _ = darts.architecture_gradient(x, y, x, y)
    extra = [2.0 * torch.softmax(a, -1) / a.shape[0] for a in beta.supernet.arch_parameters()] if in_unrolled else \
        [torch.zeros_like(r) for r in ref]
    for g, r, e in zip(got, ref, extra):
        torch.testing.assert_close(g, r + e, rtol=1e-10, atol=1e-12)


def test_beta_darts_tiny_config_logs_the_schedule(tmp_path, capsys):
    run = run_in_process("fit", "--config", str(REPO / "experiments" / "tiny" / "beta_darts_nb201.yaml"),
                         "--run.root", str(tmp_path), capsys=capsys)
    rows = [json.loads(line) for line in (run / "genotypes.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    assert len(rows) == 2 and summary["beta"] == {"lambda_start": 1.0, "lambda_step": 1.0, "in_unrolled": False}
    assert summary["metrics"]["beta/lambda"] == 2.0  # epoch 1: 1.0 + 1.0 * 1
    assert summary["metrics"]["beta/loss"] > 0


# ---- GDAS ------------------------------------------------------------------------------------------------------
def _official_nb201_hard_forward(net: NB201Supernet, x: torch.Tensor, hard: torch.Tensor, index: list[int]):
    """AutoDL's NB201 GDAS forward restated (search_model_gdas.py / search_cells.py:72-86): per edge
    sum_k (hardwts[k] * op_k(x) if k == argmax else hardwts[k]); nodes sum their edges."""
    from lightning_nas.search_spaces.nb201.supernet import MixedCell

    h = net.stem(x)
    for layer in net.layers:
        if not isinstance(layer, MixedCell):
            h = layer(h)
            continue
        nodes, k = [h], 0
        for to in range(1, 4):
            inter = []
            for j in range(to):
                edge = layer.edges[k + j]
                inter.append(sum(hard[k + j, i] * op(nodes[j]) if i == index[k + j] else hard[k + j, i]
                                 for i, op in enumerate(edge.ops)))
            nodes.append(sum(inter))
            k += to
        h = nodes[-1]
    return net.classifier(net.global_pooling(net.head(h)).flatten(1))


def test_gdas_hard_sample_is_straight_through_gumbel_max():
    from lightning_nas.methods.bilevel.gdas import gumbel_hard_sample

    alpha = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    hard, index = gumbel_hard_sample(alpha, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(hard.detach().argmax(-1), torch.tensor(index))
    off = torch.ones_like(hard, dtype=torch.bool)
    off[range(6), index] = False
    assert torch.all(hard.detach()[off] == 0)
    assert torch.allclose(hard.detach()[~off], torch.ones(6, dtype=torch.float64))
    # the gradient is the softmax's (straight-through): the same noise drawn again gives the soft probabilities
    gumbels = -torch.empty(6, 5, dtype=torch.float64).exponential_(generator=torch.Generator().manual_seed(3)).log()
    probs = torch.softmax((alpha.log_softmax(-1) + gumbels) / 0.5, -1)
    v = torch.randn(6, 5, dtype=torch.float64)
    (g_hard,) = torch.autograd.grad((hard * v).sum(), alpha)
    (g_soft,) = torch.autograd.grad((probs * v).sum(), alpha)
    torch.testing.assert_close(g_hard, g_soft, rtol=1e-12, atol=1e-14)


def test_gdas_nb201_forward_and_alpha_gradient_equal_the_official_cell():
    from lightning_nas.methods import GDAS

    torch.manual_seed(0)
    m = GDAS(supernet=SPACES["nb201"], num_classes=10, in_channels=3).double()
    net = m.supernet
    x, y = torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.randint(10, (4,))
    mixing, path = m.sample(stream=4)
    ours = F.cross_entropy(net(x, mixing=mixing, path=path), y)
    official = F.cross_entropy(_official_nb201_hard_forward(net, x, mixing["cell"], list(path["cell"])), y)
    torch.testing.assert_close(ours, official, rtol=1e-12, atol=1e-14)
    g_ours = torch.autograd.grad(ours, net.alpha, retain_graph=True)[0]  # both share the draw's graph
    g_official = torch.autograd.grad(official, net.alpha)[0]
    torch.testing.assert_close(g_ours, g_official, rtol=1e-10, atol=1e-12)
    # only the drawn ops run: the others' weights get no gradient
    ours = F.cross_entropy(net(x, mixing={"cell": mixing["cell"].detach()}, path=path), y)
    ours.backward()
    for cell in (layer for layer in net.layers if hasattr(layer, "edges")):
        for e, edge in enumerate(cell.edges):
            for i, op in enumerate(edge.ops):
                grads = [p.grad for p in op.parameters()]
                if i != path["cell"][e]:
                    assert all(g is None for g in grads), (e, i)


@pytest.mark.parametrize("config", ["gdas_nb201", "gdas"])
def test_gdas_tiny_configs_anneal_tau_and_repeat(config, tmp_path, capsys):
    runs = [run_in_process("fit", "--config", str(REPO / "experiments" / "tiny" / f"{config}.yaml"), "--run.root",
                           str(tmp_path / str(k)), capsys=capsys) for k in range(2)]
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["metrics"]["gdas/tau"] == pytest.approx(0.1)  # the last of 2 epochs: tau_min
    assert summary["genotype"] == json.loads((runs[1] / "summary.json").read_text())["genotype"]


def test_gdas_two_ddp_processes_draw_alike_and_hold_identical_alphas(tmp_path):
    """Each rank draws its Gumbel noise from (seed, step): the same ops on both ranks, identical alphas."""
    from cli_utils import run_two_process_ddp

    _, prefix = run_two_process_ddp(REPO / "experiments" / "tiny" / "gdas_nb201.yaml", tmp_path, "AlphaRecorder")
    ranks = [[json.loads(line) for line in open(f"{prefix}.rank{r}.jsonl")] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) > 2
    for a, b in zip(*ranks):
        assert a["alphas"] == b["alphas"], (a["epoch"], a["batch"])
    assert ranks[0][0]["alphas"] != ranks[0][-1]["alphas"]  # alpha is trained
