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
    assert len(rows) == 2 and summary["beta"] == {"lambda_start": 1.0, "lambda_step": 1.0, "in_unrolled": False,
                                                  "lr_schedule_shift": 0}
    assert summary["metrics"]["beta/lambda"] == 2.0  # epoch 1: 1.0 + 1.0 * 1
    assert summary["metrics"]["beta/loss"] > 0
    lr = summary["metrics"]["search/weight_lr"]  # the last of 2 epochs: cosine's 2nd value, (0.025 + 0.001) / 2
    shifted = run_in_process("fit", "--config", str(REPO / "experiments" / "tiny" / "beta_darts_nb201.yaml"),
                             "--run.root", str(tmp_path / "shift"), "--model.init_args.lr_schedule_shift", "1",
                             capsys=capsys)
    lr_shifted = json.loads((shifted / "summary.json").read_text())["metrics"]["search/weight_lr"]
    assert lr == pytest.approx(0.013) and lr_shifted == pytest.approx(0.001)  # one epoch ahead: eta_min


# ---- GDAS ------------------------------------------------------------------------------------------------------
def _nb201_forward(net: NB201Supernet, x: torch.Tensor, edge) -> torch.Tensor:
    """The NAS-Bench-201 network with every cell's edge ``k`` on node ``h`` computed by ``edge(cell, k, h)``; nodes
    sum their incoming edges (AutoDL's and DrNAS's search cells)."""
    from lightning_nas.search_spaces.nb201.supernet import MixedCell

    h = net.stem(x)
    for layer in net.layers:
        if not isinstance(layer, MixedCell):
            h = layer(h)
            continue
        nodes, k = [h], 0
        for to in range(1, 4):
            nodes.append(sum([edge(layer, k + j, nodes[j]) for j in range(to)]))
            k += to
        h = nodes[-1]
    return net.classifier(net.global_pooling(net.head(h)).flatten(1))


def _official_nb201_hard_forward(net: NB201Supernet, x: torch.Tensor, hard: torch.Tensor, index: list[int]):
    """AutoDL's NB201 GDAS forward restated (search_model_gdas.py / search_cells.py:72-86): per edge
    sum_k (hardwts[k] * op_k(x) if k == argmax else hardwts[k]); nodes sum their edges."""
    return _nb201_forward(net, x, lambda cell, k, h: sum(hard[k, i] * op(h) if i == index[k] else hard[k, i]
                                                         for i, op in enumerate(cell.edges[k].ops)))


