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