def test_gdas_hard_sample_is_straight_through_gumbel_max():
    from lightning_nas.methods.bilevel.gdas import gumbel_hard_sample

    alpha = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    hard, index = gumbel_hard_sample(alpha, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(hard.detach().argmax(-1), index)
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


# ---- PC-DARTS: partial channels and edge normalisation as supernet options ---------------------------------------
def _official_pc_mixed_op(edge, x: torch.Tensor, weights: torch.Tensor, k: int, stride: int) -> torch.Tensor:
    """PC-DARTS's MixedOp.forward restated (model_search.py:38-53): the first C/k channels through sum_i w_i op_i
    (``none`` included, as w * 0), the rest max-pooled 2x2 on a stride-2 edge, concatenated, channel_shuffle(k)."""
    dim = x.shape[1]
    temp1 = sum(w * op(x[:, :dim // k]) if not zero else w * x[:, :dim // k, ::stride, ::stride].mul(0.0)
                for w, op, zero in zip(weights, edge.ops, edge.is_zero))
    rest = x[:, dim // k:]
    ans = torch.cat([temp1, rest if temp1.shape[2] == x.shape[2] else F.max_pool2d(rest, 2, 2)], dim=1)
    b, c, h, w = ans.shape
    return ans.view(b, k, c // k, h, w).transpose(1, 2).contiguous().view(b, -1, h, w)


def _official_pc_darts_forward(net: DartsSupernet, x: torch.Tensor, k: int) -> torch.Tensor:
    """PC-DARTS's Network.forward / Cell.forward restated (model_search.py:78-89,130-160): node i sums
    weights2[j] * MixedOp_j with weights2 the softmax of beta over the node's own incoming edges."""
    def node_softmax(beta):
        parts, start = [], 0
        for n in range(2, 2 + net.steps):
            parts.append(torch.softmax(beta[start:start + n], -1))
            start += n
        return torch.cat(parts)

    s0 = s1 = net.stem(x)
    for cell in net.cells:
        alpha, beta = (net.alpha_reduce, net.beta_reduce) if cell.reduction else (net.alpha_normal, net.beta_normal)
        weights, weights2 = torch.softmax(alpha, -1), node_softmax(beta)
        states, offset = [cell.preprocess0(s0), cell.preprocess1(s1)], 0
        for _ in range(cell.steps):
            s = sum(weights2[offset + j] * _official_pc_mixed_op(cell.edges[offset + j], h, weights[offset + j], k,
                                                                 2 if cell.reduction and j < 2 else 1)
                    for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        s0, s1 = s1, torch.cat(states[-cell.multiplier:], dim=1)
    return net.classifier(net.global_pooling(s1).flatten(1))


def _official_pc_parse(weights, weights2, primitives, steps=4):
    """PC-DARTS's genotype ``_parse`` restated (model_search.py:186-231)."""
    gene, n, start = [], 2, 0
    none = primitives.index("none")
    for _ in range(steps):
        end = start + n
        W = weights[start:end].copy()
        for j in range(n):
            W[j, :] = W[j, :] * weights2[start + j]
        edges = sorted(range(n), key=lambda x: -max(W[x][k] for k in range(len(W[x])) if k != none))[:2]
        for j in edges:
            k_best = None
            for k in range(len(W[j])):
                if k != none and (k_best is None or W[j][k] > W[j][k_best]):
                    k_best = k
            gene.append((primitives[k_best], j))
        start = end
        n += 1
    return gene


def test_pc_darts_supernet_equals_the_official_forward_gradient_and_genotype():
    torch.manual_seed(0)
    net = DartsSupernet(10, 3, channels=4, layers=3, alpha_init_std=1.0, partial_channels=2,
                        edge_normalization=True).double()
    with torch.no_grad():
        net.beta_normal.normal_()
        net.beta_reduce.normal_()
    assert net.ARCH_NAMES == ("alpha_normal", "alpha_reduce", "beta_normal", "beta_reduce")
    x, y = torch.randn(3, 3, 8, 8, dtype=torch.float64), torch.randint(10, (3,))
    ours, official = F.cross_entropy(net(x), y), F.cross_entropy(_official_pc_darts_forward(net, x, 2), y)
    torch.testing.assert_close(ours, official, rtol=1e-12, atol=1e-14)
    g_ours = torch.autograd.grad(ours, net.arch_parameters())
    g_official = torch.autograd.grad(official, net.arch_parameters())
    for a, b in zip(g_ours, g_official):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    edge_w = net.edge_weights()
    genotype = net.genotype()
    for key, alpha in (("normal", net.alpha_normal), ("reduce", net.alpha_reduce)):
        expect = _official_pc_parse(torch.softmax(alpha, -1).detach().numpy(), edge_w[key].detach().numpy(),
                                    list(net.primitives))
        assert [tuple(g) for g in getattr(genotype, key)] == expect


def test_partial_channel_nb201_cell_equals_drnas_partial_channel_cell():
    """DrNAS's NAS201SearchCell_PartialChannel.MixedOp (201-space/search_cells.py:155-166): ops on C/k channels,
    the rest bypassed, channel_shuffle(k); nodes sum their edges."""
    torch.manual_seed(0)
    net = NB201Supernet(10, 3, channels=4, cells_per_stage=1, alpha_init_std=1.0, partial_channels=2).double()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    weights = torch.softmax(net.alpha, -1)
    official = _nb201_forward(net, x, lambda cell, k, h: _official_pc_mixed_op(cell.edges[k], h, weights[k], 2, 1))
    torch.testing.assert_close(net(x), official, rtol=1e-12, atol=1e-14)


def test_pc_options_refuse_a_k_that_does_not_divide_the_channels():
    from lightning_nas.errors import ConfigError

    with pytest.raises(ConfigError, match="partial_channels"):
        DartsSupernet(10, 3, channels=6, layers=3, partial_channels=4)
    with pytest.raises(ConfigError, match="partial_channels"):
        NB201Supernet(10, 3, channels=4, cells_per_stage=1, partial_channels=0)


# ---- DrNAS -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("space, reg_type", [("nb201", "l2"), ("darts", "kl")])
def test_drnas_alpha_gradient_equals_the_official_dirichlet_loss(space, reg_type):
    """Official: per edge row Dirichlet(elu(alpha)+1).rsample() (normal cells first), CE on the validation batch,
    + reg_scale * sum KL(q || Dir(1)) with kl; with l2 Adam's weight decay adds reg_scale * alpha to the gradient.
    The same global RNG state gives the official draw and ours (its generator seeded alike)."""
    from torch.distributions import Dirichlet, kl_divergence

    from lightning_nas.methods import DrNAS

    torch.manual_seed(0)
    m = DrNAS(supernet=SPACES[space], num_classes=10, in_channels=3, reg_type=reg_type, reg_scale=0.5).double()
    m.step_generator = lambda stream, device=None: torch.Generator().manual_seed(11)
    x, y = torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.randint(10, (4,))
    grads, loss = m.architecture_gradient(x, y, x, y)

    alphas = m.supernet.arch_parameters()
    torch.manual_seed(11)
    mixing = {key: torch.stack([Dirichlet(F.elu(row) + 1).rsample() for row in a])
              for key, a in zip(m.supernet.space.cell_types, alphas)}
    official = F.cross_entropy(m.supernet(x, mixing=mixing), y)
    if reg_type == "kl":  # official _loss: the KL term is part of the architecture loss
        official = official + 0.5 * sum(kl_divergence(Dirichlet(F.elu(a) + 1), Dirichlet(torch.ones_like(a))).sum()
                                        for a in alphas)
    torch.testing.assert_close(loss, official.detach(), rtol=1e-12, atol=1e-14)
    expect = torch.autograd.grad(official, alphas)
    if reg_type == "l2":
        expect = [g + 0.5 * a.detach() for g, a in zip(expect, alphas)]
    for g, e in zip(grads, expect):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def test_drnas_evaluates_the_dirichlet_mean_and_refuses_a_second_anchor():
    from lightning_nas.errors import ConfigError
    from lightning_nas.methods import DrNAS

    torch.manual_seed(0)
    m = DrNAS(supernet=SPACES["nb201"], num_classes=10, in_channels=3).double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    c = F.elu(m.supernet.alpha) + 1
    torch.testing.assert_close(m.eval_logits(x), m.supernet(x, mixing={"cell": c / c.sum(-1, keepdim=True)}))
    bad = DrNAS(supernet=SPACES["nb201"], num_classes=10, in_channels=3,
                arch_optimizer={"class_path": "torch.optim.Adam", "init_args": {"weight_decay": 1e-3}})
    with pytest.raises(ConfigError, match="weight_decay"):
        bad.configure_optimizers()


# ---- SNAS --------------------------------------------------------------------------------------------------------
def test_snas_temperature_schedules_are_the_official_ones():
    from lightning_nas.methods import SNAS

    class Trainer:  # the two fields tau() reads
        max_epochs, current_epoch = 100, 0

    official = SNAS(supernet=SPACES["nb201"], num_classes=10, in_channels=3)
    drnas = SNAS(supernet=SPACES["nb201"], num_classes=10, in_channels=3, levels="bilevel", tau_max=10.0,
                 tau_min=1.0, tau_epochs=None, tau_shift=0)
    for m in (official, drnas):
        m._trainer = Trainer()
    for epoch in (0, 1, 50, 99):
        Trainer.current_epoch = epoch
        # SNAS utils.Temp_Scheduler: stepped once before epoch 0, total_epochs hard-coded 150
        assert official.tau() == pytest.approx(max(0.03, (1 - (epoch + 1) / 150) * (1 - 0.03) + 0.03))
        # DrNAS: tau starts at tau_max and falls by (tau_min - tau_max) / epochs after every epoch
        assert drnas.tau() == pytest.approx(10 + epoch * (1 - 10) / 100)
    Trainer.current_epoch = 400
    assert official.tau() == pytest.approx(0.03)  # floored at temp_min


def _official_snas_penalty(net, mixing, image_size, counts=(6, 2)):
    """SNAS's reparametrization / log_penalty / separation 'all' restated (model_search.py:448-474, train_search.py
    :425-427,444-445) on an 8-cell network: per cell sum_e (ln|R_size| + ln|R_flops| + ln|R_mac|) / 3 with
    R = (op_cost * Z).sum(-1), |R| < 1 -> 1; normal / 6 + ratio * reduce / 2."""
    from lightning_nas.methods.bilevel.snas_resource import snas_op_cost

    totals = {"normal": 0.0, "reduce": 0.0}
    for key, edges in net.edge_shapes(image_size):
        weights = mixing[key]
        parts = []
        for table in range(3):
            op_cost = torch.tensor([[snas_op_cost(op, *e)[table] for op in net.primitives] for e in edges],
                                   dtype=weights.dtype)
            resource = op_cost * weights
            clean = resource.sum(-1).clone()
            clean[torch.abs(resource.sum(-1)) < 1] = 1
            parts.append(torch.log(torch.abs(clean)))
        totals[key] = totals[key] + ((parts[0] + parts[1] + parts[2]) / 3).sum()
    return totals["normal"] / counts[0] + 1.0 * totals["reduce"] / counts[1]


def test_snas_op_costs_are_the_modules_sizes_and_multiply_adds():
    """size = the op's conv weights and FLOPs = their multiply-adds (FlopCounterMode) for our DARTS and NB201 ops;
    MAC as the official formulas (hand-computed values)."""
    from torch.utils.flop_counter import FlopCounterMode

    from lightning_nas.methods.bilevel.snas_resource import snas_op_cost
    from lightning_nas.search_spaces.darts.ops import make_op
    from lightning_nas.search_spaces.nb201.ops import make_op as nb201_op

    c, h = 8, 16
    cases = [(op, s, make_op(op, c, s, affine=False)) for s in (1, 2)
             for op in ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")]
    cases += [("skip_connect", 2, make_op("skip_connect", c, 2, affine=False))]
    cases += [(op, 1, nb201_op(op, c, c, 1, affine=False)) for op in ("nor_conv_1x1", "nor_conv_3x3")]
    for op, stride, module in cases:
        size, flops, _ = snas_op_cost(op, c, h, stride)
        convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
        assert size == sum(m.weight.numel() for m in convs), op
        with FlopCounterMode(display=False) as counter:
            module.eval()(torch.zeros(1, c, h, h))
        assert flops == counter.get_total_flops() // 2, (op, stride)
    assert snas_op_cost("sep_conv_3x3", 16, 32, 1) == (800.0, 800.0 * 1024, 1024 * (7 * 16 + 16) + 800.0)
    assert snas_op_cost("max_pool_3x3", 16, 32, 2) == (0.0, 9 * 256 * 16.0, 5 * 256 * 16.0)
    assert snas_op_cost("skip_connect", 16, 32, 1) == (0.0, 0.0, 2 * 16 * 1024.0)


def test_snas_resource_penalty_equals_the_official_log_penalty():
    from lightning_nas.methods import SNAS

    torch.manual_seed(0)
    m = SNAS(supernet=partial(DartsSupernet, channels=4, layers=8, alpha_init_std=1.0), num_classes=10,
             in_channels=3, resource_lambda=1.0).double()
    mixing = m.sample(3)
    ours = m.resource_penalty(mixing, 16)
    official = _official_snas_penalty(m.supernet, mixing, 16)
    torch.testing.assert_close(ours, official, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(ours, m.supernet.arch_parameters())
    assert all(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("resource_lambda", [0.0, 0.5])
def test_snas_single_level_step_is_one_backward_for_both_and_clips_alpha_at_10(resource_lambda):
    """Official single level (train_search.py:450-513): one loss on the train batch (+ lambda * the log resource
    penalty), backward once, weights clipped at 5 and alpha at 10, both optimizers step; the relaxed sample is
    softmax((alpha + G) / tau)."""
    import copy

    from lightning_nas.methods import SNAS
    from lightning_nas.methods.bilevel.sampling import gumbel_noise

    torch.manual_seed(0)
    m = SNAS(supernet=SPACES["darts"], num_classes=10, in_channels=3, arch_grad_clip=1e-3,
             resource_lambda=resource_lambda).double()
    ref = copy.deepcopy(m)
    w_opt = torch.optim.SGD(m.supernet.weight_parameters(), lr=0.1, momentum=0.9)
    a_opt = torch.optim.SGD(m.supernet.arch_parameters(), lr=0.5)
    m.optimizers = lambda: (w_opt, a_opt)
    m.manual_backward = lambda loss: loss.backward()
    m.clip_gradients = lambda opt, gradient_clip_val, gradient_clip_algorithm: torch.nn.utils.clip_grad_norm_(
        [p for g in opt.param_groups for p in g["params"]], gradient_clip_val)
    m.sync_lr_schedule = m.log = lambda *a, **k: None
    m.step_generator = lambda stream, device=None: torch.Generator().manual_seed(5)
    x, y = torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.randint(10, (4,))
    m.training_step({"train": (x, y)}, 0)

    net = ref.supernet
    g = torch.Generator().manual_seed(5)
    tau = 1 - 0.97 / 150
    mixing = {key: torch.softmax((a + gumbel_noise(a.shape, a.dtype, g)) / tau, -1)
              for key, a in zip(("normal", "reduce"), net.arch_parameters())}
    loss = F.cross_entropy(net(x, mixing=mixing), y)
    if resource_lambda:
        # the official divisors are the 8-cell network's 6 and 2; ours the cell counts (here 1 normal, 2 reduce)
        loss = loss + resource_lambda * _official_snas_penalty(net, mixing, 8, counts=(1, 2))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.weight_parameters(), 5.0)
    torch.nn.utils.clip_grad_norm_(net.arch_parameters(), 1e-3)
    torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9).step()
    torch.optim.SGD(net.arch_parameters(), lr=0.5).step()
    for a, b in zip(m.supernet.parameters(), net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


# ---- the tiny configs: determinism, resume, DDP ---------------------------------------------------------------------
NEW_TINY = ["drnas_nb201", "drnas", "snas_nb201", "snas", "pc_darts", "pc_darts_nb201"]


@pytest.mark.parametrize("config", NEW_TINY)
def test_baseline_tiny_configs_repeat(config, tmp_path, capsys):
    runs = [run_in_process("fit", "--config", str(REPO / "experiments" / "tiny" / f"{config}.yaml"), "--run.root",
                           str(tmp_path / str(k)), capsys=capsys) for k in range(2)]
    summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    assert summaries[0]["genotype"] == summaries[1]["genotype"]
    assert summaries[0]["metrics"]["val/acc"] is not None
    from cli_utils import assert_same_weights

    assert_same_weights(runs[0] / "checkpoints" / "last.ckpt", runs[1] / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize("config", ["drnas_nb201", "snas", "gdas_nb201"])
def test_baseline_resume_mid_epoch_equals_uninterrupted(config, tmp_path, capsys):
    from cli_utils import assert_same_weights, uninterrupted_and_resumed

    full, resumed, _ = uninterrupted_and_resumed(REPO / "experiments" / "tiny" / f"{config}.yaml", 7, tmp_path, capsys)
    assert_same_weights(full / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize("config", ["drnas_nb201", "snas_nb201", "pc_darts_nb201", "darts_pt_nb201"])
def test_baselines_on_two_ddp_processes_hold_identical_alphas(config, tmp_path):
    """Samples come from (seed, step): both ranks draw alike and keep identical architecture parameters."""
    from cli_utils import run_two_process_ddp

    _, prefix = run_two_process_ddp(REPO / "experiments" / "tiny" / f"{config}.yaml", tmp_path, "AlphaRecorder")
    ranks = [[json.loads(line) for line in open(f"{prefix}.rank{r}.jsonl")] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) > 2
    for a, b in zip(*ranks):
        assert a["alphas"] == b["alphas"], (a["epoch"], a["batch"])
    assert ranks[0][0]["alphas"] != ranks[0][-1]["alphas"]


# ---- DARTS-PT ----------------------------------------------------------------------------------------------------
def _pt(space: str, crit: str = "loss"):
    from lightning_nas.methods import DartsPT

    torch.manual_seed(0)
    m = DartsPT(supernet=SPACES[space], num_classes=10, in_channels=3, proj_crit=crit).double()
    x, y = torch.randn(6, 3, 8, 8, dtype=torch.float64), torch.randint(10, (6,))
    m._probe = [(x, y)]
    return m, x, y


def _official_infer(net, x, y, weights):
    """darts-pt's infer(eval=False): train-mode BN, (accuracy, loss) of the supernet with the given weights."""
    net.train()
    from lightning_nas.core.child_eval import frozen_bn_stats

    with torch.no_grad(), frozen_bn_stats(net):
        logits = net(x, mixing=weights)
        return float((logits.argmax(-1) == y).double().mean()), float(F.cross_entropy(logits, y))


def test_darts_pt_schedule_is_the_official_one():
    m, _, _ = _pt("nb201")
    m.proj_interval = 5
    assert m.tune_epochs() == 25  # proj_intv * (num_edges - 1)
    assert [e for e in range(25) if m.decision_kind(e)] == [0, 5, 10, 15, 20, 24]
    d, _, _ = _pt("darts")
    d.proj_interval = 5
    assert d.tune_epochs() == 81  # proj_intv * (14 + 3 - 1) + 1
    assert [e for e in range(81) if d.decision_kind(e)] == list(range(0, 81, 5))


@pytest.mark.parametrize("crit", ["acc", "loss"])
def test_darts_pt_op_decision_equals_the_official_projection(crit):
    """nasbench201/projection.py project(): zero one op of the selected edge in the projected weights (no
    renormalising), score, keep the op whose removal hurts most (strict compare: the lowest index on ties)."""
    m, x, y = _pt("nb201", crit)
    m.op_choice["cell"][1] = 2  # an edge decided earlier stays one-hot
    m.step_generator = lambda stream, device=None: torch.Generator().manual_seed(3)
    undecided = [0, 2, 3, 4, 5]
    edge = undecided[int(torch.randint(len(undecided), (1,), generator=torch.Generator().manual_seed(3)))]
    net = m.supernet
    base = torch.softmax(net.alpha, -1).detach().clone()
    base[1] = F.one_hot(torch.tensor(2), base.shape[1]).double()
    best_op, extrema = 0, None
    for op in range(base.shape[1]):
        w = base.clone()
        w[edge, op] = 0
        acc, loss = _official_infer(net, x, y, {"cell": w})
        value = acc if crit == "acc" else loss
        if extrema is None or (value < extrema if crit == "acc" else value > extrema):
            extrema, best_op = value, op
    m.decide("op", 0)
    assert m.op_choice["cell"] == {1: 2, edge: best_op}
    assert torch.equal(m.projected_mixing()["cell"][edge].detach(), F.one_hot(torch.tensor(best_op), 5).double())


def test_darts_pt_topology_decision_equals_the_official_project_edge():
    """sota/cnn/projection.py project_edge(): drop, one at a time, the input whose zeroing scores best (`not
    compare`: a later edge wins ties) until two remain; normal first, reduce then sees normal's result."""
    m, x, y = _pt("darts", "loss")
    for key in ("normal", "reduce"):
        m.op_choice[key] = {e: 1 + e % 6 for e in range(14)}
    m.step_generator = lambda stream, device=None: torch.Generator().manual_seed(4)
    g = torch.Generator().manual_seed(4)
    nodes = m.supernet.space.input_choices()
    expected: dict[str, list[int]] = {"normal": [], "reduce": []}
    for key in ("normal", "reduce"):
        kept = list(nodes[int(torch.randint(len(nodes), (1,), generator=g))])
        while len(kept) > 2:
            drop, extrema = None, None
            for e in kept:
                w = {k: v.detach().clone() for k, v in m.projected_mixing().items()}
                for k in expected:
                    for d in expected[k]:
                        w[k][d] = 0
                w[key][e] = 0
                _, loss = _official_infer(m.supernet, x, y, w)
                if extrema is None or not loss > extrema:
                    extrema, drop = loss, e
            kept.remove(drop)
            expected[key].append(drop)
    m.decide("edge", 70)
    assert m.dropped == expected
    genotype = m.genotype()
    for key in ("normal", "reduce"):
        for d in expected[key]:
            assert all(m.projected_mixing()[key][d] == 0)
        assert len(getattr(genotype, key)) == 8


def test_darts_pt_tiny_run_decides_every_edge_and_resumes_exactly(tmp_path, capsys):
    from cli_utils import assert_same_weights, uninterrupted_and_resumed

    config = REPO / "experiments" / "tiny" / "darts_pt_nb201.yaml"
    full, resumed, _ = uninterrupted_and_resumed(config, 9, tmp_path, capsys)  # mid tuning, after 3 decisions
    assert_same_weights(full / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt")
    a, b = (json.loads((r / "summary.json").read_text()) for r in (full, resumed))
    assert a["darts_pt"]["decisions"] == b["darts_pt"]["decisions"] and a["genotype"] == b["genotype"]
    decisions = a["darts_pt"]["decisions"]
    assert [d["epoch"] for d in decisions] == [0, 2, 4, 6, 8, 9]
    assert sorted(d["edge"] for d in decisions) == list(range(6))
    ops = {d["edge"]: d["op"] for d in decisions}
    assert a["genotype"] == "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*(ops[e] for e in range(6)))


def test_darts_pt_starts_from_another_search_and_refuses_a_bad_checkpoint(tmp_path, capsys):
    from cli_utils import run_subprocess

    search = run_in_process("fit", "--config", str(REPO / "experiments" / "tiny" / "darts_nb201.yaml"), "--run.root",
                            str(tmp_path / "search"), capsys=capsys)
    ckpt = search / "checkpoints" / "last.ckpt"
    pt = run_in_process("fit", "--config", str(REPO / "experiments" / "tiny" / "darts_pt_nb201.yaml"), "--run.root",
                        str(tmp_path / "pt"), "--model.init_args.init_from", str(ckpt),
                        "--model.init_args.search_epochs", "0", "--trainer.max_epochs", "10",
                        "--model.init_args.proj_batches", "null", capsys=capsys)  # the whole held-out split
    assert len(json.loads((pt / "summary.json").read_text())["darts_pt"]["decisions"]) == 6
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    proc = run_subprocess("fit", "--config", str(REPO / "experiments" / "tiny" / "darts_pt_nb201.yaml"), "--run.root",
                          str(tmp_path / "bad"), "--model.init_args.init_from", str(bad),
                          "--model.init_args.search_epochs", "0", "--trainer.max_epochs", "10")
    assert proc.returncode != 0 and "model.init_from" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_subprocess("fit", "--config", str(REPO / "experiments" / "tiny" / "darts_pt_nb201.yaml"), "--run.root",
                          str(tmp_path / "other"), "--model.init_args.init_from", str(ckpt),
                          "--model.init_args.search_epochs", "0", "--trainer.max_epochs", "10",
                          "--model.init_args.supernet.init_args.channels", "8")
    assert proc.returncode != 0 and "does not hold this supernet" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_subprocess("fit", "--config", str(REPO / "experiments" / "tiny" / "darts_pt_nb201.yaml"), "--run.root",
                          str(tmp_path / "len"), "--trainer.max_epochs", "5")
    assert proc.returncode != 0 and "set trainer.max_epochs 11" in proc.stderr


def test_published_anchors_agree_with_the_shipped_table():
    """The anchors' optimum row is the table's maximum, and DrNAS's row (std 0: one cell) is a cell of the table."""
    import numpy as np

    from lightning_nas.tabular import default_benchmark, published_nb201

    rows = {r.method: r for r in published_nb201()}
    bench = default_benchmark()
    for dataset in ("cifar10", "cifar100", "imagenet16_120"):  # the table's canonical names
        column = bench.column(dataset)
        assert rows["optimum of the table"].accuracy[dataset][0] == pytest.approx(float(np.max(column)), abs=0.005)
    drnas = rows["DrNAS"].accuracy
    match = [i for i in range(len(bench)) if all(abs(bench.column(d)[i] - drnas[d][0]) < 0.005 for d in drnas)]
    assert match, "DrNAS's published cell is not in the table"
    assert all(r.source for r in rows.values())


def test_gdas_darts_space_genotype_pools_op_input_pairs_as_autodl():
    """AutoDL's GDAS DARTS-space _parse restated: per node all (op != none, j, w) of its edges, sorted by -w
    (stable), the first two kept; the default rule. Two ops of one input may both be kept."""
    from lightning_nas.methods import GDAS

    torch.manual_seed(0)
    m = GDAS(supernet=SPACES["darts"], num_classes=10, in_channels=3)
    with torch.no_grad():
        m.supernet.alpha_normal[2:5] = 0.0  # node 1: ties everywhere
        m.supernet.alpha_normal[0, 3] = m.supernet.alpha_normal[0, 4] = 9.0  # node 0: two ops of input 0 win
    names = list(m.supernet.primitives)
    for key in ("normal", "reduce"):
        w = torch.softmax(getattr(m.supernet, f"alpha_{key}"), -1).tolist()
        gene, start = [], 0
        for i in range(4):
            edges = [(names[k], j, w[start + j][k]) for j in range(2 + i) for k in range(len(names))
                     if names[k] != "none"]
            gene.extend((op, j) for op, j, _ in sorted(edges, key=lambda x: -x[-1])[:2])
            start += 2 + i
        assert list(getattr(m.genotype(), key)) == gene
    assert m.genotype().normal[:2] == ((names[3], 0), (names[4], 0))
    m.genotype_rule = "darts"
    assert m.genotype() == m.supernet.genotype() != m.supernet.genotype(rule="pooled")


def test_snas_drop_path_drops_each_edge_output_while_training_only():
    """SNAS's search cell (model_search.py:96-106): every edge's mixed output drop-pathed per sample in training."""
    from lightning_nas.methods import SNAS
    from lightning_nas.search_spaces.mixed_op import drop_path

    torch.manual_seed(0)
    m = SNAS(supernet=SPACES["darts"], num_classes=10, in_channels=3, drop_path=0.3).double()
    net = m.supernet
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    torch.manual_seed(5)
    ours = net(x)
    torch.manual_seed(5)
    mixing = net.mixing_weights()
    s0 = s1 = net.stem(x)
    for cell in net.cells:
        w = mixing["reduce" if cell.reduction else "normal"]
        states, offset = [cell.preprocess0(s0), cell.preprocess1(s1)], 0
        for _ in range(cell.steps):
            s = 0
            for j, h in enumerate(states):
                s = s + drop_path(cell.edges[offset + j](h, w[offset + j]), 0.3)
            offset += len(states)
            states.append(s)
        s0, s1 = s1, torch.cat(states[-cell.multiplier:], dim=1)
    torch.testing.assert_close(ours, net.classifier(net.global_pooling(s1).flatten(1)), rtol=0, atol=0)
    net.eval()
    plain = SNAS(supernet=SPACES["darts"], num_classes=10, in_channels=3).double().eval()
    plain.load_state_dict(m.state_dict())
    torch.testing.assert_close(net(x), plain.supernet(x), rtol=0, atol=0)  # evaluation: no drop-path


def test_darts_pt_search_epochs_follow_their_own_cosine():
    """The supernet part is the official supernet run: its cosine spans search_epochs, not the whole run."""
    m, _, _ = _pt("nb201")
    m.search_epochs = 100
    opt = torch.optim.SGD(m.supernet.weight_parameters(), lr=0.025)
    sched = m.weight_schedule(opt, None, 0.001)
    assert sched.T_max == 100
    for _ in range(100):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.001)


# ---- DrNAS progressive ---------------------------------------------------------------------------------------------
def _official_prune(x, num_keep, mask):
    """DrNAS utils.prune restated (reset=False)."""
    x = x.clone()
    if mask is not None:
        x.data[~mask] -= 1000000
    src, index = x.topk(k=num_keep, dim=-1)
    x.data.copy_(torch.zeros_like(x).scatter(dim=1, index=index, src=src))
    return x, torch.zeros_like(x, dtype=torch.bool).scatter(dim=1, index=index, src=torch.ones_like(src,
                                                                                                      dtype=torch.bool))


def test_drnas_pruning_and_masked_samples_equal_the_official_ones():
    from torch.distributions import Dirichlet

    from lightning_nas.methods.bilevel.drnas import masked, prune_mask
    from lightning_nas.methods.bilevel.sampling import dirichlet_rsample

    torch.manual_seed(0)
    alpha = torch.randn(14, 7, dtype=torch.float64)
    first, mask = _official_prune(alpha, 5, None)
    ours, our_mask = prune_mask(alpha, torch.ones_like(alpha, dtype=torch.bool), 5)
    assert torch.equal(ours, first) and torch.equal(our_mask, mask)
    second, mask2 = _official_prune(first, 3, mask)  # a pruned op never comes back
    ours2, our_mask2 = prune_mask(ours, our_mask, 3)
    assert torch.equal(ours2, second) and torch.equal(our_mask2, mask2) and not (mask2 & ~mask).any()
    # process_step_vector(x, 'dirichlet', mask): the sample zeroed outside the mask and renormalised
    c = F.elu(ours2) + 1
    torch.manual_seed(3)
    official = []
    for row, m in zip(c, mask2):
        out = Dirichlet(row).rsample()
        pruned = torch.zeros_like(out)
        pruned[m] = out[m]
        official.append(pruned / pruned.sum())
    sample = masked(dirichlet_rsample(c, torch.Generator().manual_seed(3)), mask2)
    torch.testing.assert_close(sample, torch.stack(official), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("op_name", ["sep_conv_3x3", "dil_conv_5x5", "skip_connect", "nor_conv_3x3"])
def test_net2wider_copies_channels_and_their_momentum(op_name):
    """Widening keeps the old channels' weights, fills new ones with copies of the logged channels (DrNAS's
    InChannelWider / OutChannelWider / BNWider, no rescaling), and the momentum buffers follow the same indices."""
    from lightning_nas.methods.bilevel.net2wider import remap_momentum, widen_op
    from lightning_nas.search_spaces.darts.supernet import darts_mixed_op
    from lightning_nas.search_spaces.nb201.ops import make_op as nb201_op

    torch.manual_seed(0)
    stride = 2 if op_name == "skip_connect" else 1
    if op_name.startswith("nor_"):
        op = nb201_op(op_name, 4, 4, 1, affine=False)
    else:
        op = darts_mixed_op(4, stride, [op_name]).ops[0]
    params = list(op.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    op(torch.randn(2, 4, 8, 8)).square().mean().backward()
    opt.step()
    before = {id(p): p.detach().clone() for p in params}
    buffers = {id(p): opt.state[p]["momentum_buffer"].clone() for p in params}
    log = []
    widen_op(op, 8, torch.Generator().manual_seed(1), log)
    remap_momentum(opt, log)
    assert op(torch.randn(2, 8, 8, 8)).shape[1] == 8
    assert [p is q for p, q in zip(op.parameters(), params)] == [True] * len(params)  # the optimizer keeps them
    for p in params:
        old, buf = before[id(p)], buffers[id(p)]
        for q, dim, index in log:  # replay the widenings on the saved copies
            if q is p:
                old, buf = old.index_select(dim, index), buf.index_select(dim, index)
        assert torch.equal(p.detach(), old) and torch.equal(opt.state[p]["momentum_buffer"], buf)
        assert p.shape != before[id(p)].shape
    pool = darts_mixed_op(4, 1, ["max_pool_3x3"]).ops[0]  # no parameters: its BN statistics follow
    widen_op(pool, 8, torch.Generator().manual_seed(1), [])
    assert pool(torch.randn(2, 8, 8, 8)).shape[1] == 8 and pool[1].running_mean.shape == (8,)


def test_progressive_drnas_prunes_widens_and_resumes_across_the_stage(tmp_path, capsys):
    from cli_utils import assert_same_weights, uninterrupted_and_resumed

    config = REPO / "experiments" / "tiny" / "drnas_progressive.yaml"
    full, resumed, _ = uninterrupted_and_resumed(config, 7, tmp_path, capsys)  # stopped in the second stage
    assert_same_weights(full / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt")
    summary = json.loads((full / "summary.json").read_text())
    assert summary["drnas"]["stages"]["reached"] == 1 and "partial_channels" not in summary["space"]  # K = 1
    ckpt = torch.load(full / "checkpoints" / "last.ckpt", weights_only=True)
    for key in ("normal", "reduce"):
        mask = ckpt["state_dict"][f"op_mask_{key}"]
        assert mask.sum(-1).tolist() == [4] * 14
        alpha = ckpt["state_dict"][f"supernet.alpha_{key}"]
        ops = list(json.loads((full / "genotype.json").read_text())["genotype"][key])
        primitives = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                      "dil_conv_3x3", "dil_conv_5x5"]
        offsets = [0, 2, 5, 9]
        for pos, (op, j) in enumerate(ops):
            assert mask[offsets[pos // 2] + j, primitives.index(op)], (key, op, j)  # only kept ops are chosen
        assert alpha[~mask].abs().max() < 1.0  # pruned alphas were zeroed, then moved only by the anchor


def test_progressive_drnas_refuses_ddp():
    from types import SimpleNamespace

    from lightning_nas.errors import ConfigError
    from lightning_nas.methods import DrNAS

    m = DrNAS(supernet=partial(DartsSupernet, channels=4, layers=3, partial_channels=2), num_classes=10,
              in_channels=3, stage_epochs=[1, 1], stage_partial_channels=[2, 1], stage_keep=[8, 4])
    m._trainer = SimpleNamespace(world_size=2)
    with pytest.raises(ConfigError, match="one device"):
        m.setup("fit")
